"""Command-line syntax through the real entry point: both threshold syntaxes, ambiguity, internal errors."""
from __future__ import annotations

import json

import pytest

from apt_viz.cli import main
from apt_viz.cli.options import AmbiguousArguments, join_threshold_values
from apt_viz.core.config import Scorer
from apt_viz.core.scoring import SCORERS

from helpers import PHOTO_PATHS

COFFEE = str(PHOTO_PATHS["coffee"])


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def tokens_of(capsys, *args: str) -> dict:
    code, out, err = run_main(capsys, *args, "--stats-only", "--json", "--device", "cpu")
    assert code == 0, err
    return json.loads(out)["images"][0]


def test_join_threshold_values_unit():
    assert join_threshold_values(["run", "a.jpg", "--thresholds", "3", "2"]) == ["run", "a.jpg", "--thresholds", "3,2"]
    assert join_threshold_values(["run", "--thresholds", "3", "2", "a.jpg"]) == ["run", "--thresholds", "3,2", "a.jpg"]
    assert join_threshold_values(["run", "--thresholds", "3,2", "a.jpg"]) == ["run", "--thresholds", "3,2", "a.jpg"]
    assert join_threshold_values(["run", "--thresholds", "-1.5", "2e0"]) == ["run", "--thresholds", "-1.5,2e0"]
    assert join_threshold_values(["run", "--", "--thresholds", "3", "2"]) == ["run", "--", "--thresholds", "3", "2"]
    with pytest.raises(AmbiguousArguments, match="threshold or an image"):
        join_threshold_values(["run", "--thresholds=3", "2", "a.jpg"])


@pytest.mark.parametrize(
    "arguments",
    [
        [COFFEE, "--thresholds", "3.5", "2.5"],
        ["--thresholds", "3.5", "2.5", COFFEE],
        ["--thresholds", "3.5,2.5", COFFEE],
        [COFFEE, "--thresholds=3.5,2.5"],
        ["run", "-m", "v1", "--thresholds", "3.5", "2.5", COFFEE],
    ],
    ids=["space-after", "space-before", "comma-before", "equals", "run-space"],
)
def test_both_threshold_syntaxes_select_the_same(capsys, tmp_path, arguments):
    record = tokens_of(capsys, *arguments, "-o", str(tmp_path))
    assert record["thresholds"] == [3.5, 2.5] and record["config"]["thresholds"] == [3.5, 2.5]
    reference = tokens_of(capsys, COFFEE, "--thresholds", "3.5,2.5", "-o", str(tmp_path / "ref"))
    assert record["tokens_per_scale"] == reference["tokens_per_scale"]


def test_a_number_that_is_also_a_file_is_ambiguous(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "2").write_bytes(PHOTO_PATHS["coffee"].read_bytes())  # an image literally named 2
    code, out, err = run_main(capsys, "--thresholds", "3", "2", "-o", "out")
    assert code == 2 and out == ""
    assert "'2' is a number and also an existing path" in err and "Traceback" not in err
    code, _, err = run_main(capsys, "--thresholds=3", "2", "-o", "out")
    assert code == 2 and "threshold or an image" in err
    # Unambiguous forms still work with that file present.
    assert tokens_of(capsys, "2", "--thresholds", "3,2", "-o", "out")["thresholds"] == [3.0, 2.0]


def test_wrong_number_of_thresholds_is_a_usage_error(capsys, tmp_path):
    code, _, err = run_main(capsys, COFFEE, "--thresholds", "3", "2", "1", "-o", str(tmp_path))
    assert code == 2 and "v1 needs 2 thresholds" in err


def test_a_bug_in_scoring_is_an_internal_error_not_a_bad_input(capsys, tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise ValueError("boom: a bug")  # a ValueError too, which used to read as a bad input

    monkeypatch.setitem(SCORERS, Scorer.ENTROPY, broken)
    code, _, err = run_main(capsys, COFFEE, "-o", str(tmp_path / "a"), "--device", "cpu")
    assert code == 3
    assert "internal error: ValueError: boom: a bug" in err and "rerun with --debug" in err
    assert "Traceback" not in err
    code, _, err = run_main(capsys, COFFEE, "-o", str(tmp_path / "b"), "--device", "cpu", "--debug")
    assert code == 3 and "Traceback" in err and "raise ValueError(\"boom: a bug\")" in err
