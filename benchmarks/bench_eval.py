"""``apt-viz eval``'s speed: examples/s of a run, and the prefill time of the stock pass against the APT passes.

    python benchmarks/bench_eval.py          # CUDA, Qwen2-VL-2B preset (random weights); exits 0 without CUDA
    python benchmarks/bench_eval.py --model ~/models/Qwen2-VL-2B-Instruct     # a real checkpoint folder
    python benchmarks/bench_eval.py --device cpu --preset tiny --megapixels 0.05 --examples 4   # the code path on a CPU

The examples are the bundled photos scaled to about ``--megapixels`` and cycled to ``--examples``,
each with a short question, run through :func:`apt_viz.eval.run.run_eval` (the code ``apt-viz eval``
runs) after one warm-up example. Printed side by side, in one run:

1. per setting: the median and mean ``prefill_ms`` (vision encoder + LLM prefill per example, measured
   by the runner), the stock pass's median over the setting's, and the mean vision and LLM tokens;
2. examples/s of the run with the APT settings only (``--baselines none``) and of the default run
   (every baseline too), each example also paying its stock pass.

A preset has random weights (its answers are noise; the times are what the shapes cost); with a
tiny preset on a CPU the figures exercise the code path, not the speed of a real model.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((REPO_ROOT / "test_img").glob("*.jpg"))
QUESTION = "what is in this image ?"
# The stock video processor each family's processor is built with (it is never used: images only).
VIDEO_PROCESSORS = {"qwen2-vl": "Qwen2VLVideoProcessor", "qwen2.5-vl": "Qwen2VLVideoProcessor",
                    "qwen3-vl": "Qwen3VLVideoProcessor", "qwen3.5": "Qwen3VLVideoProcessor"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to exercise the code path")
    parser.add_argument("--model", default=None, help="a checkpoint folder (default: --preset with random weights)")
    parser.add_argument("--preset", default="qwen2-vl-2b", help="an apt_viz.bench preset (random weights)")
    parser.add_argument("--alphas", default="0.3,0.5", help="budget alphas, comma-separated")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    return parser.parse_args(argv)


def preset_model(name: str, device: Any) -> Any:
    """An :class:`~apt_viz.eval.model.EvalModel` of a preset: random weights, the published vocabulary and
    vision token ids, a word-level tokenizer built in code, the family's stock and APT processors."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from apt_viz.bench.presets import TOKEN_IDS, TOKEN_NAMES, family_config, preset_architecture
    from apt_viz.checkpoint import CheckpointSettings
    from apt_viz.core.families import family_spec
    from apt_viz.eval.model import EvalModel, apt_classes
    from apt_viz.eval.settings import DType

    arch = preset_architecture(name)
    spec = family_spec(arch.family)
    special = {TOKEN_NAMES[key]: value for key, value in TOKEN_IDS[arch.family].items()}
    if arch.vocab_size <= max(special.values()):  # a small vocabulary: its last four ids (as family_config does)
        special = {token: arch.vocab_size - 4 + i for i, token in enumerate(special)}
    words = ["<unk>", "<pad>", *QUESTION.split()]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)} | special, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                                     additional_special_tokens=list(special))
    image_processor = Qwen2VLImageProcessor(
        patch_size=spec.patch_size, merge_size=spec.merge_size, temporal_patch_size=spec.temporal_patch_size,
        size={"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels},
        image_mean=list(spec.image_mean), image_std=list(spec.image_std),
    )
    video_processor = getattr(transformers, VIDEO_PROCESSORS[arch.family])()
    stock = getattr(transformers, spec.processor_class)(image_processor=image_processor, tokenizer=tokenizer,
                                                         video_processor=video_processor)
    model_class, apt_processor_class = apt_classes(spec)
    apt = apt_processor_class(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor)
    dtype = DType.AUTO.torch_dtype(device)
    with torch.device(device):
        model = model_class._from_config(family_config(arch), dtype=dtype)
    checkpoint = CheckpointSettings(
        path=f"preset {name} (random weights)", model_type=spec.model_types[0], model_family=spec.family,
        patch_size=spec.patch_size, merge_size=spec.merge_size, temporal_patch_size=spec.temporal_patch_size,
        min_pixels=spec.min_pixels, max_pixels=spec.max_pixels, image_mean=spec.image_mean,
        image_std=spec.image_std, resize=True,
    )
    return EvalModel(checkpoint, spec, model.eval(), stock, apt, device, dtype)


def write_examples(folder: Path, count: int, megapixels: float) -> list[Any]:
    """The photos scaled to about ``megapixels``, cycled to ``count`` examples."""
    from PIL import Image

    from apt_viz.eval.data import Example
    from apt_viz.imaging import load_image

    paths = []
    for photo in PHOTOS:
        image = load_image(photo)
        scale = math.sqrt(megapixels * 1e6 / (image.width * image.height))
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        path = folder / f"{photo.stem}.png"
        image.resize(size, Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return [Example(i, paths[i % len(paths)].name, str(paths[i % len(paths)]), QUESTION, None) for i in range(count)]


def timed_run(model: Any, examples: list[Any], plan: Any, folder: Path, name: str, batch_size: int) -> tuple[
        float, list[dict]]:
    """(examples/s, the table's rows) of one eval run."""
    import pyarrow.parquet as pq

    from apt_viz.eval.run import run_eval
    from apt_viz.eval.table import EvalTable

    output = str(folder / f"{name}.parquet")
    started = time.perf_counter()
    with EvalTable(output, {"bench": name}) as table:
        report = run_eval(plan, model, examples, table, batch_size=batch_size)
        table.finish()
    seconds = time.perf_counter() - started
    if report.failed:
        raise RuntimeError(f"{report.failed} example(s) failed: {report.failures[0].error}")
    return len(examples) / seconds, pq.read_table(output).to_pylist()


def per_setting(rows: list[dict], labels: tuple[str, ...]) -> list[tuple[str, float, float, float, float]]:
    """(setting, median and mean prefill ms, mean vision tokens, mean LLM tokens), in the run's order.

    The median is the figure to compare: on a shared machine a few examples can take many times the usual time.
    """
    out = []
    for label in labels:
        mine = [row for row in rows if row["setting"] == label]
        times = [row["prefill_ms"] for row in mine]
        out.append((label, statistics.median(times), statistics.fmean(times),
                    *(statistics.fmean(row[key] for row in mine) for key in ("vision_tokens", "llm_tokens"))))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_eval: no CUDA device; these figures need a GPU (nothing measured)")
        return 0
    from apt_viz.bench.models import describe_device
    from apt_viz.core.config import APTConfig
    from apt_viz.eval.model import load_eval_model
    from apt_viz.eval.settings import EvalPlan, parse_baselines
    from apt_viz.stats.settings import settings_of

    device = torch.device(args.device)
    model = load_eval_model(args.model, device) if args.model else preset_model(args.preset, device)
    config = APTConfig(**model.checkpoint.config_fields())
    selections = settings_of("budget", [float(a) for a in args.alphas.split(",")])
    plain = EvalPlan(config, selections, parse_baselines("none"), max_new_tokens=args.max_new_tokens)
    full = EvalPlan(config, selections, max_new_tokens=args.max_new_tokens)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        examples = write_examples(folder, args.examples, args.megapixels)
        timed_run(model, examples[:1], plain, folder, "warmup", 1)
        rate, rows = timed_run(model, examples, plain, folder, "apt", args.batch_size)
        full_rate, _ = timed_run(model, examples, full, folder, "full", args.batch_size)

    print(f"\n{describe_device(device)}; {model.checkpoint.path}, {str(model.dtype).removeprefix('torch.')}; "
          f"{args.examples} examples of ~{args.megapixels:g} MP, batch {args.batch_size}, "
          f"{args.max_new_tokens} new tokens")
    if not args.model:
        print("random weights: the answers are noise, the times are what the shapes cost"
              + ("; a tiny preset on a CPU exercises the code path only" if device.type == "cpu" else ""))
    settings = per_setting(rows, plain.labels)
    stock_ms = settings[0][1]
    print(f"\n  {'setting':<22} {'prefill ms (median)':>20} {'(mean)':>8} {'stock / it':>11} {'vision tokens':>14} "
          f"{'LLM tokens':>11}")
    for label, median, mean, vision, llm in settings:
        print(f"  {label:<22} {median:20.1f} {mean:8.1f} {stock_ms / median:10.2f}x {vision:14.0f} {llm:11.0f}")
    print(f"\n  examples/s: {rate:.2f} with stock + {len(selections)} APT setting(s); {full_rate:.2f} with every "
          f"baseline too ({len(full.settings)} settings per example)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
