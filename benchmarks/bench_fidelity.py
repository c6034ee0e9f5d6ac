"""Cost of the fidelity block (docs/fidelity.md) per image, against the work of ``apt-viz run`` on it.

    python benchmarks/bench_fidelity.py [--repeat 3] [--threads 2] [--alpha 0.3]

In this one process, torch limited to ``--threads`` (the 2 cores of the target), on each bundled
photo resized to about 1 MP (1224 x 816, 816 x 1224, 1008 x 1008, 1280 x 720):

1. ``run``: what ``apt-viz run IMAGE --no-fidelity`` does per image after start-up (``ImageJob``:
   load, analyse, write every artifact of the image's folder), budget ``--alpha``.
2. ``fidelity``: :func:`apt_viz.fidelity.measure_fidelity` on that analysis: the views (APT's and
   the random baseline's reconstructions, the two uniform resizes) and their scores (four PSNRs,
   four ``psnr_detail``, four SSIMs), with the SSIM part on its own.
3. ``run --fidelity``: ``run``'s default, which also measures fidelity and writes ``04_fidelity/``
   (three PNGs); its extra time over 1. is what a user pays.

Each figure is the best of ``--repeat``, all measured in turn, and the fidelity cost is printed
as a fraction of ``run``'s (target: at most 15%). Then the ways to compute the four SSIMs of the
last photo: apt-viz's (scikit-image's ``structural_similarity``, float64, one thread per candidate
up to ``--threads``), the same on one thread, and kornia's ``metrics.ssim`` (float32, batched and
one by one) when kornia is installed (it is not a dependency: ``pip install kornia`` to compare).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PHOTOS = (("astronaut", (1224, 816)), ("chelsea", (816, 1224)), ("coffee", (1008, 1008)), ("rocket", (1280, 720)))


def best_ms(function: Callable[[], Any], repeat: int) -> float:
    """Best wall time of ``function()`` in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=0.3)
    options = parser.parse_args()

    import torch
    from PIL import Image

    from apt_viz.analysis import analyze_image
    from apt_viz.batch.inputs import InputItem
    from apt_viz.batch.jobs import ImageJob
    from apt_viz.core.config import APTConfig
    from apt_viz.fidelity import fidelity_views, measure_fidelity, ssim
    from apt_viz.imaging import load_image

    torch.set_num_threads(options.threads)
    config = APTConfig(method="budget", alpha=options.alpha, device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        for name, size in PHOTOS:
            path = folder / f"{name}.jpg"
            with Image.open(REPO / "test_img" / f"{name}.jpg") as photo:
                photo.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(path, quality=92)
            job = ImageJob(config, str(folder / "out"))
            job_fidelity = ImageJob(config, str(folder / "out_fidelity"), fidelity=True)
            item = InputItem(str(path), name)
            original = load_image(path)
            analysis = analyze_image(original, config)
            views = fidelity_views(analysis, original)
            images = [views.apt, views.uniform_equal_vision.image, views.uniform_equal_llm.image,
                      views.random_equal_vision]
            measure_fidelity(analysis, original)  # warm-up: the first call imports scikit-image
            run_ms = fidelity_ms = ssim_ms = full_ms = float("inf")
            for _ in range(options.repeat):  # in turn, so all see the same load
                run_ms = min(run_ms, best_ms(lambda: job(item), 1))  # noqa: B023
                full_ms = min(full_ms, best_ms(lambda: job_fidelity(item), 1))  # noqa: B023
                fidelity_ms = min(fidelity_ms, best_ms(lambda: measure_fidelity(analysis, original), 1))  # noqa: B023
                ssim_ms = min(ssim_ms, best_ms(lambda: ssim(views.reference, images), 1))  # noqa: B023
            rows.append((f"{name} {analysis.resized_hw[1]}x{analysis.resized_hw[0]}", run_ms, fidelity_ms, ssim_ms,
                         full_ms))

        print(f"per image, torch threads {options.threads}, budget alpha {options.alpha}, best of {options.repeat}")
        print(f"{'image':20s} {'run':>9s} {'fidelity':>9s} {'of which SSIM':>14s} {'fidelity / run':>15s} "
              f"{'run --fidelity':>15s} {'extra / run':>12s}")

        def line(label: str, run_ms: float, fidelity_ms: float, ssim_ms: float, full_ms: float,
                 share: float, extra: float) -> str:
            return (f"{label:20s} {run_ms:7.0f} ms {fidelity_ms:7.0f} ms {ssim_ms:11.0f} ms {share:14.0%} "
                    f"{full_ms:12.0f} ms {extra:11.0%}")

        for label, run_ms, fidelity_ms, ssim_ms, full_ms in rows:
            print(line(label, run_ms, fidelity_ms, ssim_ms, full_ms, fidelity_ms / run_ms, full_ms / run_ms - 1))
        run_mean, fidelity_mean, ssim_mean, full_mean = (statistics.mean(column) for column in list(zip(*rows))[1:])
        print(line("mean", run_mean, fidelity_mean, ssim_mean, full_mean, statistics.mean(r[2] / r[1] for r in rows),
                   statistics.mean(r[4] / r[1] - 1 for r in rows)) + "   (target: fidelity / run <= 15%)")
        ssim_libraries(views.reference, images, options.repeat, options.threads)


def ssim_libraries(reference: Any, candidates: list[Any], repeat: int, threads: int) -> None:
    """The SSIMs of one image's four candidates, computed each way, measured in turn."""
    import torch
    from skimage.metrics import structural_similarity

    from apt_viz.fidelity import ssim

    def array(image: Any) -> Any:
        return image[0].permute(1, 2, 0).double().numpy()

    target, others = array(reference), [array(candidate) for candidate in candidates]
    import skimage

    ways: dict[str, Callable[[], list[float | None]]] = {
        f"apt-viz ssim(): scikit-image on {threads} threads": lambda: ssim(reference, candidates, threads=threads),
        f"scikit-image {skimage.__version__}, float64, 4 calls on 1 thread": lambda: [float(structural_similarity(
            target, other, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
            channel_axis=-1)) for other in others],
    }
    try:
        import kornia

        batch = torch.cat(candidates).contiguous()
        references = reference.expand_as(batch).contiguous()
        ways[f"kornia {kornia.__version__} metrics.ssim, float32, one batch of 4"] = lambda: kornia.metrics.ssim(
            references, batch, 11, max_val=1.0, eps=0.0, padding="valid").double().mean(dim=(1, 2, 3)).tolist()
        ways["kornia, float32, 4 calls"] = lambda: [float(kornia.metrics.ssim(
            reference.contiguous(), candidate.contiguous(), 11, max_val=1.0, eps=0.0, padding="valid").double().mean())
            for candidate in candidates]
    except ImportError:
        print("(kornia is not installed: its figures are left out)")
    values = {label: way() for label, way in ways.items()}
    times = {label: float("inf") for label in ways}
    for _ in range(repeat):
        for label, way in ways.items():
            times[label] = min(times[label], best_ms(way, 1))
    height, width = reference.shape[-2:]
    exact = values[f"scikit-image {skimage.__version__}, float64, 4 calls on 1 thread"]
    print(f"\nSSIM of the 4 candidates of one {width}x{height} image (best of {repeat}, in turn):")
    for label in ways:
        gap = max(abs(a - b) for a, b in zip(values[label], exact))  # type: ignore[operator]
        print(f"  {label:52s} {times[label]:7.0f} ms   max |diff| from scikit-image {gap:.1e}")


if __name__ == "__main__":
    main()
