"""apt_viz.hf: the APT Qwen2-VL image processors inside transformers (no hub, no weights).

What is pinned: the stock outputs are untouched (pixel_values, image_grid_thw, the <|image_pad|>
expansion, a stock model's logits); the APT outputs are the core library's (same masks, counts,
budget info and patches as PatchTokenizer on the same pixels); the settings reach the selection
from every entry point and survive save/load; bad settings fail with a one-line ValueError.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, PreTrainedTokenizerFast, Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

from apt_viz.core.accounting import token_stats
from apt_viz.core.tokenizer import PatchTokenizer
from apt_viz.hf import (
    APTInputs,
    APTQwen2VLImageProcessor,
    APTQwen2VLImageProcessorPil,
    unpatchify,
)

BACKENDS = [
    pytest.param(Qwen2VLImageProcessor, APTQwen2VLImageProcessor, id="torchvision"),
    pytest.param(Qwen2VLImageProcessorPil, APTQwen2VLImageProcessorPil, id="pil"),
]
SETTINGS = [
    pytest.param({"patch_selection_method": "v1"}, id="v1"),
    pytest.param(
        {"patch_selection_method": "v1", "thresholds": [4.5, 3.5], "scorer": "laplacian"}, id="v1-laplacian"
    ),
    pytest.param({"patch_selection_method": "v2", "alpha": 0.8}, id="v2"),
    pytest.param({"patch_selection_method": "budget", "alpha": 0.3}, id="budget"),
]
SIZES = (14, 28, 56)
IMAGE_TEXT = "<|vision_start|><|image_pad|><|vision_end|> describe this image ."


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(photo_paths) -> list[Image.Image]:
    """Inputs of different sizes: the four photos, one blown up by min_pixels, and one whose resized
    grid (6 base columns) leaves partial 56 px cells; RGBA and grayscale modes included."""
    names = ("astronaut", "chelsea", "coffee", "rocket")
    photos = [Image.open(photo_paths[name]).convert("RGB") for name in names]
    photos[1] = photos[1].convert("RGBA")
    tiny = photos[2].resize((40, 30), Image.Resampling.BICUBIC)
    narrow = photos[3].resize((80, 300), Image.Resampling.BICUBIC).convert("L")
    return [*photos, tiny, narrow]


@pytest.fixture(scope="module")
def quick_start():
    """examples/quick_start.py as a module: its offline tokenizer serves the tests too."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "quick_start.py"
    spec = importlib.util.spec_from_file_location("apt_viz_quick_start", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer(quick_start) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in code with the special tokens Qwen2VLProcessor needs."""
    return quick_start.build_tiny_tokenizer()


def make_processor(image_processor, tokenizer) -> Qwen2VLProcessor:
    return Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor()
    )


def as_tensor(value) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value)) if isinstance(value, np.ndarray) else value


def split_by_image(out) -> list[dict[str, torch.Tensor]]:
    """The APT rows and the stock rows of every image, split as a modeling file would."""
    grids = as_tensor(out["image_grid_thw"]).tolist()
    stock_counts = [t * h * w for t, h, w in grids]
    apt_counts = as_tensor(out["apt_num_tokens"]).tolist()
    parts = []
    stock_rows = as_tensor(out["pixel_values"]).split(stock_counts)
    keys = ("apt_pixel_values", "apt_patch_sizes", "apt_patch_positions")
    apt_parts = [as_tensor(out[key]).split(apt_counts) for key in keys]
    for i, (_, grid_h, grid_w) in enumerate(grids):
        part = {key: apt_parts[k][i] for k, key in enumerate(keys)}
        part.update(stock=stock_rows[i], grid_h=grid_h, grid_w=grid_w)
        parts.append(part)
    return parts


def masks_from_rows(
    sizes: torch.Tensor, positions: torch.Tensor, grid_h: int, grid_w: int
) -> dict[int, torch.Tensor]:
    """Rebuild the selection masks (1, h_i, w_i) from apt_patch_sizes / apt_patch_positions."""
    masks = {}
    for level, size in enumerate(SIZES):
        scale = 2**level
        mask = torch.zeros(1, -(-grid_h // scale), -(-grid_w // scale))
        cells = positions[sizes == size]
        assert (cells % scale == 0).all(), "a larger cell must start on its own grid"
        mask[0, cells[:, 0] // scale, cells[:, 1] // scale] = 1
        masks[size] = mask
    return masks


# --- stock outputs are untouched -------------------------------------------------------------

@pytest.mark.parametrize("stock_cls, apt_cls", BACKENDS)
@pytest.mark.parametrize("settings", SETTINGS)
def test_stock_outputs_identical_to_the_stock_processor(stock_cls, apt_cls, settings, images):
    stock = stock_cls()(images)
    out = apt_cls(**settings)(images)
    assert set(out) == {"pixel_values", "image_grid_thw", *APTInputs.KEYS}
    assert type(out["pixel_values"]) is type(stock["pixel_values"])
    for key in ("pixel_values", "image_grid_thw"):
        assert out[key].dtype == stock[key].dtype
        assert np.array_equal(np.asarray(out[key]), np.asarray(stock[key]))
    assert len(out["apt_num_tokens"]) == len(images)


def test_unpatchify_inverts_the_stock_patchify(photo_tensor):
    image = photo_tensor("chelsea")  # (1, 3, 308, 448) smart-resized
    patchify = Qwen2VLImageProcessor().patchify
    rows, grid_h, grid_w = patchify(image, patch_size=14, merge_size=2, temporal_patch_size=2)
    assert torch.equal(unpatchify(rows[0], grid_h, grid_w, 14, 2, 2), image)


# --- APT outputs are the core library's ------------------------------------------------------

@pytest.mark.parametrize("stock_cls, apt_cls", BACKENDS)
@pytest.mark.parametrize("settings", SETTINGS)
def test_apt_outputs_match_patch_tokenizer(stock_cls, apt_cls, settings, images):
    ip = apt_cls(**settings)
    out = ip(images)
    tokens, llm_tokens = as_tensor(out["apt_num_tokens"]), as_tensor(out["apt_num_llm_tokens"])
    assert len(as_tensor(out["apt_pixel_values"])) == int(tokens.sum())
    reference_budget_info = []
    for i, part in enumerate(split_by_image(out)):
        # PatchTokenizer on the normalized pixels the stock processor emitted for this image.
        normalized = unpatchify(part["stock"], part["grid_h"], part["grid_w"], 14, 2, 2)
        tokenizer = PatchTokenizer(
            thresholds=settings.get("thresholds"),
            mean=ip.image_mean,
            std=ip.image_std,
            method=settings.get("scorer", "entropy"),
            patch_selection_method=settings["patch_selection_method"],
            alpha=settings.get("alpha", 1.0),
        )
        reference = tokenizer(normalized)
        masks = masks_from_rows(
            part["apt_patch_sizes"], part["apt_patch_positions"], part["grid_h"], part["grid_w"]
        )
        for size in SIZES:
            assert torch.equal(masks[size], reference["masks"][size]), f"image {i}, {size} px mask"
        assert int(tokens[i]) == reference["seqlens"][0]
        assert int(llm_tokens[i]) == token_stats(reference["masks"], merge_size=2)[0].llm_tokens
        if tokenizer.last_budget_info is not None:
            reference_budget_info.extend(tokenizer.last_budget_info)
        # Each scale's rows, put in raster order of their grid, are PatchTokenizer's
        # resized_patches repeated over the temporal axis (channel-major, like a stock row).
        for size in SIZES:
            of_size = part["apt_patch_sizes"] == size
            rows, positions = part["apt_pixel_values"][of_size], part["apt_patch_positions"][of_size]
            raster = torch.argsort(positions[:, 0] * 10_000 + positions[:, 1])
            expected = reference[f"resized_patches_{size}"].unsqueeze(2).expand(-1, -1, 2, -1, -1).flatten(1)
            assert torch.equal(rows[raster], expected), f"image {i}, {size} px patches"
    if settings["patch_selection_method"] == "budget":
        assert ip.last_budget_info == reference_budget_info
        assert [info.vision_tokens for info in ip.last_budget_info] == tokens.tolist()
    else:
        assert ip.last_budget_info is None


@pytest.mark.parametrize("stock_cls, apt_cls", BACKENDS)
def test_row_layout_base_rows_are_stock_rows_and_cells_partition_the_image(stock_cls, apt_cls, images):
    out = apt_cls(patch_selection_method="budget", alpha=0.4)(images)
    for part in split_by_image(out):
        grid_h, grid_w = part["grid_h"], part["grid_w"]
        sizes, positions, rows = part["apt_patch_sizes"], part["apt_patch_positions"], part["apt_pixel_values"]
        # Scale-major, smallest first.
        assert torch.equal(sizes, torch.sort(sizes).values)
        # Every base cell is covered by exactly one row.
        coverage = torch.zeros(grid_h, grid_w, dtype=torch.long)
        for size, (r, c) in zip(sizes.tolist(), positions.tolist()):
            n = size // 14
            coverage[r : r + n, c : c + n] += 1
        assert torch.equal(coverage, torch.ones_like(coverage))
        # A base row is the stock row of the same cell; stock rows come in 2x2 merge blocks, so
        # cell (r, c) is stock row ((r//2) * (grid_w//2) + c//2) * 4 + (r%2) * 2 + c%2. The base
        # rows keep the stock order, whole merge blocks at a time (4 rows = 1 LLM token).
        base = sizes == 14
        r, c = positions[base].unbind(1)
        stock_index = ((r // 2) * (grid_w // 2) + c // 2) * 4 + (r % 2) * 2 + c % 2
        assert torch.equal(rows[base], part["stock"][stock_index])
        assert (stock_index.diff() > 0).all()
        assert len(stock_index) % 4 == 0 and torch.equal(stock_index[::4] % 4, torch.zeros_like(stock_index[::4]))
        # Larger cells: raster order of their own grid; a 28 px row is the 2x2 average of the
        # normalized pixels under it (bilinear 0.5x with align_corners=False), both temporal copies equal.
        normalized = unpatchify(part["stock"], grid_h, grid_w, 14, 2, 2)[0]
        for size in (28, 56):
            cells = positions[sizes == size]
            key = cells[:, 0] * grid_w + cells[:, 1]
            assert (key.diff() > 0).all()
        for row, (r, c) in zip(rows[sizes == 28], positions[sizes == 28].tolist()):
            block = normalized[:, r * 14 : r * 14 + 28, c * 14 : c * 14 + 28]
            average = block.reshape(3, 14, 2, 14, 2).mean(dim=(2, 4))
            assert torch.allclose(row.view(3, 2, 14, 14), average[:, None].expand(3, 2, 14, 14), atol=1e-6)


@pytest.mark.parametrize("apt_cls", [APTQwen2VLImageProcessor, APTQwen2VLImageProcessorPil])
def test_several_images_in_one_call_equal_one_call_each(apt_cls, images):
    ip = apt_cls(patch_selection_method="budget", alpha=0.3)
    batch = ip(images)
    batch_info = ip.last_budget_info
    singles, single_info = [], []
    for image in images:
        singles.append(ip(image))
        single_info.extend(ip.last_budget_info)
    assert batch_info == single_info
    for key in ("pixel_values", "image_grid_thw", *APTInputs.KEYS):
        joined = np.concatenate([np.asarray(single[key]) for single in singles])
        assert np.array_equal(np.asarray(batch[key]), joined), key


def test_float_inputs_without_rescale_select_like_uint8_inputs(photo_tensor):
    """do_rescale=False means the inputs are already rescaled: APT still scores them on [0, 255]."""
    image = photo_tensor("chelsea")[0]  # (3, 308, 448), already a smart-resize size
    ip = APTQwen2VLImageProcessor(patch_selection_method="v2", alpha=0.7)
    as_uint8 = ip(image.to(torch.uint8), do_resize=False)
    as_unit_float = ip(image / 255.0, do_resize=False, do_rescale=False)
    for key in ("apt_patch_sizes", "apt_patch_positions", "apt_num_tokens"):
        assert torch.equal(as_uint8[key], as_unit_float[key])
    assert int(as_uint8["apt_num_tokens"][0]) < 22 * 32  # v2 did merge some cells


# --- settings: construction, attributes, per call, processor --------------------------------

def apt_result(out) -> tuple:
    keys = ("apt_num_tokens", "apt_patch_sizes", "apt_patch_positions")
    return tuple(as_tensor(out[key]).tolist() for key in keys)


def test_three_ways_to_choose_method_and_alpha_agree_and_call_overrides_win(images):
    chosen = {"patch_selection_method": "budget", "alpha": 0.3}
    at_construction = APTQwen2VLImageProcessor(**chosen)
    by_attribute = APTQwen2VLImageProcessor()
    by_attribute.patch_selection_method, by_attribute.alpha = "budget", 0.3
    defaults = APTQwen2VLImageProcessor(patch_selection_method="v2", alpha=0.5)

    expected = apt_result(at_construction(images))
    assert apt_result(by_attribute(images)) == expected
    assert apt_result(defaults(images, **chosen)) == expected  # the call beats the instance settings
    assert (defaults.patch_selection_method, defaults.alpha) == ("v2", 0.5)  # ...for that call only
    assert apt_result(defaults(images)) != expected
    assert apt_result(APTQwen2VLImageProcessor()(images)) != expected  # v1 default differs
    # budget 0.3 hits round(0.3 * N) within 3 tokens on every image (docs/contract.md, section 4)
    n = [h * w for _, h, w in at_construction(images)["image_grid_thw"].tolist()]
    assert all(0 <= round(0.3 * b) - t < 3 for b, t in zip(n, expected[0]))
    # ints and tuples are accepted where floats and lists are meant
    same = APTQwen2VLImageProcessor()(images, patch_selection_method="v1", thresholds=(3, 2), alpha=1)
    assert apt_result(same) == apt_result(APTQwen2VLImageProcessor()(images))


def test_processor_images_kwargs_reach_the_image_processor(images, tokenizer):
    stock = make_processor(Qwen2VLImageProcessor(), tokenizer)
    apt = make_processor(APTQwen2VLImageProcessor(), tokenizer)
    text = [IMAGE_TEXT] * len(images)
    chosen = {"patch_selection_method": "budget", "alpha": 0.3}

    out = apt(images=images, text=text, images_kwargs=chosen, padding=True, return_tensors="pt")
    assert apt_result(out) == apt_result(APTQwen2VLImageProcessor(**chosen)(images))
    assert apt.image_processor.last_budget_info is not None and apt.image_processor.alpha == 1.0
    flat = apt(images=images, text=text, padding=True, return_tensors="pt", **chosen)  # the older flat style
    assert apt_result(flat) == apt_result(out)

    # Text side and stock tensors are the stock processor's: <|image_pad|> still expands to
    # image_grid_thw.prod() / merge_size**2 tokens per image; APT models read apt_num_llm_tokens.
    reference = stock(images=images, text=text, padding=True, return_tensors="pt")
    for key in reference:
        assert torch.equal(out[key], reference[key]), key
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    per_row = (out["input_ids"] == image_pad).sum(dim=1)
    assert torch.equal(per_row, out["image_grid_thw"].prod(dim=1) // 4)
    assert (out["apt_num_llm_tokens"] <= per_row).all() and out["apt_num_llm_tokens"].sum() < per_row.sum()


def test_save_and_load_keep_the_apt_settings(tmp_path, images, tokenizer):
    settings = {"patch_selection_method": "v1", "thresholds": [4.5, 3.5], "scorer": "laplacian", "alpha": 0.7}
    ip = APTQwen2VLImageProcessor(**settings, max_pixels=300_000)
    expected = apt_result(ip(images))  # a call leaves last_* state, which must not be saved
    ip.save_pretrained(tmp_path / "ip")
    saved = json.loads((tmp_path / "ip" / "preprocessor_config.json").read_text())
    assert {key: saved[key] for key in settings} == settings
    assert not any(key.startswith("last_") for key in saved)

    for loaded in (
        APTQwen2VLImageProcessor.from_pretrained(tmp_path / "ip"),
        AutoImageProcessor.from_pretrained(tmp_path / "ip"),
        AutoImageProcessor.from_pretrained(tmp_path / "ip", backend="pil"),
    ):
        assert isinstance(loaded, (APTQwen2VLImageProcessor, APTQwen2VLImageProcessorPil))
        assert {key: getattr(loaded, key) for key in settings} == settings
        assert loaded.size["longest_edge"] == 300_000
        assert apt_result(loaded(images)) == expected
    assert type(AutoImageProcessor.from_pretrained(tmp_path / "ip", backend="pil")) is APTQwen2VLImageProcessorPil

    processor = make_processor(APTQwen2VLImageProcessor(patch_selection_method="budget", alpha=0.25), tokenizer)
    processor.save_pretrained(tmp_path / "processor")
    for loader in (Qwen2VLProcessor, AutoProcessor):
        loaded = loader.from_pretrained(tmp_path / "processor")
        assert type(loaded.image_processor) is APTQwen2VLImageProcessor
        assert (loaded.image_processor.patch_selection_method, loaded.image_processor.alpha) == ("budget", 0.25)


INVALID = [
    pytest.param({"patch_selection_method": "v3"}, "unknown patch_selection_method 'v3'", id="method"),
    pytest.param({"patch_selection_method": "budget", "alpha": 1.5}, "alpha must be in (0, 1] for budget", id="a>1"),
    pytest.param({"patch_selection_method": "budget", "alpha": 0.0}, "alpha must be > 0 for budget", id="alpha=0"),
    pytest.param({"patch_selection_method": "v2", "alpha": -1.0}, "alpha must be > 0 for v2", id="v2-alpha"),
    pytest.param({"thresholds": [3.0]}, "v1 needs 2 thresholds", id="thresholds"),
    pytest.param({"scorer": "sobel"}, "unknown scorer 'sobel'", id="scorer"),
]


@pytest.mark.parametrize("settings, message", INVALID)
def test_invalid_settings_raise_one_line_value_error_everywhere(settings, message, images, tokenizer):
    def check(call) -> None:
        with pytest.raises(ValueError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value)

    check(lambda: APTQwen2VLImageProcessor(**settings))
    check(lambda: APTQwen2VLImageProcessorPil(**settings))
    ip = APTQwen2VLImageProcessor()
    check(lambda: ip(images[:1], **settings))
    for key, value in settings.items():
        setattr(ip, key, value)
    check(lambda: ip(images[:1]))
    processor = make_processor(APTQwen2VLImageProcessor(), tokenizer)
    check(lambda: processor(images=images[:1], text=[IMAGE_TEXT], images_kwargs=settings))


# --- integration boundaries -----------------------------------------------------------------

def test_a_stock_model_gives_the_same_logits_with_the_apt_outputs_present(tokenizer):
    """A randomly initialised tiny Qwen2-VL (built from a config, no weights) ignores the apt_* keys."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    image_pad, start, end = tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|vision_start|>", "<|vision_end|>"])
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        },
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2},
        image_token_id=image_pad,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    processor = make_processor(APTQwen2VLImageProcessor(max_pixels=56 * 56 * 4), tokenizer)
    image = Image.new("RGB", (150, 100), (30, 120, 200))
    chosen = {"patch_selection_method": "budget", "alpha": 0.5}
    inputs = processor(images=[image], text=[IMAGE_TEXT], images_kwargs=chosen, return_tensors="pt")
    stock_inputs = {key: value for key, value in inputs.items() if not key.startswith("apt_")}
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, model(**stock_inputs).logits)


@pytest.mark.slow
def test_import_apt_viz_does_not_import_transformers():
    code = (
        "import sys, apt_viz; apt_viz.PatchTokenizer; apt_viz.analyze_image; "
        "assert 'transformers' not in sys.modules, 'transformers imported'; "
        "import apt_viz.hf; assert 'transformers' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_quick_start_example_runs_offline_and_reports_the_three_ways(quick_start, photo_paths):
    lines = quick_start.main(photo_paths["astronaut"])
    reference = {
        "1.": APTQwen2VLImageProcessor(patch_selection_method="v2", alpha=1.0),
        "2.": APTQwen2VLImageProcessor(patch_selection_method="budget", alpha=0.3),
        "3.": APTQwen2VLImageProcessor(patch_selection_method="budget", alpha=0.5),
    }
    image = Image.open(photo_paths["astronaut"])
    for prefix, ip in reference.items():
        out = ip(image)
        line = next(line for line in lines if line.startswith(prefix))
        assert f"vision patches {int(out['apt_num_tokens'][0]):5d} / 1296" in line
        assert f"LLM tokens {int(out['apt_num_llm_tokens'][0]):4d} / 324" in line
    assert any("placeholders in input_ids: 324" in line for line in lines)
