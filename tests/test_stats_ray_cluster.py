"""``apt-viz stats --engine ray --ray-address HOST:PORT`` against a cluster started on its own, as users run one.

A separate head (``ray start --head --block`` on a free port, its own temp dir and HOME, token
authentication on with a token of the test's) serves the module; it is stopped by its pid at the
end. The CLI runs in subprocesses whose environment the tests set exactly (Ray reads
``RAY_AUTH_MODE`` and the token from the environment and from ``~/.ray``), from another working
directory than the head's, with relative paths as users type them.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import PHOTO_PATHS, REPO_ROOT

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'apt-viz[ray]')")
pytestmark = [pytest.mark.slow]

AUTH_VARIABLES = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
HEAD_START_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(home: Path, **variables: str) -> dict[str, str]:
    """This process's environment without Ray's address and auth settings, with ``home`` as HOME."""
    env = {name: value for name, value in os.environ.items() if name not in AUTH_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**env, "HOME": str(home), **variables}


@pytest.fixture(scope="module")
def head():
    """A Ray head with token authentication: (address, token), started and stopped by this module."""
    folder = Path(tempfile.mkdtemp(prefix="aptray"))  # short: Ray's socket paths live under it
    home = folder / "home"
    home.mkdir()
    token = secrets.token_hex(16)
    port = free_port()
    env = environment(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
                      RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")  # stop at once on SIGTERM, without a 30 s drain
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port", str(port),
               "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard",
               "false", "--dashboard-port", str(free_port()),
               "--disable-usage-stats", "--temp-dir", str(folder / "ray")]
    log = open(folder / "head.log", "wb")  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + HEAD_START_S
        while "Ray runtime started" not in (folder / "head.log").read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not start:\n{(folder / 'head.log').read_text(errors='replace')}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", token
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):  # anything of the head's session that outlived it
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def stats(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apt_viz", "stats", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def sorted_rows(table) -> list[dict]:
    return sorted(pq.read_table(table).to_pylist(), key=lambda row: (row["path"], row["setting"]))


def test_cluster_gives_the_local_rows(head, tmp_path):
    address, token = head
    (tmp_path / "photos").mkdir()
    for name in ("coffee", "rocket"):
        shutil.copy(PHOTO_PATHS[name], tmp_path / "photos" / f"{name}.jpg")
    (tmp_path / "photos" / "broken.jpg").write_text("not an image")
    shutil.copy(PHOTO_PATHS["chelsea"], tmp_path / "chelsea.jpg")
    (tmp_path / "bucket").mkdir()  # stands for object storage: file:// URIs take the remote path
    shutil.copy(PHOTO_PATHS["chelsea"], tmp_path / "bucket" / "chelsea.jpg")
    settings = ["-m", "budget", "--alpha", "0.3,0.5", "--save-masks", "--device", "cpu", "-q"]
    home = tmp_path / "home"
    home.mkdir()

    local = stats(["photos", "chelsea.jpg", *settings, "-o", "local.parquet"], tmp_path, environment(home))
    assert local.returncode == 1, local.stderr  # the broken file
    bucket = (tmp_path / "bucket").as_uri()
    on_cluster = stats(["photos", f"{bucket}/chelsea.jpg", f"{bucket}/missing.jpg", *settings,
                        "-o", (tmp_path / "out" / "ray.parquet").as_uri(), "--engine", "ray", "--ray-address", address],
                       tmp_path, environment(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token))
    assert on_cluster.returncode == 1, on_cluster.stderr
    assert "Traceback" not in on_cluster.stderr and "InvalidAuthToken" not in on_cluster.stderr

    as_uri = {"chelsea.jpg": f"{bucket}/chelsea.jpg"}  # the same photo, read from the "bucket" on the cluster
    expected = {(as_uri.get(row["path"], row["path"]), row["setting"]): row
                for row in sorted_rows(tmp_path / "local.parquet")}
    found = {(row["path"], row["setting"]): row for row in sorted_rows(tmp_path / "out" / "ray.parquet")}
    missing = {key: found.pop(key) for key in list(found) if key[0] == f"{bucket}/missing.jpg"}
    assert [row["error"] for row in missing.values()] == [f"{bucket}/missing.jpg: no such file"] * 2
    assert found.keys() == expected.keys()  # paths as typed (relative, from another directory than the head's)
    for key, row in found.items():
        assert row == {**expected[key], "path": key[0]}
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["ray.parquet"]  # nothing else left


@pytest.mark.parametrize("case", ["no token", "wrong token", "token mode without a token", "nothing there"])
def test_cluster_refusal_is_one_line(head, tmp_path, case):
    address, _ = head
    shutil.copy(PHOTO_PATHS["coffee"], tmp_path / "coffee.jpg")
    home = tmp_path / "home"
    home.mkdir()
    variables = {"no token": {}, "wrong token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32},
                 "token mode without a token": {"RAY_AUTH_MODE": "token"}, "nothing there": {}}[case]
    if case == "nothing there":
        address = f"127.0.0.1:{free_port()}"
    result = stats(["coffee.jpg", "-o", "out.parquet", "--engine", "ray", "--ray-address", address], tmp_path,
                   environment(home, **variables))
    assert result.returncode == 2, result.stderr  # a usage error
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"apt-viz stats: cannot join Ray at {address}: ")
    fix = {"no token": "requires token authentication; set RAY_AUTH_MODE=token and give the cluster's token",
           "wrong token": "the cluster refused this token; give the cluster's token",
           "token mode without a token": "RAY_AUTH_MODE=token but no token is set; give the cluster's token",
           "nothing there": "nothing answers there"}[case]
    assert fix in result.stderr  # one line: ray.init, which would log a warning a second, was never called
    assert not (tmp_path / "out.parquet").exists()
