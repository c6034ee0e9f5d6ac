"""Run Qwen2-VL with APT: processor + model + generate, offline on the tiny random model.

Runs in a few seconds on a CPU (no hub, no weights: a tiny random Qwen2-VL and the word-level
tokenizer of quick_start.py). The answer is random text; the token counts are real.

    python examples/apt_generate.py [IMAGE]      # default: test_img/astronaut.jpg

With a real checkpoint the same three lines read:

    checkpoint = "Qwen/Qwen2-VL-2B-Instruct"
    processor = APTQwen2VLProcessor.from_pretrained(checkpoint, patch_selection_method="budget", alpha=0.3)
    model = APTQwen2VLForConditionalGeneration.from_pretrained(checkpoint)
    model.generate(**processor(images=[image], text=[prompt], return_tensors="pt"), max_new_tokens=64)
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
PROMPT = "<|vision_start|><|image_pad|><|vision_end|> describe this image ."


def main(image_path: str | Path = REPO_ROOT / "test_img" / "astronaut.jpg") -> list[str]:
    import torch
    from PIL import Image
    from quick_start import build_tiny_tokenizer
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from apt_viz.bench.presets import preset_config
    from apt_viz.hf import (
        APTQwen2VLForConditionalGeneration,
        APTQwen2VLImageProcessor,
        APTQwen2VLProcessor,
    )

    tokenizer = build_tiny_tokenizer()
    processor = APTQwen2VLProcessor(
        image_processor=APTQwen2VLImageProcessor(patch_selection_method="budget", alpha=0.3),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )
    torch.manual_seed(0)
    model = APTQwen2VLForConditionalGeneration(preset_config("tiny", tokenizer=tokenizer)).eval()

    image = Image.open(image_path)
    inputs = processor(images=[image], text=[PROMPT], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)

    base = int(inputs["image_grid_thw"].prod())
    tokens, llm_tokens = int(inputs["apt_num_tokens"][0]), int(inputs["apt_num_llm_tokens"][0])
    placeholders = int((inputs["input_ids"] == processor.image_token_id).sum())
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return [
        f"vision encoder rows: {tokens} of {base} base patches ({tokens / base:.1%})",
        f"image tokens in the prompt: {placeholders} = apt_num_llm_tokens {llm_tokens} (stock: {base // 4})",
        f"generated (random weights): {answer!r}",
    ]


if __name__ == "__main__":
    for line in main(*sys.argv[1:2]):
        print(line)
