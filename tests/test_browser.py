"""index.html in a real headless browser (Debian's chromium): opens from file://, every thumbnail
loads, sorting works. Skipped when chromium is not installed."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

IMAGES = Path(__file__).resolve().parent.parent / "test_img"
CHROMIUM = next((path for path in (shutil.which("chromium"), "/usr/bin/chromium") if path and os.path.exists(path)), None)

# Appended to a copy of the page (the page itself carries no test code). It runs after every
# image has loaded or failed, then writes what it saw into <body data-*> for --dump-dom.
PROBE = """<script>
window.addEventListener("load", function () {
  var out = document.body.dataset;
  var thumbs = Array.prototype.slice.call(document.querySelectorAll("img"));
  out.images = thumbs.length;
  out.imagesLoaded = thumbs.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
  function names() {
    return Array.prototype.map.call(document.querySelectorAll("#results tbody tr"),
                                    function (row) { return row.getAttribute("data-name"); }).join("|");
  }
  function header(title) {
    return Array.prototype.filter.call(document.querySelectorAll("#results th"),
                                       function (th) { return th.textContent === title; })[0];
  }
  // The LLM-token map column: per row, is the picture in that column this row's, and did it load?
  function llmColumn() {
    var column = Array.prototype.indexOf.call(document.querySelectorAll("#results th"), header("LLM-token map"));
    return Array.prototype.map.call(document.querySelectorAll("#results tbody tr"), function (row) {
      var img = row.cells[column].querySelector("img");
      var own = img && decodeURIComponent(img.getAttribute("src")) ===
        row.getAttribute("data-name") + "/02_patches_grid/llm_tokens_visualization.jpg";
      return own && img.complete && img.naturalWidth > 0 ? "ok" : "bad";
    }).join("|");
  }
  out.initial = names();
  out.llmColumn = llmColumn();
  header("retention").click(); out.retentionUp = names(); out.llmColumnSorted = llmColumn();
  header("retention").click(); out.retentionDown = names();
  header("image").click(); out.imageUp = names();
  out.probeDone = "yes";
});
</script>"""


def run_chromium(out: Path, *args: str) -> subprocess.CompletedProcess:
    profile = out.parent / "chromium-profile"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def probe(index: Path) -> dict[str, str]:
    """Open a probed copy of ``index`` (same folder, so its relative links hold) and read its findings."""
    probed = index.with_name("_probe.html")
    probed.write_text(index.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        result = run_chromium(index.parent, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    finally:
        probed.unlink()
    body = re.search(r"<body([^>]*)>", result.stdout)
    assert body, f"chromium printed no DOM: {result.stderr[-2000:]}"
    return {key: value for key, value in re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1))}


@pytest.fixture(scope="module")
def index_html(tmp_path_factory) -> Path:
    """A real folder run of the CLI over the test photos plus one broken file."""
    from apt_viz.cli import main

    root = tmp_path_factory.mktemp("browser")
    photos = root / "photos"
    shutil.copytree(IMAGES, photos, ignore=shutil.ignore_patterns("*.md"))
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = root / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([str(photos), "-o", str(out), "-m", "v2", "--alpha", "1.0", "--quiet", "--device", "cpu"])
    assert exit_info.value.code == 1  # the broken file failed, the photos are done
    return out / "index.html"


def names_by(stats: list[dict], key, reverse: bool = False) -> str:
    return "|".join(s["name"] for s in sorted(stats, key=key, reverse=reverse))


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_index_renders_with_every_thumbnail_and_sorts(index_html):
    stats = json.loads((index_html.parent / "summary.json").read_text())["images"]
    assert len(stats) == 4
    seen = probe(index_html)
    assert seen.get("probe-done") == "yes", seen
    # every thumbnail decoded, 4 per image: overlay, LLM-token map, and (fidelity is on by default)
    # APT's reconstruction and the uniform baseline at equal vision tokens
    assert seen["images"] == "16" and seen["images-loaded"] == "16"
    assert seen["llm-column"] == seen["llm-column-sorted"] == "|".join(["ok"] * 4)  # its own map, in its row
    assert seen["initial"] == "|".join(s["name"] for s in stats)
    assert len({s["retention"] for s in stats}) == 4  # distinct, so the expected order is unique
    assert seen["retention-up"] == names_by(stats, lambda s: s["retention"])
    assert seen["retention-down"] == names_by(stats, lambda s: s["retention"], reverse=True)
    assert seen["image-up"] == names_by(stats, lambda s: s["name"].lower())
    assert "broken.jpg: not a readable image" in index_html.read_text()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_index_screenshot(index_html):
    """The page paints from file:// (a blank page would give a tiny, uniform PNG)."""
    shot = index_html.parent.parent / "shot.png"
    run_chromium(index_html.parent, "--window-size=1200,900", f"--screenshot={shot}", index_html.as_uri())
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1200, 900)
        low, high = image.convert("L").getextrema()
        assert high - low > 100


def test_cli_index_has_no_broken_link(index_html):
    """Not a browser test: every href/src of the CLI's page names a file of the run."""
    from urllib.parse import unquote

    from test_html_index import parse

    page = parse(index_html.read_text(encoding="utf-8"))
    assert len(page.sources) == 16  # 4 thumbnails per image (see above)
    for target in page.links + page.sources:
        assert (index_html.parent / unquote(target)).is_file(), target


# The compare page has no script of its own, so its policy forbids scripts; the probed copy allows the
# probe's inline script and nothing else (images load under the page's own img-src rule).
SHEETS_PROBE = """<script>
window.addEventListener("load", function () {
  var sheets = Array.prototype.slice.call(document.querySelectorAll("#sheets img"));
  document.body.dataset.sheets = sheets.length;
  document.body.dataset.sheetsLoaded = sheets.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
  document.body.dataset.probeDone = "yes";
});
</script>"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_compare_index_shows_every_sheet(tmp_path):
    from apt_viz.cli import main

    photos = tmp_path / "photos"
    shutil.copytree(IMAGES, photos, ignore=shutil.ignore_patterns("*.md"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(photos), "-o", str(out), "--quiet", "--device", "cpu", "--panel-width", "200"])
    assert exit_info.value.code == 0
    page = (out / "compare_index.html").read_text(encoding="utf-8")
    allowed = page.replace("style-src 'unsafe-inline'", "style-src 'unsafe-inline'; script-src 'unsafe-inline'")
    assert allowed != page
    probed = out / "_probe.html"
    probed.write_text(allowed.replace("</body>", SHEETS_PROBE + "</body>"), encoding="utf-8")
    result = run_chromium(out, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    body = re.search(r"<body([^>]*)>", result.stdout)
    assert body, f"chromium printed no DOM: {result.stderr[-2000:]}"
    seen = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert seen.get("probe-done") == "yes", seen
    assert seen["sheets"] == seen["sheets-loaded"] == "4"  # one sheet per photo, each decoded from file://
