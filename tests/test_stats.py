"""``apt-viz stats`` with the local engine: rows equal ``run --stats-only``, errors, settings lists, resume, summary.

The interrupted-run tests (SIGKILL, SIGTERM) start real subprocesses: they live in
``test_stats_resume.py``; the Ray engine is in ``test_stats_ray.py``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from apt_viz.cli import app, route
from apt_viz.cli.options import join_threshold_values

from helpers import PHOTO_PATHS, cli_imports

runner = CliRunner()
KEY = ["path", "setting"]


def stats(*args: str | Path):
    """``apt-viz stats ...`` in-process, with the command line handled as ``main`` handles it."""
    return runner.invoke(app, route(join_threshold_values(["stats", *(str(a) for a in args)])))


def read_rows(table: Path) -> list[dict]:
    """The table's rows, sorted by (path, setting)."""
    return sorted(pq.read_table(table).to_pylist(), key=lambda row: (row["path"], row["setting"]))


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """The four test photos, two mirrored copies (the same size as their originals, so they share a
    batch with them) and a small crop that smart_resize scales up."""
    folder = tmp_path_factory.mktemp("photos")
    for name, path in PHOTO_PATHS.items():
        shutil.copy(path, folder / f"{name}.jpg")
    for name in ("coffee", "rocket"):
        with Image.open(PHOTO_PATHS[name]) as photo:
            photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / f"{name}_mirrored.jpg", quality=95)
    with Image.open(PHOTO_PATHS["astronaut"]) as photo:
        photo.crop((100, 100, 141, 137)).save(folder / "small_crop.png")
    return folder


# --- the values are run --stats-only's ----------------------------------------------------------------

CASES = [
    pytest.param(["-m", "v1", "--thresholds", "3,2", "--thresholds", "4.5,3.5"], "entropy", "torchvision", id="v1"),
    pytest.param(["-m", "v2", "--alpha", "0.8,1.2"], "entropy", "torchvision", id="v2"),
    pytest.param(["-m", "budget", "--alpha", "0.25,0.5"], "entropy", "torchvision", id="budget"),
    pytest.param(["-m", "budget", "--alpha", "0.3"], "laplacian", "pil", id="budget-laplacian-pil"),
    pytest.param(["-m", "v2", "--alpha", "1.0"], "upsample_mse", "torchvision", id="v2-upsample_mse"),
]


def run_stats_only(folder: Path, out: Path, method: str, setting: list[str], scorer: str, backend: str) -> dict:
    """``apt-viz run --stats-only`` of the folder: {input path: stats.json}."""
    result = runner.invoke(app, route(["run", str(folder), "-o", str(out), "--stats-only", "--no-fidelity", "-m", method, *setting,
                                       "--scorer", scorer, "--backend", backend, "--device", "cpu", "-q"]))
    assert result.exit_code == 0, result.output
    records = [json.loads(path.read_text()) for path in out.glob("*/stats.json")]
    return {record["input"]: record for record in records}


@pytest.fixture
def one_torch_thread():
    """upsample_mse's interpolation rounds its last bit differently with another torch thread count (its
    vectorised loops split where the threads split), so both commands must score with the same count:
    the stats engine gives its scoring process the cores its workers leave free, here one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("args, scorer, backend", CASES)
def test_rows_equal_run_stats_only(photo_folder, tmp_path, one_torch_thread, args, scorer, backend):
    table = tmp_path / "stats.parquet"
    workers = str(os.cpu_count() or 1)  # no core left: the scoring process runs one thread, as run does here
    result = stats(photo_folder, "-o", table, *args, "--scorer", scorer, "--backend", backend, "--device", "cpu",
                   "--workers", workers, "--batch-size", "4")
    assert result.exit_code == 0, result.output
    rows = read_rows(table)
    method = args[1]
    values = [args[i + 1] for i, arg in enumerate(args) if arg in ("--alpha", "--thresholds")]
    settings = [v.split(",") for v in values] if method == "v1" else [[a] for a in values[0].split(",")]
    assert len(rows) == 7 * len(settings)
    for index, setting in enumerate(settings):
        option = ["--thresholds", ",".join(setting)] if method == "v1" else ["--alpha", setting[0]]
        expected = run_stats_only(photo_folder, tmp_path / f"run{index}", method, option, scorer, backend)
        label = {"v1": "v1 thresholds=", "v2": "v2 alpha=", "budget": "budget alpha="}[method]
        mine = [row for row in rows if row["setting"].startswith(label) and
                [float(v) for v in row["setting"].split("=")[1].split(",")] == [float(v) for v in setting]]
        assert sorted(row["path"] for row in mine) == sorted(expected)
        for row in mine:
            record = expected[row["path"]]
            assert row["error"] is None
            assert (row["width"], row["height"]) == (record["original_size"]["width"], record["original_size"]["height"])
            assert (row["resized_width"], row["resized_height"]) == (record["resized_size"]["width"], record["resized_size"]["height"])
            assert (row["scorer"], row["backend"], row["method"]) == (record["scorer"], record["backend"], record["method"])
            assert row["alpha"] == record["alpha"]
            assert row["thresholds"] == record["thresholds"]  # v2: the effective per-image ones, bit for bit
            assert row["base_tokens"] == record["base_tokens"]
            assert row["vision_tokens"] == record["vision_tokens"]
            assert [row["tokens_14"], row["tokens_28"], row["tokens_56"]] == [record["tokens_per_scale"][s] for s in ("14", "28", "56")]
            assert row["retention"] == record["retention"]
            assert row["target_retention"] == record["target_retention"]
            assert row["llm_tokens"] == record["llm_tokens"]
            assert row["baseline_llm_tokens"] == record["baseline_llm_tokens"]
            assert row["llm_retention"] == record["llm_retention"]
            info = record["budget_info"]
            assert (row["budget"], row["clamped"]) == ((info["budget"], info["clamped"]) if info else (None, None))
            flops = record["flops"]
            assert (row["vision_flops"], row["baseline_vision_flops"], row["prefill_flops"], row["baseline_prefill_flops"],
                    row["flops_architecture"]) == (flops["vision_flops"], flops["baseline_vision_flops"], flops["prefill_flops"],
                                                   flops["baseline_prefill_flops"], flops["architecture"])


# --- settings lists ------------------------------------------------------------------------------------

def test_a_list_of_alphas_equals_separate_runs(photo_folder, tmp_path):
    together = tmp_path / "together.parquet"
    assert stats(photo_folder, "-o", together, "-m", "budget", "--alpha", "0.2,0.45", "--device", "cpu",
                 "--save-masks").exit_code == 0
    separate = []
    for alpha in ("0.2", "0.45"):
        table = tmp_path / f"alone_{alpha}.parquet"
        assert stats(photo_folder, "-o", table, "-m", "budget", "--alpha", alpha, "--device", "cpu",
                     "--save-masks", "--workers", "1", "--batch-size", "1").exit_code == 0
        separate += read_rows(table)
    assert read_rows(together) == sorted(separate, key=lambda row: (row["path"], row["setting"]))


def test_v1_threshold_pairs_in_both_syntaxes(photo_folder, tmp_path):
    repeated, joined = tmp_path / "repeated.parquet", tmp_path / "joined.parquet"
    assert stats(photo_folder, "-o", repeated, "--thresholds", "3", "2", "--thresholds", "4,3", "--device", "cpu").exit_code == 0
    assert stats(photo_folder, "-o", joined, "--thresholds", "3,2;4,3", "--device", "cpu").exit_code == 0
    rows = read_rows(repeated)
    assert {row["setting"] for row in rows} == {"v1 thresholds=3,2", "v1 thresholds=4,3"}
    assert rows == read_rows(joined)


# --- inputs and failures -----------------------------------------------------------------------------

def test_bad_inputs_get_error_rows_and_the_run_goes_on(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PHOTO_PATHS["coffee"], folder / "good.jpg")
    (folder / "text.jpg").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    data = PHOTO_PATHS["rocket"].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (402, 2)).save(folder / "too_wide.png")  # aspect ratio 201: smart_resize refuses it
    table = tmp_path / "stats.parquet"
    result = stats(folder, "-o", table, "-m", "v2", "--alpha", "1,1.5", "--device", "cpu")
    assert result.exit_code == 1, result.output
    rows = read_rows(table)
    assert len(rows) == 5 * 2
    errors = {Path(row["path"]).name: row["error"] for row in rows if row["error"] is not None}
    assert set(errors) == {"text.jpg", "empty.png", "truncated.jpg", "too_wide.png"}
    assert "not a readable image" in errors["text.jpg"] and "empty file" in errors["empty.png"]
    assert "aspect ratio" in errors["too_wide.png"]
    too_wide = next(row for row in rows if row["path"].endswith("too_wide.png"))
    assert (too_wide["width"], too_wide["height"], too_wide["vision_tokens"]) == (402, 2, None)  # known before resizing
    assert {row["setting"] for row in rows if row["path"].endswith("text.jpg")} == {"v2 alpha=1", "v2 alpha=1.5"}
    assert all(row["vision_tokens"] > 0 for row in rows if row["error"] is None)
    assert "failed: " in result.stderr and "text.jpg: not a readable image" in result.stderr


def test_list_files_of_paths(photo_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(PHOTO_PATHS["chelsea"], tmp_path / "chelsea.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# training subset\n\nchelsea.jpg\n{photo_folder}\n{photo_folder / 'coffee.jpg'}\nmissing.jpg\n")
    result = stats(f"@{listing}", "-o", "out.parquet", "-m", "budget", "--alpha", "0.4", "--device", "cpu")
    assert result.exit_code == 1, result.output  # missing.jpg: an error row, not a usage error
    rows = read_rows(tmp_path / "out.parquet")
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)) == 1 + 7 + 1  # coffee.jpg is listed twice, processed once
    assert "chelsea.jpg" in paths and "missing.jpg" in paths
    assert "no such file" in next(row["error"] for row in rows if row["path"] == "missing.jpg")


@pytest.mark.parametrize("args, message", [
    (["-m", "v1", "--alpha", "0.3"], "--alpha applies to v2 and budget"),
    (["-m", "budget"], "budget needs --alpha"),
    (["-m", "budget", "--alpha", "0.3,1.5"], "alpha must be in (0, 1]"),
    (["-m", "v2", "--thresholds", "3,2"], "--thresholds applies to v1"),
    (["--thresholds", "3,2,1"], "needs 2 values"),
    (["--resume", "--engine", "ray"], "--resume is for the local engine"),
])
def test_usage_errors(photo_folder, tmp_path, args, message):
    result = stats(photo_folder, "-o", tmp_path / "out.parquet", *args, "--device", "cpu")
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out.parquet").exists()


def test_output_must_be_given_and_not_a_folder_nor_remote(photo_folder, tmp_path):
    assert stats(photo_folder).exit_code == 2
    result = stats(photo_folder, "-o", tmp_path, "--device", "cpu")
    assert result.exit_code == 2 and "is a folder" in result.output
    result = stats(photo_folder, "-o", "s3://bucket/stats.parquet", "--device", "cpu")
    assert result.exit_code == 2 and "--engine ray only" in " ".join(result.output.split())


# --- resume (in-process parts; killed subprocesses are in test_stats_resume.py) -----------------------

def test_resume_adds_only_missing_settings_and_refuses_other_image_settings(photo_folder, tmp_path):
    table = tmp_path / "stats.parquet"
    assert stats(photo_folder, "-o", table, "-m", "v2", "--alpha", "1", "--device", "cpu").exit_code == 0
    first = read_rows(table)
    result = stats(photo_folder, "-o", table, "-m", "v2", "--alpha", "1,1.3", "--resume", "--device", "cpu",
                   "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["processed"] == 7 and document["skipped_existing"] == 0  # each image needed alpha 1.3
    rows = read_rows(table)
    assert len(rows) == 14 and [row for row in rows if row["setting"] == "v2 alpha=1"] == first
    again = json.loads(stats(photo_folder, "-o", table, "-m", "v2", "--alpha", "1,1.3", "--resume",
                             "--device", "cpu", "--json").stdout)
    assert (again["processed"], again["skipped_existing"]) == (0, 7) and read_rows(table) == rows
    other = stats(photo_folder, "-o", table, "-m", "v2", "--alpha", "1", "--resume", "--scorer", "laplacian",
                  "--device", "cpu")
    assert other.exit_code == 2 and "scorer entropy (now laplacian)" in " ".join(other.output.split())


def test_without_resume_the_table_is_replaced(photo_folder, tmp_path):
    table = tmp_path / "stats.parquet"
    assert stats(photo_folder, "-o", table, "-m", "v2", "--device", "cpu").exit_code == 0
    assert stats(photo_folder / "coffee.jpg", "-o", table, "-m", "budget", "--alpha", "0.5", "--device", "cpu").exit_code == 0
    assert [(Path(row["path"]).name, row["setting"]) for row in read_rows(table)] == [("coffee.jpg", "budget alpha=0.5")]


def test_an_interrupted_runs_parts_need_resume(photo_folder, tmp_path):
    table = tmp_path / "stats.parquet"
    one = tmp_path / "one.parquet"  # coffee.jpg alone: a valid committed part of the same image settings
    assert stats(photo_folder / "coffee.jpg", "-o", one, "--device", "cpu").exit_code == 0
    (tmp_path / "stats.parquet.partial").mkdir()
    shutil.copy(one, tmp_path / "stats.parquet.partial" / "part-000000.parquet")
    result = stats(photo_folder, "-o", table, "--device", "cpu")
    assert result.exit_code == 2 and "rerun with --resume" in " ".join(result.output.split())
    resumed = stats(photo_folder, "-o", table, "--device", "cpu", "--resume", "--json")
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["processed"] == 6  # coffee.jpg was there
    assert not (tmp_path / "stats.parquet.partial").exists()
    assert len(read_rows(table)) == 7


# --- the end of a run --------------------------------------------------------------------------------

def test_summary_json_and_plot(photo_folder, tmp_path):
    table = tmp_path / "stats.parquet"
    result = stats(photo_folder, "-o", table, "-m", "budget", "--alpha", "0.3,0.6", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    summary = document["summary"]
    assert [entry["setting"] for entry in summary["settings"]] == ["budget alpha=0.3", "budget alpha=0.6"]
    low, high = summary["settings"]
    assert low["images"] == high["images"] == 7 and low["failed"] == 0
    assert abs(low["retention"]["p50"] - 0.3) < 0.01 and abs(high["retention"]["p50"] - 0.6) < 0.01
    assert low["llm_savings"]["mean"] > high["llm_savings"]["mean"] > 0
    assert set(low["llm_tokens"]) == {"mean", "p5", "p25", "p50", "p75", "p95"}
    assert document["images_per_second"] > 0 and document["processed"] == 7
    with Image.open(document["plot"]) as plot:
        assert plot.format == "PNG" and plot.width > 300
    human = stats(photo_folder, "-o", tmp_path / "again.parquet", "-m", "budget", "--alpha", "0.3", "--device", "cpu")
    assert "budget alpha=0.3" in human.stdout and "images/s" in human.stdout and "again.savings.png" in human.stdout


@pytest.mark.slow
def test_stats_help_is_instant():
    result, imported = cli_imports(
        ["stats", "--help"], watch=("torch", "pyarrow", "ray", "transformers", "matplotlib", "numpy", "pandas")
    )
    assert result.returncode == 0, result.stderr
    assert "--alpha" in result.stdout and "--resume" in result.stdout
    assert imported == []


# --- the GPU's path, on the CPU ---------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 3])
def test_batched_scoring_gives_the_same_table(photo_folder, tmp_path, batch_size):
    """With a GPU the main process scores batches of same-size images (shared-memory slots, size groups,
    BatchScorer); run here on the CPU, that path must give the table of the per-image workers."""
    from apt_viz.core.config import APTConfig
    from apt_viz.stats.inputs import expand_stats_inputs
    from apt_viz.stats.local import run_local
    from apt_viz.stats.settings import StatsPlan, settings_of

    plan = StatsPlan(APTConfig(device="cpu"), settings_of("budget", [0.2, 0.6]), save_masks=True)
    paths = [*expand_stats_inputs([str(photo_folder)]), str(tmp_path / "missing.jpg")]
    tables = {}
    for scoring in ("workers", "batched"):
        tables[scoring] = tmp_path / f"{scoring}.parquet"
        report = run_local(plan, paths, str(tables[scoring]), workers=2, batch_size=batch_size, scoring=scoring)
        assert (report.processed, report.failed, report.rows) == (8, 1, 16)
    assert read_rows(tables["batched"]) == read_rows(tables["workers"])
