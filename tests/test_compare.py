"""The compare sheet: one overlay panel per method (and alpha), each the same as a single run's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apt_viz import APTConfig, analyze_image
from apt_viz.render import patch_overlay
from apt_viz.render.compare import DEFAULT_ALPHAS, compare_sheet, panel_caption

IMAGES = Path(__file__).resolve().parent.parent / "test_img"


@pytest.fixture(scope="module")
def rocket():
    return analyze_image(IMAGES / "rocket.jpg")


def settings_of(panel) -> tuple:
    config = panel.analysis.config
    return (config.method, config.effective_thresholds() if config.method == "v1" else config.alpha)


def test_default_sheet_holds_one_panel_per_method_side_by_side(rocket):
    sheet = compare_sheet(rocket)
    assert [settings_of(panel) for panel in sheet.panels] == [
        ("v1", (3.0, 2.0)), ("v2", DEFAULT_ALPHAS["v2"]), ("budget", DEFAULT_ALPHAS["budget"])
    ]
    boxes = [panel.box for panel in sheet.panels]
    assert len({top for _, top, _, _ in boxes}) == 1  # one row
    assert all(right <= next_left for (_, _, right, _), (next_left, _, _, _) in zip(boxes, boxes[1:]))
    assert all(left >= 0 and right <= sheet.image.width and bottom <= sheet.image.height for left, _, right, bottom in boxes)
    assert sheet.skipped == []


def test_each_panel_is_the_overlay_of_a_single_run(rocket):
    sheet = compare_sheet(rocket)
    pixels = np.asarray(sheet.image)
    for panel in sheet.panels:
        method, setting = settings_of(panel)
        single = analyze_image(IMAGES / "rocket.jpg", APTConfig(method=method, **({} if method == "v1" else {"alpha": setting})))
        assert panel.analysis.stats == single.stats
        expected = np.asarray(patch_overlay(single.resized, single.masks, caption=panel_caption(single)))
        left, top, right, bottom = panel.box
        assert (bottom - top, right - left) == expected.shape[:2]
        assert np.array_equal(pixels[top:bottom, left:right], expected)


def test_captions_carry_retention_and_token_counts(rocket):
    for panel in compare_sheet(rocket).panels:
        stats = panel.analysis.stats
        caption = panel_caption(panel.analysis)
        assert f"{stats.vision_tokens} / {stats.base_tokens} patches ({stats.retention:.1%})" in caption
        assert caption.endswith(f"LLM {stats.llm_tokens} / {stats.baseline_llm_tokens}")
        assert caption.startswith(panel.analysis.config.method)


def test_alphas_give_a_row_each_and_v1_once(rocket):
    sheet = compare_sheet(rocket, [0.3, 0.7, 1.3], panel_width=300)
    assert [settings_of(panel) for panel in sheet.panels] == [
        ("v1", (3.0, 2.0)), ("v2", 0.3), ("budget", 0.3), ("v2", 0.7), ("budget", 0.7), ("v2", 1.3)
    ]
    assert sheet.skipped == ["budget at alpha 1.3 skipped: budget alpha is a fraction in (0, 1]"]
    tops = sorted({panel.box[1] for panel in sheet.panels})
    assert len(tops) == 3  # one row per alpha
    columns = {settings_of(panel)[0]: panel.box[0] for panel in sheet.panels if panel.box[1] == tops[0]}
    assert all(panel.box[0] == columns[settings_of(panel)[0]] for panel in sheet.panels)  # methods stay in their column
    assert all(panel.box[2] - panel.box[0] <= 300 for panel in sheet.panels)
    budget = [panel for panel in sheet.panels if panel.analysis.config.method == "budget"]
    assert [p.analysis.stats.vision_tokens for p in budget] == [
        p.analysis.budget_info.vision_tokens for p in budget
    ] and budget[0].analysis.stats.vision_tokens < budget[1].analysis.stats.vision_tokens


def test_v1_uses_the_configured_thresholds():
    analysis = analyze_image(IMAGES / "chelsea.jpg", APTConfig(thresholds=(4.5, 3.5)))
    v1 = compare_sheet(analysis).panels[0].analysis
    assert v1.thresholds == [4.5, 3.5] and v1.stats == analysis.stats


def test_bad_alpha_is_a_one_line_error(rocket):
    with pytest.raises(ValueError, match="alpha must be > 0"):
        compare_sheet(rocket, [0.5, -1.0])


def test_compare_command_writes_the_sheet(tmp_path, capsys):
    from PIL import Image

    from apt_viz.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(IMAGES / "chelsea.jpg"), "--alphas", "0.4,1.2", "-o", str(out), "--device", "cpu"])
    assert exit_info.value.code == 0
    expected = compare_sheet(analyze_image(IMAGES / "chelsea.jpg"), [0.4, 1.2])
    with Image.open(out / "chelsea.jpg" / "compare.jpg") as sheet:
        assert sheet.size == expected.image.size
    printed = capsys.readouterr().out
    assert "budget at alpha 1.2 skipped" in printed
    assert not (out / "compare_index.html").exists()  # one image: no index, as a one-image run
    rows = [line.split() for line in printed.splitlines() if line.startswith("chelsea.jpg")]
    assert len(rows) == len(expected.panels)  # the compact table (not a terminal): a line per panel
    for row, panel in zip(rows, expected.panels):
        stats = panel.analysis.stats
        assert row[1] == panel.analysis.config.method and row[-3] == f"{stats.vision_tokens}/{stats.base_tokens}"


def test_compare_on_a_folder_gives_one_sheet_per_image_and_an_index(tmp_path, capsys):
    """Folder names as ``run`` gives them (subfolders folded with __, clashes numbered); a broken
    file fails alone; the index links every sheet; two workers write the same sheets as one."""
    import re
    import shutil
    from urllib.parse import unquote

    from PIL import Image
    from test_html_index import parse

    from apt_viz.batch.inputs import expand_inputs
    from apt_viz.cli import main

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(IMAGES / "chelsea.jpg", photos / "chelsea.jpg")
    shutil.copy(IMAGES / "rocket.jpg", photos / "sub" / "chelsea.jpg")  # same file name, other folder
    shutil.copy(IMAGES / "coffee.jpg", photos / "coffee.png.jpg")
    (photos / "broken.jpg").write_bytes(b"not an image")
    names = [item.name for item in expand_inputs([photos], recursive=True)[0]]
    assert names == ["broken.jpg", "chelsea.jpg", "coffee.png.jpg", "sub__chelsea.jpg"]

    outputs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", str(photos), "-r", "-o", str(out), "--device", "cpu", "-q", "--workers", workers])
        assert exit_info.value.code == 1  # broken.jpg failed; the others are done
        assert f"failed: {photos / 'broken.jpg'}: not a readable image" in capsys.readouterr().err
        sheets = sorted(path.relative_to(out).as_posix() for path in out.rglob("compare.jpg"))
        assert sheets == [f"{name}/compare.jpg" for name in names if name != "broken.jpg"]
        outputs[workers] = {sheet: (out / sheet).read_bytes() for sheet in sheets}

        text = (out / "compare_index.html").read_text(encoding="utf-8")
        page = parse(text)
        assert re.findall(r'<tr data-name="([^"]*)"', text) == [name for name in names if name != "broken.jpg"]
        assert sorted(unquote(source) for source in page.sources) == sheets  # one sheet per row
        assert all((out / unquote(link)).is_file() for link in page.links)
        assert "broken.jpg: not a readable image" in text and "3 images compared, 1 failed" in text
    assert outputs["1"] == outputs["2"]  # same bytes, whichever process drew them

    single = compare_sheet(analyze_image(photos / "sub" / "chelsea.jpg"))
    with Image.open(tmp_path / "out1" / "sub__chelsea.jpg" / "compare.jpg") as sheet:
        assert sheet.size == single.image.size  # the rocket photo, not chelsea.jpg
