"""``OUT/index.html`` of a folder run: one static, offline page (inline CSS/JS, no network).

It shows a thumbnail of each image's patch overlay, a sortable table of retention and tokens per
image linking to that image's artifacts, and the inputs that failed. Links are only made to
files that exist, so the page never holds a broken link.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import quote

# Per-image layout (SPEC section 7), relative to OUT/<name>/.
OVERLAY = "02_patches_grid/patches_visualization.jpg"
ARTIFACTS = (
    ("stats", "stats.json"),
    ("overlay", OVERLAY),
    ("resized", "03_original_resized/resized_image.jpg"),
    ("original", "03_original_resized/original_image.jpg"),
)
HEATMAP_DIR = "01_heatmaps"
SUMMARIES = ("summary.json", "summary.csv")


@dataclass(frozen=True)
class IndexEntry:
    """One analysed image: its folder name under OUT and its ``stats.json`` content."""

    name: str
    stats: Mapping[str, Any]


@dataclass(frozen=True)
class IndexFailure:
    """One input that could not be analysed, with its one-line reason."""

    input: str
    error: str


@dataclass(frozen=True)
class _Column:
    title: str
    numeric: bool


_COLUMNS = (
    _Column("overlay", False),
    _Column("image", False),
    _Column("size", False),
    _Column("method", False),
    _Column("setting", False),
    _Column("tokens", True),
    _Column("N", True),
    _Column("retention", True),
    _Column("LLM tokens", True),
    _Column("LLM ratio", True),
    _Column("artifacts", False),
)
_SORTABLE = {"image", "method", "setting", "tokens", "N", "retention", "LLM tokens", "LLM ratio", "size"}


def render_index(
    out_dir: str | os.PathLike,
    entries: Sequence[IndexEntry],
    failures: Sequence[IndexFailure] = (),
    title: str = "apt-viz results",
) -> str:
    """The HTML text of ``OUT/index.html`` (links are relative to ``out_dir``)."""
    out_dir = os.fspath(out_dir)
    rows = "\n".join(_row(out_dir, entry) for entry in entries)
    header = "".join(
        f'<th data-sort="{"num" if column.numeric else "text"}" tabindex="0">{column.title}</th>'
        if column.title in _SORTABLE else f"<th>{column.title}</th>"
        for column in _COLUMNS
    )
    summary_links = " ".join(
        f'<a href="{quote(name)}">{name}</a>' for name in SUMMARIES if os.path.isfile(os.path.join(out_dir, name))
    )
    return _PAGE.format(
        title=html.escape(title),
        overview=html.escape(_overview(entries, failures)),
        summary_links=f"<p>Summaries: {summary_links}</p>" if summary_links else "",
        header=header,
        rows=rows,
        failures=_failures(failures),
        style=_STYLE,
        script=_SCRIPT,
    )


def _overview(entries: Sequence[IndexEntry], failures: Sequence[IndexFailure]) -> str:
    text = f"{len(entries)} image{'s' if len(entries) != 1 else ''} analysed, {len(failures)} failed"
    if entries:
        mean = sum(float(entry.stats["retention"]) for entry in entries) / len(entries)
        tokens = sum(int(entry.stats["tokens"]) for entry in entries)
        base = sum(int(entry.stats["base_tokens"]) for entry in entries)
        text += f"; mean retention {mean:.3f}, {tokens} of {base} base patches kept in all"
    return text


def _setting(stats: Mapping[str, Any]) -> str:
    """What the method was run with: alpha (v2, budget; v2 adds its effective thresholds) or thresholds (v1)."""
    thresholds = stats.get("thresholds")
    shown = ", ".join("-" if t is None else f"{t:.3g}" for t in thresholds) if thresholds else ""
    if stats.get("method") == "v1":
        return f"thresholds {shown}"
    text = f"alpha {stats.get('alpha')}"
    return f"{text} (thresholds {shown})" if shown else text


def _href(name: str, relative: str) -> str:
    return quote(f"{name}/{relative}")


def _row(out_dir: str, entry: IndexEntry) -> str:
    stats, name = entry.stats, entry.name
    folder = os.path.join(out_dir, name)
    llm = stats.get("qwen2vl", {})
    size = stats.get("resized_size", {})
    width, height = size.get("width", 0), size.get("height", 0)
    if os.path.isfile(os.path.join(folder, OVERLAY)):
        href = _href(name, OVERLAY)
        thumb = f'<a href="{href}"><img class="thumb" src="{href}" alt="patch overlay of {html.escape(name)}"></a>'
    else:
        thumb = '<span class="missing">no overlay</span>'
    links = [
        f'<a href="{_href(name, relative)}">{label}</a>'
        for label, relative in ARTIFACTS
        if os.path.isfile(os.path.join(folder, relative))
    ]
    heatmap_dir = os.path.join(folder, HEATMAP_DIR)
    if os.path.isdir(heatmap_dir):
        for file_name in sorted(os.listdir(heatmap_dir), key=_natural_key):
            label = "heatmap " + os.path.splitext(file_name)[0].rsplit("_", 1)[-1]
            links.append(f'<a href="{_href(name, f"{HEATMAP_DIR}/{file_name}")}">{html.escape(label)}</a>')
    cells = [
        (thumb, None),
        (f'<span title="{html.escape(str(stats.get("input") or ""))}">{html.escape(name)}</span>', name),
        (f"{width}&times;{height}", width * height),
        (html.escape(str(stats.get("method", ""))), stats.get("method", "")),
        (html.escape(_setting(stats)), _setting(stats)),
        (str(stats["tokens"]), stats["tokens"]),
        (str(stats["base_tokens"]), stats["base_tokens"]),
        (f"{stats['retention']:.3f}", stats["retention"]),
        (str(llm.get("llm_tokens", "")), llm.get("llm_tokens", "")),
        (f"{llm['llm_ratio']:.3f}" if "llm_ratio" in llm else "", llm.get("llm_ratio", "")),
        (" ".join(links), None),
    ]
    tds = "".join(
        f"<td>{content}</td>" if key is None else f'<td data-key="{html.escape(str(key))}">{content}</td>'
        for content, key in cells
    )
    return f'<tr data-name="{html.escape(name)}">{tds}</tr>'


def _natural_key(text: str) -> list[Any]:
    """``scale_14`` before ``scale_112``."""
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _failures(failures: Sequence[IndexFailure]) -> str:
    if not failures:
        return '<h2>Failures</h2><p id="no-failures">None.</p>'
    rows = "\n".join(
        f"<tr><td>{html.escape(failure.input)}</td><td>{html.escape(failure.error)}</td></tr>" for failure in failures
    )
    return f'<h2>Failures ({len(failures)})</h2><table id="failures"><thead><tr><th>input</th><th>error</th></tr></thead><tbody>\n{rows}\n</tbody></table>'


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
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<p id="overview">{overview}</p>
{summary_links}
<table id="results">
<thead><tr>{header}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
{failures}
<script>{script}</script>
</body>
</html>
"""
