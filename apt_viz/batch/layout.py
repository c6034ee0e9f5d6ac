"""The output folder of one image (docs/contract.md, section 7): writing its artifacts and stats.json.

Every file is written atomically and ``stats.json`` last, so a folder holding a ``stats.json`` is
complete; that is what ``--skip-existing`` looks for. A folder being rewritten loses its old
``stats.json`` first, so a rewrite cut short (a worker killed) never looks complete.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, cast

from ..atomic import leftover_temp_files, save_image, write_json
from ..report.artifacts import (
    ERROR_MAP_PATH,
    LLM_TOKENS_PATH,
    ORIGINAL_PATH,
    OVERLAY_PATH,
    RECONSTRUCTION_PATH,
    RESIZED_PATH,
    STATS_FILE,
    UNIFORM_VISION_PATH,
    heatmap_path,
    importance_overlay_path,
)
from ..report.records import SCHEMA_VERSION, StatsRecord, stats_record

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ..analysis import ImageAnalysis
    from ..fidelity import Fidelity, FidelityViews

PHOTO_JPEG = {"quality": 95}  # the original and resized image
# Drawn pictures (overlays, LLM-token map) carry 1-2 px coloured lines: JPEG's default 4:2:0 chroma
# subsampling smears them (mean error ~5-9 levels at 1 MP); 4:4:4 at quality 90 is ~1-2 levels, as
# small as 4:2:0 at quality 95, and as fast.
DRAWING_JPEG = {"quality": 90, "subsampling": 0}
PNG_COMPRESS_LEVEL = 1  # heatmaps are flat cells: level 1 is ~4x faster than 6 and nearly as small


def write_image_folder(
    analysis: ImageAnalysis, original: Image.Image, folder: str, name: str, *, stats_only: bool = False,
    fidelity: bool = False,
) -> StatsRecord:
    """Write the artifacts (unless ``stats_only``) and then ``stats.json`` of one image; return its record.

    ``fidelity``: measure it (the record's ``fidelity`` block) and, with the artifacts, write
    ``04_fidelity/`` (the reconstruction, its error map, the uniform baseline at equal vision tokens).
    """
    with contextlib.suppress(FileNotFoundError):  # until the new one is written the folder is incomplete
        os.unlink(os.path.join(folder, STATS_FILE))
    artifacts = [] if stats_only else write_image_artifacts(analysis, original, folder)
    scores = None
    if fidelity:
        from ..fidelity import fidelity_views, score_views

        views = fidelity_views(analysis, original)
        scores = score_views(views, analysis.stats)
        if not stats_only:
            artifacts += write_fidelity_pictures(views, scores, folder)
    record = stats_record(analysis, None if scores is None else scores.to_dict())
    record["name"] = name
    record["artifacts"] = artifacts
    write_json(os.path.join(folder, STATS_FILE), record)  # last: marks the folder complete
    return record


def write_image_artifacts(analysis: ImageAnalysis, original: Image.Image, folder: str) -> list[str]:
    """Every picture of one analysis; returns their paths relative to ``folder``, in this order.

    Per scale the bare heatmap (PNG: flat cells compress well) and the heatmap on the image
    (JPEG: it is a photo now); the patch overlay and the LLM-token map; the original and the
    resized image.
    """
    from ..render.heatmap import analysis_heatmap_pictures
    from ..render.llm_tokens import analysis_llm_tokens
    from ..render.overlay import analysis_overlay

    heatmaps = analysis_heatmap_pictures(analysis)
    pictures: list[tuple[str, Image.Image]] = [(heatmap_path(size), p) for size, p in heatmaps.bare.items()]
    pictures += [(importance_overlay_path(size), p) for size, p in heatmaps.on_image.items()]
    pictures += [
        (OVERLAY_PATH, analysis_overlay(analysis)),
        (LLM_TOKENS_PATH, analysis_llm_tokens(analysis)),
        (ORIGINAL_PATH, original),
        (RESIZED_PATH, analysis.resized),
    ]
    for relative, picture in pictures:
        if relative.endswith(".png"):
            options: dict[str, int] = {"compress_level": PNG_COMPRESS_LEVEL}
        else:
            options = PHOTO_JPEG if relative in (ORIGINAL_PATH, RESIZED_PATH) else DRAWING_JPEG
        save_image(picture, os.path.join(folder, relative), **options)
    return [relative for relative, _picture in pictures]


def write_fidelity_pictures(views: FidelityViews, scores: Fidelity, folder: str) -> list[str]:
    """``04_fidelity/``'s pictures, lossless PNG; returns their paths relative to ``folder``."""
    from concurrent.futures import ThreadPoolExecutor

    from ..render.fidelity import fidelity_pictures

    pictures = fidelity_pictures(views, scores)
    paths = {"reconstruction": RECONSTRUCTION_PATH, "error_map": ERROR_MAP_PATH,
             "uniform_equal_vision": UNIFORM_VISION_PATH}

    def save(name: str) -> None:
        save_image(pictures[name], os.path.join(folder, paths[name]), compress_level=PNG_COMPRESS_LEVEL)

    # three lossless 1 MP photos: zlib releases the GIL, so their encodings overlap (a third faster on 2 cores)
    with ThreadPoolExecutor(len(pictures)) as pool:
        list(pool.map(save, pictures))
    return [paths[name] for name in pictures]


def existing_stats(folder: str) -> StatsRecord | None:
    """The record of an earlier complete run written to ``folder``.

    None when it is missing, unreadable or of an older schema (``--skip-existing`` then redoes the
    image, so every report reads records of one shape).
    """
    try:
        with open(os.path.join(folder, STATS_FILE), encoding="utf-8") as handle:
            stats = json.load(handle)
    except (OSError, ValueError):
        return None
    current = isinstance(stats, dict) and stats.get("schema_version") == SCHEMA_VERSION
    return cast(StatsRecord, stats) if current else None


def discard_partial_files(folder: str) -> None:
    """Remove the temporary files a write cut short left in ``folder`` (a worker killed mid-write).

    The artifacts already renamed into place are whole files; without ``stats.json`` the folder
    counts as incomplete, and ``--skip-existing`` redoes it.
    """
    for path in leftover_temp_files(folder) if os.path.isdir(folder) else []:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
