"""The device half of a ``stats`` run: score same-size images together and select every setting.

Images are grouped by their resized size (:class:`SizeBatcher`), so a batch is one tensor: one
kernel launch scores many images on a GPU, and the maps are exactly those of each image alone
(``tests/test_stats_core.py``); padding to a common size would change the partial cells. Every
setting is selected from the same maps. Each row is read from the ``stats.json`` record of the
image's analysis (:func:`apt_viz.report.records.stats_record`), as ``apt-viz run`` writes it.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .decode import Decoded
from .rows import Row, error_row, record_row
from .settings import StatsPlan

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from PIL import Image

    from ..core.selection import Selection


@dataclass
class Pending:
    """A decoded image waiting for its batch, with the settings (indices into the plan) it still needs."""

    path: str
    original_hw: tuple[int, int]
    pixels: np.ndarray  # (H, W, 3) uint8, resized (any strides; the local engine's are a view of planar memory)
    settings: tuple[int, ...]
    slot: int | None = None  # local engine: the shared-memory slot the pixels are in
    original: np.ndarray | None = None  # --fidelity: (h, w, 3) uint8 as loaded

    @property
    def resized_hw(self) -> tuple[int, int]:
        height, width = self.pixels.shape[:2]
        return height, width


@dataclass
class SizeBatcher:
    """Groups decoded images by resized size into batches of at most ``batch_size``.

    At most ``max_waiting`` images wait in all (memory stays flat however many sizes a dataset
    has): beyond that the fullest group goes out even if it is not full.
    """

    batch_size: int
    max_waiting: int
    _groups: dict[tuple[int, int], list[Pending]] = field(default_factory=dict)
    _waiting: int = 0

    def add(self, item: Pending) -> list[list[Pending]]:
        """Take one image; return the batches that are ready (none, usually)."""
        group = self._groups.setdefault(item.resized_hw, [])
        group.append(item)
        self._waiting += 1
        ready = []
        if len(group) >= self.batch_size:
            ready.append(self._pop(item.resized_hw))
        while self._waiting > self.max_waiting:
            ready.append(self._pop(max(self._groups, key=lambda hw: len(self._groups[hw]))))
        return ready

    def drain(self) -> Iterator[list[Pending]]:
        """Every waiting group, largest first (the end of the input)."""
        while self._groups:
            yield self._pop(max(self._groups, key=lambda hw: len(self._groups[hw])))

    def __len__(self) -> int:
        return self._waiting

    def _pop(self, hw: tuple[int, int]) -> list[Pending]:
        group = self._groups.pop(hw)
        self._waiting -= len(group)
        return group


class BatchScorer:
    """Turns batches of same-size decoded images into table rows on ``plan.config.device``.

    Args:
        plan: Image settings, device and the selection settings.
    """

    def __init__(self, plan: StatsPlan) -> None:
        import torch

        self.plan = plan
        self.device = torch.device(plan.config.device)
        self.internal_errors = 0  # batches that failed with an unexpected error (a bug: exit 3)
        self._staging = torch.empty(0, dtype=torch.uint8)  # reused batch buffer (CPU)

    def pixels(self, batch: Sequence[Pending]) -> torch.Tensor:
        """(B, 3, H, W) uint8 on the device, contiguous as :func:`apt_viz.imaging.pil_to_tensor` lays out
        one image (a layout can change the last bit of a scorer's float arithmetic).

        Every scorer converts to float32 itself, exactly (uint8 values are integers), so the batch
        stays a quarter of the size of a float batch. On the CPU it is written into a buffer kept
        from batch to batch: fresh memory costs a page fault per 4 KiB.
        """
        import torch

        images = [torch.from_numpy(item.pixels).permute(2, 0, 1) for item in batch]  # h w c -> c h w (views)
        shape = (len(batch), *images[0].shape)
        if self.device.type == "cuda":  # page-locked (from torch's cache), so the copy overlaps the host's work
            pinned = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            return torch.stack(images, out=pinned).to(self.device, non_blocking=True)
        numel = shape[0] * shape[1] * shape[2] * shape[3]
        if self._staging.numel() < numel:
            self._staging = torch.empty(numel, dtype=torch.uint8)
        return torch.stack(images, out=self._staging[:numel].view(shape))

    def __call__(self, batch: Sequence[Pending]) -> list[Row]:
        """Score the batch once, select every setting an image needs, and return its rows.

        A failure here (a bug, or the device running out of memory) becomes an error row for
        every image of the batch; the run goes on.
        """
        from ..batch.failures import failure_of

        try:
            return self._rows(batch)
        except Exception as exc:
            self.internal_errors += 1
            rows = []
            for item in batch:
                failure = failure_of(item.path, exc, self.plan.debug)
                rows += [error_row(item.path, failure.error, self.plan.settings[index], self.plan,
                                   item.original_hw) for index in item.settings]
            return rows

    def _rows(self, batch: Sequence[Pending]) -> list[Row]:
        import torch

        from ..analysis import ImageAnalysis
        from ..core.pipeline import compute_maps, select
        from ..fidelity import measure_fidelity
        from ..report.records import stats_record
        from .masks import encode_masks

        hw = batch[0].resized_hw
        maps = compute_maps(self.pixels(batch), self.plan.config)
        maps_cpu = {size: m.cpu() for size, m in maps.items()}
        resized = [torch.from_numpy(item.pixels).permute(2, 0, 1) for item in batch]  # h w c -> c h w (views)
        rows: list[Row] = []
        for index, (setting, config) in enumerate(zip(self.plan.settings, self.plan.configs)):
            members = [i for i, item in enumerate(batch) if index in item.settings]
            if not members:
                continue
            result = select(maps, config, hw)
            masks_cpu = {size: m.cpu() for size, m in result.selection.masks.items()}
            encoded = encode_masks(result.selection.masks) if self.plan.save_masks else None
            for i in members:
                analysis = ImageAnalysis(
                    source=batch[i].path,
                    original_hw=batch[i].original_hw,
                    pixels=resized[i],
                    config=config,
                    maps={size: m[i] for size, m in maps_cpu.items()},
                    selection=_image_selection(result.selection, masks_cpu, i),
                    stats=result.stats[i],
                )
                fidelity = None
                if self.plan.fidelity:
                    fidelity = measure_fidelity(analysis, _original_of(batch[i])).to_dict()
                rows.append(record_row(stats_record(analysis, fidelity), setting,
                                       None if encoded is None else encoded[i]))
        return rows


def _original_of(item: Pending) -> Image.Image:
    """The image as loaded, which fidelity's uniform baselines resize (``--fidelity`` keeps it)."""
    from PIL import Image

    if item.original is None:
        raise RuntimeError(f"{item.path}: --fidelity needs the original image, which was not kept")
    return Image.fromarray(item.original)


def _image_selection(selection: Selection, masks: dict[int, torch.Tensor], index: int) -> Selection:
    """Image ``index`` of a batch selection, as a batch of one (masks on the CPU)."""
    from ..core.selection import Selection

    return Selection(
        method=selection.method,
        masks={size: m[index : index + 1] for size, m in masks.items()},
        alpha=selection.alpha,
        thresholds=None if selection.thresholds is None else selection.thresholds[index : index + 1],
        budget_info=None if selection.budget_info is None else selection.budget_info[index : index + 1],
    )


def failed_rows(image: Decoded, settings: Sequence[int], plan: StatsPlan) -> list[Row]:
    """The error rows of an input that could not be decoded."""
    return [error_row(image.path, image.error or "unknown error", plan.settings[index], plan, image.original_hw)
            for index in settings]
