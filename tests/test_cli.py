"""The apt-viz CLI in-process (typer's CliRunner): artifacts, stats vs. the library, table, errors, exit codes."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from apt_viz import __version__, render
from apt_viz.analysis import analyze_image
from apt_viz.cli import app, route
from apt_viz.core.config import APTConfig
from apt_viz.core.qwen2vl import smart_resize
from apt_viz.imaging import load_image
from apt_viz.report.artifacts import (
    HEATMAP_DIR,
    LLM_TOKENS_PATH,
    ORIGINAL_PATH,
    OVERLAY_PATH,
    RESIZED_PATH,
    heatmap_path,
    importance_overlay_path,
)
from apt_viz.report.records import stats_record

runner = CliRunner()
METHOD_ARGS = {
    "v1": ["-m", "v1", "--thresholds", "3.5,2.5"],
    "v2": ["--patch-selection-method", "v2", "--alpha", "1.2"],
    "budget": ["--patch-selection-method", "budget", "--alpha", "0.3"],
}
METHOD_CONFIGS = {
    "v1": APTConfig(method="v1", thresholds=(3.5, 2.5), device="cpu"),
    "v2": APTConfig(method="v2", alpha=1.2, device="cpu"),
    "budget": APTConfig(method="budget", alpha=0.3, device="cpu"),
}


def invoke(*args: str):
    return runner.invoke(app, route([str(a) for a in args]))


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# --- routing -------------------------------------------------------------------------------------

def test_route_inserts_run_for_images_only():
    assert route(["img.jpg", "--alpha", "0.3"]) == ["run", "img.jpg", "--alpha", "0.3"]
    assert route(["--quiet", "img.jpg"]) == ["run", "--quiet", "img.jpg"]
    assert route(["run", "img.jpg"]) == ["run", "img.jpg"]
    assert route(["--help"]) == ["--help"] and route(["--version"]) == ["--version"] and route([]) == []


def test_version_and_help():
    version = invoke("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"apt-viz {__version__}"
    top = invoke("--help")
    assert top.exit_code == 0 and "run" in top.stdout and "Examples" in top.stdout
    options = invoke("run", "--help")
    for option in ("--patch-selection-method", "--alpha", "--thresholds", "--scorer", "--patch-size",
                   "--num-scales", "--temporal-patch-size", "--merge-size", "--min-pixels", "--max-pixels",
                   "--no-resize", "--bins", "--device", "--recursive", "--workers", "--stats-only", "--json",
                   "--quiet", "--skip-existing", "--max-image-pixels", "--output", "Exit codes"):
        assert option in options.stdout, option


# --- one image, every method ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["v1", "v2", "budget"])
def test_single_image_artifacts_and_stats_match_library(tmp_path, photo_paths, method):
    photo = photo_paths["rocket"]
    # fidelity's block, pictures and columns: tests/test_fidelity_cli.py
    result = invoke(photo, "-o", tmp_path, "--device", "cpu", "--no-fidelity", *METHOD_ARGS[method])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "rocket.jpg"
    expected = analyze_image(photo, METHOD_CONFIGS[method])

    stats = json.loads((folder / "stats.json").read_text())
    assert {k: v for k, v in stats.items() if k not in ("name", "artifacts")} == stats_record(expected)
    assert stats["apt_viz_version"] == __version__ and stats["method"] == method

    original = load_image(photo)
    resized_h, resized_w = smart_resize(original.height, original.width)
    assert expected.resized_hw == (resized_h, resized_w)
    with Image.open(folder / ORIGINAL_PATH) as image:
        assert image.size == original.size
    with Image.open(folder / RESIZED_PATH) as image:
        assert image.size == (resized_w, resized_h)
    with Image.open(folder / OVERLAY_PATH) as image:
        assert image.format == "JPEG" and image.size == render.analysis_overlay(expected).size
    heatmaps = render.analysis_heatmap_pictures(expected)
    for size, picture in heatmaps.bare.items():
        with Image.open(folder / heatmap_path(size)) as image:
            assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(picture))  # lossless, exact
            heat = np.asarray(image.convert("RGB"))[render.TITLE_HEIGHT : render.TITLE_HEIGHT + resized_h,
                                                    :resized_w]
            assert heat.shape[:2] == (resized_h, resized_w)  # lines up with the resized image / overlay
    resized = np.asarray(expected.resized, dtype=np.float64)
    for size, picture in heatmaps.on_image.items():
        with Image.open(folder / importance_overlay_path(size)) as image:
            assert image.format == "JPEG" and image.size == picture.size
            drawn = np.asarray(image.convert("RGB"), dtype=np.float64)
        # at the resized size under the title, as the bare map; the JPEG holds the blend of map and image
        on_image = drawn[render.TITLE_HEIGHT : render.TITLE_HEIGHT + resized_h, :resized_w]
        split = render.split_cells(expected.masks, size) if size > 14 else None
        heat = render.heatmap_pixels(expected.maps[size], size, expected.resized_hw, split=split)
        off = np.ones(expected.resized_hw, dtype=bool) if heat.outline is None else ~heat.outline
        assert np.abs(on_image - (0.5 * heat.pixels + 0.5 * resized))[off].mean() < 3  # JPEG loss only
        assert np.abs(on_image - heat.pixels)[off].mean() > 10 < np.abs(on_image - resized)[off].mean()
    assert sorted(p.name for p in (folder / HEATMAP_DIR).iterdir()) == sorted(
        [f"importance_map_scale_{s}.png" for s in (14, 28, 56)]
        + [f"importance_overlay_scale_{s}.jpg" for s in (14, 28, 56)]
    )
    regions = render.llm_token_pixels(expected.resized, expected.masks, expected.config.merge_size)
    assert len(np.unique(regions.labels)) == stats["llm_tokens"]  # one region per LLM token
    with Image.open(folder / LLM_TOKENS_PATH) as image:
        assert image.format == "JPEG" and image.width >= resized_w and image.height > resized_h
        drawn = np.asarray(image.convert("RGB"), dtype=np.float64)[:resized_h, :resized_w]
    assert np.abs(drawn - regions.pixels).mean() < 3  # the file shows these regions at the resized size
    assert stats["artifacts"] == [
        *(heatmap_path(s) for s in (14, 28, 56)), *(importance_overlay_path(s) for s in (14, 28, 56)),
        OVERLAY_PATH, LLM_TOKENS_PATH, ORIGINAL_PATH, RESIZED_PATH,
    ]

    # Not a terminal: the compact table, one line for the image.
    (row,) = [line.split() for line in result.stdout.splitlines() if line.startswith("rocket.jpg")]
    stats = expected.stats
    assert row[-4:] == [f"{stats.retention:.1%}", f"{stats.vision_tokens}/{stats.base_tokens}",
                        f"{stats.llm_tokens}/{stats.baseline_llm_tokens}", f"{stats.llm_retention:.1%}"]
    assert row[1] == method
    assert not (tmp_path / "summary.json").exists()  # a single file is not a folder run


def test_budget_table_on_a_terminal_shows_target_and_actual(tmp_path, photo_paths):
    # A terminal wide enough for it gets the full table (rich reads TTY_COMPATIBLE and COLUMNS).
    result = runner.invoke(app, route([str(photo_paths["astronaut"]), "-o", str(tmp_path), "--device", "cpu",
                                       "--patch-selection-method", "budget", "--alpha", "0.3"]),
                           env={"TTY_COMPATIBLE": "1", "COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if "astronaut.jpg" in line)
    cells = [cell.strip() for cell in row.split("│")]
    # N = 36 * 36 = 1296 base patches; T = round(0.3 * 1296) = 389 -> target 30.0%; tokens <= T, T - tokens < 3
    assert cells[2:5] == ["budget", "alpha 0.3", "30.0%"]
    tokens, base = map(int, cells[7].split(" / "))
    assert base == 1296 and 387 <= tokens <= 389 and cells[5] == f"{tokens / 1296:.1%}"
    assert cells[6] == " / ".join(str(n) for n in json.loads(
        (tmp_path / "astronaut.jpg" / "stats.json").read_text())["tokens_per_scale"].values())


# --- folders -------------------------------------------------------------------------------------

def test_folder_with_corrupt_file_exits_1_and_completes_the_rest(tmp_path, photo_paths):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    shutil.copy(photo_paths["chelsea"], inputs / "chelsea.jpg")
    shutil.copy(photo_paths["chelsea"], inputs / "sub" / "chelsea.jpg")
    shutil.copy(photo_paths["coffee"], inputs / "coffee.jpg")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    out = tmp_path / "out"
    result = invoke(inputs, "-r", "-o", out, "--device", "cpu", "-m", "budget", "--alpha", "0.5")
    assert result.exit_code == 1
    good = ["chelsea.jpg", "coffee.jpg", "sub__chelsea.jpg"]
    for name in good:
        stats = json.loads((out / name / "stats.json").read_text())
        assert all((out / name / rel).is_file() for rel in stats["artifacts"]) and len(stats["artifacts"]) == 13
    assert not (out / "broken.jpg").exists()
    assert f"failed: {inputs / 'broken.jpg'}: " in result.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert [image["name"] for image in summary["images"]] == good
    assert [f["input"] for f in summary["failures"]] == [str(inputs / "broken.jpg")]
    retentions = [image["retention"] for image in summary["images"]]
    assert summary["summary"]["retention"] == {"mean": pytest.approx(np.mean(retentions)),
                                               "min": min(retentions), "max": max(retentions)}
    rows = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
    assert [(r["name"], r["status"]) for r in rows] == [(n, "ok") for n in good] + [("", "failed")]
    assert [int(r["vision_tokens"]) for r in rows[:3]] == [image["vision_tokens"] for image in summary["images"]]
    text = one_line(result.stdout)
    assert "3 image(s) done, 1 failed" in text
    assert f"retention mean {np.mean(retentions):.1%}, min {min(retentions):.1%}, max {max(retentions):.1%}" in text


def test_json_output_is_the_only_stdout(tmp_path, photo_paths):
    result = invoke(photo_paths["chelsea"], photo_paths["coffee"], "-o", tmp_path, "--json", "--stats-only",
                    "--device", "cpu", "-m", "v2", "--alpha", "0.9")
    assert result.exit_code == 0
    document = json.loads(result.stdout)  # nothing else on stdout
    assert document == json.loads((tmp_path / "summary.json").read_text())
    assert [image["name"] for image in document["images"]] == ["chelsea.jpg", "coffee.jpg"]
    expected = stats_record(analyze_image(photo_paths["coffee"], APTConfig(method="v2", alpha=0.9, device="cpu")))
    assert document["images"][1]["thresholds"] == expected["thresholds"]
    assert document["summary"]["vision_tokens"] == sum(image["vision_tokens"] for image in document["images"])
    assert document["failures"] == [] and document["config"]["method"] == "v2"


def test_stats_only_skip_existing_and_quiet(tmp_path, photo_paths):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("astronaut", "rocket"):
        shutil.copy(photo_paths[name], inputs / f"{name}.jpg")
    out = tmp_path / "out"
    first = invoke(inputs, "-o", out, "--stats-only", "-q", "--device", "cpu")
    assert first.exit_code == 0 and first.stdout == ""
    assert sorted(p.name for p in (out / "rocket.jpg").iterdir()) == ["stats.json"]
    older = out / "rocket.jpg" / "stats.json"  # a record of an older schema is redone, not reported
    older.write_text(json.dumps({**json.loads(older.read_text()), "schema_version": 2}))
    before = (out / "astronaut.jpg" / "stats.json").stat().st_mtime_ns
    again = invoke(inputs, "-o", out, "--stats-only", "--skip-existing", "--device", "cpu")
    assert again.exit_code == 0
    assert (out / "astronaut.jpg" / "stats.json").stat().st_mtime_ns == before  # not redone
    assert json.loads(older.read_text())["schema_version"] == 3
    assert "1 already done (skipped)" in one_line(again.stdout)
    assert len(json.loads((out / "summary.json").read_text())["images"]) == 2


def test_unusual_options_change_the_numbers(tmp_path, photo_paths):
    result = invoke(photo_paths["chelsea"], "-o", tmp_path, "--json", "--stats-only", "--device", "cpu",
                    "--no-resize", "--scorer", "laplacian", "--thresholds", "0.2,0.1", "--num-scales", "3")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["images"][0]
    expected = analyze_image(photo_paths["chelsea"], APTConfig(resize=False, scorer="laplacian",
                                                               thresholds=(0.2, 0.1), device="cpu"))
    assert stats["resized_size"] == {"width": 451, "height": 300}
    assert stats["tokens_per_scale"] == stats_record(expected)["tokens_per_scale"]


def test_llm_budget_and_seeded_random_scorer_from_the_command_line(tmp_path, photo_paths):
    args = ["-o", tmp_path, "--json", "--stats-only", "--device", "cpu", "-m", "budget", "--alpha", "0.5"]
    result = invoke(photo_paths["chelsea"], *args, "--budget-unit", "llm", "--scorer", "random", "--seed", "7")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["images"][0]
    config = APTConfig(method="budget", alpha=0.5, budget_unit="llm", scorer="random", seed=7, device="cpu")
    expected = stats_record(analyze_image(photo_paths["chelsea"], config))
    assert stats["budget_info"] == expected["budget_info"]
    assert stats["budget_info"]["budget_unit"] == "llm" and stats["config"]["seed"] == 7
    info = stats["budget_info"]
    assert 0 <= info["budget"] - info["llm_tokens"] <= 3 and info["budget"] == round(0.5 * info["baseline_llm_tokens"])


# --- usage errors --------------------------------------------------------------------------------

BAD_OPTIONS = [
    (["-m", "bogus"], "'bogus' is not one of"),
    (["--scorer", "sharpness"], "'sharpness' is not one of"),
    (["-m", "budget", "--alpha", "0"], "alpha must be > 0 for budget"),
    (["-m", "budget", "--alpha", "1.5"], "alpha must be in (0, 1] for budget"),
    (["-m", "v2", "--alpha", "0"], "alpha must be > 0 for v2"),
    (["-m", "v2", "--alpha", "-0.5"], "alpha must be > 0 for v2"),
    (["--thresholds", "3"], "v1 needs 2 thresholds"),
    (["--thresholds", "3,2,1"], "v1 needs 2 thresholds"),
    (["--thresholds", "3,x"], "is not a list of numbers"),
    (["--alpha", "0.5"], "--alpha applies to v2 and budget"),
    (["-m", "budget", "--alpha", "0.5", "--thresholds", "3,2"], "--thresholds applies to v1"),
    (["--min-pixels", "2000000"], "min_pixels (2000000) must not exceed max_pixels"),
    (["--min-pixels", "100", "--max-pixels", "500"], "below one merged patch"),
    (["--patch-size", "0"], "patch_size must be a positive integer"),
    (["--num-scales", "4"], "needs 3 thresholds"),
    (["--bins", "0"], "bins must be a positive integer"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--workers", "-1"], "--workers"),
    (["-m", "v2", "--alpha", "abc"], "Invalid value for '--alpha'"),
    (["--budget-unit", "llm"], "--budget-unit applies to budget, not v1"),
    (["-m", "budget", "--alpha", "0.3", "--budget-unit", "patches"], "'patches' is not one of"),
    (["-m", "budget", "--alpha", "0.3", "--budget-unit", "llm", "--merge-size", "4"], "needs merge_size 1 or 2"),
    (["--scorer", "random", "--seed", "-1"], "Invalid value for '--seed'"),
]


@pytest.mark.parametrize("extra, message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_exit_2_with_message(tmp_path, photo_paths, extra, message):
    result = invoke(photo_paths["chelsea"], "-o", tmp_path / "out", *extra)
    assert result.exit_code == 2, result.output
    assert message in one_line(result.output)
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_bad_paths_exit_2(tmp_path, photo_paths):
    missing = invoke(tmp_path / "nope.jpg", "-o", tmp_path / "out")
    assert missing.exit_code == 2 and "nope.jpg: no such file or folder" in one_line(missing.output)
    (tmp_path / "empty").mkdir()
    empty = invoke(tmp_path / "empty", "-o", tmp_path / "out")
    assert empty.exit_code == 2 and "no images found" in one_line(empty.output)
    (tmp_path / "file").write_text("x")
    not_folder = invoke(photo_paths["chelsea"], "-o", tmp_path / "file")
    assert not_folder.exit_code == 2 and "exists and is not a folder" in one_line(not_folder.output)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_usage_error(tmp_path, photo_paths):
    result = invoke(photo_paths["chelsea"], "-o", tmp_path, "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA device is available" in one_line(result.output)


def test_device_auto_resolves(tmp_path, photo_paths):
    result = invoke(photo_paths["chelsea"], "-o", tmp_path, "--json", "--stats-only")
    assert result.exit_code == 0
    device = json.loads(result.stdout)["config"]["device"]
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
