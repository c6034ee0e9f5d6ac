"""Jobs of the analysis commands for :func:`apt_viz.batch.jobs.run_batch`: one compare sheet,
one sweep of one image.

Like :class:`~apt_viz.batch.jobs.ImageJob` they are picklable (sent to worker processes), never
raise (an unusable input or an internal error becomes the outcome's :class:`Failure`), and return
plain data the main process reports.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.config import APTConfig, Method
from ..report.artifacts import COMPARE_SHEET
from ..report.records import CompareRecord
from ..report.summary import Failure
from .failures import failure_of, output_failure
from .inputs import InputItem
from .jobs import Outcome, analyze_input
from .layout import discard_partial_files

if TYPE_CHECKING:  # pragma: no cover
    from ..sweep import ImageSweep, SweepValue


@dataclass(frozen=True)
class CompareJob:
    """``apt-viz compare``: analyse one image, draw its sheet and write OUT/<name>/compare.jpg."""

    config: APTConfig  # v1 panel settings and everything but the selection
    output: str
    alphas: tuple[float, ...] | None = None  # one row of v2 + budget panels each (None: the defaults)
    panel_width: int | None = None
    max_image_pixels: int | None = None
    debug: bool = False

    def __call__(self, item: InputItem) -> Outcome[CompareRecord]:
        from ..atomic import save_image
        from ..render.compare import compare_sheet
        from ..report.records import stats_record
        from .layout import DRAWING_JPEG

        analysed = analyze_input(item.path, self.config, self.max_image_pixels, self.debug)
        if isinstance(analysed, Failure):
            return Outcome(item, failure=analysed)
        sheet_path = f"{item.name}/{COMPARE_SHEET}"
        try:
            sheet = compare_sheet(analysed[1], self.alphas, panel_width=self.panel_width)
            save_image(sheet.image, os.path.join(self.output, sheet_path), **DRAWING_JPEG)
        except OSError as exc:  # disk full, permissions: this input fails, the run goes on
            return Outcome(item, failure=output_failure(item.path, os.path.join(self.output, item.name), exc))
        except Exception as exc:
            return Outcome(item, failure=failure_of(item.path, exc, self.debug))
        panels = []
        for panel in sheet.panels:
            record = stats_record(panel.analysis)
            record["name"] = item.name
            panels.append(record)
        return Outcome(item, CompareRecord(
            name=item.name, input=item.path, sheet=sheet_path, panels=panels, skipped=sheet.skipped
        ))

    def discard(self, item: InputItem) -> None:
        discard_partial_files(os.path.join(self.output, item.name))


@dataclass(frozen=True)
class SweepJob:
    """``apt-viz sweep``: score one image once, then select at every value."""

    config: APTConfig
    method: Method
    values: tuple[SweepValue, ...]
    max_image_pixels: int | None = None
    debug: bool = False
    fidelity: bool = False  # the rate-distortion curves (docs/fidelity.md)

    def __call__(self, item: InputItem) -> Outcome[ImageSweep]:
        from ..sweep import sweep_analysis

        analysed = analyze_input(item.path, self.config, self.max_image_pixels, self.debug)
        if isinstance(analysed, Failure):
            return Outcome(item, failure=analysed)
        try:
            original = analysed[0] if self.fidelity else None
            return Outcome(item, sweep_analysis(analysed[1], self.method, self.values, original))
        except Exception as exc:
            return Outcome(item, failure=failure_of(item.path, exc, self.debug))

    def discard(self, item: InputItem) -> None:
        """Nothing to remove: a sweep writes its files in the main process, after every image."""
