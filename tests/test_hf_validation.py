"""Hand-built apt_* inputs that do not fit are refused on every entry point, before the model runs.

For each family with an APT model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5; tiny random presets)
and each inconsistency a user can produce (corrupting a processor batch of one image, and the second
image of a batch of two), ``forward``, ``get_image_features``, ``generate`` and ``get_rope_index``
raise a one-line ValueError naming the image and the problem; no submodule of the model has run
(forward pre-hooks on every module below the entry models record nothing: no embedding, no vision
block, no LLM layer), and it is no RuntimeError from deep inside torch. Valid inputs are left untouched and give the same outputs as before.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from apt_viz.bench.presets import preset_config
from apt_viz.hf import (
    APTInputs,
    APTQwen2_5_VLForConditionalGeneration,
    APTQwen2_5_VLProcessor,
    APTQwen2VLForConditionalGeneration,
    APTQwen2VLImageProcessor,
    APTQwen2VLProcessor,
    APTQwen3_5ForConditionalGeneration,
    APTQwen3VLForConditionalGeneration,
    APTQwen3VLProcessor,
)

from helpers import QWEN3_IMAGE, tiny_tokenizer

PROMPTS = {
    "one": ["<|vision_start|><|image_pad|><|vision_end|> describe this image ."],
    "two": ["<|vision_start|><|image_pad|><|vision_end|> describe this image .",
            "<|vision_start|><|image_pad|><|vision_end|> describe ."],
}
# family: (APT model class, tiny preset, APT processor class, video processor, image settings with the pixel budget)
FAMILIES = {
    "qwen2-vl": (APTQwen2VLForConditionalGeneration, "tiny", APTQwen2VLProcessor, Qwen2VLVideoProcessor,
                 {"max_pixels": 56 * 56 * 16}),
    "qwen2.5-vl": (APTQwen2_5_VLForConditionalGeneration, "tiny-qwen2.5-vl", APTQwen2_5_VLProcessor,
                   Qwen2VLVideoProcessor, {"max_pixels": 56 * 56 * 16}),
    "qwen3-vl": (APTQwen3VLForConditionalGeneration, "tiny-qwen3-vl", APTQwen3VLProcessor, Qwen3VLVideoProcessor,
                 {**QWEN3_IMAGE, "max_pixels": 64 * 64 * 16}),
    "qwen3.5": (APTQwen3_5ForConditionalGeneration, "tiny-qwen3.5", APTQwen3VLProcessor, Qwen3VLVideoProcessor,
                {**QWEN3_IMAGE, "max_pixels": 64 * 64 * 16}),
}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(family, tokenizer):
    model_class, preset, *_ = FAMILIES[family]
    torch.manual_seed(0)
    return model_class(preset_config(preset, tokenizer=tokenizer)).eval()


@pytest.fixture(scope="module")
def batches(family, tokenizer, photo_paths) -> dict:
    """Processor outputs (budget 0.3) for one photo and for two photos of different sizes."""
    _, _, processor_class, video_class, image = FAMILIES[family]
    processor = processor_class(
        image_processor=APTQwen2VLImageProcessor(**image, patch_selection_method="budget", alpha=0.3),
        tokenizer=tokenizer,
        video_processor=video_class(),
    )
    photos = [Image.open(photo_paths[name]).convert("RGB") for name in ("astronaut", "rocket")]
    return {
        batch: dict(processor(images=photos[: len(text)], text=text, padding=True, return_tensors="pt"))
        for batch, text in PROMPTS.items()
    }


# --- corruptions of the last image of a batch ------------------------------------------------------

def rows_of_last(inputs: dict) -> tuple[int, int]:
    """(first, end) batch rows of the last image."""
    counts = inputs["apt_num_tokens"].tolist()
    return sum(counts[:-1]), sum(counts)


def base_size(inputs: dict) -> int:
    """The family's base patch size p (the smallest cell of the photos at budget 0.3)."""
    return int(inputs["apt_patch_sizes"].min())


def first_row(inputs: dict, size: int, fits: Callable[[int, int, int], bool] = lambda r, c, w: True) -> int:
    """The first batch row of the last image with cell size ``size`` (and ``fits(row, col, grid_w)``)."""
    start, end = rows_of_last(inputs)
    grid_w = int(inputs["image_grid_thw"][-1, 2])
    for row in range(start, end):
        r, c = inputs["apt_patch_positions"][row].tolist()
        if int(inputs["apt_patch_sizes"][row]) == size and fits(r, c, grid_w):
            return row
    raise AssertionError(f"no {size} px row")


def with_rows(inputs: dict, keep: torch.Tensor, extra: int) -> dict:
    """``inputs`` with its APT rows taken at ``keep`` and the last image's row count changed by ``extra``."""
    out = dict(inputs)
    for key in ("apt_pixel_values", "apt_patch_sizes", "apt_patch_positions"):
        out[key] = inputs[key][keep]
    out["apt_num_tokens"] = inputs["apt_num_tokens"].clone()
    out["apt_num_tokens"][-1] += extra
    return out


def set_row(inputs: dict, key: str, row: int, value) -> dict:
    out = dict(inputs)
    out[key] = inputs[key].clone()
    out[key][row] = torch.as_tensor(value)
    return out


def drop_last(key: str) -> Callable[[dict], dict]:
    return lambda inputs: {**inputs, key: inputs[key][:-1]}


def bump(key: str) -> Callable[[dict], dict]:
    def change(inputs: dict) -> dict:
        out = dict(inputs)
        out[key] = inputs[key].clone()
        out[key][-1] += 1
        return out

    return change


def duplicate_2p(inputs: dict) -> dict:
    row = first_row(inputs, 2 * base_size(inputs))
    return with_rows(inputs, torch.cat([torch.arange(row + 1), torch.arange(row, len(inputs["apt_patch_sizes"]))]), 1)


def drop_2p(inputs: dict) -> dict:
    row = first_row(inputs, 2 * base_size(inputs))
    keep = torch.ones(len(inputs["apt_patch_sizes"]), dtype=torch.bool)
    keep[row] = False
    return with_rows(inputs, keep, -1)


def size_42(inputs: dict) -> dict:
    return set_row(inputs, "apt_patch_sizes", first_row(inputs, 2 * base_size(inputs)), 42)


def outside(inputs: dict) -> dict:
    row = first_row(inputs, 4 * base_size(inputs))
    return set_row(inputs, "apt_patch_positions", row, [0, int(inputs["image_grid_thw"][-1, 2])])


def unaligned(inputs: dict) -> dict:
    row = first_row(inputs, 2 * base_size(inputs), lambda r, c, w: c + 3 <= w)
    r, c = inputs["apt_patch_positions"][row].tolist()
    return set_row(inputs, "apt_patch_positions", row, [r, c + 1])


def prompt_short_of_one(inputs: dict) -> dict:
    """The last placeholder of the last prompt becomes the text token after it (<|vision_end|>)."""
    ids, types = inputs["input_ids"].clone(), inputs["mm_token_type_ids"].clone()
    last = int((types[-1] == 1).nonzero()[-1])
    ids[-1, last], types[-1, last] = ids[-1, last + 1], 0
    return {**inputs, "input_ids": ids, "mm_token_type_ids": types}


def retype(key: str, how: Callable) -> Callable[[dict], dict]:
    return lambda inputs: {**inputs, key: how(inputs[key])}


# (corruption, message; {last} is the index of the corrupted image, {width} the row width C*T*p*p)
CASES = {
    "pixel-rows": (drop_last("apt_pixel_values"), "image {last}: the APT row counts disagree: apt_pixel_values has"),
    "position-rows": (drop_last("apt_patch_positions"), "image {last}: the APT row counts disagree: apt_pixel_values has"),
    "num-tokens": (bump("apt_num_tokens"), "image {last}: apt_num_tokens[{last}] = "),
    "num-llm-tokens": (bump("apt_num_llm_tokens"), "image {last}: apt_num_llm_tokens[{last}] = "),
    "size": (size_42, "image {last}, row "),
    "outside": (outside, "px cell at base cell (0, "),
    "unaligned": (unaligned, "is not aligned to its size (row and column must be multiples of 2)"),
    "duplicated-cell": (duplicate_2p, "is covered by 2 APT cells (overlapping or duplicated rows)"),
    "dropped-cell": (drop_2p, "is covered by no APT cell (a hole: a dropped row?)"),
    "prompt": (prompt_short_of_one, "image {last}: the prompt holds"),
    "dtype": (retype("apt_patch_sizes", lambda t: t.float()), "apt_patch_sizes must hold integers, got torch.float32"),
    "dims": (retype("apt_patch_positions", lambda t: t.flatten()), "apt_patch_positions must have shape (rows, 2)"),
    "device": (retype("apt_num_tokens", lambda t: t.to("meta")), "apt_num_tokens is on meta but apt_pixel_values on cpu"),
    "type": (retype("apt_num_llm_tokens", lambda t: t.numpy()), "apt_num_llm_tokens must be a torch.Tensor, got ndarray"),
    "row-width": (retype("apt_pixel_values", lambda t: t[:, :-1]), "apt_pixel_values rows hold {short} values but the vision tower takes {width}"),
}
# Where the message names more than the image, the rest is pinned here (for the photos above; {p} the base size).
PLACE = {
    "size": "patch size 42 px is not one of the scales {p}, {p2}, {p4} px",
    "outside": "reaches outside the image's",
    "unaligned": "the {p2} px cell at base cell",
}


def call_forward(model, inputs):
    return model(**inputs)


def call_image_features(model, inputs):
    apt = {key: inputs[key] for key in APTInputs.KEYS}
    return model.model.get_image_features(image_grid_thw=inputs["image_grid_thw"], **apt)


def call_generate(model, inputs):
    return model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=0)


def call_rope_index(model, inputs):
    apt = {key: inputs[key] for key in APTInputs.KEYS}
    return model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"], **apt,
    )


ENTRY_POINTS = {
    "forward": call_forward, "get_image_features": call_image_features, "generate": call_generate,
    "get_rope_index": call_rope_index,
}


def record_module_calls(model) -> tuple[list[str], list]:
    """Names of the submodules that run: forward pre-hooks on every module below the two entry models
    (the vision tower, the language model, the embeddings, every block and layer)."""
    calls: list[str] = []
    handles = [
        module.register_forward_pre_hook(lambda module, args, name=name: calls.append(name))
        for name, module in model.named_modules()
        if name not in ("", "model")
    ]
    return calls, handles


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("batch", ["one", "two"])
def test_malformed_inputs_are_refused_before_the_model_runs(model, batches, batch, case, entry):
    corrupt, message = CASES[case]
    if case == "prompt" and entry == "get_image_features":
        pytest.skip("get_image_features takes no prompt")
    p = base_size(batches[batch])
    width = batches[batch]["apt_pixel_values"].shape[1]
    names = {"p": p, "p2": 2 * p, "p4": 4 * p, "width": width, "short": width - 1}
    inputs = corrupt(batches[batch])
    last = len(inputs["image_grid_thw"]) - 1
    calls, handles = record_module_calls(model)
    try:
        with pytest.raises(ValueError) as error:
            ENTRY_POINTS[entry](model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    text = str(error.value)
    assert message.format(last=last, **names) in text and "\n" not in text, text
    assert PLACE.get(case, "").format(**names) in text, text
    if "image" in message:
        assert text.startswith(f"image {last}"), text
    assert not isinstance(error.value, RuntimeError)
    assert calls == [], f"the model ran before the check: {calls[:3]}"


# --- valid inputs ---------------------------------------------------------------------------------

def test_valid_inputs_are_left_untouched_and_run(model, batches):
    inputs = batches["two"]
    before = {key: value.clone() for key, value in inputs.items()}
    with torch.no_grad():
        first = model(**inputs).logits
        again = model(**inputs).logits
    for key, value in inputs.items():
        assert torch.equal(value, before[key]) and value.dtype == before[key].dtype, key
    assert torch.equal(first, again)
    for name, call in ENTRY_POINTS.items():  # every entry point takes them
        assert call(model, inputs) is not None, name


def test_inputs_on_another_device_than_the_model_are_refused(model, batches):
    """The processor's tensors on the CPU, the model elsewhere (here the meta device): one line, nothing runs."""
    import copy

    elsewhere = copy.deepcopy(model).to("meta")
    with pytest.raises(ValueError) as error:
        elsewhere(**batches["one"])
    assert str(error.value) == (
        "apt_pixel_values is on cpu but the model on meta: move the inputs with .to(model.device)"
    )
