"""``--model-family`` and ``--model DIR`` on every command: the CLI's numbers are that processor's.

The reference is apt-viz's transformers image processor (``APTQwen2VLImageProcessor``, which the
hf tests pin to the stock ``Qwen2VLImageProcessor``) configured as the family's processor, or loaded
from the checkpoint folder with ``from_pretrained``, on the bundled photos; the stock processor's
``image_grid_thw`` gives the resized size and N.
"""
from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from apt_viz.cli import app, route
from apt_viz.core.families import family_spec
from apt_viz.hf import APTQwen2VLImageProcessor
from apt_viz.imaging import load_image

from helpers import PHOTO_NAMES, PHOTO_PATHS, cli_imports

runner = CliRunner()
PHOTOS = {name: load_image(PHOTO_PATHS[name]) for name in PHOTO_NAMES}
SETTINGS = {"v1": {}, "budget": {"alpha": 0.3}}


def invoke(*args):
    return runner.invoke(app, route([str(a) for a in args]))


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def family_processor(family: str) -> APTQwen2VLImageProcessor:
    """The APT image processor configured as ``family``'s published processor."""
    spec = family_spec(family)
    return APTQwen2VLImageProcessor(
        patch_size=spec.patch_size, merge_size=spec.merge_size, temporal_patch_size=spec.temporal_patch_size,
        size={"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels},
        image_mean=list(spec.image_mean), image_std=list(spec.image_std),
    )


def processor_numbers(processor: APTQwen2VLImageProcessor, name: str, method: str, settings: dict) -> dict:
    """Resized size, tokens per scale, N and LLM tokens of one photo, as the processor decides them."""
    out = processor([PHOTOS[name]], return_tensors="pt", patch_selection_method=method, **settings)
    (_, grid_h, grid_w), = out["image_grid_thw"].tolist()
    stats = processor.last_token_stats[0]
    return {
        "resized": (grid_h * processor.patch_size, grid_w * processor.patch_size),
        "tokens_per_scale": {str(size): n for size, n in stats.tokens_per_scale.items()},
        "base_tokens": grid_h * grid_w,
        "llm_tokens": int(out["apt_num_llm_tokens"][0]),
    }


def record_numbers(record: dict) -> dict:
    return {
        "resized": (record["resized_size"]["height"], record["resized_size"]["width"]),
        "tokens_per_scale": record["tokens_per_scale"],
        "base_tokens": record["base_tokens"],
        "llm_tokens": record["llm_tokens"],
    }


def run_json(tmp_path, method: str, settings: dict, *options) -> list[dict]:
    alpha = ["--alpha", str(settings["alpha"])] if "alpha" in settings else []
    result = invoke("run", *PHOTO_PATHS.values(), "-o", tmp_path / "out", "--stats-only", "--json", "--device", "cpu",
                    "-m", method, *alpha, *options)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["images"]


@pytest.fixture
def checkpoint(tmp_path):
    """A Qwen2.5-VL config and a stock image processor with non-default settings, saved with save_pretrained."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLImageProcessor

    folder = tmp_path / "checkpoint"
    Qwen2_5_VLConfig().save_pretrained(folder)
    Qwen2VLImageProcessor(patch_size=16, min_pixels=100_000, max_pixels=200_000, image_mean=[0.4, 0.5, 0.6],
                          image_std=[0.3, 0.2, 0.1]).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_model_family_qwen3_vl_equals_its_processor(tmp_path, method):
    records = run_json(tmp_path, method, SETTINGS[method], "--model-family", "qwen3-vl")
    processor = family_processor("qwen3-vl")
    for name, record in zip(PHOTO_NAMES, records):
        assert record_numbers(record) == processor_numbers(processor, name, method, SETTINGS[method]), name
        assert record["config"]["model_family"] == "qwen3-vl" and record["config"]["patch_size"] == 16
        assert record["config"]["image_mean"] == [0.5, 0.5, 0.5]
        assert set(record["grid_sizes"]) == {"16", "32", "64"}


def test_model_dir_equals_that_checkpoints_processor(tmp_path, checkpoint):
    from transformers import Qwen2VLImageProcessor

    records = run_json(tmp_path, "budget", SETTINGS["budget"], "--model", checkpoint)
    apt = APTQwen2VLImageProcessor.from_pretrained(checkpoint)
    stock = Qwen2VLImageProcessor.from_pretrained(checkpoint)
    for name, record in zip(PHOTO_NAMES, records):
        expected = processor_numbers(apt, name, "budget", SETTINGS["budget"])
        assert record_numbers(record) == expected, name
        grid = stock([PHOTOS[name]], return_tensors="pt")["image_grid_thw"][0].tolist()
        assert expected["resized"] == (grid[1] * 16, grid[2] * 16)
        config = record["config"]
        assert (config["model_family"], config["patch_size"]) == ("qwen2.5-vl", 16)
        assert (config["min_pixels"], config["max_pixels"]) == (100_000, 200_000)
        assert config["image_mean"] == [0.4, 0.5, 0.6] and config["image_std"] == [0.3, 0.2, 0.1]
    assert records[0]["resized_size"] != {"width": 512, "height": 512}  # max_pixels did shrink the astronaut


def test_explicit_options_beat_model_dir(tmp_path, checkpoint):
    record, = [r for r in run_json(tmp_path, "v1", {}, "--model", checkpoint, "--patch-size", "14",
                                   "--max-pixels", "300000") if r["input"].endswith("chelsea.jpg")]
    assert (record["config"]["patch_size"], record["config"]["max_pixels"]) == (14, 300_000)
    assert record["config"]["min_pixels"] == 100_000  # still the checkpoint's
    assert record["config"]["model_family"] == "qwen2.5-vl"


def test_sweep_compare_and_stats_take_the_family(tmp_path, checkpoint):
    chelsea = PHOTO_PATHS["chelsea"]
    expected = processor_numbers(family_processor("qwen3-vl"), "chelsea", "budget", {"alpha": 0.5})

    sweep = invoke("sweep", chelsea, "-o", tmp_path / "sweep", "-m", "budget", "--values", "0.5", "--json",
                   "--device", "cpu", "--model-family", "qwen3-vl")
    assert sweep.exit_code == 0, sweep.output
    row, = json.loads(sweep.stdout)["per_image"]
    assert (row["base_tokens"], row["llm_tokens"]) == (expected["base_tokens"], expected["llm_tokens"])

    compare = invoke("compare", chelsea, "-o", tmp_path / "compare", "--device", "cpu", "--model-family", "qwen3-vl")
    assert compare.exit_code == 0, compare.output
    budget_line, = [line for line in compare.stdout.splitlines() if "budget alpha 0.5" in line]
    assert f"/{expected['base_tokens']}" in budget_line and f"{expected['llm_tokens']}/" in budget_line

    table = tmp_path / "stats.parquet"
    stats = invoke("stats", chelsea, "-o", table, "-m", "budget", "--alpha", "0.5", "-j", "1", "--device", "cpu",
                   "--no-plot", "--json", "--model-family", "qwen3-vl")
    assert stats.exit_code == 0, stats.output
    row, = pq.read_table(table).to_pylist()
    assert (row["base_tokens"], row["llm_tokens"]) == (expected["base_tokens"], expected["llm_tokens"])
    # FLOPs on Qwen3-VL's own architecture, or none while the FLOPs model lacks it; never Qwen2-VL's
    assert row["flops_architecture"] in (None, "qwen3-vl-2b")
    setting, = json.loads(stats.stdout)["summary"]["settings"]
    assert (setting["vision_flops_savings"] is None) == (row["flops_architecture"] is None)


@pytest.mark.parametrize("command", ["run", "sweep", "compare", "stats"])
def test_a_bad_model_dir_is_a_usage_error_on_every_command(tmp_path, command):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    output = ["-o", tmp_path / ("t.parquet" if command == "stats" else "out")]
    result = invoke(command, PHOTO_PATHS["chelsea"], *output, "--model", tmp_path / "ckpt")
    assert result.exit_code == 2, result.output
    assert "model_type 'llava' is not a model family apt-viz knows" in one_line(result.output)
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_model_and_model_family_must_agree(tmp_path, checkpoint):
    result = invoke(PHOTO_PATHS["chelsea"], "-o", tmp_path / "out", "--model", checkpoint, "--model-family", "qwen3-vl")
    assert result.exit_code == 2
    assert "is a qwen2.5-vl checkpoint (model_type qwen2_5_vl), not qwen3-vl" in one_line(result.output)
    agree = invoke(PHOTO_PATHS["chelsea"], "-o", tmp_path / "out", "--stats-only", "--device", "cpu", "--model",
                   checkpoint, "--model-family", "qwen2.5-vl")
    assert agree.exit_code == 0, agree.output


def test_unknown_family_is_a_usage_error(tmp_path):
    result = invoke(PHOTO_PATHS["chelsea"], "-o", tmp_path / "out", "--model-family", "qwen4")
    assert result.exit_code == 2 and "'qwen4' is not one of 'qwen2-vl', 'qwen2.5-vl', 'qwen3-vl', 'qwen3.5'" in (
        one_line(result.output))


def test_model_dir_does_not_import_transformers(tmp_path, checkpoint):
    argv = ["run", str(PHOTO_PATHS["chelsea"]), "-o", str(tmp_path / "out"), "--stats-only", "--quiet", "--device",
            "cpu", "--model", str(checkpoint)]
    result, imported = cli_imports(argv, watch=("transformers", "torchvision"))
    assert imported == [], result.stderr
    assert "Traceback" not in result.stderr and "failed" not in result.stderr, result.stderr
    assert json.loads((tmp_path / "out" / "chelsea.jpg" / "stats.json").read_text())["config"]["patch_size"] == 16
