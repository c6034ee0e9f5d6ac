"""apt_viz.core.layout and apt_viz.core.apt_inputs on hand-made selections (torch only, no transformers).

What is pinned: the layout of a selection worked by hand (merger rows, LLM order, cells, rotary
centres, segments); each inconsistency of hand-built inputs fails with its one-line message naming
the image; the apt_* keys come from one declaration; the stock row order helpers.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from apt_viz.core.apt_inputs import APTInputs, check_image_tokens
from apt_viz.core.layout import apt_layout, merge_block_order

# Image 0: a 4 x 4 base grid (2 x 2 merged cells): base groups at the top-left and bottom-right,
# 28 px cells at (0, 2) and (2, 0), rows in the processor's order (base rows by merge group, then
# 28 px rows in raster order). Image 1: a 2 x 2 grid holding one 28 px cell.
HAND_SIZES = [14] * 8 + [28, 28] + [28]
HAND_POSITIONS = [[0, 0], [0, 1], [1, 0], [1, 1], [2, 2], [2, 3], [3, 2], [3, 3], [0, 2], [2, 0], [0, 0]]
HAND_GRIDS = [[1, 4, 4], [1, 2, 2]]


def hand_inputs(sizes=HAND_SIZES, positions=HAND_POSITIONS, num_tokens=(10, 1), num_llm=(4, 1)) -> APTInputs:
    return APTInputs(
        pixel_values=None,
        patch_sizes=torch.tensor(sizes),
        patch_positions=torch.tensor(positions),
        num_tokens=torch.tensor(num_tokens),
        num_llm_tokens=torch.tensor(num_llm),
    )


def same(a: APTInputs, b: APTInputs) -> bool:
    first, second = a.as_dict(), b.as_dict()
    return list(first) == list(second) and all(torch.equal(first[key], second[key]) for key in first)


def test_the_layout_of_a_hand_made_selection():
    layout = apt_layout(hand_inputs(), torch.tensor(HAND_GRIDS), 14, 2)
    # Tokens in merged-grid raster order: group A, the 28 px at (0, 2), the one at (2, 0), group B.
    assert layout.merge_index.view(-1, 4).tolist() == [[0, 1, 2, 3], [8, 8, 8, 8], [9, 9, 9, 9], [4, 5, 6, 7],
                                                       [10, 10, 10, 10]]
    assert [cells.tolist() for cells in layout.llm_cells] == [[0, 1, 2, 3], [0]]
    assert layout.llm_tokens == (4, 1)
    assert layout.cu_seqlens.tolist() == [0, 10, 11]
    assert layout.vision_positions[:8].tolist() == torch.tensor(HAND_POSITIONS[:8]).float().tolist()  # base: stock integers
    assert layout.vision_positions[8:].tolist() == [[0.5, 2.5], [2.5, 0.5], [0.5, 0.5]]  # 28 px: centres
    assert layout.image_index.tolist() == [0] * 10 + [1]
    assert layout.cell_sides.tolist() == [1] * 8 + [2, 2, 2]
    assert layout.cell_positions.tolist() == HAND_POSITIONS


def test_rows_may_come_in_any_order():
    """A base row's merge group is found by position: shuffling the rows permutes the merge index alike."""
    order = torch.tensor([9, 3, 0, 10, 5, 8, 1, 7, 2, 6, 4])
    image_0 = order[order < 10]
    shuffled = hand_inputs(
        sizes=torch.tensor(HAND_SIZES)[torch.cat([image_0, torch.tensor([10])])].tolist(),
        positions=torch.tensor(HAND_POSITIONS)[torch.cat([image_0, torch.tensor([10])])].tolist(),
    )
    layout = apt_layout(shuffled, torch.tensor(HAND_GRIDS), 14, 2)
    reference = apt_layout(hand_inputs(), torch.tensor(HAND_GRIDS), 14, 2)
    position_of = torch.cat([image_0, torch.tensor([10])])  # new row -> old row
    assert torch.equal(position_of[layout.merge_index], reference.merge_index)
    assert [c.tolist() for c in layout.llm_cells] == [c.tolist() for c in reference.llm_cells]


def test_sixteen_pixel_scales():
    """Qwen3-VL's 16 px base: the scales are 16, 32 and 64 px; a 64 px cell is one LLM token at its centre."""
    inputs = hand_inputs(sizes=[64], positions=[[0, 0]], num_tokens=(1,), num_llm=(1,))
    layout = apt_layout(inputs, torch.tensor([[1, 4, 4]]), 16, 2)
    assert layout.merge_index.tolist() == [0, 0, 0, 0]
    assert layout.vision_positions.tolist() == [[1.5, 1.5]]
    with pytest.raises(ValueError, match="patch size 56 px is not one of the scales 16, 32, 64 px"):
        apt_layout(hand_inputs(sizes=[56], positions=[[0, 0]], num_tokens=(1,), num_llm=(1,)),
                   torch.tensor([[1, 4, 4]]), 16, 2)


# Each case: what is changed in the hand-made inputs, and the message it must raise.
DROPPED = {"sizes": HAND_SIZES[1:], "positions": HAND_POSITIONS[1:], "num_tokens": (9, 1)}
DUPLICATED = {"sizes": [*HAND_SIZES[:9], 28, *HAND_SIZES[9:]], "positions": [*HAND_POSITIONS[:9], [0, 2], *HAND_POSITIONS[9:]],
              "num_tokens": (11, 1), "num_llm": (5, 1)}
MALFORMED = [
    pytest.param(DROPPED, "image 0: base cell (0, 0) is covered by no APT cell (a hole: a dropped row?)", id="hole"),
    pytest.param(DUPLICATED, "image 0: base cell (0, 2) is covered by 2 APT cells (overlapping or duplicated rows)", id="overlap"),
    pytest.param({"sizes": [14] * 8 + [42, 28, 28]}, "image 0, row 8: patch size 42 px is not one of the scales 14, 28, 56 px", id="size"),
    pytest.param({"sizes": [14] * 8 + [112, 28, 28]}, "image 0, row 8: patch size 112 px is not one of the scales", id="size-beyond-scales"),
    pytest.param({"positions": [*HAND_POSITIONS[:10], [1, 0]]},
                 "image 1, row 0: the 28 px cell at base cell (1, 0) reaches outside the image's 2 x 2 grid", id="outside"),
    pytest.param({"positions": [*HAND_POSITIONS[:10], [0, -2]]}, "image 1, row 0: the 28 px cell at base cell (0, -2) reaches outside", id="negative"),
    pytest.param({"positions": [*HAND_POSITIONS[:8], [1, 2], [2, 0], [0, 0]]},
                 "image 0, row 8: the 28 px cell at base cell (1, 2) is not aligned to its size (row and column must be multiples of 2)",
                 id="unaligned"),
    pytest.param({"num_llm": (5, 1)}, "image 0: apt_num_llm_tokens[0] = 5 but its rows make 4 LLM tokens", id="llm-count"),
    pytest.param({"num_tokens": (10, 2)}, "image 1: apt_num_tokens[1] = 2 but 1 of the 11 APT rows are left for it", id="num-tokens-high"),
    pytest.param({"num_tokens": (9, 1)}, "image 1: apt_num_tokens sums to 10 but there are 11 APT rows (1 after the last image)",
                 id="num-tokens-low"),
    pytest.param({"num_tokens": (11, 0)}, "image 1: apt_num_tokens[1] is 0; an image has at least one APT row", id="num-tokens-zero"),
    pytest.param({"num_tokens": (10, 1, 1)}, "image 2: apt_num_tokens has an entry for it but image_grid_thw has only 2 images",
                 id="num-tokens-images"),
    pytest.param({"num_llm": (4,)}, "image 1: apt_num_llm_tokens has no entry for it (1 entries for 2 images)", id="llm-images"),
]


@pytest.mark.parametrize("change, message", MALFORMED)
def test_each_inconsistency_fails_with_its_one_line_message(change, message):
    with pytest.raises(ValueError) as error:
        apt_layout(hand_inputs(**change), torch.tensor(HAND_GRIDS), 14, 2)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_tensor_level_problems_fail_with_one_line():
    grid = torch.tensor(HAND_GRIDS)
    good = hand_inputs()
    pixels = torch.zeros(11, 3 * 2 * 14 * 14)
    cases = [
        (good, torch.tensor([[1, 4, 4], [2, 2, 2]]), None, "image 1: image_grid_thw is (2, 2, 2); APT images need t = 1"),
        (good, torch.tensor([[1, 4, 4], [1, 3, 2]]), None, "image 1: image_grid_thw is (1, 3, 2)"),
        (replace(good, pixel_values=pixels[:10]), grid, None,
         "image 1: the APT row counts disagree: apt_pixel_values has 10, apt_patch_sizes has 11, apt_patch_positions has 11 rows"),
        (replace(good, pixel_values=pixels[:, :100]), grid, 1176,
         "apt_pixel_values rows hold 100 values but the vision tower takes 1176"),
        (replace(good, pixel_values=pixels.long()), grid, None,
         "apt_pixel_values must hold floats, got torch.int64"),
        (replace(good, patch_sizes=good.patch_sizes.float()), grid, None,
         "apt_patch_sizes must hold integers, got torch.float32"),
        (replace(good, patch_positions=good.patch_positions.T), grid, None,
         "apt_patch_positions must have shape (rows, 2), got (2, 11)"),
        (replace(good, patch_positions=good.patch_positions.numpy()), grid, None,
         "apt_patch_positions must be a torch.Tensor, got ndarray (call the processor with return_tensors='pt')"),
        (good, grid[:, 1:], None, "image_grid_thw must have shape (images, 3), got (2, 2)"),
        (good, grid[:0], None, "image_grid_thw holds no image, but APT inputs are given"),
    ]
    for inputs, grids, row_width, message in cases:
        with pytest.raises(ValueError) as error:
            apt_layout(inputs, grids, 14, 2, row_width=row_width)
        assert message in str(error.value) and "\n" not in str(error.value), message
    with pytest.raises(ValueError, match="apt_patch_sizes is on cpu but the model on meta: move the inputs"):
        apt_layout(good, grid, 14, 2, device=torch.device("meta"))


def test_the_prompt_must_hold_each_images_llm_tokens():
    pad, text = 9, 1
    prompts = torch.tensor([[text, pad, pad, pad, text, text], [pad, text, pad, pad, text, text]])  # runs of 3, 1, 2
    check_image_tokens(prompts, pad, torch.tensor([3, 1, 2]), "APTQwen2VLProcessor")  # fits
    with pytest.raises(ValueError) as error:
        check_image_tokens(prompts, pad, torch.tensor([3, 2, 2]), "APTQwen2VLProcessor")
    assert str(error.value) == (
        "image 1: the prompt holds 1 image tokens for it but apt_num_llm_tokens[1] = 2: build the inputs with APTQwen2VLProcessor"
    )
    with pytest.raises(ValueError, match="the prompt holds 6 image tokens but apt_num_llm_tokens gives 5 for 2 images"):
        check_image_tokens(prompts, pad, torch.tensor([3, 2]), "APTQwen2VLProcessor")
    check_image_tokens(prompts, pad, torch.tensor([4, 2]), "APTQwen2VLProcessor")  # adjacent runs: totals agree


# --- the apt_* keys: one declaration -----------------------------------------------------------

def test_the_keys_come_from_the_fields_and_round_trip():
    assert APTInputs.KEYS == ("apt_pixel_values", "apt_patch_sizes", "apt_patch_positions", "apt_num_tokens",
                              "apt_num_llm_tokens")
    assert APTInputs.key("num_llm_tokens") == "apt_num_llm_tokens"
    with pytest.raises(KeyError):
        APTInputs.key("tokens")
    pixels = torch.arange(11.0)[:, None]
    inputs = replace(hand_inputs(), pixel_values=pixels)
    as_dict = inputs.as_dict()
    assert list(as_dict) == list(APTInputs.KEYS)
    assert same(APTInputs.from_mapping(as_dict), inputs)
    kwargs = {**as_dict, "attention_mask": 1}
    assert same(APTInputs.pop_from(kwargs), inputs) and kwargs == {"attention_mask": 1}
    assert APTInputs.pop_from({"attention_mask": 1}) is None
    assert "apt_pixel_values" not in hand_inputs().as_dict()


def test_pop_from_names_what_is_missing():
    full = hand_inputs().as_dict()
    with pytest.raises(ValueError, match="APT inputs are incomplete: apt_num_tokens missing"):
        APTInputs.pop_from({key: value for key, value in full.items() if key != "apt_num_tokens"}, pixels=False)
    with pytest.raises(ValueError, match="given without apt_pixel_values"):
        APTInputs.pop_from(dict(full))
    assert same(APTInputs.pop_from(dict(full), pixels=False), hand_inputs())


def test_concat_joins_images_in_order():
    first = hand_inputs(sizes=[28], positions=[[0, 0]], num_tokens=(1,), num_llm=(1,))
    second = hand_inputs(sizes=[14] * 4, positions=[[0, 0], [0, 1], [1, 0], [1, 1]], num_tokens=(4,), num_llm=(1,))
    joined = APTInputs.concat([first, second])
    assert joined.patch_sizes.tolist() == [28, 14, 14, 14, 14]
    assert joined.num_tokens.tolist() == [1, 4] and joined.num_llm_tokens.tolist() == [1, 1]
    assert joined.pixel_values is None
    layout = apt_layout(joined, torch.tensor([[1, 2, 2], [1, 2, 2]]), 14, 2)
    assert layout.merge_index.tolist() == [0, 0, 0, 0, 1, 2, 3, 4]


# --- the stock row order -----------------------------------------------------------------------

def test_merge_block_order_is_the_stock_order():
    """A 2 x 4 grid: stock rows are the 2 x 2 blocks in raster order, raster inside each block."""
    rows, cols = torch.meshgrid(torch.arange(2), torch.arange(4), indexing="ij")
    order = merge_block_order(rows.flatten(), cols.flatten(), 4, 2)
    cells = torch.stack([rows.flatten(), cols.flatten()], 1)[order].tolist()
    assert cells == [[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3]]
