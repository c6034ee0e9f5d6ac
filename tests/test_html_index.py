"""index.html: every number comes from stats.json, every link resolves, nothing reaches the network."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from apt_viz import APTConfig
from apt_viz.batch.inputs import InputItem
from apt_viz.batch.jobs import ImageJob
from apt_viz.report.artifacts import LLM_TOKENS_PATH, OVERLAY_PATH
from apt_viz.report.html import render_index
from apt_viz.report.summary import Failure, selection_setting

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
    """One image's folder written by the folder run's own worker; returns its stats.json dict."""
    outcome = ImageJob(config, str(out))(InputItem(str(IMAGES / image), name))
    assert outcome.failure is None, outcome.failure
    return outcome.value


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    write_image_folder(out, "astronaut", "astronaut.jpg", APTConfig(method="budget", alpha=0.3))
    write_image_folder(out, "chelsea", "chelsea.jpg", APTConfig(method="v2", alpha=1.2))
    write_image_folder(out, "coffee #1 é", "coffee.jpg", APTConfig())  # a name that needs URL escaping
    (out / "summary.csv").write_text("image\n")
    return out


def stats_of(out: Path) -> list[dict]:
    return [
        json.loads((folder / "stats.json").read_text())
        for folder in sorted(out.iterdir())
        if (folder / "stats.json").is_file()
    ]


FAILURES = [Failure("in/broken.jpg", "in/broken.jpg: corrupt or truncated image (image file is truncated)"),
            Failure("in/<evil>.png", "in/<evil>.png: not a readable image & more")]


def test_every_link_and_image_resolves(out_dir):
    stats_list = stats_of(out_dir)
    page = parse(render_index(out_dir, stats_list, FAILURES))
    assert len(page.sources) == 6  # two thumbnails per image: the patch overlay and the LLM-token map
    per_image = 2 + 1 + len(stats_list[0]["artifacts"])  # thumbnail links, stats.json, every artifact
    assert len(page.links) == 1 + 3 * per_image  # + summary.csv (summary.json does not exist here)
    for target in page.links + page.sources:
        assert not re.match(r"^[a-z]+:|^//|^/", target), target  # relative, no scheme: opens offline from file://
        assert (out_dir / unquote(target)).is_file(), target
    assert quote(f"coffee #1 é/{OVERLAY_PATH}") in page.sources  # escaped, and still resolves
    assert quote(f"coffee #1 é/{LLM_TOKENS_PATH}") in page.sources


def test_table_numbers_come_from_stats_json(out_dir):
    stats_list = stats_of(out_dir)
    page = parse(render_index(out_dir, stats_list, FAILURES))
    assert [row["name"] for row in page.rows] == [stats["name"] for stats in stats_list]
    for row, stats in zip(page.rows, stats_list):
        _, _, name, size, method, setting, tokens, n, retention, llm, llm_ratio, links = row["cells"]
        assert name == stats["name"] and method == stats["method"] and setting == selection_setting(stats)
        assert size == f"{stats['resized_size']['width']}\u00d7{stats['resized_size']['height']}"
        assert (int(tokens), int(n)) == (stats["vision_tokens"], stats["base_tokens"])
        assert float(retention) == pytest.approx(stats["vision_tokens"] / stats["base_tokens"], abs=5e-4)
        assert int(llm) == stats["llm_tokens"]
        assert float(llm_ratio) == pytest.approx(stats["llm_retention"], abs=5e-4)
        keys = row["keys"]  # sort keys are the exact values, not the rounded text
        assert float(keys[8]) == stats["retention"] and int(keys[6]) == stats["vision_tokens"]
        assert int(keys[3]) == stats["resized_size"]["width"] * stats["resized_size"]["height"]
        assert links == ("stats heatmap 14 heatmap 28 heatmap 56 heatmap 14 on image heatmap 28 on image "
                         "heatmap 56 on image overlay LLM tokens original resized")


def test_overview_counts_images_and_failures(out_dir):
    stats_list = stats_of(out_dir)
    page = render_index(out_dir, stats_list, FAILURES)
    mean = sum(stats["retention"] for stats in stats_list) / len(stats_list)
    tokens = sum(stats["vision_tokens"] for stats in stats_list)
    base = sum(stats["base_tokens"] for stats in stats_list)
    assert f"3 images analysed, 2 failed; mean retention {mean:.3f}, {tokens} of {base} base patches" in page


def test_failures_are_listed_and_escaped(out_dir):
    page = render_index(out_dir, stats_of(out_dir), FAILURES)
    assert "Failures (2)" in page
    assert html.escape("in/<evil>.png: not a readable image & more") in page
    assert "<evil>" not in page
    assert 'id="no-failures"' in render_index(out_dir, stats_of(out_dir), [])


def test_missing_artifacts_are_not_linked(out_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(out_dir / "chelsea", out / "chelsea")
    os.remove(out / "chelsea" / OVERLAY_PATH)
    os.remove(out / "chelsea" / LLM_TOKENS_PATH)
    shutil.rmtree(out / "chelsea" / "01_heatmaps")
    page_text = render_index(out, stats_of(out))
    page = parse(page_text)
    assert page.sources == [] and "no overlay" in page_text and "no LLM-token map" in page_text
    assert sorted(unquote(link) for link in page.links) == ["chelsea/03_original_resized/original_image.jpg",
                                                             "chelsea/03_original_resized/resized_image.jpg",
                                                             "chelsea/stats.json"]


def test_stats_only_run_links_just_stats(tmp_path):
    outcome = ImageJob(APTConfig(), str(tmp_path), stats_only=True)(InputItem(str(IMAGES / "rocket.jpg"), "rocket"))
    page = parse(render_index(tmp_path, [outcome.value]))
    assert page.links == ["rocket/stats.json"] and page.sources == []


def test_page_is_self_contained(out_dir):
    page_text = render_index(out_dir, stats_of(out_dir), FAILURES)
    page = parse(page_text)
    assert page.scripts_with_src == []  # inline CSS and JS only
    assert not re.search(r"https?:", page_text)
    assert "default-src 'none'" in page_text  # the browser itself refuses any network fetch


def test_empty_run_still_renders(tmp_path):
    page = render_index(tmp_path, [], [Failure("a.jpg", "a.jpg: no such file")])
    assert "0 images analysed, 1 failed" in page and parse(page).rows == []
