"""``apt-viz bench``: stock against APT, measured (vision encoder, LLM prefill) or counted (FLOPs).

Above :mod:`apt_viz.hf` and :mod:`apt_viz.stats`. One module per concern: ``presets`` (architectures
with random weights), ``settings`` (what is measured, the result types), ``memory`` (the peak-memory
probe, also used by ``benchmarks/``), ``models`` (loading a preset or a checkpoint of any family),
``measure`` (timing), ``counts`` (token counts and FLOPs of a row, ``--flops-only``), ``run`` (the
whole run), ``report`` (bench.json, bench.csv), ``tables`` and ``plot``. Names load lazily (the
memory probe needs torch only).
"""
from __future__ import annotations

from ..core._lazy import lazy_exports

_EXPORTS = {
    "BenchSettings": "settings",
    "BenchResult": "settings",
    "BenchRow": "settings",
    "Timing": "settings",
    "RANDOM_WEIGHTS_NOTE": "settings",
    "peak_memory_mb": "memory",
    "load_model": "models",
    "run_bench": "run",
    "prepare_images": "run",
    "bench_document": "report",
    "bench_csv": "report",
    "write_bench": "report",
    "bench_table": "tables",
    "compact_bench_table": "tables",
    "bench_figure": "plot",
    "PRESETS": "presets",
    "TINY_PRESETS": "presets",
    "family_config": "presets",
    "preset_architecture": "presets",
    "preset_config": "presets",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
