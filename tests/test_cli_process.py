"""The CLI as users start it (console script, python -m, ./cli.py, run_visualize.sh) and interrupted runs."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from apt_viz.atomic import leftover_temp_files

from helpers import cli_imports

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HEAVY = ("torch", "torchvision", "transformers", "matplotlib", "cv2")

pytestmark = pytest.mark.slow


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def test_help_does_not_import_heavy_modules():
    result, imported = cli_imports(["--help"], ["run", "--help"], ["--version"], watch=HEAVY)
    assert result.returncode == 0, result.stderr
    assert imported == []


def test_entry_points_agree(tmp_path):
    console_script = Path(PYTHON).parent / "apt-viz"
    commands = [[PYTHON, "-m", "apt_viz"], [PYTHON, str(REPO / "cli.py")]]
    if console_script.exists():
        commands.append([str(console_script)])
    for command in commands:
        version = run([*command, "--version"])
        assert version.returncode == 0 and version.stdout.startswith("apt-viz "), command
    image = REPO / "test_img" / "chelsea.jpg"
    outputs = []
    for index, command in enumerate(commands):
        result = run([*command, str(image), "-o", str(tmp_path / str(index)), "--json", "--stats-only",
                      "--device", "cpu", "--patch-selection-method", "budget", "--alpha", "0.3"])
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout)["images"][0]["tokens_per_scale"])
    assert all(output == outputs[0] for output in outputs)
    bad = run([*commands[0], str(image), "-m", "budget", "--alpha", "2"])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "alpha must be in (0, 1]" in bad.stderr


def test_run_visualize_sh_from_another_directory(tmp_path):
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("run_visualize.sh would create the project's .venv (minutes); covered where it exists")
    result = run([str(REPO / "run_visualize.sh"), str(REPO / "test_img" / "coffee.jpg"), "-o", "out", "-q",
                  "--device", "cpu"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "coffee.jpg" / "02_patches_grid" / "patches_visualization.jpg").is_file()
    assert run([str(REPO / "run_visualize.sh")], cwd=tmp_path).returncode == 2


def _make_folder(folder: Path, count: int) -> None:
    folder.mkdir()
    with Image.open(REPO / "test_img" / "astronaut.jpg") as photo:
        big = photo.convert("RGB").resize((1000, 1000))
    for index in range(count):
        big.save(folder / f"img{index:02d}.jpg", quality=90)


def _check_complete(out: Path) -> None:
    """Every file present opens and parses; no temporary file is left."""
    assert leftover_temp_files(out) == []
    for path in out.rglob("*"):
        if path.is_dir():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix in (".png", ".jpg"):
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".csv":
            assert path.read_text().endswith("\n")
        elif path.suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>")
        else:
            raise AssertionError(f"unexpected file {path}")


@pytest.mark.parametrize("signum, workers", [(signal.SIGINT, "1"), (signal.SIGTERM, "2")])
def test_interrupted_folder_run_leaves_only_complete_artifacts(tmp_path, signum, workers):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _make_folder(inputs, 16)
    process = subprocess.Popen(
        [PYTHON, "-m", "apt_viz", str(inputs), "-o", str(out), "--workers", workers, "--device", "cpu", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 90
    while not list(out.glob("*/stats.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    _stdout, stderr = process.communicate(timeout=90)
    finished = sorted(p.parent.name for p in out.glob("*/stats.json"))
    assert finished, stderr
    _check_complete(out)
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(image["name"] for image in summary["images"]) == finished
    assert len(finished) < 16, "the run ended before the signal; make the images larger"
    assert process.returncode == 130, stderr
    assert summary["summary"]["interrupted"] is True and "interrupted" in stderr
    assert "Traceback" not in stderr
    resumed = run([PYTHON, "-m", "apt_viz", str(inputs), "-o", str(out), "--skip-existing", "-q",
                   "--stats-only", "--device", "cpu"])
    assert resumed.returncode == 0
    assert len(json.loads((out / "summary.json").read_text())["images"]) == 16
    _check_complete(out)
