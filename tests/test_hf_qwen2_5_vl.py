"""APTQwen2_5_VLForConditionalGeneration on a tiny random Qwen2.5-VL (CPU, float32, no weights, no hub).

The tiny preset (``tiny-qwen2.5-vl``) has four vision blocks: 0 and 2 attend within 112 px windows
(8 x 8 base patches), 1 and 3 over the whole image. The photos at 224 x 224 px budget give grids of
16 x 16 base patches (astronaut: 2 x 2 whole windows) and 12 x 18 (rocket: 2 x 3 windows, those of
the right column and the bottom row cut by the edges).

What is pinned: keeping every base patch gives the stock logits, the stock greedy generation and the
stock vision hidden states (in APT row order), bit for bit; at alpha 0.3 the blocks see the counted
rows, the windowed blocks the windows of the rows' top-left base cells (counted here by hand), the
full-attention blocks one segment per image, and the prompt the counted LLM tokens; the rows' input
order does not matter; a padded batch equals each image alone; processor and model survive
save_pretrained / from_pretrained; a hand-built case of a 56 px cell, a 28 px cell and base cells in
two windows (and a second image) is grouped as counted by hand; torch's FLOP counter on the APT
tower agrees with the windowed FLOPs ``apt-viz bench`` reports for the preset.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
from transformers.vision_utils import get_vision_window_index
from typer.testing import CliRunner

from apt_viz.bench.presets import preset_architecture, preset_config
from apt_viz.core.flops import vision_flops
from apt_viz.hf import (
    APTInputs,
    APTQwen2_5_VLForConditionalGeneration,
    APTQwen2_5_VLProcessor,
    APTQwen2VLImageProcessor,
    apt_layout,
)

from helpers import assert_batch_equals_alone, greedy, stock_and_apt, tiny_tokenizer

PROMPT = "<|vision_start|><|image_pad|><|vision_end|> describe this image ."
SHORT_PROMPT = "<|vision_start|><|image_pad|><|vision_end|> describe ."
MAX_PIXELS = 56 * 56 * 16  # 224 x 224 px for a square photo
PRESET = "tiny-qwen2.5-vl"
WINDOWED, FULL = (0, 2), (1, 3)  # the preset's blocks
WINDOW = 8  # base patches along a 112 px window


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def models(tokenizer):
    """(stock, apt): the same random tiny weights in the stock and the APT class."""
    config = preset_config(PRESET, tokenizer=tokenizer)
    assert tuple(config.vision_config.fullatt_block_indexes) == FULL and config.vision_config.depth == 4
    return stock_and_apt(Qwen2_5_VLForConditionalGeneration, APTQwen2_5_VLForConditionalGeneration, config)


@pytest.fixture(scope="module")
def photos(photo_paths) -> list[Image.Image]:
    return [Image.open(photo_paths[name]).convert("RGB") for name in ("astronaut", "rocket")]


def apt_processor(tokenizer, **settings) -> APTQwen2_5_VLProcessor:
    return APTQwen2_5_VLProcessor(
        image_processor=APTQwen2VLImageProcessor(max_pixels=MAX_PIXELS, **settings), tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )


def stock_processor(tokenizer) -> Qwen2_5_VLProcessor:
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(max_pixels=MAX_PIXELS), tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )


def apt_keys(inputs) -> dict:
    return {key: torch.as_tensor(inputs[key]) for key in APTInputs.KEYS}


class Recorder:
    """While open: the rows of every vision block's input and the ``cu_seqlens`` each block's attention gets."""

    def __init__(self, visual: torch.nn.Module) -> None:
        self.visual = visual
        self.rows: list[int] = []
        self.seqlens: dict[int, list[int]] = {}
        self.merged: list[int] = []

    def __enter__(self) -> Recorder:
        self.handles = [self.visual.blocks[0].register_forward_pre_hook(lambda _, args: self.rows.append(len(args[0])))]
        self.handles.append(self.visual.merger.mlp.register_forward_pre_hook(
            lambda _, args: self.merged.append(len(args[0]))))
        for number, block in enumerate(self.visual.blocks):
            self.handles.append(block.attn.register_forward_pre_hook(self.seqlens_of(number), with_kwargs=True))
        return self

    def seqlens_of(self, number: int):
        def record(_: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            self.seqlens.setdefault(number, kwargs["cu_seqlens"].tolist())  # the first call (prefill) only
        return record

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


def cumulative(counts: list[int]) -> list[int]:
    return [sum(counts[:i]) for i in range(len(counts) + 1)]


# --- exactly stock where APT changes nothing --------------------------------------------------

def test_keeping_every_patch_gives_the_stock_logits_and_generation(models, tokenizer, photos):
    """Budget alpha 1.0 keeps every base patch: the APT path (windows regrouped by row) reproduces the stock model bit for bit."""
    stock, apt = models
    text = [PROMPT, SHORT_PROMPT]
    inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=1.0)(
        images=photos, text=text, padding=True, return_tensors="pt"
    )
    reference = stock_processor(tokenizer)(images=photos, text=text, padding=True, return_tensors="pt")
    assert reference["image_grid_thw"][:, 1:].tolist() == [[16, 16], [12, 18]]
    assert torch.equal(inputs["apt_num_tokens"], reference["image_grid_thw"].prod(-1))  # nothing merged
    for key in reference:  # the APT prompt is the stock prompt
        assert torch.equal(inputs[key], reference[key]), key

    with torch.no_grad(), Recorder(apt.model.visual) as recorded:
        logits = apt(**inputs).logits
    with torch.no_grad():
        expected = stock(**reference).logits
    assert torch.equal(logits, expected)
    # The stock windows: the rocket's six are cut by its right and bottom edges (8 x 2, 4 x 8, 4 x 2 patches).
    _, stock_windows = get_vision_window_index(reference["image_grid_thw"], 2, 112, 14)
    assert torch.diff(stock_windows).tolist() == [64] * 4 + [64, 64, 16, 32, 32, 8]
    assert recorded.seqlens[0] == recorded.seqlens[2] == stock_windows.tolist()
    assert recorded.seqlens[1] == recorded.seqlens[3] == [0, 256, 472]

    stock_run, apt_run = greedy(stock, reference), greedy(apt, inputs)
    assert torch.equal(apt_run.sequences, stock_run.sequences)
    for apt_step, stock_step in zip(apt_run.logits, stock_run.logits, strict=True):
        assert torch.equal(apt_step, stock_step)


def test_keeping_every_patch_gives_the_stock_hidden_states_in_row_order(models, tokenizer, photos):
    """The stock tower returns its hidden states in window order; the APT tower puts them back in
    the order of ``apt_pixel_values`` (here the stock row order): the same values, bit for bit."""
    stock, apt = models
    inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=1.0)(images=photos, return_tensors="pt")
    grids = inputs["image_grid_thw"]
    with torch.no_grad():
        ours = apt.model.get_image_features(image_grid_thw=grids, output_hidden_states=True, **apt_keys(inputs))
        theirs = stock.model.get_image_features(inputs["pixel_values"], grids, output_hidden_states=True)
    window_index, _ = get_vision_window_index(grids, 2, 112, 14)
    stock_rows = (window_index[:, None] * 4 + torch.arange(4)).flatten()  # stock output row j is input row stock_rows[j]
    back = torch.argsort(stock_rows)
    assert torch.equal(ours.last_hidden_state, theirs.last_hidden_state[back])
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 5  # the blocks' input and their four outputs
    for mine, stock_hidden in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        assert torch.equal(mine, stock_hidden[back])
    for mine, stock_tokens in zip(ours.pooler_output, theirs.pooler_output, strict=True):
        assert torch.equal(mine, stock_tokens)


def test_stock_inputs_give_the_stock_model(models, tokenizer, photos):
    stock, apt = models
    inputs = stock_processor(tokenizer)(images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(apt(**inputs).logits, stock(**inputs).logits)


# --- APT at alpha 0.3 on photos ---------------------------------------------------------------

def test_alpha_0_3_runs_on_the_counted_rows_windows_and_llm_tokens(models, tokenizer, photos):
    _, apt = models
    inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)(
        images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt"
    )
    rows, llm = inputs["apt_num_tokens"], inputs["apt_num_llm_tokens"]
    base = inputs["image_grid_thw"].prod(-1)
    assert base.tolist() == [256, 216] and (rows < base).all() and (llm < base // 4).all()
    assert torch.equal((inputs["input_ids"] == apt.config.image_token_id).sum(-1), llm)
    sizes = inputs["apt_patch_sizes"]
    assert set(sizes.tolist()) == {14, 28, 56}

    # Each row in the window of its top-left base cell, counted here without apt_viz.
    windows: list[int] = []
    for positions, (_, _, w) in zip(inputs["apt_patch_positions"].split(rows.tolist()), inputs["image_grid_thw"].tolist()):
        across = -(-w // WINDOW)
        per_window = Counter((r // WINDOW) * across + c // WINDOW for r, c in positions.tolist())
        windows += [per_window[key] for key in sorted(per_window)]
    assert len(windows) == 4 + 6

    with torch.no_grad(), Recorder(apt.model.visual) as recorded:
        out = apt(**inputs)
    assert recorded.rows == [int(rows.sum())]  # the counted rows, not 472
    assert recorded.merged == [int(llm.sum())]  # one merger input per counted LLM token
    for block in WINDOWED:
        assert recorded.seqlens[block] == cumulative(windows), block
    for block in FULL:
        assert recorded.seqlens[block] == cumulative(rows.tolist()), block
    assert out.logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(out.logits).all()
    generated = greedy(apt, inputs, steps=3).sequences
    assert generated.shape == (2, inputs["input_ids"].shape[1] + 3)


def test_the_order_of_the_rows_does_not_matter(models, tokenizer, photos):
    """Rows are grouped by the position of their cell, not by their place in the input: shuffling each
    image's rows gives the same LLM features bit for bit and the hidden states shuffled alike."""
    _, apt = models
    inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)(images=photos, return_tensors="pt")
    keys, grids = apt_keys(inputs), inputs["image_grid_thw"]
    generator = torch.Generator().manual_seed(1)
    bounds = cumulative(keys["apt_num_tokens"].tolist())
    shuffle = torch.cat([start + torch.randperm(end - start, generator=generator)
                         for start, end in zip(bounds, bounds[1:])])
    shuffled = {**keys, **{key: keys[key][shuffle] for key in ("apt_pixel_values", "apt_patch_sizes",
                                                                "apt_patch_positions")}}
    with torch.no_grad():
        ours = apt.model.get_image_features(image_grid_thw=grids, **keys)
        moved = apt.model.get_image_features(image_grid_thw=grids, **shuffled)
    for a, b in zip(ours.pooler_output, moved.pooler_output, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(moved.last_hidden_state, ours.last_hidden_state[shuffle])


def test_a_padded_batch_equals_each_image_alone(models, tokenizer, photos):
    """Two photos of different sizes, the shorter prompt padded on the left. Alone and in the batch the
    vision rows meet the same weights in the same windows, and the LLM the same tokens at the same
    positions; the sums differ only in their order (float32 matrix products over a different number of
    rows, the padded prompt's masked attention), which moves float32 logits (here at most 0.35) by a
    few ulp: measured 0 and 6e-8 on this machine. 1e-5 leaves room for other BLAS blockings and thread
    counts and is far below what a wrong grouping makes: attending over the whole image in every block
    instead of the windows moves the rocket's logits by 4e-3."""
    _, apt = models
    processor = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)
    assert_batch_equals_alone(apt, processor, photos, [PROMPT, SHORT_PROMPT], steps=3)


# --- save and load ----------------------------------------------------------------------------

def test_processor_and_model_survive_save_and_load(models, tokenizer, photos, tmp_path):
    stock, apt = models
    processor = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)
    inputs = processor(images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = apt(**inputs).logits
    processor.save_pretrained(tmp_path)
    apt.save_pretrained(tmp_path)
    loaded_processor = APTQwen2_5_VLProcessor.from_pretrained(tmp_path)
    loaded, info = APTQwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    again = loaded_processor(images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    for key in inputs:
        assert torch.equal(again[key], inputs[key]), key
    with torch.no_grad():
        assert torch.equal(loaded.eval()(**again).logits, expected)

    # A stock checkpoint loads unchanged into the APT class.
    stock.save_pretrained(tmp_path / "stock")
    from_stock, info = APTQwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "stock", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for key, value in stock.state_dict().items():
        assert torch.equal(from_stock.state_dict()[key], value), key


# --- windows by hand --------------------------------------------------------------------------

def hand_built_batch() -> tuple[dict, torch.Tensor]:
    """Image 0: 8 x 12 base cells, two windows (8 x 8 and, cut by the edge, 8 x 4). A 56 px cell at
    (0, 0) and a 28 px cell at (4, 4) in the left window, a 28 px cell at (2, 10) in the right one,
    base cells elsewhere. Image 1: 4 x 4 base cells, one window cut to 4 x 4.

    Rows by hand: left window 64 - 16 - 4 = 44 base cells + 2 cells = 46 rows; right window
    32 - 4 = 28 base cells + 1 cell = 29 rows; image 1: 16 rows. LLM tokens: 44 / 4 + 2 = 13,
    28 / 4 + 1 = 8 (image 0: 21), 16 / 4 = 4 (image 1).
    """
    large = {(0, 0): 4, (4, 4): 2, (2, 10): 2}
    covered = {(r + dr, c + dc) for (r, c), side in large.items() for dr in range(side) for dc in range(side)}
    cells = [((r, c), side) for (r, c), side in large.items()]
    cells += [((r, c), 1) for r in range(8) for c in range(12) if (r, c) not in covered]
    cells += [((r, c), 1) for r in range(4) for c in range(4)]  # image 1
    positions = torch.tensor([position for position, _ in cells])
    sizes = torch.tensor([14 * side for _, side in cells])
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "apt_pixel_values": torch.randn(len(cells), 3 * 2 * 14 * 14, generator=generator),
        "apt_patch_sizes": sizes,
        "apt_patch_positions": positions,
        "apt_num_tokens": torch.tensor([75, 16]),
        "apt_num_llm_tokens": torch.tensor([21, 4]),
    }
    return inputs, torch.tensor([[1, 8, 12], [1, 4, 4]])


def test_rows_are_grouped_by_window_on_a_hand_built_case(models):
    _, apt = models
    inputs, grids = hand_built_batch()
    layout = apt_layout(APTInputs.from_mapping(inputs), grids, 14, 2)
    order, cu_window_seqlens = apt.model.apt_windows(layout, grids)
    assert cu_window_seqlens.tolist() == [0, 46, 75, 91]
    positions, sizes = inputs["apt_patch_positions"][order], inputs["apt_patch_sizes"][order]
    assert (positions[:46, 1] < 8).all() and (positions[46:75, 1] >= 8).all()  # left window, then right
    assert sorted(sizes[:46].tolist()) == [14] * 44 + [28, 56] and sorted(sizes[46:75].tolist()) == [14] * 28 + [28]
    # Image 1 after image 0, its base rows (given in raster order) in the stock order: 2 x 2 blocks in raster order.
    assert positions[75:].tolist() == [[r + dr, c + dc] for r in (0, 2) for c in (0, 2) for dr in (0, 1) for dc in (0, 1)]

    with torch.no_grad(), Recorder(apt.model.visual) as recorded:
        features = apt.model.get_image_features(image_grid_thw=grids, **inputs)
    for block in WINDOWED:
        assert recorded.seqlens[block] == [0, 46, 75, 91]
    for block in FULL:
        assert recorded.seqlens[block] == [0, 75, 91]
    assert [len(tokens) for tokens in features.pooler_output] == [21, 4]


# --- bench and FLOPs --------------------------------------------------------------------------

def test_bench_times_the_apt_model_and_its_windowed_flops_are_torchs_count(tmp_path, photo_paths):
    """``apt-viz bench --preset tiny-qwen2.5-vl`` runs the APT model; the vision FLOPs it reports
    (windows counted from the selection) are those torch's FLOP counter counts on the APT tower
    (eager attention: explicit matmuls, window by window) on the same pixels."""
    from apt_viz.bench import BenchSettings, prepare_images
    from apt_viz.cli import app
    from apt_viz.core.qwen2vl import ResizeSpec
    from apt_viz.imaging import load_image

    paths = [photo_paths["rocket"]]
    result = CliRunner().invoke(app, [
        "bench", str(paths[0]), "--preset", PRESET, "--device", "cpu", "--alphas", "0.3", "--batch-size", "1",
        "--megapixels", "0.05", "--warmup", "0", "--repeats", "1", "--json", "-o", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [row["setting"] for row in rows] == ["stock", "alpha 0.3"]
    assert all(row["vision"]["median_ms"] > 0 and row["prefill"]["median_ms"] > 0 for row in rows)

    images = prepare_images([load_image(p) for p in paths], BenchSettings(megapixels=0.05), ResizeSpec())
    inputs = APTQwen2VLImageProcessor(patch_selection_method="budget", alpha=0.3)(images, return_tensors="pt")
    torch.manual_seed(0)
    model = APTQwen2_5_VLForConditionalGeneration(preset_config(PRESET, attn_implementation="eager")).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.model.get_image_features(image_grid_thw=inputs["image_grid_thw"], **apt_keys(inputs))
    assert rows[1]["vision_tokens"] == int(inputs["apt_num_tokens"].sum())
    assert rows[1]["llm_tokens"] == int(inputs["apt_num_llm_tokens"].sum())
    assert rows[1]["vision_flops"] == counter.get_total_flops()
    grid = inputs["image_grid_thw"][0, 1:].tolist()
    assert grid[0] > WINDOW or grid[1] > WINDOW  # several windows
    rows_, llm = int(inputs["apt_num_tokens"]), int(inputs["apt_num_llm_tokens"])
    whole = vision_flops(preset_architecture(PRESET), rows_, llm, [rows_])  # one window: every block over the image
    assert rows[1]["vision_flops"] < whole
