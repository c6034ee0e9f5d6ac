"""Tables: the full layout on a wide terminal, one line per row everywhere else (pipes, logs, narrow terminals)."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from apt_viz import APTConfig, analyze_image
from apt_viz.report.records import stats_record
from apt_viz.report.tables import (
    compact_results_table,
    compact_sweep_table,
    fitted_table,
    results_table,
    sweep_table,
)
from apt_viz.sweep import aggregate, sweep_analysis

from helpers import PHOTO_PATHS

LONG_NAME = "a_rather_long_folder__with_a_subfolder__and_the_camera_name_IMG_20240101_123456.jpg"


@pytest.fixture(scope="module")
def records() -> list[dict]:
    settings = [("rocket", APTConfig(method="v2", alpha=1.2)), ("chelsea", APTConfig(method="budget", alpha=0.3)),
                ("coffee", APTConfig(thresholds=(3.5, 2.5)))]
    out = []
    for (photo, config), name in zip(settings, ("rocket.jpg", LONG_NAME, "coffee.jpg")):
        record = stats_record(analyze_image(PHOTO_PATHS[photo], config))
        record["name"] = name
        out.append(record)
    return out


def printed(table, width: int, terminal: bool) -> list[str]:
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=terminal, color_system=None).print(table)
    return buffer.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 60, 120])
def test_compact_results_table_is_one_line_per_image_within_the_width(records, width):
    lines = printed(compact_results_table(records, width), width, terminal=False)
    assert all(len(line.rstrip()) <= width for line in lines)
    body = lines[3:]  # title, header, rule
    assert len(body) == len(records)
    for line, record in zip(body, records):
        cells = line.split()
        assert LONG_NAME.startswith(cells[0].rstrip("…")) if record["name"] == LONG_NAME else cells[0] == record["name"]
        assert cells[-4:] == [f"{record['retention']:.1%}", f"{record['vision_tokens']}/{record['base_tokens']}",
                              f"{record['llm_tokens']}/{record['baseline_llm_tokens']}", f"{record['llm_retention']:.1%}"]
    if width >= 80:  # names and settings of up to 12 characters stay whole
        assert body[0].split()[:4] == ["rocket.jpg", "v2", "alpha", "1.2"]


def test_compact_table_gives_up_the_setting_before_the_name(records):
    # 5 characters too narrow for rocket.jpg's row (65 wide): the setting is cut first, the name stays whole.
    table = compact_results_table(records[:1], 60)
    (line,) = printed(table, 60, terminal=False)[3:]
    assert line.startswith("rocket.jpg   v2 alp… ") and len(line.rstrip()) <= 60


def test_fitted_table_takes_the_full_layout_only_on_a_wide_terminal(records):
    full, compact = results_table(records), (lambda width: compact_results_table(records, width))
    wide = Console(file=io.StringIO(), width=250, force_terminal=True)
    assert fitted_table(wide, full, compact) is full
    narrow = Console(file=io.StringIO(), width=100, force_terminal=True)
    assert fitted_table(narrow, full, compact) is not full
    piped = Console(file=io.StringIO(), width=250, force_terminal=False)  # a pipe or a log, however wide
    assert fitted_table(piped, full, compact) is not full
    lines = printed(full, 250, terminal=True)
    assert len([line for line in lines if "│" in line and "rocket.jpg" in line]) == 1  # full: one line at 250


def test_long_tables_say_where_the_rest_is(records):
    lines = printed(compact_results_table(records * 20, 80, max_rows=50), 80, terminal=False)
    assert lines[-1].strip() == "first 50 of 60 rows; all are in summary.csv"
    assert len(lines) == 3 + 50 + 1


@pytest.mark.parametrize("width", [80, 60])
def test_compact_sweep_table_fits(width):
    analyses = [analyze_image(PHOTO_PATHS[name]) for name in ("rocket", "chelsea")]
    rows = aggregate([sweep_analysis(a, "budget", [0.1, 0.5, 1.0]) for a in analyses], "budget")
    lines = printed(compact_sweep_table(rows, width), width, terminal=False)
    assert all(len(line.rstrip()) <= width for line in lines) and len(lines) == 3 + len(rows)
    assert lines[3].split()[:2] == ["0.1", f"{rows[0].target_retention:.1%}"]
    assert f"{rows[1].metrics['vision_tokens'].mean:.1f}±{rows[1].metrics['vision_tokens'].std:.1f}" in lines[4]
    full_lines = printed(sweep_table(rows), 200, terminal=True)
    assert any("mean ± std" in line for line in full_lines)


@pytest.mark.slow
@pytest.mark.parametrize("command", [[], ["compare"], ["sweep", "-m", "v2", "--values", "0.8:1.2:0.2"]],
                         ids=["run", "compare", "sweep"])
def test_piped_output_has_no_wrapped_rows_at_80_columns(tmp_path, command):
    """As a user sees it: ``apt-viz ... | cat`` (stdout a pipe, no COLUMNS): every line fits 80 columns,
    and each image (run, compare) or value (sweep) is one line of the table."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(PHOTO_PATHS["chelsea"], photos / "chelsea.jpg")
    shutil.copy(PHOTO_PATHS["coffee"], photos / "sub" / LONG_NAME)
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    result = subprocess.run(
        [sys.executable, "-m", "apt_viz", *command, str(photos), "-r", "-o", str(tmp_path / "out"), "--device", "cpu"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr
    # The table: title, header, rule, then one line per row (the lines after it name files; they may be
    # longer than 80 columns, as one unwrapped line each).
    rows = {"run": 2, "compare": 2 * 3, "sweep": 3}[command[0] if command else "run"]
    lines = result.stdout.splitlines()
    table = lines[: 3 + rows]
    assert all(len(line.rstrip()) <= 80 for line in table), result.stdout
    assert set(lines[2]) == {"─"}  # the rule under the header
    if command[:1] == ["sweep"]:
        assert [line.split()[0] for line in table[3:]] == ["0.8", "1", "1.2"]
        assert lines[3 + rows].startswith("written: ")
    else:
        names = [line.split()[0] for line in table[3:]]
        assert names == ["chelsea.jpg"] * (rows // 2) + [names[-1]] * (rows // 2)
        assert names[-1].endswith("…") and f"sub__{LONG_NAME}".startswith(names[-1][:-1])
        assert not lines[3 + rows].startswith(("chelsea", "sub__"))  # no row continues on the next line
