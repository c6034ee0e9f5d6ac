"""benchmarks/bench_core.py: its baseline computes the contract's entropy, the official loader takes
one function out of a checkout, and the conditions table is complete (speed itself is the script's)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from apt_viz.core.scoring import compute_patch_entropy_batched

from helpers import REPO_ROOT, load_photo_tensor

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from _entropy_baseline import load_official, onehot_entropy  # beside the benchmark scripts

SIZES = (14, 28, 56)


@pytest.mark.parametrize("size", [(112, 168), (100, 131)], ids=str)
def test_onehot_reference_gives_the_contract_entropy(size):
    image = load_photo_tensor("chelsea", size=size)
    expected = compute_patch_entropy_batched(image)
    got = onehot_entropy(image)
    for cell in SIZES:
        assert got[cell].shape == expected[cell].shape
        # Two float32 evaluations of one formula (a table over counts here, p log p there).
        torch.testing.assert_close(got[cell], expected[cell], rtol=0, atol=1e-4)
    assert bool((got[56] == 1e6).any()) == (size == (100, 131))  # pad_value exactly where the grid is padded


OFFICIAL_LIKE = '''
import ipdb  # the official module imports cv2, ipdb and torchvision, which need not be installed
import no_such_module_anywhere


def helper():
    raise AssertionError("not compiled")


def compute_patch_entropy_batched(images, patch_size=16, num_scales=2, bins=512, pad_value=1e6):
    return {patch_size: F.relu(-images.sum(dim=1)) + math.floor(pad_value) + torch.zeros(1)}
'''


def test_official_loader_compiles_only_the_function(tmp_path):
    source = tmp_path / "apt" / "src" / "models" / "entropy_utils.py"
    source.parent.mkdir(parents=True)
    source.write_text(OFFICIAL_LIKE)
    for path in (tmp_path / "apt", source):  # a checkout or the file itself
        function = load_official(path)
        assert torch.equal(function(torch.ones(1, 3, 2, 2), patch_size=14, pad_value=2.5)[14],
                           torch.full((1, 2, 2), 2.0))
        assert "helper" not in function.__globals__  # nothing else of the file was run
    with pytest.raises(ValueError, match="no such file"):
        load_official(tmp_path / "elsewhere")
    source.write_text("def other():\n    pass\n")
    with pytest.raises(ValueError, match="no function compute_patch_entropy_batched"):
        load_official(source)


@pytest.mark.slow
def test_the_conditions_table_has_every_condition_and_target():
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_core.py"), "--size", "56", "--rounds", "1",
               "--official-repeats", "1", "--no-cases"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("baseline: one-hot reference") for line in lines)
    for label in ("1 thread ", "2 threads ", "2 threads, 2 busy spinners "):
        entropy_ms, ratio, select_ms, *rounds = next(line for line in lines if line.startswith(label))[28:].split()
        assert float(entropy_ms) > 0 and float(select_ms) > 0 and len(rounds) == 1
        assert ratio.endswith("x") and float(ratio[:-1]) > 1  # the one-hot baseline is far slower
    targets = next(line for line in lines if line.startswith("targets:"))
    assert targets.count("meets") + targets.count("MISSES") == 3
    assert "warning" not in result.stdout  # no call left torch's thread count changed
    if shutil.which("pgrep"):  # the spinners were stopped
        assert subprocess.run(["pgrep", "-f", "while True: pass"], capture_output=True).returncode == 1
