"""``OUT/index.html`` of a folder run and ``OUT/compare_index.html`` of a compare: static, offline pages
(inline CSS/JS, no network).

It shows thumbnails of each image's patch overlay and LLM-token map, a sortable table of retention
and tokens per image linking to that image's artifacts, and the inputs that failed. It is built from the same
per-image ``stats.json`` dicts as the run's summaries; links are only made to files that exist,
so the page never holds a broken link.
"""
from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .artifacts import (
    FIDELITY_DIR,
    HEATMAP_DIR,
    LLM_TOKENS_PATH,
    OVERLAY_PATH,
    RECONSTRUCTION_PATH,
    STATS_FILE,
    SUMMARIES,
    UNIFORM_VISION_PATH,
)
from .records import CompareRecord, StatsRecord
from .summary import selection_setting

if TYPE_CHECKING:  # pragma: no cover
    from .summary import Failure


# (title, how its column sorts: "num", "text", or None for not sortable)
_COLUMNS = (
    ("overlay", None),
    ("LLM-token map", None),
    ("image", "text"),
    ("size", "num"),  # by area
    ("method", "text"),
    ("setting", "text"),
    ("vision tokens", "num"),
    ("N", "num"),
    ("retention", "num"),
    ("LLM tokens", "num"),
    ("LLM retention", "num"),
    ("artifacts", None),
)
# With fidelity (docs/fidelity.md): APT's reconstruction beside the uniform baseline at equal vision
# tokens, and the PSNRs, after the LLM retention.
_FIDELITY_THUMBNAILS = ("APT reconstruction", "uniform, equal vision tokens")
_FIDELITY_COLUMNS = ("PSNR APT (dB)", "PSNR uniform, = vision", "PSNR uniform, = LLM", "SSIM APT",
                     "SSIM uniform, = vision")


def render_index(
    out_dir: str | os.PathLike,
    stats_list: Sequence[StatsRecord],
    failures: Sequence[Failure] = (),
    title: str = "apt-viz results",
) -> str:
    """The HTML text of ``OUT/index.html`` (links are relative to ``out_dir``)."""
    out_dir = os.fspath(out_dir)
    fidelity = any("fidelity" in stats for stats in stats_list)
    rows = "\n".join(_row(out_dir, stats, fidelity) for stats in stats_list)
    columns = list(_COLUMNS)
    if fidelity:
        columns[2:2] = [(title, None) for title in _FIDELITY_THUMBNAILS]
        columns[-1:-1] = [(title, "num") for title in _FIDELITY_COLUMNS]
    header = "".join(
        f'<th data-sort="{sort}" tabindex="0">{title}</th>' if sort else f"<th>{title}</th>"
        for title, sort in columns
    )
    summary_links = " ".join(
        f'<a href="{quote(name)}">{name}</a>' for name in SUMMARIES if os.path.isfile(os.path.join(out_dir, name))
    )
    body = "\n".join([
        f"<p>Summaries: {summary_links}</p>" if summary_links else "",
        f'<table id="results">\n<thead><tr>{header}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>',
        _failures(failures),
    ])
    return _page(title, _overview(stats_list, failures), body, script=_SCRIPT)


def _overview(stats_list: Sequence[StatsRecord], failures: Sequence[Failure]) -> str:
    text = f"{len(stats_list)} image{'s' if len(stats_list) != 1 else ''} analysed, {len(failures)} failed"
    if stats_list:
        mean = sum(float(stats["retention"]) for stats in stats_list) / len(stats_list)
        tokens = sum(int(stats["vision_tokens"]) for stats in stats_list)
        base = sum(int(stats["base_tokens"]) for stats in stats_list)
        text += f"; mean retention {mean:.3f}, {tokens} of {base} base patches kept in all"
    return text


def _href(name: str, relative: str) -> str:
    return quote(f"{name}/{relative}")


# The pictures shown as thumbnails: (path in the image's folder, what it shows, text when it is missing).
_THUMBNAILS = (
    (OVERLAY_PATH, "patch overlay", "no overlay"),
    (LLM_TOKENS_PATH, "LLM-token map", "no LLM-token map"),
)


def _artifact_label(relative: str) -> str:
    """``01_heatmaps/importance_map_scale_14.png`` -> ``heatmap 14``, the overlay -> ``overlay``, ..."""
    if relative == OVERLAY_PATH:
        return "overlay"
    if relative == LLM_TOKENS_PATH:
        return "LLM tokens"
    if relative.startswith(FIDELITY_DIR + "/"):
        return os.path.splitext(os.path.basename(relative))[0].replace("_", " ")
    stem = os.path.splitext(os.path.basename(relative))[0]
    if relative.startswith(HEATMAP_DIR + "/"):
        scale = stem.rsplit("_", 1)[-1]
        return f"heatmap {scale} on image" if stem.startswith("importance_overlay") else f"heatmap {scale}"
    return stem.removesuffix("_image")


def _thumbnail(name: str, relative: str, present: Sequence[str], shows: str, missing: str) -> str:
    if relative not in present:
        return f'<span class="missing">{missing}</span>'
    href = _href(name, relative)
    return f'<a href="{href}"><img class="thumb" src="{href}" alt="{shows} of {html.escape(name)}"></a>'


def _row(out_dir: str, stats: StatsRecord, fidelity: bool = False) -> str:
    name = str(stats["name"])
    folder = os.path.join(out_dir, name)
    present = [
        relative
        for relative in [STATS_FILE, *stats.get("artifacts", [])]
        if os.path.isfile(os.path.join(folder, relative))
    ]
    shown = list(_THUMBNAILS)
    if fidelity:
        shown += [(RECONSTRUCTION_PATH, "APT reconstruction", "no reconstruction"),
                  (UNIFORM_VISION_PATH, "uniform baseline at equal vision tokens", "no uniform baseline")]
    thumbnails = [
        (_thumbnail(name, relative, present, shows, missing), None) for relative, shows, missing in shown
    ]
    links = " ".join(
        f'<a href="{_href(name, relative)}">{html.escape(_artifact_label(relative))}</a>' for relative in present
    )
    size = stats["resized_size"]
    setting = selection_setting(stats)
    cells = [
        *thumbnails,
        (f'<span title="{html.escape(str(stats.get("input") or ""))}">{html.escape(name)}</span>', name),
        (f"{size['width']}&times;{size['height']}", size["width"] * size["height"]),
        (html.escape(stats["method"]), stats["method"]),
        (html.escape(setting), setting),
        (str(stats["vision_tokens"]), stats["vision_tokens"]),
        (str(stats["base_tokens"]), stats["base_tokens"]),
        (f"{stats['retention']:.3f}", stats["retention"]),
        (str(stats["llm_tokens"]), stats["llm_tokens"]),
        (f"{stats['llm_retention']:.3f}", stats["llm_retention"]),
        *(_fidelity_cells(stats) if fidelity else []),
        (links, None),
    ]
    tds = "".join(
        f"<td>{content}</td>" if key is None else f'<td data-key="{html.escape(str(key))}">{content}</td>'
        for content, key in cells
    )
    return f'<tr data-name="{html.escape(name)}">{tds}</tr>'


def _fidelity_cells(stats: StatsRecord) -> list[tuple[str, object]]:
    """PSNR of APT and of the uniform baselines, SSIM of APT and of uniform at equal vision tokens
    (``-`` without fidelity; an exact image's PSNR shows as "exact" and sorts above every number)."""
    block = stats.get("fidelity")
    cells: list[tuple[str, object]] = []
    for view, metric in (("apt", "psnr"), ("uniform_equal_vision", "psnr"), ("uniform_equal_llm", "psnr"),
                         ("apt", "ssim"), ("uniform_equal_vision", "ssim")):
        value = None if block is None else block[view][metric]
        if block is not None and value is None and metric == "psnr":
            cells.append(("exact", 1e9))
        elif value is None:
            cells.append(("-", "nan"))
        else:
            cells.append((f"{value:.2f}" if metric == "psnr" else f"{value:.4f}", value))
    return cells


def _failures(failures: Sequence[Failure]) -> str:
    if not failures:
        return '<h2>Failures</h2><p id="no-failures">None.</p>'
    rows = "\n".join(
        f"<tr><td>{html.escape(failure.input)}</td><td>{html.escape(failure.error)}</td></tr>" for failure in failures
    )
    header = "<thead><tr><th>input</th><th>error</th></tr></thead>"
    return f'<h2>Failures ({len(failures)})</h2><table id="failures">{header}<tbody>\n{rows}\n</tbody></table>'


def render_compare_index(
    out_dir: str | os.PathLike,
    compared: Sequence[CompareRecord],
    failures: Sequence[Failure] = (),
    title: str = "apt-viz compare",
) -> str:
    """The HTML text of ``OUT/compare_index.html``: each image's sheet and the numbers of its panels.

    Args:
        out_dir: The output folder (links are relative to it; only existing sheets are linked).
        compared: One record per image, in input order.
        failures: The inputs that failed.
        title: The page title.

    Returns:
        The page.
    """
    out_dir = os.fspath(out_dir)
    rows = "\n".join(_compare_row(out_dir, record) for record in compared)
    count = len(compared)
    overview = f"{count} image{'s' if count != 1 else ''} compared, {len(failures)} failed"
    header = "<thead><tr><th>sheet</th><th>image and panels</th></tr></thead>"
    body = f'<table id="sheets">\n{header}\n<tbody>\n{rows}\n</tbody>\n</table>\n{_failures(failures)}'
    return _page(title, overview, body)


def _compare_row(out_dir: str, record: CompareRecord) -> str:
    name = record["name"]
    if os.path.isfile(os.path.join(out_dir, record["sheet"])):
        href = quote(record["sheet"])
        sheet = f'<a href="{href}"><img class="sheet" src="{href}" alt="compare sheet of {html.escape(name)}"></a>'
    else:
        sheet = '<span class="missing">no sheet</span>'
    panels = "".join(
        f"<li>{html.escape(panel['method'])}, {html.escape(selection_setting(panel))}: "
        f"{panel['vision_tokens']} / {panel['base_tokens']} patches ({panel['retention']:.1%}), "
        f"LLM {panel['llm_tokens']} / {panel['baseline_llm_tokens']} "
        f"({panel['llm_retention']:.1%})</li>"
        for panel in record["panels"]
    )
    skipped = "".join(f'<li class="missing">{html.escape(line)}</li>' for line in record["skipped"])
    label = f'<span title="{html.escape(record["input"])}">{html.escape(name)}</span>'
    return f'<tr data-name="{html.escape(name)}"><td>{sheet}</td><td>{label}<ul>{panels}{skipped}</ul></td></tr>'


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: middle; }
td[data-key] { white-space: nowrap; }
th[data-sort] { cursor: pointer; user-select: none; background: #f4f4f4; }
th[data-sort]::after { content: " \\2195"; color: #aaa; }
th[aria-sort="ascending"]::after { content: " \\25B2"; color: #222; }
th[aria-sort="descending"]::after { content: " \\25BC"; color: #222; }
img.thumb { max-width: 160px; max-height: 120px; display: block; }
img.sheet { max-width: 720px; display: block; }
img.plot { max-width: 1000px; display: block; }
ul { margin: 0.3em 0; padding-left: 1.2em; }
#failures td { color: #a00; }
.missing { color: #888; }
"""

# Sorting: click (or Enter on) a header; numbers compare as numbers, ties keep the current order.
_SCRIPT = """
(function () {
  var table = document.getElementById("results");
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function sortBy(th) {
    var column = headers.indexOf(th);
    var numeric = th.getAttribute("data-sort") === "num";
    var descending = th.getAttribute("aria-sort") === "ascending";
    var rows = Array.prototype.slice.call(body.rows).map(function (row, index) {
      var key = row.cells[column].getAttribute("data-key") || "";
      return { row: row, key: numeric ? parseFloat(key) : key.toLowerCase(), index: index };
    });
    rows.sort(function (a, b) {
      var order = a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
      if (numeric && isNaN(a.key) !== isNaN(b.key)) { order = isNaN(a.key) ? 1 : -1; }
      return (descending ? -order : order) || a.index - b.index;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
    headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  headers.forEach(function (th) {
    if (!th.hasAttribute("data-sort")) { return; }
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (event) { if (event.key === "Enter") { sortBy(th); } });
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
  content="default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'{script_source}">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<p id="overview">{overview}</p>
{body}
</body>
</html>
"""


def _page(title: str, overview: str, body: str, script: str | None = None) -> str:
    """One offline page: inline style (and script, which its Content-Security-Policy then allows)."""
    return _PAGE.format(
        title=html.escape(title),
        overview=html.escape(overview),
        body=body if script is None else f"{body}\n<script>{script}</script>",
        style=_STYLE,
        script_source="" if script is None else "; script-src 'unsafe-inline'",
    )


def render_rate_distortion_page(
    out_dir: str | os.PathLike,
    method: str,
    rate_distortion: Mapping[str, Any],
    figures: Sequence[tuple[str, str]],
    title: str = "apt-viz rate-distortion",
) -> str:
    """The HTML text of ``OUT/sweep_<method>.html`` (``sweep --fidelity``): the plots and where APT stops
    beating uniform.

    Args:
        out_dir: The output folder (the plots' links are relative to it; only existing ones are shown).
        method: The swept method.
        rate_distortion: The ``rate_distortion`` object of ``sweep --json`` (``mean`` and ``images``).
        figures: (caption, path relative to ``out_dir``) of each plot, the folder's first.
        title: The page title.

    Returns:
        The page.
    """
    out_dir = os.fspath(out_dir)
    mean = rate_distortion["mean"]
    overview = (f"{method} sweep over {mean['images']} image{'s' if mean['images'] != 1 else ''}: PSNR and SSIM "
                "against vision and LLM tokens; APT for each scorer, uniform over a ladder of max_pixels, random "
                "patches, and the budget in LLM tokens")
    header = ("<thead><tr><th>curve</th><th>equal vision tokens: APT wins down to</th><th>wins</th>"
              "<th>equal LLM tokens: APT wins down to</th><th>wins</th></tr></thead>")
    rows = []
    for name, marks in mean["crossover"].items():
        cells = [html.escape(name)]
        for axis in ("vision_tokens", "llm_tokens"):
            mark = marks[axis]
            if mark["tokens"] is None:
                cells.append("never (uniform wins at the most tokens)")
            else:
                cells.append(f"{html.escape(_value_text(mark['value']))} ({mark['tokens']:.0f} tokens)")
            cells.append(f"{mark['wins']} of {mark['points']}")
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    table = f'<table id="crossover">{header}<tbody>\n' + "\n".join(rows) + "\n</tbody></table>"
    note = ("<p>Going down from the most tokens, the setting where APT's PSNR is last at least that of the stock "
            "processor at a max_pixels matched on the same tokens (mean curves over the images).</p>")
    plots = "\n".join(
        f'<figure><img class="plot" src="{quote(relative)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, relative in figures if os.path.isfile(os.path.join(out_dir, relative))
    )
    return _page(title, overview, f"<h2>Where APT stops beating uniform</h2>{note}{table}\n<h2>Plots</h2>\n{plots}")


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "thresholds " + ",".join("-" if v is None else f"{v:g}" for v in value)
    return f"alpha {value:g}"
