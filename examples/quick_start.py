"""Quick start: choose the APT patch selection method and alpha inside a Qwen2-VL processor.

Runs offline in a few seconds (no hub, no weights): the tokenizer is a tiny word-level one built in
code with Qwen2-VL's vision special tokens; with a real checkpoint use its own tokenizer instead.

    python examples/quick_start.py [IMAGE]      # default: test_img/astronaut.jpg
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
QWEN2_VL_VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
PROMPT = "<|vision_start|><|image_pad|><|vision_end|> describe this image ."


def build_tiny_tokenizer():
    """A word-level tokenizer with the special tokens ``Qwen2VLProcessor`` needs (offline stand-in)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [*QWEN2_VL_VISION_TOKENS, "<unk>", "<pad>", "describe", "this", "image", "."]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=list(QWEN2_VL_VISION_TOKENS),
    )


def build_processor(image_processor, tokenizer=None):
    """A stock ``Qwen2VLProcessor`` around the given image processor."""
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer if tokenizer is not None else build_tiny_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(),
    )


def describe(way: str, inputs, merge_size: int) -> str:
    """One line of token counts for the first image: APT against stock Qwen2-VL."""
    base = int(inputs["image_grid_thw"][0].prod())
    tokens, llm_tokens = int(inputs["apt_num_tokens"][0]), int(inputs["apt_num_llm_tokens"][0])
    return (
        f"{way:<34} vision patches {tokens:5d} / {base} ({tokens / base:6.1%})"
        f"   LLM tokens {llm_tokens:4d} / {base // merge_size**2}"
    )


def main(image_path: str | Path = REPO_ROOT / "test_img" / "astronaut.jpg") -> list[str]:
    from apt_viz.hf import APTQwen2VLImageProcessor

    image = Image.open(image_path)
    lines = []

    # 1. At construction.
    processor = build_processor(APTQwen2VLImageProcessor(patch_selection_method="v2", alpha=1.0))
    inputs = processor(images=[image], text=[PROMPT], return_tensors="pt")
    lines.append(describe("1. constructor: v2, alpha=1.0", inputs, processor.image_processor.merge_size))

    # 2. As attributes of the processor's image processor (kept for later calls and save_pretrained).
    processor.image_processor.patch_selection_method = "budget"
    processor.image_processor.alpha = 0.3
    inputs = processor(images=[image], text=[PROMPT], return_tensors="pt")
    lines.append(describe("2. attributes: budget, alpha=0.3", inputs, processor.image_processor.merge_size))
    info = processor.image_processor.last_budget_info[0]
    lines.append(f"   budget {info.budget} tokens -> {info.vision_tokens}, per size {info.tokens_per_scale}")

    # 3. Per call (this call only; the attributes stay budget / 0.3).
    inputs = processor(
        images=[image],
        text=[PROMPT],
        images_kwargs={"patch_selection_method": "budget", "alpha": 0.5},
        return_tensors="pt",
    )
    lines.append(describe("3. per call: budget, alpha=0.5", inputs, processor.image_processor.merge_size))

    placeholders = int((inputs["input_ids"] == processor.image_token_id).sum())
    lines.append(
        f"<|image_pad|> placeholders in input_ids: {placeholders} (the stock count; APT models read apt_num_llm_tokens)"
    )
    lines.append("output keys: " + ", ".join(sorted(inputs.keys())))
    return lines


if __name__ == "__main__":
    for text_line in main(*sys.argv[1:2]):
        print(text_line)
