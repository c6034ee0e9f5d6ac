"""APTQwen3VLForConditionalGeneration on the tiny random Qwen3-VL preset (CPU, float32, no weights, no hub).

What is pinned: the stock parameters load unchanged; keeping every base patch (budget alpha 1.0)
gives the stock logits and greedy generation bit for bit; at alpha 0.3 the vision blocks see the
processor's counted rows, the final and the three deepstack mergers the APT merge groups, the
prompt the counted LLM tokens; the deepstack features are those mergers on the APT groups, added
at the image tokens after LLM layers 0, 1, 2; a left-padded batch of two images of different
sizes equals each image alone; the processor and the model survive save_pretrained /
from_pretrained; the learned position of a large cell is the hand-computed bilinear sample at its
centre (and, on request, the hand-computed average of its base samples).
"""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import Qwen3VLForConditionalGeneration

from apt_viz.bench.presets import preset_config
from apt_viz.hf import (
    APTInputs,
    APTQwen3VLForConditionalGeneration,
    APTQwen3VLProcessor,
    CellPosition,
    apt_layout,
)

from helpers import assert_batch_equals_alone, greedy, qwen3_processors, stock_and_apt, tiny_tokenizer

PROMPT = "<|vision_start|><|image_pad|><|vision_end|> describe this image ."
SHORT_PROMPT = "<|vision_start|><|image_pad|><|vision_end|> describe ."
MAX_PIXELS = 64 * 64 * 16  # 256 x 256 for a square photo: 256 base patches of 16 px


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def models(tokenizer):
    """(stock, apt): the same random tiny-qwen3-vl weights (3 deepstack mergers) in both classes."""
    return stock_and_apt(Qwen3VLForConditionalGeneration, APTQwen3VLForConditionalGeneration,
                         preset_config("tiny-qwen3-vl", tokenizer=tokenizer))


@pytest.fixture(scope="module")
def photos(photo_paths) -> list[Image.Image]:
    return [Image.open(photo_paths[name]).convert("RGB") for name in ("astronaut", "rocket")]


def budget(tokenizer, alpha: float):
    return qwen3_processors(tokenizer, MAX_PIXELS, patch_selection_method="budget", alpha=alpha)


def test_the_stock_checkpoint_loads_unchanged(models, tmp_path):
    stock, _ = models
    stock.save_pretrained(tmp_path)
    loaded, info = APTQwen3VLForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert list(loaded.state_dict()) == list(stock.state_dict())
    for key, value in stock.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_keeping_every_patch_gives_the_stock_logits_and_generation(models, tokenizer, photos):
    """Budget alpha 1.0: the APT rows, their learned-position taps and deepstack groups are the stock ones."""
    stock, apt = models
    stock_processor, apt_processor = budget(tokenizer, 1.0)
    inputs = apt_processor(images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    reference = stock_processor(images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    assert torch.equal(inputs["apt_num_tokens"], reference["image_grid_thw"].prod(-1))  # nothing merged
    with torch.no_grad():
        assert torch.equal(apt(**inputs).logits, stock(**reference).logits)
    stock_run, apt_run = greedy(stock, reference), greedy(apt, inputs)
    assert torch.equal(apt_run.sequences, stock_run.sequences)
    for apt_step, stock_step in zip(apt_run.logits, stock_run.logits, strict=True):
        assert torch.equal(apt_step, stock_step)


def test_stock_inputs_give_the_stock_model(models, tokenizer, photos):
    stock, apt = models
    inputs = budget(tokenizer, 1.0)[0](images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(apt(**inputs).logits, stock(**inputs).logits)


def test_alpha_0_3_runs_on_the_counted_rows_and_llm_tokens(models, tokenizer, photos):
    _, apt = models
    inputs = budget(tokenizer, 0.3)[1](images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    rows, llm = inputs["apt_num_tokens"], inputs["apt_num_llm_tokens"]
    base = inputs["image_grid_thw"].prod(-1)
    assert base.tolist() == [256, 216] and ((torch.round(0.3 * base) - rows).abs() < 3).all()
    assert torch.equal((inputs["input_ids"] == apt.config.image_token_id).sum(-1), llm)

    visual = apt.model.visual
    seen: dict[str, list] = {"blocks": [], "mergers": [], "taps": []}
    hooks = [
        visual.blocks[0].register_forward_pre_hook(lambda _, args: seen["blocks"].append(args[0].shape[0])),
        visual.pos_embed.register_forward_pre_hook(lambda _, args: seen["taps"].append(tuple(args[0].shape))),
        *[merger.linear_fc1.register_forward_pre_hook(lambda _, args: seen["mergers"].append(args[0].shape[0]))
          for merger in (*visual.deepstack_merger_list, visual.merger)],
    ]
    try:
        with torch.no_grad():
            logits = apt(**inputs).logits
    finally:
        for handle in hooks:
            handle.remove()
    assert seen["blocks"] == [int(rows.sum())]
    assert seen["taps"] == [(int(rows.sum()), 4)]  # bilinear: 4 taps per APT row
    assert seen["mergers"] == [int(llm.sum())] * 4  # 3 deepstack + final: one row of m*m*hidden per LLM token
    assert logits.shape[:2] == inputs["input_ids"].shape


def test_deepstack_reads_the_apt_groups_and_lands_on_the_image_tokens(models, tokenizer, photos, monkeypatch):
    _, apt = models
    model, visual = apt.model, apt.model.visual
    inputs = budget(tokenizer, 0.3)[1](images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    apt_keys = {key: inputs[key] for key in APTInputs.KEYS}
    layout = apt_layout(APTInputs.from_mapping(apt_keys), inputs["image_grid_thw"], 16, 2)
    after: dict[int, torch.Tensor] = {}
    hooks = [visual.blocks[index].register_forward_hook(lambda _, args, out, index=index: after.update({index: out}))
             for index in visual.deepstack_visual_indexes]
    added: list[tuple[torch.Tensor, torch.Tensor]] = []
    stock_process = model.language_model._deepstack_process

    def record(hidden, mask, embeds):
        added.append((mask, embeds))
        return stock_process(hidden, mask, embeds)

    monkeypatch.setattr(model.language_model, "_deepstack_process", record)
    try:
        with torch.no_grad():
            features = model.get_image_features(image_grid_thw=inputs["image_grid_thw"], **apt_keys)
            apt(**inputs)
    finally:
        for handle in hooks:
            handle.remove()
    llm = inputs["apt_num_llm_tokens"].tolist()
    image_tokens = inputs["input_ids"] == apt.config.image_token_id
    assert len(features.deepstack_features) == len(added) == 3  # after LLM layers 0, 1, 2
    for level, (index, merger) in enumerate(zip(visual.deepstack_visual_indexes, visual.deepstack_merger_list)):
        per_image = features.deepstack_features[level]
        assert [len(part) for part in per_image] == llm  # split by the APT LLM tokens
        with torch.no_grad():  # the merger on the same groups as the final merger: 4 rows per LLM token
            expected = merger(after[index][layout.merge_index])
        assert torch.allclose(torch.cat(per_image), expected, rtol=1e-5, atol=1e-6)
        mask, embeds = added[level]
        assert torch.equal(mask, image_tokens)  # added at the image-token positions, as stock
        assert torch.allclose(embeds, expected, rtol=1e-5, atol=1e-6)


def test_a_left_padded_batch_of_two_sizes_equals_each_image_alone(models, tokenizer, photos):
    _, apt = models
    batch, _ = assert_batch_equals_alone(apt, budget(tokenizer, 0.3)[1], photos, [PROMPT, SHORT_PROMPT])
    assert not torch.equal(*batch["image_grid_thw"])  # two sizes


def test_the_processor_and_the_model_survive_save_and_load(models, tokenizer, photos, tmp_path):
    _, apt = models
    processor = budget(tokenizer, 0.3)[1]
    processor.save_pretrained(tmp_path)
    apt.save_pretrained(tmp_path)
    loaded_processor = APTQwen3VLProcessor.from_pretrained(tmp_path)
    loaded = APTQwen3VLForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert type(loaded_processor) is APTQwen3VLProcessor and type(loaded) is APTQwen3VLForConditionalGeneration
    expected = processor(images=photos[:1], text=[PROMPT], return_tensors="pt")
    inputs = loaded_processor(images=photos[:1], text=[PROMPT], return_tensors="pt")
    for key in expected:
        assert torch.equal(inputs[key], expected[key]), key
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, apt(**expected).logits)


# --- the learned position of a large cell, by hand ----------------------------------------------

# A 3 x 3 table (one value per entry, in every channel) resampled to a 4 x 4 grid of 16 px patches:
# align_corners=True puts grid index i at table coordinate i * 2/3.
TABLE = [[0.0, 1.0, 2.0],
         [3.0, 5.0, 7.0],
         [6.0, 9.0, 13.0]]
# Image 0: 32 px cells at (0, 0), (0, 2), (2, 0) and a 2 x 2 group of base patches at (2, 2); image 1: one 64 px cell.
CELLS = [(32, 0, 0), (32, 0, 2), (32, 2, 0), (16, 2, 2), (16, 2, 3), (16, 3, 2), (16, 3, 3), (64, 0, 0)]
CENTRE = [
    13 / 9,  # centre (0.5, 0.5) -> table (1/3, 1/3): 4/9*0 + 2/9*1 + 2/9*3 + 1/9*5
    29 / 9,  # (0.5, 2.5) -> (1/3, 5/3): 2/3*(1/3*1 + 2/3*2) + 1/3*(1/3*5 + 2/3*7)
    53 / 9,  # (2.5, 0.5) -> (5/3, 1/3): 1/3*(2/3*3 + 1/3*5) + 2/3*(2/3*6 + 1/3*9)
    65 / 9,  # base (2, 2) -> (4/3, 4/3): 2/3*(2/3*5 + 1/3*7) + 1/3*(2/3*9 + 1/3*13), the stock sample
    9.0,  # base (2, 3) -> (4/3, 2): 2/3*7 + 1/3*13
    31 / 3,  # base (3, 2) -> (2, 4/3): 2/3*9 + 1/3*13
    13.0,  # base (3, 3) -> (2, 2)
    5.0,  # the 64 px cell: centre (1.5, 1.5) -> table (1, 1) exactly
]
# The average of the base samples: the same where a cell's samples lie in one table square (a
# bilinear function averages to its centre value); the 64 px cell's 16 samples (table coordinates
# 0, 2/3, 4/3, 2 per axis) weigh every table entry 1/9: the table's mean, 46/9.
AVERAGE = [*CENTRE[:7], 46 / 9]


def hand_inputs() -> tuple[dict, torch.Tensor]:
    sizes = torch.tensor([size for size, *_ in CELLS])
    apt = {
        "apt_pixel_values": torch.randn(len(CELLS), 3 * 2 * 16 * 16, generator=torch.Generator().manual_seed(0)),
        "apt_patch_sizes": sizes,
        "apt_patch_positions": torch.tensor([[r, c] for _, r, c in CELLS]),
        "apt_num_tokens": torch.tensor([7, 1]),
        "apt_num_llm_tokens": torch.tensor([4, 1]),
    }
    return apt, torch.tensor([[1, 4, 4], [1, 4, 4]])


@pytest.mark.parametrize("choice, expected", [(CellPosition.CENTRE, CENTRE), ("average", AVERAGE)])
def test_the_learned_position_of_a_large_cell_by_hand(tokenizer, choice, expected):
    config = preset_config("tiny-qwen3-vl", tokenizer=tokenizer)
    config.vision_config.num_position_embeddings = 9
    model = APTQwen3VLForConditionalGeneration(config).eval().model
    assert model.apt_cell_position is CellPosition.CENTRE  # the default
    model.apt_cell_position = choice
    with torch.no_grad():
        model.visual.pos_embed.weight.copy_(torch.tensor(TABLE).flatten()[:, None].expand(9, config.vision_config.hidden_size))
    seen: dict[str, torch.Tensor] = {}
    hooks = [  # the tower adds the position embedding between the patch embedding and the first block
        model.visual.patch_embed.register_forward_hook(lambda _, args, out: seen.update(patches=out)),
        model.visual.blocks[0].register_forward_pre_hook(lambda _, args: seen.update(block=args[0])),
    ]
    apt, grid = hand_inputs()
    try:
        with torch.no_grad():
            model.get_image_features(image_grid_thw=grid, **apt)
    finally:
        for handle in hooks:
            handle.remove()
    positions = seen["block"] - seen["patches"]
    want = torch.tensor(expected)[:, None].expand_as(positions)
    assert torch.allclose(positions, want, atol=1e-5), positions[:, 0]
