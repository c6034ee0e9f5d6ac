"""Sweeps: every value must give exactly what a single run at that setting gives."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_viz import APTConfig, analyze_image
from apt_viz.report.records import stats_record
from apt_viz.sweep import (
    CSV_COLUMNS,
    PER_IMAGE_CSV_COLUMNS,
    ImageSweep,
    aggregate,
    default_values,
    float_range,
    format_value,
    parse_alpha_values,
    parse_threshold_grid,
    per_image_rows,
    sweep_analysis,
    sweep_image,
)

IMAGES = Path(__file__).resolve().parent.parent / "test_img"
PHOTOS = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]


@pytest.fixture(scope="module")
def analyses():
    """One default analysis per photo (its maps are what every sweep reuses)."""
    return {name: analyze_image(IMAGES / name) for name in PHOTOS}


# --- values --------------------------------------------------------------------------------------

def test_default_ranges():
    assert default_values("budget") == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert default_values("v2") == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    grid = default_values("v1")
    assert (3.0, 2.0) in grid  # the official default is on the grid
    assert grid[0] == (2.0, 1.0) and grid[-1] == (6.0, 5.0) and len(grid) == 9
    assert default_values("v1", num_scales=2) == [(t,) for t in float_range(2.0, 6.0, 0.5)]
    with pytest.raises(ValueError, match="thresholds-grid"):
        default_values("v1", num_scales=4)


def test_parse_alpha_values():
    assert parse_alpha_values("0.1,0.2, 0.5") == [0.1, 0.2, 0.5]
    assert parse_alpha_values("0.1:0.5:0.1") == [0.1, 0.2, 0.3, 0.4, 0.5]  # inclusive, no 0.30000000000000004
    assert parse_alpha_values("0.2:0.3:0.1,0.9") == [0.2, 0.3, 0.9]
    for bad, reason in [("", "no values"), ("0.1,x", "not a number"), ("1:0:0.1", "start <= stop"),
                        ("0:1", "start:stop:step"), ("nan", "finite")]:
        with pytest.raises(ValueError, match=reason):
            parse_alpha_values(bad)


def test_parse_threshold_grid():
    assert parse_threshold_grid("3,2;4,3") == [(3.0, 2.0), (4.0, 3.0)]
    assert parse_threshold_grid("5", num_scales=2) == [(5.0,)]
    with pytest.raises(ValueError, match="needs 2 values"):
        parse_threshold_grid("3,2,1")
    with pytest.raises(ValueError, match="not a number"):
        parse_threshold_grid("3,a")


def test_format_value_round_trips():
    assert format_value(0.3) == "0.3"
    assert format_value((3.0, 2.5)) == "3;2.5"
    assert parse_threshold_grid(format_value((3.0, 2.5)).replace(";", ",")) == [(3.0, 2.5)]


@pytest.mark.parametrize(
    "method, values, reason",
    [("budget", [0.5, 1.5], "alpha must be in"), ("v2", [0.0], "alpha must be > 0"),
     ("v1", [0.5], "threshold tuples"), ("v2", [(3.0, 2.0)], "alpha values"), ("v1", [(3.0,)], "needs 2 thresholds")],
)
def test_bad_values_are_rejected_before_any_work(analyses, method, values, reason):
    with pytest.raises(ValueError, match=reason):
        sweep_analysis(analyses["chelsea.jpg"], method, values)


# --- one image: a sweep equals single runs -------------------------------------------------------

@pytest.mark.parametrize("method", ["v1", "v2", "budget"])
def test_sweep_matches_single_runs(method):
    path = IMAGES / "coffee.jpg"
    values = default_values(method)
    sweep = sweep_image(path, APTConfig(), method, values)
    assert sweep.source == str(path) and [p.value for p in sweep.points] == values
    for point in sweep.points:
        settings_ = {"thresholds": point.value} if method == "v1" else {"alpha": point.value}
        single = analyze_image(path, APTConfig(method=method, **settings_))
        assert point.stats == single.stats  # tokens per scale, tokens, N, LLM tokens: all of it
        assert point.thresholds == single.thresholds
        assert point.target_retention == single.target_retention


def test_reselect_reuses_maps_and_equals_a_fresh_run(analyses):
    base = analyses["rocket.jpg"]
    budget = base.reselect(method="budget", alpha=0.4)
    assert budget.maps is base.maps  # nothing rescored
    fresh = analyze_image(IMAGES / "rocket.jpg", APTConfig(method="budget", alpha=0.4))
    assert stats_record(budget) == stats_record(fresh)
    assert base.config.method == "v1" and base.stats.vision_tokens != budget.stats.vision_tokens  # the original is untouched
    with pytest.raises(ValueError, match="alpha must be in"):
        base.reselect(method="budget", alpha=2.0)
    with pytest.raises(TypeError, match="scorer"):
        base.reselect(scorer="laplacian")
    in_llm = base.reselect(method="budget", alpha=0.5, budget_unit="llm")  # the LLM-token budget, maps reused
    fresh = analyze_image(IMAGES / "rocket.jpg", APTConfig(method="budget", alpha=0.5, budget_unit="llm"))
    assert stats_record(in_llm) == stats_record(fresh) and in_llm.budget_info.budget_unit == "llm"


def test_sweep_reuses_the_maps_of_the_scorer_given(analyses):
    """The sweep runs on the config's scorer: laplacian maps give laplacian single-run numbers."""
    config = APTConfig(scorer="laplacian")
    sweep = sweep_image(IMAGES / "chelsea.jpg", config, "v2", [0.8, 1.2])
    for point in sweep.points:
        assert point.stats == analyze_image(IMAGES / "chelsea.jpg", config.replace(method="v2", alpha=point.value)).stats


@pytest.mark.parametrize("name", PHOTOS)
def test_budget_retention_tracks_alpha(analyses, name):
    sweep = sweep_analysis(analyses[name], "budget", parse_alpha_values("0.05:1.0:0.05"))
    n = analyses[name].stats.base_tokens
    clamped = 0
    for point in sweep.points:
        target = round(point.value * n)
        assert point.target_retention == target / n and point.budget_info.budget == target
        minimum = point.budget_info.min_tokens  # every top-level cell, after forced splits
        if target < minimum:  # docs/contract.md, section 4.5: below the minimum the result is that minimum, flagged
            assert point.budget_info.clamped and point.stats.vision_tokens == minimum
            clamped += 1
            continue
        assert not point.budget_info.clamped
        assert point.stats.vision_tokens <= target  # never over budget ...
        assert target - point.stats.vision_tokens < 3  # ... and within one split (3 tokens) of it
    assert clamped < 2  # only the smallest alphas can fall below the all-56-px minimum


@pytest.mark.parametrize("name", PHOTOS)
def test_v1_retention_never_increases_as_thresholds_grow(analyses, name):
    sweep = sweep_analysis(analyses[name], "v1", default_values("v1"))
    tokens = [point.stats.vision_tokens for point in sweep.points]
    assert all(later <= earlier for earlier, later in zip(tokens, tokens[1:]))
    assert tokens[0] > tokens[-1]  # the default range actually moves on a real photo


@settings(max_examples=25, deadline=None)
@given(
    start=st.tuples(st.floats(0.0, 7.0), st.floats(0.0, 7.0)),
    steps=st.lists(st.tuples(st.floats(0.0, 1.5), st.floats(0.0, 1.5)), min_size=1, max_size=6),
)
def test_v1_monotone_for_any_growing_thresholds(analyses, start, steps):
    """Raising any threshold keeps more large cells, and a kept large cell replaces >= 1 smaller ones."""
    grid, current = [start], start
    for step in steps:
        current = (current[0] + step[0], current[1] + step[1])
        grid.append(current)
    sweep = sweep_analysis(analyses["astronaut.jpg"], "v1", grid)
    retention = [point.stats.retention for point in sweep.points]
    assert all(later <= earlier for earlier, later in zip(retention, retention[1:]))


def test_v2_higher_alpha_never_more_tokens(analyses):
    """v2 thresholds are alpha * mean(score): growing alpha grows every threshold, so v1's monotony holds."""
    sweep = sweep_analysis(analyses["rocket.jpg"], "v2", default_values("v2"))
    tokens = [point.stats.vision_tokens for point in sweep.points]
    assert all(later <= earlier for earlier, later in zip(tokens, tokens[1:]))
    means = [point.thresholds[0] / point.value for point in sweep.points]
    assert means == pytest.approx([means[0]] * len(means), rel=1e-5)  # effective threshold = alpha * mean


# --- many images ---------------------------------------------------------------------------------

def test_aggregate_is_mean_std_min_max_over_images(analyses):
    values = [0.25, 0.5, 1.0]
    sweeps = [sweep_analysis(analyses[name], "v2", values) for name in PHOTOS]
    rows = aggregate(sweeps, "v2")
    assert [row.value for row in rows] == values
    for index, row in enumerate(rows):
        assert row.images == len(PHOTOS)
        for metric in ("vision_tokens", "retention", "llm_tokens", "llm_retention"):
            samples = [float(getattr(sweep.points[index].stats, metric)) for sweep in sweeps]
            spread = row.metrics[metric]
            assert spread.mean == pytest.approx(sum(samples) / len(samples))
            assert spread.std == pytest.approx(statistics.pstdev(samples))
            assert (spread.min, spread.max) == (min(samples), max(samples))
        csv_row = row.to_csv_dict()
        assert tuple(csv_row) == CSV_COLUMNS
        assert csv_row["value"] == format_value(row.value) and csv_row["target_retention"] is None  # v2: no target


def test_aggregate_budget_target_is_the_mean_of_each_images_target(analyses):
    sweeps = [sweep_analysis(analyses[name], "budget", [0.35]) for name in PHOTOS]
    (row,) = aggregate(sweeps, "budget")
    targets = [round(0.35 * analyses[name].stats.base_tokens) / analyses[name].stats.base_tokens for name in PHOTOS]
    assert len(set(targets)) > 1  # N differs, so T / N does too
    assert row.target_retention == pytest.approx(sum(targets) / len(targets))


def test_aggregate_single_image_has_zero_spread(analyses):
    (row,) = aggregate([sweep_analysis(analyses["chelsea.jpg"], "budget", [0.4])], "budget")
    n = analyses["chelsea.jpg"].stats.base_tokens
    assert row.metrics["vision_tokens"].std == 0 and row.metrics["vision_tokens"].min == row.metrics["vision_tokens"].max
    assert row.target_retention == round(0.4 * n) / n


def test_aggregate_rejects_mismatched_or_empty(analyses):
    a = sweep_analysis(analyses["chelsea.jpg"], "v2", [1.0])
    b = sweep_analysis(analyses["coffee.jpg"], "v2", [1.1])
    with pytest.raises(ValueError, match="different values"):
        aggregate([a, b], "v2")
    with pytest.raises(ValueError, match="no image"):
        aggregate([], "v2")


def test_per_image_rows(analyses):
    sweeps = [sweep_analysis(analyses[name], "v1", [(3.0, 2.0), (5.0, 4.0)]) for name in ("chelsea.jpg", "rocket.jpg")]
    rows = per_image_rows(sweeps, "v1")
    assert len(rows) == 4
    first = rows[0]
    assert first["image"].endswith("chelsea.jpg") and first["value"] == "3;2" and first["thresholds"] == "3;2"
    assert first["vision_tokens"] == analyses["chelsea.jpg"].stats.vision_tokens  # the default v1 run
    assert math.isclose(first["retention"], first["vision_tokens"] / first["base_tokens"])


def test_sweep_figure_has_one_point_per_value(analyses):
    from apt_viz.render.plots import sweep_figure

    rows = aggregate([sweep_analysis(analyses[name], "budget", [0.2, 0.6, 1.0]) for name in PHOTOS], "budget")
    figure = sweep_figure(rows)
    top, bottom = figure.axes
    mean_line = top.lines[0]
    assert list(mean_line.get_xdata()) == [0.2, 0.6, 1.0]
    assert list(mean_line.get_ydata()) == [row.metrics["retention"].mean for row in rows]
    assert list(bottom.lines[0].get_ydata()) == [row.metrics["llm_tokens"].mean for row in rows]
    v1_rows = aggregate([sweep_analysis(analyses["chelsea.jpg"], "v1", [(3.0, 2.0), (4.0, 3.0)])], "v1")
    labels = [tick.get_text() for tick in sweep_figure(v1_rows).axes[1].get_xticklabels()]
    assert labels == ["3;2", "4;3"]


def test_image_sweep_is_plain_data(analyses):
    sweep = sweep_analysis(analyses["chelsea.jpg"], "v2", [1.0])
    assert isinstance(sweep, ImageSweep) and sweep.resized_hw == analyses["chelsea.jpg"].resized_hw


# --- the command ---------------------------------------------------------------------------------

def run_cli(*args: str) -> int:
    from apt_viz.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


def test_sweep_command_csv_matches_single_runs(tmp_path):
    import csv

    out = tmp_path / "out"
    assert run_cli("sweep", str(IMAGES), "-m", "budget", "--values", "0.2,0.6", "-o", str(out), "-q", "--device", "cpu") == 0
    with open(out / "sweep_budget.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["value"] for row in rows] == ["0.2", "0.6"] and list(rows[0]) == list(CSV_COLUMNS)
    for row in rows:
        singles = [analyze_image(IMAGES / name, APTConfig(method="budget", alpha=float(row["value"]))).stats for name in PHOTOS]
        assert int(row["images"]) == len(PHOTOS)
        assert float(row["vision_tokens_mean"]) == pytest.approx(statistics.fmean(s.vision_tokens for s in singles))
        assert float(row["retention_std"]) == pytest.approx(statistics.pstdev(s.retention for s in singles))
        assert float(row["llm_tokens_max"]) == max(s.llm_tokens for s in singles)
    with open(out / "sweep_budget_per_image.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2 * len(PHOTOS)
    from PIL import Image

    with Image.open(out / "sweep_budget.png") as plot:
        assert plot.format == "PNG" and plot.width > 300


@pytest.mark.parametrize(
    "args",
    [("-m", "v1", "--values", "0.5"), ("-m", "v2", "--thresholds-grid", "3,2"), ("-m", "budget", "--values", "0.5,2"),
     ("-m", "v1", "--thresholds-grid", "3"), ("-m", "v2", "--values", "a")],
)
def test_sweep_command_usage_errors_write_nothing(tmp_path, args, capsys):
    out = tmp_path / "out"
    assert run_cli("sweep", str(IMAGES / "chelsea.jpg"), *args, "-o", str(out)) == 2
    assert not out.exists()
    error = capsys.readouterr().err
    assert "Error" in error and "Traceback" not in error


def test_sweep_command_reports_a_broken_input_and_goes_on(tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out"
    assert run_cli("sweep", str(broken), str(IMAGES / "rocket.jpg"), "-m", "v2", "--values", "1", "-o", str(out)) == 1
    captured = capsys.readouterr()
    assert f"failed: {broken}: not a readable image" in captured.err
    assert "v2 sweep over 1 image" in captured.out and (out / "sweep_v2.csv").is_file()


@pytest.mark.parametrize(("method", "values"), [("budget", "0.2,0.6"), ("v1", None)])
def test_sweep_json_parses_and_equals_the_csv(tmp_path, capsys, method, values):
    """``--json`` prints the rows of sweep_<method>.csv and sweep_<method>_per_image.csv, value for
    value (an empty CSV cell is null), and nothing else on stdout; --workers 2 gives the same."""
    import csv
    import json

    documents = []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        args = ["sweep", str(IMAGES), "-m", method, "-o", str(out), "--device", "cpu", "--json", "-j", workers]
        assert run_cli(*args, *(["--values", values] if values else [])) == 0
        document = json.loads(capsys.readouterr().out)  # parses: stdout holds the document alone
        for key, suffix, columns in (("rows", "", CSV_COLUMNS), ("per_image", "_per_image", PER_IMAGE_CSV_COLUMNS)):
            with open(out / f"sweep_{method}{suffix}.csv", newline="") as handle:
                reader = csv.DictReader(handle)
                assert reader.fieldnames == list(columns) and all(list(row) == list(columns) for row in document[key])
                as_csv = [{k: "" if v is None else str(v) for k, v in row.items()} for row in document[key]]
                assert as_csv == list(reader)  # every value, as the CSV writes it (floats round-trip exactly)
        assert document["method"] == method and document["failures"] == [] and not document["interrupted"]
        assert "method" not in document["config"] and document["config"]["scorer"] == "entropy"
        documents.append(document)
    assert documents[0] == documents[1]  # input order is kept, whichever worker finished first
    expected_values = ["0.2", "0.6"] if values else [format_value(v) for v in default_values("v1")]
    assert [row["value"] for row in documents[0]["rows"]] == expected_values
