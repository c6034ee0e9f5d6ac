"""The output folder of one image (docs/contract.md, section 7): writing its artifacts and stats.json.

Every file is written atomically and ``stats.json`` last, so a folder holding a ``stats.json`` is
complete; that is what ``--skip-existing`` looks for.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, cast

from ..atomic import save_image, write_json
from ..report.artifacts import ORIGINAL_PATH, OVERLAY_PATH, RESIZED_PATH, STATS_FILE, heatmap_path
from ..report.records import StatsRecord, stats_record

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ..analysis import ImageAnalysis

JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 1  # heatmaps are flat cells: level 1 is ~4x faster than 6 and nearly as small


def write_image_folder(
    analysis: ImageAnalysis, original: Image.Image, folder: str, name: str, *, stats_only: bool = False
) -> StatsRecord:
    """Write the artifacts (unless ``stats_only``) and then ``stats.json`` of one image; return its record."""
    artifacts = [] if stats_only else write_image_artifacts(analysis, original, folder)
    record = stats_record(analysis)
    record["name"] = name
    record["artifacts"] = artifacts
    write_json(os.path.join(folder, STATS_FILE), record)  # last: marks the folder complete
    return record


def write_image_artifacts(analysis: ImageAnalysis, original: Image.Image, folder: str) -> list[str]:
    """Heatmaps, overlay, original and resized image of one analysis; returns their relative paths."""
    from ..render.heatmap import analysis_heatmaps
    from ..render.overlay import analysis_overlay

    written = []
    for size, picture in analysis_heatmaps(analysis).items():
        save_image(picture, os.path.join(folder, heatmap_path(size)), compress_level=PNG_COMPRESS_LEVEL)
        written.append(heatmap_path(size))
    save_image(analysis_overlay(analysis), os.path.join(folder, OVERLAY_PATH), quality=JPEG_QUALITY)
    save_image(original, os.path.join(folder, ORIGINAL_PATH), quality=JPEG_QUALITY)
    save_image(analysis.resized, os.path.join(folder, RESIZED_PATH), quality=JPEG_QUALITY)
    return [*written, OVERLAY_PATH, ORIGINAL_PATH, RESIZED_PATH]


def existing_stats(folder: str) -> StatsRecord | None:
    """The record of an earlier complete run written to ``folder`` (None when missing or unreadable)."""
    try:
        with open(os.path.join(folder, STATS_FILE), encoding="utf-8") as handle:
            stats = json.load(handle)
    except (OSError, ValueError):
        return None
    return cast(StatsRecord, stats) if isinstance(stats, dict) and "tokens" in stats else None
