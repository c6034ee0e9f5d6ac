"""The README's "Choosing alpha" picture: APT's reconstruction beside uniform downscaling at equal vision tokens.

    python examples/fidelity_figure.py [IMAGE] [--alpha 0.3] [--scorer entropy]
                                       [--crops X,Y,SIZE;X,Y,SIZE] [--zoom 2]
                                       [--output docs/images/fidelity_coffee.png]

Analyses IMAGE (default: the bundled coffee photo) with the budget method, builds the views the
``fidelity`` block scores (docs/fidelity.md), and draws each square crop (in the resized image's
pixels; one row each) three times, enlarged ``--zoom`` times without smoothing: the resized image the model would
see in full, what the vision tower sees with APT (the reconstruction of ``04_fidelity/``), and the
stock processor at the ``max_pixels`` matched on APT's vision tokens (upsampled back). Each title
gives the whole image's PSNR and tokens. The default crops of the coffee photo are the spoon (APT keeps
its highlights, with seams at cell borders) and wood grain (APT gives it mostly 56 px cells and blurs it).
"""
from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TITLE_HEIGHT = 34
GAP = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default=str(REPO / "test_img" / "coffee.jpg"))
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--scorer", default="entropy")
    parser.add_argument("--crops", default="296,176,144;420,20,144",
                        help="X,Y,SIZE of each square crop (one row each), in resized pixels, separated by ';'")
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--output", default=str(REPO / "docs" / "images" / "fidelity_coffee.png"))
    options = parser.parse_args()

    from PIL import Image, ImageDraw

    from apt_viz.analysis import analyze_image
    from apt_viz.core.config import APTConfig
    from apt_viz.fidelity import fidelity_views, score_views
    from apt_viz.imaging import load_image
    from apt_viz.render._draw import font
    from apt_viz.render.fidelity import float_image

    original = load_image(options.image)
    analysis = analyze_image(original, APTConfig(method="budget", alpha=options.alpha, scorer=options.scorer))
    views = fidelity_views(analysis, original)
    scores = score_views(views, analysis.stats)
    uniform = views.uniform_equal_vision
    panels = [
        (views.reference, f"resized image, {analysis.stats.base_tokens} tokens"),
        (views.apt, f"APT budget {options.alpha:g}: {scores.apt.vision_tokens} tokens, {_db(scores.apt.psnr)}"),
        (uniform.image, f"uniform {uniform.resized_hw[1]}x{uniform.resized_hw[0]}: {uniform.vision_tokens} "
                        f"tokens, {_db(scores.uniform_equal_vision.psnr)}"),
    ]
    crops = [tuple(int(value) for value in crop.split(",")) for crop in options.crops.split(";")]
    sides = [size * options.zoom for _, _, size in crops]
    width = len(panels) * max(sides) + (len(panels) - 1) * GAP
    sheet = Image.new("RGB", (width, TITLE_HEIGHT + sum(sides) + GAP * (len(crops) - 1)), "white")
    draw = ImageDraw.Draw(sheet)
    pictures = [float_image(image) for image, _ in panels]
    top = TITLE_HEIGHT
    for (x, y, size), side in zip(crops, sides):
        for index, picture in enumerate(pictures):
            crop = picture.crop((x, y, x + size, y + size)).resize((side, side), Image.Resampling.NEAREST)
            sheet.paste(crop, (index * (max(sides) + GAP), top))
        top += side + GAP
    for index, (_, title) in enumerate(panels):
        for line, text in enumerate(title.split(": ", 1)):
            draw.text((index * (max(sides) + GAP) + 2, 2 + 15 * line), text, fill="black", font=font(13))
    Path(options.output).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(options.output, optimize=True)
    print(f"{options.output}: {sheet.width}x{sheet.height}, crops {options.crops} of the "
          f"{analysis.resized_hw[1]}x{analysis.resized_hw[0]} resized image, zoom {options.zoom}")


def _db(psnr: float | None) -> str:
    return "exact" if psnr is None else f"PSNR {psnr:.2f} dB"


if __name__ == "__main__":
    main()
