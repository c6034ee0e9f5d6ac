"""``apt-viz eval`` end to end on a tiny random Qwen2-VL checkpoint written with save_pretrained (CPU, no download).

What is pinned: budget alpha 1.0 keeps every base patch, so it reproduces the stock model (KL <= 1e-6,
the same top-1 token and answer, the stock token counts); alpha 0.3 costs fewer vision and LLM
tokens, the very numbers ``apt-viz run`` reports for the image; a uniform baseline matched to the
stock count is the stock model; the random baseline costs APT's vision tokens; the stock pass runs
once per batch; a missing image is an error row (exit 1); a missing or unusable --model or DATA is
one line (exit 2); a run killed mid-way completes with --resume without a duplicate row. Tiny saved
checkpoints of Qwen2.5-VL, Qwen3-VL and Qwen3.5 run end to end too (alpha 1.0 and the uniform baseline
at the stock count are their stock model).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from apt_viz.cli import app, route
from apt_viz.core.qwen2vl import smart_resize
from apt_viz.imaging import load_image

from helpers import (
    CHECKPOINT_MAX_PIXELS,
    PHOTO_PATHS,
    REPO_ROOT,
    checkpoint_image_settings,
    cli_imports,
    save_tiny_checkpoint,
)

runner = CliRunner()
PHOTO_SIZES = [(image.height, image.width) for image in map(load_image, (PHOTO_PATHS["chelsea"], PHOTO_PATHS["rocket"]))]
STEPS = "2"  # --max-new-tokens: answers of two tokens keep the runs short


def invoke(*args):
    return runner.invoke(app, route([str(a) for a in args]))


def write_data(path, lines) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def rows_by(table) -> dict[tuple[int, str], dict]:
    return {(row["example"], row["setting"]): row for row in pq.read_table(table).to_pylist()}


@pytest.fixture(scope="module")
def finished(eval_checkpoint, tmp_path_factory):
    """One run: two examples in one batch, budget alpha 1.0 and 0.3, every baseline; (result, table, folder)."""
    folder = tmp_path_factory.mktemp("eval_run")
    data = write_data(folder / "data.jsonl", [
        {"image": str(PHOTO_PATHS["chelsea"]), "prompt": "what animal is this ?", "answer": "cat"},
        {"image": os.path.relpath(PHOTO_PATHS["rocket"], folder), "prompt": "describe this image ."},
    ])
    table = folder / "eval.parquet"
    result = invoke("eval", data, "--model", eval_checkpoint, "--device", "cpu", "-m", "budget", "--alpha", "1.0,0.3",
                    "--batch-size", "2", "--max-new-tokens", STEPS, "-o", table, "--json")
    return result, table, folder


def test_the_table_has_one_row_per_example_and_setting(finished):
    result, table, _ = finished
    assert result.exit_code == 0, result.output
    rows = pq.read_table(table).to_pylist()
    settings = ["stock"] + [f"{name}budget alpha={alpha}" for alpha in ("1", "0.3") for name in (
        "", "uniform_equal_llm @ ", "uniform_equal_vision @ ", "random_equal_vision @ ")]
    assert sorted((r["example"], r["setting"]) for r in rows) == sorted((e, s) for e in (0, 1) for s in settings)
    assert all(row["error"] is None for row in rows)
    by = rows_by(table)
    assert by[(0, "budget alpha=0.3")]["method"] == "budget" and by[(0, "budget alpha=0.3")]["alpha"] == 0.3
    assert by[(0, "uniform_equal_llm @ budget alpha=0.3")]["baseline"] == "uniform_equal_llm"
    assert by[(0, "uniform_equal_llm @ budget alpha=0.3")]["alpha"] == 0.3
    assert by[(0, "stock")]["method"] is None and by[(0, "stock")]["baseline"] is None
    assert by[(0, "stock")]["gold"] == "cat" and by[(1, "stock")]["gold"] is None and by[(1, "stock")]["correct"] is None


def test_alpha_1_is_the_stock_model(finished):
    _, table, _ = finished
    by = rows_by(table)
    for example in (0, 1):
        stock = by[(example, "stock")]
        height, width = smart_resize(*PHOTO_SIZES[example], 28, 56 * 56, CHECKPOINT_MAX_PIXELS)
        assert stock["vision_tokens"] == (height // 14) * (width // 14) == 4 * stock["llm_tokens"]
        for setting in ("budget alpha=1", "uniform_equal_vision @ budget alpha=1", "uniform_equal_llm @ budget alpha=1",
                        "random_equal_vision @ budget alpha=1"):
            row = by[(example, setting)]
            assert row["first_token_kl"] <= 1e-6, setting
            assert row["top1_agree"] and row["answer_agree"] and row["answer"] == stock["answer"], setting
            assert (row["vision_tokens"], row["llm_tokens"]) == (stock["vision_tokens"], stock["llm_tokens"]), setting
            assert row["stock_answer"] == stock["answer"]


def test_alpha_0_3_costs_fewer_tokens_and_its_baselines_match_them(finished):
    _, table, _ = finished
    by = rows_by(table)
    for example in (0, 1):
        stock, apt = by[(example, "stock")], by[(example, "budget alpha=0.3")]
        assert apt["vision_tokens"] < stock["vision_tokens"] and apt["llm_tokens"] < stock["llm_tokens"]
        assert apt["vision_tokens"] <= round(0.3 * stock["vision_tokens"])  # the budget T = round(alpha * N)
        assert apt["first_token_kl"] > 0
        # the random baseline lands on exactly APT's vision tokens (docs/fidelity.md)
        assert by[(example, "random_equal_vision @ budget alpha=0.3")]["vision_tokens"] == apt["vision_tokens"]
        # a uniform baseline's stock resize: whole merge blocks, so its LLM tokens are its patches / 4
        for name in ("uniform_equal_vision", "uniform_equal_llm"):
            row = by[(example, f"{name} @ budget alpha=0.3")]
            assert row["llm_tokens"] * 4 == row["vision_tokens"] < stock["vision_tokens"]


def test_the_tokens_are_those_apt_viz_run_reports(finished, eval_checkpoint, tmp_path):
    _, table, _ = finished
    by = rows_by(table)
    result = invoke("run", PHOTO_PATHS["chelsea"], PHOTO_PATHS["rocket"], "--model", eval_checkpoint, "-m", "budget",
                    "--alpha", "0.3", "--stats-only", "--json", "--device", "cpu", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)["images"]
    for example, record in enumerate(records):
        row = by[(example, "budget alpha=0.3")]
        assert (row["vision_tokens"], row["llm_tokens"]) == (record["vision_tokens"], record["llm_tokens"])
        assert by[(example, "stock")]["vision_tokens"] == record["base_tokens"]


def test_the_scorer_reaches_the_apt_settings_and_resume_checks_it(eval_checkpoint, tmp_path):
    """--scorer laplacian: the APT rows' tokens are apt-viz run --scorer laplacian's (budget alpha 0.5 keeps a
    different count per scorer on these photos); --resume with another scorer is refused in one line."""
    names = ("chelsea", "rocket")
    data = write_data(tmp_path / "d.jsonl", [{"image": str(PHOTO_PATHS[n]), "prompt": "what is this ?"} for n in names])
    argv = ["eval", data, "--model", eval_checkpoint, "--device", "cpu", "--alpha", "0.5", "--baselines", "none",
            "--max-new-tokens", "1", "-o", tmp_path / "t.parquet", "--quiet"]
    assert invoke(*argv, "--scorer", "laplacian").exit_code == 0
    by = rows_by(tmp_path / "t.parquet")
    for scorer in ("laplacian", "entropy"):
        result = invoke("run", *(PHOTO_PATHS[n] for n in names), "--model", eval_checkpoint, "-m", "budget",
                        "--alpha", "0.5", "--scorer", scorer, "--stats-only", "--json", "--device", "cpu", "-o",
                        tmp_path / scorer)
        tokens = [(r["vision_tokens"], r["llm_tokens"]) for r in json.loads(result.stdout)["images"]]
        ours = [(by[(e, "budget alpha=0.5")]["vision_tokens"], by[(e, "budget alpha=0.5")]["llm_tokens"])
                for e in (0, 1)]
        assert (tokens == ours) == (scorer == "laplacian"), (scorer, tokens, ours)
    result = invoke(*argv, "--resume")  # the default scorer, entropy
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "scorer 'laplacian' (now 'entropy')" in result.output


def test_summary_json_and_the_page(finished):
    result, table, folder = finished
    document = json.loads(result.stdout)
    assert json.loads((folder / "eval.summary.json").read_text()) == document
    settings = {entry["setting"]: entry for entry in document["settings"]}
    assert document["settings"][0]["setting"] == "stock" and len(settings) == 9
    rows = rows_by(table)
    apt = settings["budget alpha=0.3"]
    assert apt["examples"] == 2 and apt["failed"] == 0
    assert apt["vision_tokens"] == sum(rows[(e, "budget alpha=0.3")]["vision_tokens"] for e in (0, 1)) / 2
    assert apt["first_token_kl"] == pytest.approx(sum(rows[(e, "budget alpha=0.3")]["first_token_kl"] for e in (0, 1))
                                                  / 2)
    assert settings["stock"]["accuracy"] == float(rows[(0, "stock")]["correct"]) and settings["stock"]["with_gold"] == 1
    page = (folder / "eval.html").read_text()
    assert page.count("<figure>") == 2 * 3  # per example: the image, two APT reconstructions
    assert "data:image/jpeg;base64," in page and "http" not in page.split("<body>")[1]
    assert rows[(0, "stock")]["answer"] in page


def test_the_stock_pass_runs_once_per_batch(eval_checkpoint, tmp_path, monkeypatch):
    import apt_viz.eval.run as run_module

    calls = []
    real = run_module.generate

    def counting(model, batch, config):
        calls.append(batch["input_ids"].shape[0])
        return real(model, batch, config)

    monkeypatch.setattr(run_module, "generate", counting)
    data = write_data(tmp_path / "d.jsonl", [{"image": str(PHOTO_PATHS[name]), "prompt": "what is this ?"}
                                             for name in ("chelsea", "coffee", "rocket")])
    result = invoke("eval", data, "--model", eval_checkpoint, "--device", "cpu", "--alpha", "0.3", "--baselines",
                    "uniform_equal_llm", "--batch-size", "2", "--max-new-tokens", "1", "-o", tmp_path / "t.parquet",
                    "--quiet")
    assert result.exit_code == 0, result.output
    assert calls == [2, 2, 2, 1, 1, 1]  # two batches (2 + 1 examples) x three settings, stock once in each


# --- every family with an APT model ------------------------------------------------------------------

@pytest.mark.parametrize("family, patch_size", [("qwen2.5-vl", 14), ("qwen3-vl", 16), ("qwen3.5", 16)])
def test_every_family_from_its_config_json(family, patch_size, tmp_path_factory):
    """A tiny saved checkpoint of each family (windowed attention, deepstack, a hybrid LLM): the family comes from
    config.json; budget alpha 1.0 and the uniform baseline at the stock count are the stock model, alpha 0.3 is
    cheaper, the stock count is the family's resize by hand."""
    folder = tmp_path_factory.mktemp(f"eval_{family}")
    checkpoint = save_tiny_checkpoint(folder / "ckpt", family=family)
    data = write_data(folder / "d.jsonl", [{"image": str(PHOTO_PATHS[name]), "prompt": "what is in the image ?"}
                                           for name in ("chelsea", "rocket")])
    result = invoke("eval", data, "--model", checkpoint, "--device", "cpu", "--alpha", "1.0,0.3", "--baselines",
                    "uniform_equal_vision", "--batch-size", "2", "--max-new-tokens", STEPS, "-o",
                    folder / "t.parquet", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model_family"] == family
    by = rows_by(folder / "t.parquet")
    max_pixels = checkpoint_image_settings(family)["max_pixels"]
    for example in (0, 1):
        stock = by[(example, "stock")]
        height, width = smart_resize(*PHOTO_SIZES[example], 2 * patch_size, 56 * 56, max_pixels)
        assert stock["vision_tokens"] == (height // patch_size) * (width // patch_size) == 4 * stock["llm_tokens"]
        for setting in ("budget alpha=1", "uniform_equal_vision @ budget alpha=1"):
            row = by[(example, setting)]
            assert row["first_token_kl"] <= 1e-6 and row["top1_agree"] and row["answer_agree"], setting
            assert (row["vision_tokens"], row["llm_tokens"]) == (stock["vision_tokens"], stock["llm_tokens"]), setting
        apt = by[(example, "budget alpha=0.3")]
        assert apt["error"] is None and apt["vision_tokens"] <= round(0.3 * stock["vision_tokens"])
        assert apt["llm_tokens"] < stock["llm_tokens"]


def test_a_folder_with_prompt_on_a_checkpoint_without_chat_template(tmp_path):
    """A folder of images, each with --prompt; the checkpoint has no chat template, so the placeholder is prepended."""
    from transformers import AutoProcessor

    from apt_viz.eval.prompts import IMAGE_PLACEHOLDER, prompt_text

    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", chat_template=False)
    (tmp_path / "photos").mkdir()
    for name in ("coffee", "rocket"):
        (tmp_path / "photos" / f"{name}.jpg").write_bytes(PHOTO_PATHS[name].read_bytes())
    result = invoke("eval", tmp_path / "photos", "--prompt", "describe this image .", "--model", checkpoint,
                    "--device", "cpu", "--alpha", "0.3", "--baselines", "none", "--max-new-tokens", "1", "-o",
                    tmp_path / "t.parquet", "--quiet")
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert sorted((r["image"], r["setting"]) for r in rows) == sorted(
        (f"{n}.jpg", s) for n in ("coffee", "rocket") for s in ("stock", "budget alpha=0.3"))
    assert {r["prompt"] for r in rows} == {"describe this image ."} and all(r["error"] is None for r in rows)
    prompt = prompt_text("describe this image .", AutoProcessor.from_pretrained(checkpoint))
    assert prompt == IMAGE_PLACEHOLDER + "describe this image ."


# --- failures ---------------------------------------------------------------------------------------

def test_a_missing_image_is_an_error_row_and_exit_1(eval_checkpoint, tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    data = write_data(tmp_path / "d.jsonl", [
        {"image": "nowhere.jpg", "prompt": "what is this ?"},
        {"image": str(PHOTO_PATHS["coffee"]), "prompt": "what is this ?"},
        {"image": str(PHOTO_PATHS["coffee"]), "prompt": "  "},
        {"image": "notes.jpg", "prompt": "what is this ?"},
    ])
    result = invoke("eval", data, "--model", eval_checkpoint, "--device", "cpu", "--alpha", "0.3", "--baselines",
                    "none", "--max-new-tokens", "1", "--batch-size", "4", "-o", tmp_path / "t.parquet", "--quiet")
    assert result.exit_code == 1, result.output
    by = rows_by(tmp_path / "t.parquet")
    assert len(by) == 8
    for setting in ("stock", "budget alpha=0.3"):
        assert "nowhere.jpg: no such file" in by[(0, setting)]["error"] and by[(0, setting)]["vision_tokens"] is None
        assert by[(1, setting)]["error"] is None and by[(1, setting)]["answer"] is not None
        assert by[(2, setting)]["error"].endswith("empty prompt")
        assert "notes.jpg: " in by[(3, setting)]["error"] and by[(3, setting)]["first_token_kl"] is None
        assert "internal error" not in by[(3, setting)]["error"]
    assert "failed: " in result.output and "nowhere.jpg" in result.output


@pytest.mark.parametrize("case", ["no --model", "no such folder", "not a checkpoint", "no APT model",
                                  "weights do not load", "bad DATA", "no DATA"])
def test_bad_model_or_data_is_one_line_and_exit_2(case, eval_checkpoint, tmp_path, monkeypatch):
    data = write_data(tmp_path / "d.jsonl", [{"image": str(PHOTO_PATHS["coffee"]), "prompt": "what is this ?"}])
    model = ["--model", eval_checkpoint]
    expected = {
        "no --model": "--model DIR is required",
        "no such folder": "not a folder",
        "not a checkpoint": "model_type 'llava' is not a model family apt-viz knows",
        "no APT model": "no APT model for family qwen2-vl yet",
        "weights do not load": "cannot load the qwen2-vl checkpoint (SafetensorError: ",
        "bad DATA": "d.jsonl:2: not JSON",
        "no DATA": "missing.jsonl: no such file or folder",
    }[case]
    if case == "no --model":
        model = []
    elif case == "no such folder":
        model = ["--model", tmp_path / "absent"]
    elif case == "not a checkpoint":
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "llava"}))
        model = ["--model", tmp_path / "ckpt"]
    elif case == "no APT model":  # the state of a family whose APT model is still being written
        import apt_viz.hf

        monkeypatch.delattr(apt_viz.hf, "APTQwen2VLForConditionalGeneration")
    elif case == "weights do not load":
        shutil.copytree(eval_checkpoint, tmp_path / "ckpt")
        (tmp_path / "ckpt" / "model.safetensors").write_text("not weights")
        model = ["--model", tmp_path / "ckpt"]
    elif case == "bad DATA":
        with open(data, "a") as handle:
            handle.write("{not json\n")
    else:
        data = str(tmp_path / "missing.jsonl")
    result = invoke("eval", data, *model, "--device", "cpu", "-o", tmp_path / "t.parquet")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("apt-viz eval: error: "), result.output
    assert not (tmp_path / "t.parquet").exists() and not (tmp_path / "t.parquet.partial").exists()


def test_help_imports_neither_torch_nor_transformers():
    for argv, shows in ((["--help"], " eval "), (["eval", "--help"], "Usage: apt-viz eval [OPTIONS]")):
        result, imported = cli_imports(argv, watch=("torch", "transformers"))
        assert imported == [], result.stderr
        assert shows in result.stdout


# --- --resume after a kill --------------------------------------------------------------------------

def test_resume_after_a_kill_completes_without_a_duplicate_row(eval_checkpoint, tmp_path):
    names = ("astronaut", "chelsea", "coffee", "rocket") * 2
    data = write_data(tmp_path / "d.jsonl", [{"image": str(PHOTO_PATHS[n]), "prompt": "what is this ?"}
                                             for n in names])
    table = tmp_path / "t.parquet"
    argv = ["eval", data, "--model", str(eval_checkpoint), "--device", "cpu", "--alpha", "0.3", "--baselines",
            "uniform_equal_vision", "--max-new-tokens", "1", "-o", str(table), "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "apt_viz", *argv], env=env, stderr=subprocess.PIPE)
    partial = tmp_path / "t.parquet.partial"
    deadline = time.monotonic() + 240
    while not list(partial.glob("part-*.parquet")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    committed = len(list(partial.glob("part-*.parquet")))
    assert 1 <= committed < len(names) and not table.exists()

    result = invoke(*argv[:-1], "--resume", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["skipped_existing"] == committed and document["processed"] == len(names) - committed
    keys = [(row["example"], row["setting"]) for row in pq.read_table(table).to_pylist()]
    assert len(keys) == len(set(keys)) == len(names) * 3
    assert not partial.exists()


def test_ctrl_c_finishes_the_batch_in_flight_writes_the_table_and_exits_130(eval_checkpoint, tmp_path):
    names = ("astronaut", "chelsea", "coffee", "rocket") * 2
    data = write_data(tmp_path / "d.jsonl", [{"image": str(PHOTO_PATHS[n]), "prompt": "what is this ?"}
                                             for n in names])
    table = tmp_path / "t.parquet"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "apt_viz", "eval", data, "--model", str(eval_checkpoint),
                                "--device", "cpu", "--alpha", "0.3", "--baselines", "none", "--max-new-tokens", "1",
                                "-o", str(table), "--quiet"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "t.parquet.partial").glob("part-*")) and process.poll() is None and (
            time.monotonic() < deadline):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 130, err
    assert "rerun with --resume" in err and "Traceback" not in err
    rows = pq.read_table(table).to_pylist()  # written, and only whole examples (both settings of each)
    assert 0 < len(rows) < 2 * len(names) and len(rows) % 2 == 0 and not (tmp_path / "t.parquet.partial").exists()
