"""``apt-viz bench`` on the tiny preset on the CPU (short runs), --flops-only, usage errors, start-up, GPU script.

Timings on a shared CPU are not pinned (they are noise at this size); what is pinned: the files,
the token counts (against the image processor on the same pixels), the FLOPs (against the cost
model), the stock / APT structure of the rows, and that the timed quantities are there.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from apt_viz.cli import app
from apt_viz.core.architectures import QWEN2_VL_7B
from apt_viz.core.flops import prefill_flops, vision_flops
from apt_viz.core.qwen2vl import ResizeSpec
from apt_viz.imaging import load_image

from helpers import REPO_ROOT, cli_imports

runner = CliRunner()
QUICK = ["--preset", "tiny", "--device", "cpu", "--alphas", "0.3,1", "--batch", "1,2", "--megapixels", "0.05",
         "--warmup", "0", "--repeats", "2"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def apt_counts(paths, alpha: float, megapixels: float | None) -> list[tuple[int, int, int]]:
    """(N, APT rows, APT LLM tokens) per image from the APT image processor on the bench's pixels."""
    from apt_viz.bench.engine import BenchSettings, prepare_images
    from apt_viz.hf import APTQwen2VLImageProcessor

    images = prepare_images([load_image(p) for p in paths], BenchSettings(megapixels=megapixels), ResizeSpec())
    out = APTQwen2VLImageProcessor(patch_selection_method="budget", alpha=alpha)(images, return_tensors="pt")
    return list(zip(out["image_grid_thw"].prod(-1).tolist(), out["apt_num_tokens"].tolist(),
                    out["apt_num_llm_tokens"].tolist()))


def test_bench_measures_the_tiny_model_and_writes_its_files(tmp_path, photo_paths):
    from apt_viz.bench.presets import preset_architecture

    paths = [photo_paths["astronaut"], photo_paths["coffee"]]
    result = invoke("bench", *paths, *QUICK, "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert "random weights: speed only" in result.stdout
    # Not a terminal: the compact table, one line per row within 80 columns.
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["batch", "setting", "patches"] for line in lines)
    assert all(len(line) <= 80 for line in lines if not line.startswith(("random weights", "written")))
    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["weights"] == "random weights: speed only" and document["model"] == "tiny"
    assert document["dtype"] == "float32" and document["attention"] == "sdpa"
    assert [(row["batch"], row["setting"]) for row in document["rows"]] == [
        (1, "stock"), (1, "alpha 0.3"), (1, "alpha 1"), (2, "stock"), (2, "alpha 0.3"), (2, "alpha 1"),
    ]

    arch, text = preset_architecture("tiny"), 16 + 2  # question and the two vision delimiters
    counts = {alpha: apt_counts(paths, alpha, 0.05) for alpha in (0.3, 1.0)}
    for row in document["rows"]:
        images = counts[row["alpha"] or 1.0][: row["batch"]]  # batch 2 = both photos
        if row["alpha"] is None:
            tokens, llm = [n for n, _, _ in images], [n // 4 for n, _, _ in images]
        else:
            tokens, llm = [t for _, t, _ in images], [lt for _, _, lt in images]
        assert (row["vision_tokens"], row["llm_tokens"]) == (sum(tokens), sum(llm))
        assert row["prompt_tokens"] == sum(llm) + text * row["batch"]
        assert row["vision_flops"] == sum(vision_flops(arch, n, lt) for n, lt in zip(tokens, llm))
        assert row["prefill_flops"] == sum(prefill_flops(arch, lt + text) for lt in llm)
        assert len(row["vision"]["times_ms"]) == 2 and row["vision"]["median_ms"] > 0
        assert row["prefill"]["median_ms"] > 0
        assert (row["selection"] is None) == (row["alpha"] is None)  # the selection is APT's cost
        if row["selection"] is not None:  # counted in the APT vision time, run by run
            for selection, encoder, total in zip(row["selection"]["times_ms"], row["encoder"]["times_ms"],
                                                 row["vision"]["times_ms"]):
                assert total == pytest.approx(selection + encoder, rel=1e-6)
        if row["alpha"] == 1.0:  # budget alpha 1 keeps every base patch: the stock counts
            assert row["speedup"]["vision_flops"] == 1.0 and row["speedup"]["prefill_flops"] == 1.0
        assert row["vision_peak_mb"] is not None and row["vision_peak_mb"] >= 0
    n, rows, llm = counts[0.3][0]
    assert (n, rows) == (256, 76) and llm < n // 4  # 224 x 224 px: budget round(0.3 * 256) = 77, 76 kept

    table = list(csv.DictReader(io.StringIO((tmp_path / "bench.csv").read_text())))
    assert [(r["batch"], r["setting"]) for r in table] == [
        (str(row["batch"]), row["setting"]) for row in document["rows"]
    ]
    assert float(table[1]["vision_ms"]) == pytest.approx(document["rows"][1]["vision"]["median_ms"], abs=1e-3)
    with Image.open(tmp_path / "bench.png") as plot:
        assert plot.format == "PNG" and plot.width > 800


def test_flops_only_builds_no_model_and_counts_the_7b(tmp_path, photo_paths):
    paths = [photo_paths["rocket"]]
    result = invoke("bench", *paths, "--flops-only", "--preset", "qwen2-vl-7b", "--alphas", "0.3", "--json",
                    "-o", tmp_path)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["flops_only"] and document["device"] == "analytic (no model)"
    stock, apt = document["rows"]
    (n, rows, llm), = apt_counts(paths, 0.3, None)
    assert (stock["vision_tokens"], apt["vision_tokens"], apt["llm_tokens"]) == (n, rows, llm)
    assert stock["vision_flops"] == vision_flops(QWEN2_VL_7B, n, n // 4)
    assert apt["vision_flops"] == vision_flops(QWEN2_VL_7B, rows, llm)
    assert apt["prefill_flops"] == prefill_flops(QWEN2_VL_7B, llm + 18)
    assert apt["vision"] is None and apt["prefill"] is None and apt["vision_peak_mb"] is None
    assert apt["speedup"]["vision_flops"] > 3  # 30% of the patches, attention quadratic in them
    assert (tmp_path / "bench.png").is_file() and (tmp_path / "bench.csv").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "v1"], "use --method budget or v2"),
        (["--alphas", "0.3,1.5"], "alpha must be in (0, 1] for budget"),
        (["--alphas", "a,b"], "is not a comma-separated list of numbers"),
        (["--batch", "0"], "batch sizes must be >= 1"),
        (["--preset", "qwen2-vl-72b"], "unknown preset 'qwen2-vl-72b'"),
        (["--preset", "tiny", "--model", "."], "give --model or --preset, not both"),
        (["--model", ".", "--layers", "2"], "--layers cuts a preset"),
        (["--model", "."], "no config.json there"),
        (["--parts", "decode"], "parts must be among vision, prefill"),
    ],
)
def test_unusable_settings_are_usage_errors(photo_paths, args, message):
    result = invoke("bench", photo_paths["coffee"], *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_a_usage_error(photo_paths):
    result = invoke("bench", photo_paths["coffee"], "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA device" in result.output


def test_an_unreadable_input_fails_alone(tmp_path, photo_paths):
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    result = invoke("bench", bad, photo_paths["coffee"], "--flops-only", "--alphas", "0.5", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "broken.jpg" in result.output
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["rows"][0]["batch"] == 1


@pytest.mark.slow
def test_bench_help_imports_no_heavy_module():
    result, imported = cli_imports(
        ["bench", "--help"], watch=("torch", "torchvision", "transformers", "matplotlib", "cv2", "numpy")
    )
    assert result.returncode == 0, result.stderr
    assert imported == []


@pytest.mark.slow
def test_the_gpu_script_runs_its_code_path_on_the_cpu(tmp_path):
    """benchmarks/bench_model.py with the tiny preset on the CPU: every figure it prints is computed."""
    out = tmp_path / "figures.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_model.py"), "--device", "cpu",
               "--preset-vision", "tiny", "--preset-prefill", "tiny", "--megapixels", "0.03", "--warmup", "0",
               "--repeats", "1", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    for figure in ("tiny vision, batch 8, alpha 0.3", "tiny vision, batch 1, alpha 0.3",
                   "tiny prefill, batch 8, alpha 0.3", "vision peak memory", "prefill peak memory"):
        assert figure in result.stdout
    documents = json.loads(out.read_text())
    assert {row["batch"] for row in documents["vision"]["rows"]} == {1, 8}
    assert {row["batch"] for row in documents["prefill"]["rows"]} == {8}
    assert all(row["prefill"] is None and row["vision"] for row in documents["vision"]["rows"])  # --parts
    assert all(row["vision"] is None and row["prefill"] for row in documents["prefill"]["rows"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_bench_on_cuda_uses_bf16_and_sdpa(tmp_path, photo_paths):
    result = invoke("bench", photo_paths["coffee"], *[a if a != "cpu" else "cuda" for a in QUICK], "-o", tmp_path)
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["dtype"] == "bfloat16" and document["attention"] == "sdpa"
    assert all(row["vision_peak_mb"] is not None for row in document["rows"])


def test_a_wide_terminal_gets_the_full_table(photo_paths):
    from rich.console import Console

    from apt_viz.bench.engine import BenchSettings, bench_table, compact_bench_table, run_bench
    from apt_viz.report.tables import fitted_table

    settings = BenchSettings(alphas=(0.5,), warmup=0, repeats=1, megapixels=0.03)
    result = run_bench([load_image(photo_paths["chelsea"])], settings, preset="tiny")
    console = Console(width=250, force_terminal=True, record=True)
    console.print(fitted_table(console, bench_table(result), lambda _: compact_bench_table(result)))
    text = console.export_text()
    for header in ("selection ms", "vision speedup", "prefill speedup", "vision peak MB", "FLOPs speedup"):
        assert header in text
    assert "stock" in text and "alpha 0.5" in text
