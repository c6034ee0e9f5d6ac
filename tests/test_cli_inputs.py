"""Unusual and bad inputs through the CLI: processed as Qwen2-VL would take them, or refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from apt_viz.cli import app
from apt_viz.core.qwen2vl import smart_resize

runner = CliRunner()


def _gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def make_good_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Write the unusual-but-valid images; return name -> (width, height) Qwen2-VL sees (EXIF applied)."""
    sizes = {}
    rgb = Image.fromarray(_gradient(120, 80))

    Image.fromarray((np.arange(90 * 70, dtype=np.uint32).reshape(70, 90) * 9).astype(np.uint16)).save(
        folder / "sixteen_bit.png"
    )
    sizes["sixteen_bit.png"] = (90, 70)
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    sizes["cmyk.jpg"] = (120, 80)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png", transparency=0)
    sizes["palette.png"] = (120, 80)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    sizes["rgba.png"] = (120, 80)
    rgb.convert("L").save(folder / "gray.jpg")
    sizes["gray.jpg"] = (120, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rgb.save(folder / "rotated.jpg", exif=exif)
    sizes["rotated.jpg"] = (80, 120)
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((250, 10, 10), (10, 10, 250))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    sizes["animated.gif"] = (64, 48)
    Image.fromarray(_gradient(10, 10)).save(folder / "tiny.png")
    sizes["tiny.png"] = (10, 10)
    return sizes


def make_bad_inputs(folder: Path) -> dict[str, str]:
    """Write inputs that must be refused; return name -> a word the one-line reason must contain."""
    Image.fromarray(_gradient(5000, 20)).save(folder / "extreme.png")
    buffer = folder / "full.jpg"
    Image.fromarray(_gradient(200, 200)).save(buffer, quality=95)
    data = buffer.read_bytes()
    buffer.unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    return {"extreme.png": "aspect ratio", "truncated.jpg": "truncated", "empty.jpg": "empty",
            "text.jpg": "not a readable image"}


@pytest.fixture(scope="module")
def unusual_run(tmp_path_factory):
    inputs = tmp_path_factory.mktemp("inputs")
    good = make_good_inputs(inputs)
    bad = make_bad_inputs(inputs)
    out = tmp_path_factory.mktemp("out")
    result = runner.invoke(app, ["run", str(inputs), "-o", str(out), "--device", "cpu"])
    return result, out, good, bad


def test_unusual_images_are_processed_like_qwen2vl(unusual_run):
    result, out, good, _bad = unusual_run
    assert result.exit_code == 1, result.output  # the bad ones failed, the rest completed
    for name, (width, height) in good.items():
        stats = json.loads((out / name / "stats.json").read_text())
        assert stats["original_size"] == {"width": width, "height": height}, name
        resized_h, resized_w = smart_resize(height, width)
        assert stats["resized_size"] == {"width": resized_w, "height": resized_h}, name
        with Image.open(out / name / "03_original_resized" / "resized_image.jpg") as resized:
            assert resized.size == (resized_w, resized_h) and resized.mode == "RGB"


def test_tiny_image_is_scaled_up_to_min_pixels(unusual_run):
    _result, out, _good, _bad = unusual_run
    stats = json.loads((out / "tiny.png" / "stats.json").read_text())
    assert stats["resized_size"] == {"width": 56, "height": 56} and stats["base_tokens"] == 16


def test_animated_gif_uses_first_frame(unusual_run):
    _result, out, _good, _bad = unusual_run
    with Image.open(out / "animated.gif" / "03_original_resized" / "original_image.jpg") as first:
        red, _green, blue = np.asarray(first, dtype=float).reshape(-1, 3).mean(axis=0)
    assert red > 200 and blue < 50  # the red first frame, not the blue second one


def test_transparency_composited_on_white(unusual_run):
    _result, out, _good, _bad = unusual_run
    with Image.open(out / "rgba.png" / "03_original_resized" / "original_image.jpg") as picture:
        dark_corner = np.asarray(picture, dtype=float)[0, 0]  # gradient (0, 0, 0) at half alpha over white
    assert np.all(np.abs(dark_corner - 127.5) < 6)


def test_bad_inputs_fail_with_one_named_line(unusual_run):
    result, out, _good, bad = unusual_run
    summary = json.loads((out / "summary.json").read_text())
    failures = {Path(f["input"]).name: f["error"] for f in summary["failures"]}
    assert set(failures) == set(bad)
    for name, word in bad.items():
        assert "\n" not in failures[name] and name in failures[name] and word in failures[name], failures[name]
        assert not (out / name).exists()  # nothing written for a refused input
        assert f"failed: {failures[name]}" in result.stderr
    assert "Traceback" not in result.output


def test_decompression_bomb_limit(tmp_path):
    Image.fromarray(_gradient(300, 200)).save(tmp_path / "big.png")
    result = runner.invoke(app, ["run", str(tmp_path / "big.png"), "-o", str(tmp_path / "out"),
                                 "--max-image-pixels", "10000", "--device", "cpu"])
    assert result.exit_code == 1
    assert "big.png: too large" in result.stderr and "--max-image-pixels" in result.stderr
    allowed = runner.invoke(app, ["run", str(tmp_path / "big.png"), "-o", str(tmp_path / "out"), "-q",
                                  "--max-image-pixels", "0", "--device", "cpu"])
    assert allowed.exit_code == 0 and (tmp_path / "out" / "big.png" / "stats.json").is_file()
