"""One truth: for the same file and settings, the CLI selects exactly what the model's processor selects.

For each resize backend, ``apt-viz run --backend B`` and the library (``analyze_image``) must give
the resized pixels, the importance maps, the masks and the token counts of transformers'
``Qwen2VLImageProcessor`` (torchvision) / ``Qwen2VLImageProcessorPil`` wrapped by apt-viz, on real
photos whose sizes are not multiples of 28. The torchvision backend must also equal torchvision's
own resize, which apt-viz reproduces without importing torchvision.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from apt_viz.analysis import analyze_image
from apt_viz.cli import app
from apt_viz.core.config import APTConfig
from apt_viz.core.pipeline import compute_maps
from apt_viz.core.qwen2vl import smart_resize
from apt_viz.hf import APTQwen2VLImageProcessor, APTQwen2VLImageProcessorPil, unpatchify
from apt_viz.imaging import load_image, pil_to_tensor, resize_for_qwen2vl

from helpers import PHOTO_PATHS

PROCESSORS = {"torchvision": APTQwen2VLImageProcessor, "pil": APTQwen2VLImageProcessorPil}
SETTINGS = [
    pytest.param("v1", {}, id="v1"),
    pytest.param("v2", {"alpha": 1.0}, id="v2"),
    pytest.param("budget", {"alpha": 0.3}, id="budget"),
]
SIZES = (14, 28, 56)
runner = CliRunner()


def photos() -> dict[str, Image.Image]:
    """The four photos (none has sides that are multiples of 28) and a wide crop upscaled by smart_resize."""
    loaded = {name: load_image(path) for name, path in PHOTO_PATHS.items()}
    loaded["rocket_crop"] = loaded["rocket"].crop((13, 40, 13 + 333, 40 + 127))  # 333x127
    return loaded


PHOTOS = photos()


def processor_view(backend: str, image: Image.Image, method: str, settings: dict) -> dict:
    """What the processor decided for one image: resized pixels, masks and token counts."""
    ip = PROCESSORS[backend](patch_selection_method=method, **settings)
    out = ip([image], return_tensors="pt")
    (_, grid_h, grid_w), = out["image_grid_thw"].tolist()
    normalized = unpatchify(out["pixel_values"], grid_h, grid_w, 14, 2, 2)[0]
    mean = torch.tensor(ip.image_mean).view(3, 1, 1)
    std = torch.tensor(ip.image_std).view(3, 1, 1)
    pixels = ((normalized * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)  # exact: uint8 in
    masks = {}
    for level, size in enumerate(SIZES):
        scale = 2**level
        mask = torch.zeros(-(-grid_h // scale), -(-grid_w // scale))
        cells = out["apt_patch_positions"][out["apt_patch_sizes"] == size] // scale
        mask[cells[:, 0], cells[:, 1]] = 1
        masks[size] = mask
    return {
        "pixels": pixels,  # (3, H, W) uint8
        "masks": masks,
        "tokens_per_scale": ip.last_token_stats[0].tokens_per_scale,
        "llm_tokens": int(out["apt_num_llm_tokens"][0]),
        "thresholds": ip.last_thresholds[0] if ip.last_thresholds else None,
    }


@pytest.mark.parametrize("backend", sorted(PROCESSORS))
@pytest.mark.parametrize("method, settings", SETTINGS)
@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_library_equals_processor(backend, method, settings, name):
    image = PHOTOS[name]
    expected = processor_view(backend, image, method, settings)
    analysis = analyze_image(image, APTConfig(method=method, backend=backend, **settings))

    resized = torch.from_numpy(np.array(analysis.resized)).permute(2, 0, 1)  # h w c -> c h w
    assert torch.equal(resized, expected["pixels"]), "resized pixels differ"
    # Same pixels, same scorer: the maps of the processor's pixels are the CLI's maps.
    processor_maps = compute_maps(expected["pixels"][None].float(), analysis.config)
    for size in SIZES:
        assert torch.equal(analysis.maps[size], processor_maps[size][0]), f"{size} px map"
        assert torch.equal(analysis.masks[size], expected["masks"][size]), f"{size} px mask"
    assert analysis.stats.tokens_per_scale == expected["tokens_per_scale"]
    assert analysis.stats.llm_tokens == expected["llm_tokens"]
    if expected["thresholds"] is not None:
        assert analysis.thresholds == pytest.approx(expected["thresholds"], rel=0, abs=0)


@pytest.mark.parametrize("backend", sorted(PROCESSORS))
@pytest.mark.parametrize("method, settings", [SETTINGS[1], SETTINGS[2]])
def test_cli_stats_equal_processor_on_photos(backend, method, settings, tmp_path):
    names = ("chelsea", "coffee", "rocket")
    alpha = ["--alpha", str(settings["alpha"])]
    result = runner.invoke(app, ["run", *(str(PHOTO_PATHS[n]) for n in names), "-o", str(tmp_path), "--stats-only",
                                 "--json", "--device", "cpu", "--backend", backend, "-m", method, *alpha])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)["images"]
    for name, record in zip(names, records):
        expected = processor_view(backend, PHOTOS[name], method, settings)
        assert record["backend"] == backend
        assert record["tokens_per_scale"] == {str(s): n for s, n in expected["tokens_per_scale"].items()}
        assert record["llm_tokens"] == expected["llm_tokens"]
        height, width = expected["pixels"].shape[-2:]
        assert (record["resized_size"]["height"], record["resized_size"]["width"]) == (height, width)


def test_default_backend_is_what_auto_image_processor_loads():
    """transformers 5 resolves a Qwen2-VL image processor to the torchvision backend by default."""
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    assert APTConfig().backend == "torchvision"
    assert IMAGE_PROCESSOR_MAPPING_NAMES["qwen2_vl"]["torchvision"] == "Qwen2VLImageProcessor"


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_torchvision_backend_equals_torchvision_resize(name):
    tvF = pytest.importorskip("torchvision.transforms.v2.functional")
    image = PHOTOS[name]
    height, width = smart_resize(image.height, image.width)
    chw = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()  # h w c -> c h w
    expected = tvF.resize(chw, [height, width], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
    ours = pil_to_tensor(resize_for_qwen2vl(image, backend="torchvision"))[0].to(torch.uint8)
    assert torch.equal(ours, expected)


def test_backends_differ_somewhere_so_the_choice_matters():
    image = PHOTOS["rocket"]
    tv = np.asarray(resize_for_qwen2vl(image, backend="torchvision"), dtype=np.int16)
    pil = np.asarray(resize_for_qwen2vl(image, backend="pil"), dtype=np.int16)
    assert tv.shape == pil.shape and np.abs(tv - pil).max() > 0
