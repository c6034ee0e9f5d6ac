"""APTQwen2VLForConditionalGeneration on a tiny random Qwen2-VL (CPU, float32, no weights, no hub).

What is pinned: the stock parameters load unchanged; keeping every base patch (budget alpha 1.0)
gives the stock model's logits and greedy generation; stock inputs give stock logits; with alpha
0.3 on the photos the vision blocks see exactly the selected rows and the prompt exactly the APT
LLM tokens; a prompt's result does not depend on its batch (padding, other images); M-RoPE keeps
the stock text positions; the merger reads a 28 / 56 px row four times; the vision rotary
embedding gets the cells' centres; images are encoded once per generate call.
"""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

from apt_viz.bench.presets import preset_config
from apt_viz.hf import (
    APTInputs,
    APTQwen2VLForConditionalGeneration,
    APTQwen2VLImageProcessor,
    APTQwen2VLProcessor,
    apt_layout,
)

from helpers import REPO_ROOT, assert_batch_equals_alone, greedy, stock_and_apt

PROMPT = "<|vision_start|><|image_pad|><|vision_end|> describe this image ."
SHORT_PROMPT = "<|vision_start|><|image_pad|><|vision_end|> describe ."
TWO_IMAGES = "<|vision_start|><|image_pad|><|vision_end|> describe <|vision_start|><|image_pad|><|vision_end|> this image ."
MAX_PIXELS = 56 * 56 * 16  # 224 x 224 for a square photo: 256 base patches, fast on a CPU

def build_tiny_tokenizer():
    """examples/quick_start.py's offline word-level tokenizer with Qwen2-VL's vision tokens."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("apt_viz_quick_start", REPO_ROOT / "examples" / "quick_start.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_tokenizer()


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = build_tiny_tokenizer()
    tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    return tokenizer


@pytest.fixture(scope="module")
def models(tokenizer):
    """(stock, apt): the same random tiny weights in the stock and the APT class."""
    return stock_and_apt(Qwen2VLForConditionalGeneration, APTQwen2VLForConditionalGeneration,
                         preset_config("tiny", tokenizer=tokenizer))


@pytest.fixture(scope="module")
def photos(photo_paths) -> list[Image.Image]:
    return [Image.open(photo_paths[name]).convert("RGB") for name in ("astronaut", "rocket", "coffee")]


def apt_processor(tokenizer, **settings) -> APTQwen2VLProcessor:
    return APTQwen2VLProcessor(
        image_processor=APTQwen2VLImageProcessor(max_pixels=MAX_PIXELS, **settings),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )


def stock_processor(tokenizer) -> Qwen2VLProcessor:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(max_pixels=MAX_PIXELS), tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )


def without_apt(inputs) -> dict:
    return {key: value for key, value in inputs.items() if key not in APTInputs.KEYS}


def count_rows(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """Rows of the first input of every call of ``module`` (a hook that must be removed)."""
    rows: list[int] = []
    handle = module.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    return rows, handle


# --- same parameters as the stock model -------------------------------------------------------

def test_the_stock_checkpoint_loads_unchanged(models, tmp_path):
    stock, apt = models
    assert list(apt.state_dict()) == list(stock.state_dict())
    stock.save_pretrained(tmp_path / "stock")
    loaded, info = APTQwen2VLForConditionalGeneration.from_pretrained(tmp_path / "stock", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for key, value in stock.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


# --- exactly stock where APT changes nothing --------------------------------------------------

def test_keeping_every_patch_gives_the_stock_logits_and_generation(models, tokenizer, photos):
    """Budget alpha 1.0 keeps every base patch: the APT path (checks included) reproduces the stock model bit for bit."""
    stock, apt = models
    images, text = photos[:2], [PROMPT, SHORT_PROMPT]
    inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=1.0)(
        images=images, text=text, padding=True, return_tensors="pt"
    )
    reference = stock_processor(tokenizer)(images=images, text=text, padding=True, return_tensors="pt")
    assert torch.equal(inputs["apt_num_tokens"], reference["image_grid_thw"].prod(-1))  # nothing merged
    for key in reference:  # the APT prompt is the stock prompt
        assert torch.equal(inputs[key], reference[key]), key
    with torch.no_grad():
        expected = stock(**reference).logits
        assert torch.equal(apt(**inputs).logits, expected)

    stock_run, apt_run = greedy(stock, reference), greedy(apt, inputs)
    assert torch.equal(apt_run.sequences, stock_run.sequences)
    for apt_step, stock_step in zip(apt_run.logits, stock_run.logits, strict=True):
        assert torch.equal(apt_step, stock_step)


def test_stock_inputs_give_the_stock_model(models, tokenizer, photos):
    stock, apt = models
    inputs = stock_processor(tokenizer)(images=photos[:2], text=[PROMPT, SHORT_PROMPT], padding=True,
                                        return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(apt(**inputs).logits, stock(**inputs).logits)
    assert torch.equal(greedy(apt, inputs).sequences, greedy(stock, inputs).sequences)


# --- APT at alpha 0.3 on photos ---------------------------------------------------------------

def test_the_vision_blocks_see_the_selected_rows_and_the_prompt_the_apt_tokens(models, tokenizer, photos):
    _, apt = models
    inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)(
        images=photos[:2], text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt"
    )
    base = inputs["image_grid_thw"].prod(-1)  # 16 x 16 and 12 x 18 base patches
    rows, llm = inputs["apt_num_tokens"], inputs["apt_num_llm_tokens"]
    assert base.tolist() == [256, 216]
    assert ((torch.round(0.3 * base) - rows) >= 0).all() and ((torch.round(0.3 * base) - rows) < 3).all()
    assert (llm < base // 4).all()  # fewer LLM tokens than the stock 64 and 54
    placeholders = (inputs["input_ids"] == apt.config.image_token_id).sum(-1)
    assert torch.equal(placeholders, llm)

    visual = apt.model.visual
    block_rows, block_hook = count_rows(visual.blocks[0])
    merger_rows, merger_hook = count_rows(visual.merger.mlp)  # after the gather: m*m rows per token, flattened
    seqlens: list[list[int]] = []
    attention_hook = visual.blocks[0].attn.register_forward_hook(
        lambda _, args, kwargs, out: seqlens.append(kwargs["cu_seqlens"].tolist()), with_kwargs=True
    )
    try:
        with torch.no_grad():
            out = apt(**inputs)
    finally:
        for handle in (block_hook, merger_hook, attention_hook):
            handle.remove()
    assert block_rows == [int(rows.sum())]  # 77 + 72 rows, not 496
    assert merger_rows == [int(llm.sum())]
    assert seqlens == [[0, int(rows[0]), int(rows.sum())]]  # attention stays within each image
    assert out.logits.shape[:2] == inputs["input_ids"].shape


def test_a_prompt_gives_the_same_result_alone_and_padded_in_a_batch(models, tokenizer, photos):
    """Two photos of different sizes, padded on the left: each row equals its prompt run alone."""
    _, apt = models
    processor = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)
    batch, generated = assert_batch_equals_alone(apt, processor, photos[:2], [PROMPT, SHORT_PROMPT], steps=3)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 3)


def test_two_images_in_one_prompt_keep_the_stock_text_positions(models, tokenizer, photos):
    _, apt = models
    images = [photos[0], photos[2]]
    inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)(
        images=images, text=[TWO_IMAGES], return_tensors="pt"
    )
    reference = stock_processor(tokenizer)(images=images, text=[TWO_IMAGES], return_tensors="pt")
    assert int((inputs["input_ids"] == apt.config.image_token_id).sum()) == int(inputs["apt_num_llm_tokens"].sum())

    apt_keys = {key: inputs[key] for key in APTInputs.KEYS if key != "apt_pixel_values"}
    positions, _ = apt.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"], **apt_keys
    )
    stock_positions, _ = apt.model.get_rope_index(
        reference["input_ids"], reference["mm_token_type_ids"], reference["image_grid_thw"]
    )
    text, stock_text = inputs["mm_token_type_ids"][0] == 0, reference["mm_token_type_ids"][0] == 0
    assert torch.equal(positions[:, 0, text], stock_positions[:, 0, stock_text])  # text continues as in stock
    # Each image token takes the stock position of the merged cell it starts at (a subset, in order).
    image, stock_image = positions[:, 0, ~text], stock_positions[:, 0, ~stock_text]
    stock_set = {tuple(column) for column in stock_image.T.tolist()}
    assert all(tuple(column) in stock_set for column in image.T.tolist())
    assert len({tuple(column) for column in image.T.tolist()}) == image.shape[1]

    with torch.no_grad():
        assert apt(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]
    assert greedy(apt, inputs, steps=3).sequences.shape[1] == inputs["input_ids"].shape[1] + 3


def test_images_are_encoded_once_per_generate_call(models, tokenizer, photos):
    _, apt = models
    inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)(
        images=photos[:1], text=[PROMPT], return_tensors="pt"
    )
    calls, handle = count_rows(apt.model.visual.blocks[0])
    try:
        greedy(apt, inputs, steps=4)
    finally:
        handle.remove()
    assert calls == [int(inputs["apt_num_tokens"].sum())]  # prefill only, never in the decoding steps


# --- the pieces: merger gather, rotary positions ----------------------------------------------

def test_a_large_patch_is_merged_from_its_row_repeated_four_times(models, tokenizer, photos):
    _, apt = models
    inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)(images=photos[:1])
    apt_keys = {key: torch.as_tensor(inputs[key]) for key in APTInputs.KEYS}
    grid = torch.as_tensor(inputs["image_grid_thw"])
    with torch.no_grad():
        out = apt.model.get_image_features(image_grid_thw=grid, **apt_keys)
    layout = apt_layout(APTInputs.from_mapping(apt_keys), grid, 14, 2)
    rows, features = out.last_hidden_state, out.pooler_output[0]
    merger = apt.model.visual.merger
    sizes = apt_keys["apt_patch_sizes"]
    groups = layout.merge_index.view(-1, 4).tolist()
    seen = set()
    for token, group in enumerate(groups):  # every LLM token, merged on its own
        size = int(sizes[group[0]])
        with torch.no_grad():
            if size == 14:  # a 2x2 group of base rows: those four rows, in the stock order
                assert sizes[group].tolist() == [14] * 4 and len(set(group)) == 4
                expected = merger(rows[group])
            else:  # a 28 or 56 px row: itself four times, one LLM token
                assert len(set(group)) == 1
                expected = merger(rows[group[0]].repeat(4, 1))
        # one token against the batch of all tokens: the same math, summed in another order
        assert torch.allclose(features[token], expected[0], rtol=1e-5, atol=1e-6), f"token {token}, {size} px"
        seen.add(size)
    assert seen == {14, 28, 56}
    assert len(features) == int(apt_keys["apt_num_llm_tokens"][0])


def test_the_rotary_embedding_gets_the_centre_of_every_cell(models, tokenizer, photos):
    _, apt = models
    inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)(images=photos[:1])
    apt_keys = {key: torch.as_tensor(inputs[key]) for key in APTInputs.KEYS}
    seen = []
    handle = apt.model.visual.rotary_pos_emb.register_forward_hook(lambda _, args, out: seen.append(args[1]))
    try:
        with torch.no_grad():
            apt.model.get_image_features(image_grid_thw=torch.as_tensor(inputs["image_grid_thw"]), **apt_keys)
    finally:
        handle.remove()
    positions, sizes = seen[0], apt_keys["apt_patch_sizes"]
    top_left = apt_keys["apt_patch_positions"].float()
    for size, offset in ((14, 0.0), (28, 0.5), (56, 1.5)):
        chosen = sizes == size
        assert chosen.any()
        assert torch.equal(positions[chosen], top_left[chosen] + offset), f"{size} px"
    assert positions.dtype == torch.float32


# --- bad inputs -------------------------------------------------------------------------------

def test_apt_inputs_with_a_stock_prompt_fail_with_one_line(models, tokenizer, photos):
    _, apt = models
    apt_inputs = apt_processor(tokenizer, patch_selection_method="budget", alpha=0.3)(
        images=photos[:1], text=[PROMPT], return_tensors="pt"
    )
    stock_prompt = stock_processor(tokenizer)(images=photos[:1], text=[PROMPT], return_tensors="pt")
    mixed = {**stock_prompt, **{key: apt_inputs[key] for key in APTInputs.KEYS}}
    with pytest.raises(ValueError) as error:
        apt(**mixed)
    assert "build the inputs with APTQwen2VLProcessor" in str(error.value) and "\n" not in str(error.value)
    partial = {**apt_inputs, "apt_num_tokens": None}
    with pytest.raises(ValueError, match="apt_num_tokens missing"):
        apt(**partial)
    with pytest.raises(ValueError, match="given without apt_pixel_values"):
        apt(**{**apt_inputs, "apt_pixel_values": None})


def test_the_generate_example_runs_offline_with_the_readme_counts(photo_paths):
    """examples/apt_generate.py (the README's offline example): the counts are those of analyze_image."""
    import importlib.util

    from apt_viz.analysis import analyze_image
    from apt_viz.core.config import APTConfig

    spec = importlib.util.spec_from_file_location("apt_viz_generate", REPO_ROOT / "examples" / "apt_generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = module.main(photo_paths["astronaut"])
    stats = analyze_image(photo_paths["astronaut"], APTConfig(method="budget", alpha=0.3)).stats
    assert (stats.vision_tokens, stats.llm_tokens) == (387, 186)
    assert lines[0].startswith("vision encoder rows: 387 of 1296 base patches")
    assert lines[1] == "image tokens in the prompt: 186 = apt_num_llm_tokens 186 (stock: 324)"
    assert lines[2].startswith("generated (random weights): ")
