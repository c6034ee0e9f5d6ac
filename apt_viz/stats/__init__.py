"""Dataset-scale statistics (``apt-viz stats``): every image of a dataset, every setting, one Parquet table.

- :mod:`~apt_viz.stats.local`: the streaming engine on one machine (decode workers, batches of
  same-size images on the device, one writer); :mod:`~apt_viz.stats.ray_engine`: the same on Ray Data.
- :mod:`~apt_viz.stats.table`: the writer (committed parts, atomic merge, ``--resume``).
- :mod:`~apt_viz.stats.rows`: the columns, read from each image's ``stats.json`` record.
- :mod:`~apt_viz.stats.masks`: the ``--save-masks`` encoding and its reader, :func:`read_masks`.

Names load lazily: pyarrow, torch and Ray are imported only when a run or a reader needs them.
"""
from __future__ import annotations

from ..core._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("decode_masks", "encode_masks", "read_masks", "SavedSelection"), "masks"),
    **dict.fromkeys(("Setting", "StatsPlan", "settings_of"), "settings"),
    **dict.fromkeys(("run_local", "RunReport"), "local"),
    "run_ray": "ray_engine",
    "summarise": "summary",
    "COLUMNS": "rows",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
