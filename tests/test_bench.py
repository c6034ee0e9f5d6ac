"""``apt-viz bench`` on the tiny preset on the CPU (short runs), --flops-only for every family, a checkpoint
folder, usage errors, the memory probe, start-up, the GPU script.

Timings on a shared CPU are not pinned (they are noise at this size); what is pinned: the files,
the token counts (against the image processor on the same pixels), the FLOPs (against the cost
model), the stock / APT structure of the rows, and that the timed quantities are there.
"""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from apt_viz.cli import app
from apt_viz.cli.bench import PRESET_NAMES
from apt_viz.core.architectures import ARCHITECTURES, QWEN2_VL_7B
from apt_viz.core.flops import prefill_flops, vision_flops
from apt_viz.core.qwen2vl import ResizeSpec
from apt_viz.core.windows import stock_window_rows, window_rows
from apt_viz.imaging import load_image

from helpers import REPO_ROOT, cli_imports

runner = CliRunner()
QUICK = ["--preset", "tiny", "--device", "cpu", "--alphas", "0.3,1", "--batch-size", "1,2", "--megapixels", "0.05",
         "--warmup", "0", "--repeats", "2"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def apt_counts(paths, alpha: float, megapixels: float | None) -> list[tuple[int, int, int]]:
    """(N, APT rows, APT LLM tokens) per image from the APT image processor on the bench's pixels."""
    from apt_viz.bench import BenchSettings, prepare_images
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
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ["batch", "setting", "tokens", "ms"])
    assert lines[header - 1].split() == ["vision", "vision", "prefill"]  # two-line headers: vision tokens, ...
    assert all(len(line) <= 80 for line in lines if not line.startswith(("random weights", "written")))
    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["weights"] == "random weights: speed only" and document["model"] == "tiny"
    assert document["dtype"] == "float32" and document["attention"] == "sdpa"
    assert [(row["batch_size"], row["setting"]) for row in document["rows"]] == [
        (1, "stock"), (1, "alpha 0.3"), (1, "alpha 1"), (2, "stock"), (2, "alpha 0.3"), (2, "alpha 1"),
    ]

    arch, text = preset_architecture("tiny"), 16 + 2  # question and the two vision delimiters
    counts = {alpha: apt_counts(paths, alpha, 0.05) for alpha in (0.3, 1.0)}
    for row in document["rows"]:
        images = counts[row["alpha"] or 1.0][: row["batch_size"]]  # batch size 2 = both photos
        if row["alpha"] is None:
            tokens, llm = [n for n, _, _ in images], [n // 4 for n, _, _ in images]
        else:
            tokens, llm = [t for _, t, _ in images], [lt for _, _, lt in images]
        assert (row["vision_tokens"], row["llm_tokens"]) == (sum(tokens), sum(llm))
        assert row["prompt_tokens"] == sum(llm) + text * row["batch_size"]
        assert row["vision_flops"] == sum(vision_flops(arch, n, lt) for n, lt in zip(tokens, llm))
        assert row["prefill_flops"] == sum(prefill_flops(arch, lt + text) for lt in llm)
        assert len(row["vision"]["times_ms"]) == 2 and row["vision"]["median_ms"] > 0
        assert row["prefill"]["median_ms"] > 0
        # The image processor's call (APT: with its selection) is counted in the vision time, run by run.
        for processor, encoder, total in zip(row["processor"]["times_ms"], row["encoder"]["times_ms"],
                                             row["vision"]["times_ms"]):
            assert total == pytest.approx(processor + encoder, rel=1e-6) and processor > 0
        if row["alpha"] == 1.0:  # budget alpha 1 keeps every base patch: the stock counts
            assert row["speedup"]["vision_flops"] == 1.0 and row["speedup"]["prefill_flops"] == 1.0
        assert isinstance(row["vision_peak_mb"], float) and isinstance(row["prefill_peak_mb"], float)  # measured
    n, rows, llm = counts[0.3][0]
    assert (n, rows) == (256, 76) and llm < n // 4  # 224 x 224 px: budget round(0.3 * 256) = 77, 76 kept

    table = list(csv.DictReader(io.StringIO((tmp_path / "bench.csv").read_text())))
    assert [(r["batch_size"], r["setting"]) for r in table] == [
        (str(row["batch_size"]), row["setting"]) for row in document["rows"]
    ]
    assert float(table[1]["processor_ms"]) == pytest.approx(document["rows"][1]["processor"]["median_ms"], abs=1e-3)
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


def family_counts(arch, paths, alpha: float) -> list[tuple[int, int, int, list | None, list | None]]:
    """(N, APT rows, APT LLM tokens, APT windows, stock windows) per image, from the APT image processor at
    the family's patch size on the bench's pixels (the windows from its apt_* rows)."""
    from apt_viz.bench import BenchSettings, prepare_images
    from apt_viz.hf import APTQwen2VLImageProcessor

    spec = ResizeSpec(patch_size=arch.patch_size)
    images = prepare_images([load_image(p) for p in paths], BenchSettings(), spec)
    processor = APTQwen2VLImageProcessor(patch_size=arch.patch_size, patch_selection_method="budget", alpha=alpha)
    out = processor(images, return_tensors="pt")
    counts = []
    offsets = [0, *out["apt_num_tokens"].cumsum(0).tolist()]
    for i, (_, h, w) in enumerate(out["image_grid_thw"].tolist()):
        rows = slice(offsets[i], offsets[i + 1])
        windows = stock = None
        if arch.window_size:
            sides = out["apt_patch_sizes"][rows] // arch.patch_size
            windows = window_rows(out["apt_patch_positions"][rows], sides, (h, w), arch.window_cells)
            stock = stock_window_rows((h, w), arch.window_cells)
        counts.append((h * w, int(out["apt_num_tokens"][i]), int(out["apt_num_llm_tokens"][i]), windows, stock))
    return counts


@pytest.mark.parametrize("preset", list(PRESET_NAMES))
def test_flops_only_counts_every_family(tmp_path, photo_paths, preset):
    """Every preset's rows equal the cost model on the APT image processor's counts at the family's patch
    size (windows from the processor's rows for Qwen2.5-VL; deepstack and the hybrid LLM in the model)."""
    from apt_viz.bench.presets import PRESETS

    arch, paths = PRESETS[preset], [photo_paths["rocket"], photo_paths["chelsea"]]
    result = invoke("bench", *paths, "--flops-only", "--preset", preset, "--alphas", "0.3", "--batch-size", "2",
                    "--json", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["architecture"]["family"] == arch.family and document["model"] == preset
    stock, apt = document["rows"]
    counts = family_counts(arch, paths, 0.3)
    assert stock["vision_tokens"] == sum(n for n, *_ in counts)
    assert stock["vision_flops"] == sum(vision_flops(arch, n, n // 4, base) for n, _, _, _, base in counts)
    assert apt["vision_flops"] == sum(vision_flops(arch, rows, llm, windows) for _, rows, llm, windows, _ in counts)
    assert apt["prefill_flops"] == sum(prefill_flops(arch, llm + 18) for _, _, llm, _, _ in counts)
    assert apt["speedup"]["vision_flops"] > 2 and apt["speedup"]["prefill_flops"] > 1


def test_cli_preset_names_are_the_presets():
    from apt_viz.bench.presets import PRESETS

    assert tuple(PRESETS) == PRESET_NAMES


def save_checkpoint(folder, preset: str) -> None:
    """A stock checkpoint of a tiny preset (random weights), as save_pretrained writes it, with its image processor."""
    import transformers
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from apt_viz.bench.presets import PRESETS, preset_config

    config = preset_config(preset)
    model_class = {
        "qwen2-vl": transformers.Qwen2VLForConditionalGeneration,
        "qwen3-vl": transformers.Qwen3VLForConditionalGeneration,
    }[PRESETS[preset].family]
    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    Qwen2VLImageProcessor(patch_size=PRESETS[preset].patch_size).save_pretrained(folder)


def test_a_checkpoint_folder_is_benched_as_its_family(tmp_path, photo_paths):
    qwen2 = tmp_path / "tiny-qwen2-vl"
    save_checkpoint(qwen2, "tiny")
    result = invoke("bench", photo_paths["coffee"], "--model", qwen2, "--device", "cpu", "--alphas", "0.3",
                    "--megapixels", "0.05", "--warmup", "0", "--repeats", "1", "--json", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["weights"] == "checkpoint" and document["model"] == str(qwen2)
    assert document["architecture"]["family"] == "qwen2-vl" and document["architecture"]["name"] == "tiny-qwen2-vl"
    assert [row["setting"] for row in document["rows"]] == ["stock", "alpha 0.3"]
    assert document["rows"][1]["vision"]["median_ms"] > 0

    # Qwen3-VL: timed with its APT class (16 px patches, deepstack); counted alike.
    qwen3 = tmp_path / "tiny-qwen3-vl"
    save_checkpoint(qwen3, "tiny-qwen3-vl")
    timed = invoke("bench", photo_paths["coffee"], "--model", qwen3, "--device", "cpu", "--alphas", "0.3",
                   "--megapixels", "0.05", "--warmup", "0", "--repeats", "1", "--json", "-o", tmp_path / "out2")
    assert timed.exit_code == 0, timed.output
    rows = json.loads(timed.stdout)["rows"]
    assert [row["setting"] for row in rows] == ["stock", "alpha 0.3"] and rows[1]["vision"]["median_ms"] > 0
    counted = invoke("bench", photo_paths["coffee"], "--model", qwen3, "--flops-only", "--alphas", "0.3", "--json",
                     "-o", tmp_path / "out3")
    assert counted.exit_code == 0, counted.output
    architecture = json.loads(counted.stdout)["architecture"]
    assert (architecture["family"], architecture["patch_size"], architecture["deepstack_blocks"]) == (
        "qwen3-vl", 16, [0, 1, 2])


def test_a_family_without_an_apt_model_is_counted_not_timed(tmp_path, photo_paths, monkeypatch):
    import apt_viz.hf

    monkeypatch.delattr(apt_viz.hf, "APTQwen3VLForConditionalGeneration")
    qwen3 = tmp_path / "tiny-qwen3-vl"
    save_checkpoint(qwen3, "tiny-qwen3-vl")
    timed = invoke("bench", photo_paths["coffee"], "--model", qwen3, "--device", "cpu")
    assert timed.exit_code == 2
    assert "no APTQwen3VLForConditionalGeneration yet" in " ".join(timed.output.split())


def test_the_memory_probe_sees_an_allocation():
    """64 MiB filled in one call: the probe reports them (CPU: glibc maps and unmaps so large a block)."""
    from apt_viz.bench.memory import peak_memory_mb, return_freed_memory

    return_freed_memory()
    peak = peak_memory_mb(lambda: torch.ones(16 * 1024 * 1024), torch.device("cpu"))
    assert peak is not None and 64 <= peak < 72
    assert peak_memory_mb(lambda: None, torch.device("cpu")) < 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "v1"], "use --patch-selection-method budget or v2"),
        (["--alphas", "0.3,1.5"], "alpha must be in (0, 1] for budget"),
        (["--alphas", "a,b"], "is not a comma-separated list of numbers"),
        (["--batch-size", "0"], "batch sizes must be >= 1"),
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


def test_the_old_flag_names_still_work_with_a_warning(tmp_path, photo_paths):
    """--method and --batch (apt-viz 0.2) are hidden, deprecated spellings of -m and --batch-size."""
    result = invoke("bench", photo_paths["coffee"], "--flops-only", "--method", "v2", "--batch", "2",
                    "--alphas", "0.5", "--json", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert "warning: --method is deprecated and will be removed; use -m/--patch-selection-method" in result.stderr
    assert "warning: --batch is deprecated and will be removed; use --batch-size" in result.stderr
    document = json.loads(result.stdout)
    assert document["settings"]["method"] == "v2" and document["settings"]["batch_sizes"] == [2]
    help_text = invoke("bench", "--help").output
    assert "--batch-size" in help_text and "--method" not in help_text and "--batch " not in help_text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_a_usage_error(photo_paths):
    result = invoke("bench", photo_paths["coffee"], "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA device" in result.output


def test_an_unreadable_input_fails_alone(tmp_path, photo_paths):
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    result = invoke("bench", bad, photo_paths["coffee"], "--flops-only", "--alphas", "0.5", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "broken.jpg" in result.output
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["rows"][0]["batch_size"] == 1


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
    assert {row["batch_size"] for row in documents["vision"]["rows"]} == {1, 8}
    assert {row["batch_size"] for row in documents["prefill"]["rows"]} == {8}
    for preset in ARCHITECTURES:  # the analytic ratios of every family, side by side
        assert re.search(rf"{re.escape(preset)} +vision +\d+\.\d\dx +prefill +\d+\.\d\dx", result.stdout)
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

    from apt_viz.bench import BenchSettings, bench_table, compact_bench_table, run_bench
    from apt_viz.report.tables import fitted_table

    settings = BenchSettings(alphas=(0.5,), warmup=0, repeats=1, megapixels=0.03)
    result = run_bench([load_image(photo_paths["chelsea"])], settings, preset="tiny")
    console = Console(width=250, force_terminal=True, record=True)
    console.print(fitted_table(console, bench_table(result), lambda _: compact_bench_table(result)))
    text = console.export_text()
    for header in ("processor ms", "vision speedup", "prefill speedup", "vision peak MB", "FLOPs speedup"):
        assert header in text
    assert "stock" in text and "alpha 0.5" in text
