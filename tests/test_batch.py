"""batch + atomic: input expansion and unique names, atomic writes, one image's folder, pool == serial."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from apt_viz import atomic
from apt_viz.analysis import analyze_image
from apt_viz.batch.inputs import InputError, InputItem, expand_inputs
from apt_viz.batch.jobs import ImageJob, run_batch
from apt_viz.batch.workers import StopFlag
from apt_viz.core.config import APTConfig
from apt_viz.report.records import stats_record

CPU = APTConfig(device="cpu")


# --- atomic --------------------------------------------------------------------------------------

def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "deep" / "stats.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert atomic.leftover_temp_files(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # like open(), not mkstemp's 0o600


def test_atomic_write_interrupted_keeps_old_file_and_no_temp(tmp_path):
    target = tmp_path / "data.bin"
    atomic.write_bytes(target, b"old")
    with pytest.raises(KeyboardInterrupt), atomic.atomic_open(target, "wb") as handle:
        handle.write(b"half of the new")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_atomic_refuses_nan_json_and_unknown_extension(tmp_path):
    with pytest.raises(ValueError):
        atomic.write_json(tmp_path / "x.json", {"x": float("nan")})
    with pytest.raises(ValueError, match="unknown image extension"):
        atomic.save_image(Image.new("RGB", (2, 2)), tmp_path / "x.notanimage")
    assert list(tmp_path.iterdir()) == []


def test_save_image_round_trip(tmp_path):
    picture = Image.new("RGB", (7, 5), (10, 20, 30))
    atomic.save_image(picture, tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as back:
        assert back.format == "PNG" and back.size == (7, 5) and back.getpixel((3, 3)) == (10, 20, 30)


# --- inputs --------------------------------------------------------------------------------------

def _touch_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (30, 30), (90, 90, 90)).save(path)


def test_expand_inputs_names_are_unique_and_stable(tmp_path):
    for rel in ("cat.jpg", "cat.png", "sub/cat.jpg", "sub/deeper/dog.jpg", ".hidden.jpg"):
        _touch_image(tmp_path / "in" / rel)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    items, any_folder = expand_inputs([tmp_path / "in"], recursive=True)
    assert any_folder
    assert [item.name for item in items] == ["cat.jpg", "cat.png", "sub__cat.jpg", "sub__deeper__dog.jpg"]
    flat, _ = expand_inputs([tmp_path / "in"], recursive=False)
    assert [item.name for item in flat] == ["cat.jpg", "cat.png"]


def test_expand_inputs_same_basename_and_excluded_output(tmp_path):
    _touch_image(tmp_path / "a" / "x.jpg")
    _touch_image(tmp_path / "b" / "x.jpg")
    _touch_image(tmp_path / "a" / "out" / "old.jpg")  # a previous output folder inside the input
    items, any_folder = expand_inputs([tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"])
    assert not any_folder and [item.name for item in items] == ["x.jpg", "x.jpg~2"]
    items, _ = expand_inputs([tmp_path / "a"], recursive=True, exclude=tmp_path / "a" / "out")
    assert [item.name for item in items] == ["x.jpg"]
    with pytest.raises(InputError, match=r"missing\.jpg: no such file"):
        expand_inputs([tmp_path / "missing.jpg"])


# --- one image and many --------------------------------------------------------------------------

def test_process_image_writes_spec_layout_stats_last(tmp_path, photo_paths):
    job = ImageJob(CPU.replace(method="budget", alpha=0.25), str(tmp_path))
    outcome = job(InputItem(str(photo_paths["coffee"]), "coffee.jpg"))
    assert outcome.failure is None
    folder = tmp_path / "coffee.jpg"
    expected = stats_record(analyze_image(photo_paths["coffee"], CPU.replace(method="budget", alpha=0.25)))
    stats = json.loads((folder / "stats.json").read_text())
    assert {k: v for k, v in stats.items() if k not in ("name", "artifacts")} == expected
    for rel in stats["artifacts"]:
        assert (folder / rel).is_file()
    stats_time = (folder / "stats.json").stat().st_mtime_ns
    assert all((folder / rel).stat().st_mtime_ns <= stats_time for rel in stats["artifacts"])


def test_pool_matches_serial_and_skip_existing(tmp_path, photo_paths):
    items = [InputItem(str(path), f"{name}.jpg") for name, path in sorted(photo_paths.items())]
    serial = run_batch(items, ImageJob(CPU, str(tmp_path / "serial"), stats_only=True))
    pooled = run_batch(items, ImageJob(CPU, str(tmp_path / "pool"), stats_only=True), workers=2)
    assert [s["vision_tokens"] for s in serial.values] == [s["vision_tokens"] for s in pooled.values]
    assert [s["name"] for s in pooled.values] == [item.name for item in items]  # input order kept
    assert not any((tmp_path / "pool" / item.name / "01_heatmaps").exists() for item in items)

    shutil.rmtree(tmp_path / "pool" / "coffee.jpg")
    done = []
    job = ImageJob(CPU, str(tmp_path / "pool"), stats_only=True)
    skipped = [previous for item in items if (previous := job.previous(item))]
    again = run_batch(items, job, done=skipped,
                      on_done=lambda outcome: done.append((outcome.item.name, outcome.skipped)))
    assert again.skipped == 3 and sorted(done) == [("astronaut.jpg", True), ("chelsea.jpg", True),
                                                   ("coffee.jpg", False), ("rocket.jpg", True)]
    assert [s["vision_tokens"] for s in again.values] == [s["vision_tokens"] for s in serial.values]


def test_stop_flag_stops_before_next_image(tmp_path, photo_paths):
    items = [InputItem(str(path), f"{name}.jpg") for name, path in sorted(photo_paths.items())]
    stop = StopFlag()
    result = run_batch(items, ImageJob(CPU, str(tmp_path), stats_only=True),
                       on_done=lambda _outcome: stop.handle(2, None), stop=stop)
    assert result.interrupted and len(result.values) == 1
    with pytest.raises(KeyboardInterrupt):  # a second signal aborts at once
        stop.handle(2, None)


def test_write_error_is_a_failure_of_that_input(tmp_path, photo_paths):
    (tmp_path / "coffee.jpg").write_text("a file where the image folder should go")
    outcome = ImageJob(CPU, str(tmp_path))(InputItem(str(photo_paths["coffee"]), "coffee.jpg"))
    assert outcome.value is None
    assert outcome.failure.error.startswith(f"{photo_paths['coffee']}: cannot write {tmp_path / 'coffee.jpg'}")
    assert "\n" not in outcome.failure.error
