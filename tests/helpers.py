"""Helpers and worked cases shared by the tests (imported as ``helpers``; fixtures live in conftest)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_IMG_DIR = REPO_ROOT / "test_img"
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")
PHOTO_PATHS = {name: TEST_IMG_DIR / f"{name}.jpg" for name in PHOTO_NAMES}


def cli_imports(*argvs: list[str], watch: tuple[str, ...]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``apt_viz.cli.main`` on each argv in a fresh interpreter; return the process and which of
    the ``watch`` top-level modules it had imported by the end (for start-up cost checks)."""
    probe = (
        "import sys\nfrom apt_viz.cli import main\n"
        f"for argv in {list(argvs)!r}:\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        f"print('IMPORTED', sorted({{m.split('.')[0] for m in sys.modules}} & set({watch!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    marker = [line for line in result.stdout.splitlines() if line.startswith("IMPORTED ")]
    imported = ast.literal_eval(marker[-1].removeprefix("IMPORTED ")) if marker else ["<probe failed>"]
    return result, imported


def grid(rows: list[list[float]]) -> torch.Tensor:
    """A hand-written (rows, cols) grid as a (1, rows, cols) float32 tensor (a batch of one)."""
    return torch.tensor(rows, dtype=torch.float32).unsqueeze(0)


def token_count(masks: dict) -> int:
    """Selected cells over all scales (= vision tokens) of a batch of one."""
    return int(sum(m.sum() for m in masks.values()))


def per_image_tokens(masks: dict) -> torch.Tensor:
    """(B,) selected cells over all scales, per image."""
    return sum(m.flatten(1).sum(dim=1) for m in masks.values())


def load_photo_tensor(name_or_path: str | Path, resize: bool = True, size: tuple[int, int] | None = None):
    """A test photo as a (1, 3, H, W) float32 tensor in [0, 255], prepared by apt_viz.imaging.

    ``resize``: smart_resize it as Qwen2-VL would (Pillow backend, as before the torchvision default);
    ``size`` (height, width): BICUBIC to exactly that size instead (for odd sizes); neither: the
    original pixels.
    """
    from PIL import Image

    from apt_viz.imaging import load_image, pil_to_tensor, resize_for_qwen2vl

    path = PHOTO_PATHS.get(str(name_or_path), Path(name_or_path))
    image = load_image(path)
    if size is not None:
        image = image.resize((size[1], size[0]), resample=Image.Resampling.BICUBIC)
    elif resize:
        image = resize_for_qwen2vl(image, backend="pil")
    return pil_to_tensor(image)


def base_coverage(masks: dict) -> torch.Tensor:
    """(B, rows, cols) base grid: how many selected cells (of any scale) cover each base cell.

    Written independently of apt_viz.core.grids; a valid selection is a partition: every entry is 1.
    """
    sizes = sorted(masks)
    base = masks[sizes[0]]
    rows, cols = base.shape[-2:]
    total = base.float().clone()
    for size in sizes[1:]:
        factor = size // sizes[0]
        spread = masks[size].float().repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        total += spread[..., :rows, :cols]
    return total


# --- tiny Qwen3-VL / Qwen3.5 models and processors, built in code (tests/test_hf_qwen3_*.py) -----------
QWEN3_IMAGE = {"patch_size": 16, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}  # published settings


def tiny_tokenizer(padding_side: str = "left"):
    """examples/quick_start.py's offline word-level tokenizer with the Qwen vision tokens."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("apt_viz_quick_start", REPO_ROOT / "examples" / "quick_start.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = module.build_tiny_tokenizer()
    tokenizer.padding_side = padding_side  # decoder-only generation pads on the left
    return tokenizer


def qwen3_processors(tokenizer, max_pixels: int, **settings):
    """(stock Qwen3VLProcessor, APTQwen3VLProcessor) with Qwen3-VL's image settings (Qwen3.5 uses the same)."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    from apt_viz.hf import APTQwen2VLImageProcessor, APTQwen3VLProcessor

    image = {**QWEN3_IMAGE, "max_pixels": max_pixels}
    video = Qwen3VLVideoProcessor()
    stock = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**image), tokenizer=tokenizer, video_processor=video)
    apt = APTQwen3VLProcessor(image_processor=APTQwen2VLImageProcessor(**image, **settings), tokenizer=tokenizer,
                              video_processor=video)
    return stock, apt


def stock_and_apt(stock_class, apt_class, config):
    """The same random weights (seed 0) in the stock and the APT class, in eval mode."""
    torch.manual_seed(0)
    stock = stock_class(config).eval()
    apt = apt_class(config).eval()
    apt.load_state_dict(stock.state_dict())
    return stock, apt


def greedy(model, inputs, steps: int = 4, **options):
    """Greedy generation of ``steps`` tokens with every step's logits (pad id 0, the tiny tokenizer's)."""
    return model.generate(**inputs, max_new_tokens=steps, do_sample=False, output_logits=True,
                          return_dict_in_generate=True, pad_token_id=0, **options)


def assert_batch_equals_alone(model, processor, images, texts, steps: int = 3):
    """A left-padded batch of prompts gives each prompt's logits alone (within 1e-5) and, for ``steps`` > 0,
    its greedy tokens; returns the batch and its generated sequences (None for no ``steps``). The sums differ only in their order (float32 products over other
    row counts, masked attention): a few ulp, far below what a wrong row grouping or position makes."""
    batch = processor(images=images, text=texts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # one prompt is padded
    alone = [processor(images=[image], text=[text], return_tensors="pt")
             for image, text in zip(images, texts, strict=True)]
    with torch.no_grad():
        batch_logits = model(**batch).logits
        for i, single in enumerate(alone):
            length = single["input_ids"].shape[1]
            assert (batch_logits[i, -length:] - model(**single).logits[0]).abs().max() <= 1e-5, i
    if not steps:
        return batch, None
    generated = greedy(model, batch, steps=steps).sequences
    for i, single in enumerate(alone):
        assert torch.equal(generated[i, -steps:], greedy(model, single, steps=steps).sequences[0, -steps:]), i
    return batch, generated


# --- a worked case: hand-made maps of a 112x112 image and their v1 masks (thresholds 3, 2) ------------
# Base grid 8x8, 28-px grid 4x4, 56-px grid 2x2; no partial cells.
HAND_MAPS = {
    14: torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0)) * 9,  # never consulted by v1
    28: grid([[0.0, 0.0, 2.9, 3.0],
              [0.0, 0.0, 4.0, 1.0],
              [2.0, 5.0, 0.1, 0.1],
              [6.0, 2.99, 0.1, 0.1]]),
    56: grid([[1.0, 2.5],
              [5.0, 1.9]]),
}
# 56 px, threshold 2.0: (0,0)=1.0 and (1,1)=1.9 are kept. 28 px, threshold 3.0 (strict), then the
# quadrants under the kept 56-px cells are cleared. 14 px: every base cell not under a kept cell.
HAND_MASKS = {
    14: grid([[0, 0, 0, 0, 0, 0, 1, 1],
              [0, 0, 0, 0, 0, 0, 1, 1],
              [0, 0, 0, 0, 1, 1, 0, 0],
              [0, 0, 0, 0, 1, 1, 0, 0],
              [0, 0, 1, 1, 0, 0, 0, 0],
              [0, 0, 1, 1, 0, 0, 0, 0],
              [1, 1, 0, 0, 0, 0, 0, 0],
              [1, 1, 0, 0, 0, 0, 0, 0]]),
    28: grid([[0, 0, 1, 0],
              [0, 0, 0, 1],
              [1, 0, 0, 0],
              [0, 1, 0, 0]]),
    56: grid([[1, 0],
              [0, 1]]),
}


# --- a tiny checkpoint on disk (apt-viz eval) --------------------------------------------------------

CHECKPOINT_WORDS = ("user", "assistant", "what", "is", "in", "the", "image", "?", "a", "cat", "rocket", "cup", "of",
                    "coffee", "astronaut", "describe", "this", ".", "animal", "red", "blue", "yes", "no")
# A minimal chat template in Qwen's shape: the image before the text in a user turn, then the assistant's turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|> {% else %}{{ c['text'] }} {% endif %}"
    "{% endfor %}<|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)
CHECKPOINT_MAX_PIXELS = 56 * 56 * 16  # 224 x 224 for a square photo: 256 base patches, quick on a CPU
# The Qwen3 families' 16-px patches: 256 x 256 for a square photo, 256 base patches too.
CHECKPOINT_MAX_PIXELS_16 = 64 * 64 * 16
# family -> (tiny preset, transformers model class, processor class, video processor class)
CHECKPOINT_CLASSES = {
    "qwen2-vl": ("tiny", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen2.5-vl": ("tiny-qwen2.5-vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor",
                   "Qwen2VLVideoProcessor"),
    "qwen3-vl": ("tiny-qwen3-vl", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", "Qwen3VLVideoProcessor"),
    "qwen3.5": ("tiny-qwen3.5", "Qwen3_5ForConditionalGeneration", "Qwen3VLProcessor", "Qwen3VLVideoProcessor"),
}


def checkpoint_image_settings(family: str) -> dict:
    """The image-processor settings of :func:`save_tiny_checkpoint`'s ``family`` (Qwen3's published ones)."""
    if family in ("qwen3-vl", "qwen3.5"):
        return {**QWEN3_IMAGE, "max_pixels": CHECKPOINT_MAX_PIXELS_16}
    return {"max_pixels": CHECKPOINT_MAX_PIXELS}


def save_tiny_checkpoint(folder: Path, chat_template: bool = True, family: str = "qwen2-vl") -> Path:
    """A random tiny checkpoint of ``family`` (its ``tiny`` preset) as ``save_pretrained`` writes it: model,
    word-level tokenizer built in code (Qwen's vision and chat tokens), processor (and its chat template);
    nothing downloaded."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from apt_viz.bench.presets import preset_config

    preset, model_class, processor_class, video_class = CHECKPOINT_CLASSES[family]
    special = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"]
    words = [*special, "<unk>", "<pad>", *CHECKPOINT_WORDS]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        additional_special_tokens=special)
    processor = getattr(transformers, processor_class)(
        image_processor=Qwen2VLImageProcessor(**checkpoint_image_settings(family)), tokenizer=tokenizer,
        video_processor=getattr(transformers, video_class)(), chat_template=CHAT_TEMPLATE if chat_template else None,
    )
    torch.manual_seed(0)
    getattr(transformers, model_class)(preset_config(preset, tokenizer=tokenizer)).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
