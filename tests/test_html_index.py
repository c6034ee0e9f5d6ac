"""index.html: every number comes from stats.json, every link resolves, nothing reaches the network."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from apt_viz import APTConfig, analyze_image
from apt_viz.html_index import ARTIFACTS, OVERLAY, IndexEntry, IndexFailure, render_index

IMAGES = Path(__file__).resolve().parent.parent / "test_img"


class _Page(HTMLParser):
    """Collects links, image sources, table rows (cell texts and sort keys) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.sources: list[str] = []
        self.rows: list[dict] = []
        self.scripts_with_src: list[str] = []
        self._cell: dict | None = None
        self._table: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        elif tag == "img":
            self.sources.append(attrs["src"])
        elif tag in ("script", "link") and ("src" in attrs or "href" in attrs):
            self.scripts_with_src.append(attrs.get("src") or attrs.get("href"))
        elif tag == "table":
            self._table = attrs.get("id")
        elif tag == "tr" and self._table == "results" and "data-name" in attrs:
            self.rows.append({"name": attrs["data-name"], "cells": [], "keys": []})
        elif tag == "td" and self.rows and self._table == "results":
            self._cell = {"text": ""}
            self.rows[-1]["keys"].append(attrs.get("data-key"))

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append(self._cell["text"].strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def write_image_folder(out: Path, name: str, image: str, config: APTConfig) -> dict:
    """An image folder in the SPEC 7 layout holding the real stats.json of ``image``.

    The picture files are the resized image: this page only links and shows them, their pixels
    are the renderer's business (tested by the CLI's folder run in test_browser.py).
    """
    analysis = analyze_image(IMAGES / image, config)
    folder = out / name
    for relative in [relative for _, relative in ARTIFACTS if relative.endswith(".jpg")] + [
        f"01_heatmaps/importance_map_scale_{size}.png" for size in config.patch_sizes
    ]:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        analysis.resized.save(folder / relative)
    stats = analysis.to_dict()
    (folder / "stats.json").write_text(json.dumps(stats))
    return stats


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    write_image_folder(out, "astronaut", "astronaut.jpg", APTConfig(method="budget", alpha=0.3))
    write_image_folder(out, "chelsea", "chelsea.jpg", APTConfig(method="v2", alpha=1.2))
    write_image_folder(out, "coffee #1 é", "coffee.jpg", APTConfig())  # a name that needs URL escaping
    (out / "summary.csv").write_text("image\n")
    return out


def entries_of(out: Path) -> list[IndexEntry]:
    return [
        IndexEntry(folder.name, json.loads((folder / "stats.json").read_text()))
        for folder in sorted(out.iterdir())
        if (folder / "stats.json").is_file()
    ]


FAILURES = [IndexFailure("in/broken.jpg", "in/broken.jpg: corrupt or truncated image (image file is truncated)"),
            IndexFailure("in/<evil>.png", "in/<evil>.png: not a readable image & more")]


def test_every_link_and_image_resolves(out_dir):
    page = parse(render_index(out_dir, entries_of(out_dir), FAILURES))
    targets = page.links + page.sources
    assert len(page.sources) == 3
    assert len(page.links) == 1 + 3 * (1 + len(ARTIFACTS) + 3)  # summary.csv; per image: thumb + artifacts + 3 heatmaps
    for target in targets:
        assert not re.match(r"^[a-z]+:|^//|^/", target), target  # relative, no scheme: opens offline from file://
        assert (out_dir / unquote(target)).is_file(), target
    assert "coffee%20%231%20%C3%A9/" + OVERLAY in page.sources  # escaped, still resolves


def test_table_numbers_come_from_stats_json(out_dir):
    entries = entries_of(out_dir)
    page = parse(render_index(out_dir, entries, FAILURES))
    assert [row["name"] for row in page.rows] == [entry.name for entry in entries]
    for row, entry in zip(page.rows, entries):
        stats = entry.stats
        _, name, size, method, setting, tokens, n, retention, llm, llm_ratio, _ = row["cells"]
        assert name == entry.name and method == stats["method"]
        assert size == f"{stats['resized_size']['width']}\u00d7{stats['resized_size']['height']}"
        assert (int(tokens), int(n)) == (stats["tokens"], stats["base_tokens"])
        assert float(retention) == pytest.approx(stats["tokens"] / stats["base_tokens"], abs=5e-4)
        assert int(llm) == stats["qwen2vl"]["llm_tokens"]
        assert float(llm_ratio) == pytest.approx(stats["qwen2vl"]["llm_ratio"], abs=5e-4)
        keys = row["keys"]  # sort keys are the exact values, not the rounded text
        assert float(keys[7]) == stats["retention"] and int(keys[5]) == stats["tokens"]
        expected_setting = {"v1": "thresholds 3, 2", "v2": "alpha 1.2 (thresholds", "budget": "alpha 0.3"}[stats["method"]]
        assert setting.startswith(expected_setting)
    v2 = next(entry.stats for entry in entries if entry.stats["method"] == "v2")
    v2_row = next(row for row in page.rows if row["name"] == "chelsea")
    assert f"{v2['thresholds'][0]:.3g}" in v2_row["cells"][4]  # v2 shows its effective thresholds


def test_overview_counts_images_and_failures(out_dir):
    entries = entries_of(out_dir)
    page = render_index(out_dir, entries, FAILURES)
    mean = sum(entry.stats["retention"] for entry in entries) / len(entries)
    tokens = sum(entry.stats["tokens"] for entry in entries)
    assert f"3 images analysed, 2 failed; mean retention {mean:.3f}, {tokens} of" in page


def test_failures_are_listed_and_escaped(out_dir):
    page = render_index(out_dir, entries_of(out_dir), FAILURES)
    assert "Failures (2)" in page
    assert html.escape("in/<evil>.png: not a readable image & more") in page
    assert "<evil>" not in page
    assert 'id="no-failures"' in render_index(out_dir, entries_of(out_dir), [])


def test_missing_artifacts_are_not_linked(out_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(out_dir / "chelsea", out / "chelsea")
    os.remove(out / "chelsea" / OVERLAY)
    shutil.rmtree(out / "chelsea" / "01_heatmaps")
    page_text = render_index(out, entries_of(out))
    page = parse(page_text)
    assert page.sources == [] and "no overlay" in page_text
    assert sorted(unquote(link) for link in page.links) == ["chelsea/03_original_resized/original_image.jpg",
                                                             "chelsea/03_original_resized/resized_image.jpg",
                                                             "chelsea/stats.json"]


def test_page_is_self_contained(out_dir):
    page_text = render_index(out_dir, entries_of(out_dir), FAILURES)
    page = parse(page_text)
    assert page.scripts_with_src == []  # inline CSS and JS only
    assert not re.search(r"https?:", page_text)
    assert "default-src 'none'" in page_text  # the browser itself refuses any network fetch


def test_empty_run_still_renders(tmp_path):
    page = render_index(tmp_path, [], [IndexFailure("a.jpg", "a.jpg: no such file")])
    assert "0 images analysed, 1 failed" in page and parse(page).rows == []
