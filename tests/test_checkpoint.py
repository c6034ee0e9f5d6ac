"""Reading a checkpoint folder (``--model DIR``): the settings transformers' own processor loads, or a one-line error.

Every folder is written here: with ``save_pretrained`` of stock transformers classes, or by hand in
the shapes Qwen's published files have (top-level ``min_pixels`` / ``max_pixels``, ``size`` with
``shortest_edge`` / ``longest_edge``, keys left out). The reader must agree with
``AutoImageProcessor.from_pretrained`` on each.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from apt_viz.checkpoint import CheckpointError, read_checkpoint
from apt_viz.core.config import APTConfig

MODEL_TYPES = {"qwen2-vl": "qwen2_vl", "qwen2.5-vl": "qwen2_5_vl", "qwen3-vl": "qwen3_vl", "qwen3.5": "qwen3_5"}

# Shapes of published preprocessor_config.json files (values as in docs/families.md).
QWEN2_5_VL_FILE = {
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
}
QWEN3_VL_FILE = {
    "size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16, "temporal_patch_size": 2,
    "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    "processor_class": "Qwen3VLProcessor", "image_processor_type": "Qwen2VLImageProcessorFast",
}
# transformers 4.45 wrote size {min_pixels, max_pixels} beside the top-level keys
OLD_QWEN2_VL_FILE = {
    "image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 3136, "max_pixels": 1003520,
    "size": {"min_pixels": 3136, "max_pixels": 1003520}, "patch_size": 14, "merge_size": 2,
    "temporal_patch_size": 2, "resample": 3,
}
FILES = {
    "qwen2.5-vl published": ("qwen2_5_vl", QWEN2_5_VL_FILE),
    "qwen3-vl published": ("qwen3_vl", QWEN3_VL_FILE),
    "qwen2-vl transformers 4.45": ("qwen2_vl", OLD_QWEN2_VL_FILE),
    "top level beats size": ("qwen3_5", {**QWEN3_VL_FILE, "min_pixels": 4096}),
    "keys left out": ("qwen3_vl", {"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 16}),
    "no resize": ("qwen2_vl", {"image_processor_type": "Qwen2VLImageProcessor", "do_resize": False}),
}


def write_folder(folder, model_type: str | None, preprocessor: dict | None, processor: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    if model_type is not None:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    if processor is not None:
        (folder / "processor_config.json").write_text(json.dumps(processor))
    return folder


def assert_same_as_transformers(settings, folder):
    from transformers import AutoImageProcessor

    stock = AutoImageProcessor.from_pretrained(str(folder))
    assert (settings.patch_size, settings.merge_size, settings.temporal_patch_size) == (
        stock.patch_size, stock.merge_size, stock.temporal_patch_size)
    assert (settings.min_pixels, settings.max_pixels) == (stock.size["shortest_edge"], stock.size["longest_edge"])
    assert settings.image_mean == tuple(stock.image_mean) and settings.image_std == tuple(stock.image_std)
    assert settings.resize == stock.do_resize


@pytest.mark.parametrize("case", sorted(FILES))
def test_reads_what_transformers_loads(tmp_path, case):
    model_type, content = FILES[case]
    folder = write_folder(tmp_path / "ckpt", model_type, content)
    settings = read_checkpoint(folder)
    assert settings.model_type == model_type and MODEL_TYPES[str(settings.model_family)] == model_type
    assert_same_as_transformers(settings, folder)


def test_a_save_pretrained_folder_with_non_default_settings(tmp_path):
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig

    folder = tmp_path / "ckpt"
    Qwen3VLConfig().save_pretrained(folder)
    Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=40_000,
                          max_pixels=150_000, image_mean=[0.4, 0.5, 0.6], image_std=[0.3, 0.2, 0.1]
                          ).save_pretrained(folder)
    settings = read_checkpoint(folder)
    assert settings.model_family == "qwen3-vl"
    assert (settings.patch_size, settings.min_pixels, settings.max_pixels) == (16, 40_000, 150_000)
    assert settings.image_mean == (0.4, 0.5, 0.6) and settings.image_std == (0.3, 0.2, 0.1)
    assert_same_as_transformers(settings, folder)
    config = APTConfig(**settings.config_fields())
    assert config.model_family == "qwen3-vl" and config.patch_sizes == [16, 32, 64]
    assert (config.min_pixels, config.max_pixels, config.image_std) == (40_000, 150_000, (0.3, 0.2, 0.1))


def test_nested_processor_config_comes_first_as_in_transformers(tmp_path):
    nested = {"image_processor": {**QWEN3_VL_FILE, "patch_size": 14, "size": {"shortest_edge": 9000,
                                                                              "longest_edge": 90000}}}
    folder = write_folder(tmp_path / "ckpt", "qwen3_vl", QWEN3_VL_FILE, processor=nested)
    settings = read_checkpoint(folder)
    assert (settings.patch_size, settings.min_pixels, settings.max_pixels) == (14, 9000, 90000)
    assert_same_as_transformers(settings, folder)
    # a processor_config.json without an image_processor entry leaves preprocessor_config.json in charge
    write_folder(folder, None, None, processor={"processor_class": "Qwen3VLProcessor"})
    assert read_checkpoint(folder).patch_size == 16


@pytest.mark.parametrize("model_type, preprocessor, message", [
    (None, QWEN3_VL_FILE, "no config.json (a checkpoint folder has one)"),
    ("llava", QWEN3_VL_FILE, "model_type 'llava' is not a model family apt-viz knows (qwen2_vl, qwen2_5_vl, "
                             "qwen3_vl, qwen3_5)"),
    ("qwen3_vl", None, "no preprocessor_config.json (the image processor's settings)"),
    ("qwen3_vl", {"size": {"min_pixels": 100, "max_pixels": 200000}},
     "preprocessor_config.json: size has no shortest_edge (and no min_pixels)"),
    ("qwen3_vl", {**QWEN3_VL_FILE, "resample": 2}, "resample 2 is not bicubic (3)"),
    ("qwen3_vl", {**QWEN3_VL_FILE, "patch_size": "16"}, "patch_size must be a positive integer, got '16'"),
    ("qwen3_vl", {**QWEN3_VL_FILE, "image_std": [0.5, 0.5]}, "image_std must be 3 numbers"),
    ("qwen3_vl", {**QWEN3_VL_FILE, "do_resize": "no"}, "do_resize must be true or false, got 'no'"),
    ("qwen3_vl", [1, 2], "preprocessor_config.json is not a JSON object"),
])
def test_bad_folders_are_one_line_errors(tmp_path, model_type, preprocessor, message):
    folder = write_folder(tmp_path / "ckpt", model_type, preprocessor)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(folder)
    text = str(caught.value)
    assert text.startswith(str(folder)) and message in text and "\n" not in text


def test_unreadable_json_and_missing_folder(tmp_path):
    folder = write_folder(tmp_path / "ckpt", "qwen3_vl", QWEN3_VL_FILE)
    (folder / "config.json").write_text('{"model_type": ')
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON \(Expecting value, line 1\)"):
        read_checkpoint(folder)
    with pytest.raises(CheckpointError, match="not a folder"):
        read_checkpoint(tmp_path / "missing")


def test_reading_imports_no_transformers_or_torch(tmp_path):
    folder = write_folder(tmp_path / "ckpt", "qwen3_vl", QWEN3_VL_FILE)
    code = (f"import sys\nfrom apt_viz.checkpoint import read_checkpoint\nread_checkpoint({str(folder)!r})\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'PIL', 'numpy'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
