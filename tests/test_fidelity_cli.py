"""Fidelity in the product (docs/fidelity.md): ``run``'s stats.json block, 04_fidelity/, the reports."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from apt_viz.analysis import analyze_image
from apt_viz.cli import app, route
from apt_viz.core.config import APTConfig
from apt_viz.fidelity import fidelity_views, measure_fidelity, pixel_error
from apt_viz.imaging import load_image
from apt_viz.report.artifacts import ERROR_MAP_PATH, FIDELITY_DIR, RECONSTRUCTION_PATH, UNIFORM_VISION_PATH
from apt_viz.report.records import FIDELITY_COLUMNS

runner = CliRunner()
BUDGET = ["-m", "budget", "--alpha", "0.3", "--device", "cpu"]


def invoke(*args: object):
    return runner.invoke(app, route([str(a) for a in args]))


def test_run_writes_the_fidelity_of_the_library(tmp_path, photo_paths):
    result = invoke(photo_paths["chelsea"], *BUDGET, "--seed", "3", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "chelsea.jpg" / "stats.json").read_text())
    original = load_image(photo_paths["chelsea"])
    config = APTConfig(method="budget", alpha=0.3, seed=3, device="cpu")
    assert stats["fidelity"] == measure_fidelity(analyze_image(original, config), original).to_dict()
    assert set(stats["fidelity"]) == {"apt", "uniform_equal_vision", "uniform_equal_llm", "random_equal_vision"}
    assert stats["fidelity"]["apt"]["vision_tokens"] == stats["vision_tokens"]
    assert stats["fidelity"]["random_equal_vision"]["vision_tokens"] == stats["vision_tokens"]
    for path in (RECONSTRUCTION_PATH, ERROR_MAP_PATH, UNIFORM_VISION_PATH):
        assert path in stats["artifacts"] and (tmp_path / "chelsea.jpg" / path).is_file()
    assert "PSNR" in result.output


def test_the_pictures_are_the_scored_images(tmp_path, photo_paths):
    """reconstruction.png and uniform_equal_vision.png are the scored images rounded to uint8 (lossless)."""
    assert invoke(photo_paths["coffee"], *BUDGET, "-o", tmp_path).exit_code == 0
    original = load_image(photo_paths["coffee"])
    views = fidelity_views(analyze_image(original, APTConfig(method="budget", alpha=0.3, device="cpu")), original)
    folder = tmp_path / "coffee.jpg"
    for path, image in ((RECONSTRUCTION_PATH, views.apt), (UNIFORM_VISION_PATH, views.uniform_equal_vision.image)):
        written = np.asarray(Image.open(folder / path)).astype(np.float64) / 255
        expected = image[0].permute(1, 2, 0).double().numpy()  # c h w -> h w c
        assert written.shape == expected.shape
        assert np.abs(written - expected).max() <= 0.5 / 255 + 1e-7  # rounded to the nearest level only
    # a kept base patch is the resized image exactly: the reconstruction's PSNR from the PNG is the record's
    resized = np.asarray(Image.open(folder / "03_original_resized" / "resized_image.jpg"))
    reconstruction = np.asarray(Image.open(folder / RECONSTRUCTION_PATH))
    assert reconstruction.shape == resized.shape
    stats = json.loads((folder / "stats.json").read_text())
    error = pixel_error(views.reference, views.apt)
    assert 10 * np.log10(1 / float(error.double().mean())) == pytest.approx(stats["fidelity"]["apt"]["psnr"], abs=1e-9)
    error_map = Image.open(folder / ERROR_MAP_PATH)
    assert error_map.width >= resized.shape[1] and error_map.height > resized.shape[0]


def test_no_fidelity_leaves_it_out(tmp_path, photo_paths):
    result = invoke(photo_paths["rocket"], *BUDGET, "--no-fidelity", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "rocket.jpg" / "stats.json").read_text())
    assert "fidelity" not in stats
    assert not (tmp_path / "rocket.jpg" / FIDELITY_DIR).exists()
    assert not any(path.startswith(FIDELITY_DIR) for path in stats["artifacts"])
    assert "PSNR" not in result.output


def test_stats_only_keeps_the_numbers_without_pictures(tmp_path, photo_paths):
    assert invoke(photo_paths["rocket"], *BUDGET, "--stats-only", "-o", tmp_path).exit_code == 0
    stats = json.loads((tmp_path / "rocket.jpg" / "stats.json").read_text())
    assert stats["artifacts"] == [] and stats["fidelity"]["apt"]["psnr"] > 0
    assert not (tmp_path / "rocket.jpg" / FIDELITY_DIR).exists()


def test_folder_reports_carry_the_fidelity(tmp_path, photo_paths):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("chelsea", "rocket"):
        (folder / f"{name}.jpg").write_bytes(photo_paths[name].read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    result = invoke(folder, *BUDGET, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 1  # the bad file fails, the others complete
    document = json.loads(result.stdout)
    records = {record["name"]: record for record in document["images"]}
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO((tmp_path / "out" / "summary.csv").read_text()))}
    for name, record in records.items():
        for column, (view, metric) in FIDELITY_COLUMNS.items():
            assert float(rows[name][column]) == pytest.approx(record["fidelity"][view][metric], rel=1e-12)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["summary"]["fidelity"]
    values = [record["fidelity"]["apt"]["psnr"] for record in records.values()]
    assert summary["psnr"] == {"mean": pytest.approx(sum(values) / 2), "min": min(values), "max": max(values),
                               "images": 2}
    page = (tmp_path / "out" / "index.html").read_text()
    assert "PSNR uniform, = vision" in page
    assert 'src="rocket.jpg/04_fidelity/reconstruction.png"' in page
    assert 'src="rocket.jpg/04_fidelity/uniform_equal_vision.png"' in page
    assert f"{records['rocket.jpg']['fidelity']['uniform_equal_llm']['psnr']:.2f}" in page


def test_a_bad_input_is_still_one_line(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    result = invoke(bad, *BUDGET, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output


# --- stats: the fidelity columns ------------------------------------------------------------------

def stats_rows(table) -> list[dict]:
    import pyarrow.parquet as pq

    return sorted(pq.read_table(table).to_pylist(), key=lambda row: (row["path"], row["setting"]))


@pytest.fixture
def photo_folder(tmp_path, photo_paths):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, path in photo_paths.items():
        (folder / f"{name}.jpg").write_bytes(path.read_bytes())
    return folder


@pytest.fixture
def one_torch_thread():
    """torch's CPU interpolation (the reconstruction's rows) rounds its last bit by where its threads split
    the work: run here scores on one thread, as the stats workers do (tests/test_stats.py says more)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_stats_fidelity_columns_equal_run(tmp_path, photo_folder, one_torch_thread):
    args = ["--scorer", "laplacian", "--seed", "4", "--device", "cpu"]
    table = tmp_path / "stats.parquet"
    result = invoke("stats", photo_folder, "-o", table, "-m", "budget", "--alpha", "0.3,0.5", "--fidelity",
                    "--workers", "2", "-q", *args)
    assert result.exit_code == 0, result.output
    rows = stats_rows(table)
    assert len(rows) == 8
    for alpha in ("0.3", "0.5"):
        out = tmp_path / f"run{alpha}"
        assert invoke(photo_folder, "-o", out, "--stats-only", "-m", "budget", "--alpha", alpha, "-q",
                      *args).exit_code == 0
        for row in (row for row in rows if row["setting"] == f"budget alpha={alpha}"):
            record = json.loads((out / row["path"].rsplit("/", 1)[1] / "stats.json").read_text())
            for column, (view, metric) in FIDELITY_COLUMNS.items():
                assert row[column] == record["fidelity"][view][metric], (row["path"], alpha, column)
            assert row["psnr"] is not None and row["ssim"] < 1
    plain = tmp_path / "plain.parquet"
    assert invoke("stats", photo_folder, "-o", plain, "-m", "budget", "--alpha", "0.3", "-q", *args).exit_code == 0
    assert all(row[column] is None for row in stats_rows(plain) for column in FIDELITY_COLUMNS)
    # a table with the columns null cannot be resumed with them filled: one-line usage error
    again = invoke("stats", photo_folder, "-o", plain, "-m", "budget", "--alpha", "0.3", "--resume", "--fidelity",
                   *args)
    assert again.exit_code == 2 and "--fidelity off" in again.output


def test_stats_budget_unit_and_seed_reach_the_settings(tmp_path, photo_paths):
    from apt_viz.stats.settings import Setting, settings_of

    assert Setting("budget", 0.3).label == "budget alpha=0.3"  # a vision budget keeps its label
    (llm,) = settings_of("budget", [0.5], budget_unit="llm")
    assert llm.label == "budget alpha=0.5 budget_unit=llm"
    with pytest.raises(ValueError, match="budget-unit applies to budget"):
        settings_of("v2", [1.0], budget_unit="llm")
    table = tmp_path / "stats.parquet"
    result = invoke("stats", photo_paths["rocket"], "-o", table, "-m", "budget", "--alpha", "0.5", "--budget-unit",
                    "llm", "--scorer", "random", "--seed", "9", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    (row,) = stats_rows(table)
    config = APTConfig(method="budget", alpha=0.5, budget_unit="llm", scorer="random", seed=9, device="cpu")
    expected = analyze_image(photo_paths["rocket"], config)
    assert row["setting"] == "budget alpha=0.5 budget_unit=llm"
    assert (row["vision_tokens"], row["llm_tokens"]) == (expected.stats.vision_tokens, expected.stats.llm_tokens)
    import pyarrow.parquet as pq

    metadata = json.loads(pq.read_schema(table).metadata[b"apt_viz.stats"])
    assert metadata["image_settings"]["seed"] == 9 and metadata["fidelity"] is False


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_stats_fidelity_on_ray_equals_local(tmp_path, photo_folder):
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'apt-viz[ray]')")
    args = [photo_folder, "-m", "budget", "--alpha", "0.3", "--fidelity", "--device", "cpu", "--workers", "2", "-q"]
    assert invoke("stats", *args, "-o", tmp_path / "local.parquet").exit_code == 0
    result = invoke("stats", *args, "-o", tmp_path / "ray.parquet", "--engine", "ray")
    assert result.exit_code == 0, result.output
    local, remote = stats_rows(tmp_path / "local.parquet"), stats_rows(tmp_path / "ray.parquet")
    assert remote == local and all(row["psnr"] is not None for row in remote)


# --- sweep: rate-distortion -----------------------------------------------------------------------

def test_crossover_by_hand():
    from apt_viz.fidelity.rate_distortion import RDPoint, crossover

    def point(alpha, vision, llm, psnr, uniform_vision, uniform_llm):
        return RDPoint(alpha, vision, llm, psnr, None, uniform_vision, uniform_llm)

    # alpha 1.0 is exact on both sides (a tie counts as a win); going down, APT loses at equal vision
    # tokens first at 0.3 (30 < 31) although it wins again at 0.2: the crossover is 0.5.
    points = [point(0.2, 20, 15, 28.0, 27.0, 33.0), point(0.3, 30, 18, 30.0, 31.0, 34.0),
              point(0.5, 50, 22, 35.0, 34.0, 35.0), point(1.0, 100, 25, None, None, None)]
    assert crossover(points, "vision_tokens") == {"value": 0.5, "tokens": 50, "wins": 3, "points": 4}
    assert crossover(points, "llm_tokens") == {"value": 0.5, "tokens": 22, "wins": 2, "points": 4}  # 35 >= 35
    losing = [point(0.5, 50, 22, 30.0, 34.0, 36.0), point(0.8, 80, 24, 40.0, 41.0, 42.0)]
    assert crossover(losing, "vision_tokens") == {"value": None, "tokens": None, "wins": 0, "points": 2}
    with pytest.raises(ValueError, match="axis"):
        crossover(points, "pixels")


def test_sweep_json_has_the_curves_and_the_crossover(tmp_path, photo_paths):
    result = invoke("sweep", photo_paths["rocket"], "-m", "budget", "--values", "0.3,1.0", "--fidelity", "--json",
                    "--device", "cpu", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    rd = json.loads(result.stdout)["rate_distortion"]
    (image,) = rd["images"]
    curves = image["curves"]
    assert set(curves) == {"apt:entropy", "apt:laplacian", "apt:upsample_mse", "random", "llm_budget:entropy",
                           "uniform"}
    original = load_image(photo_paths["rocket"])
    for scorer in ("entropy", "upsample_mse"):
        config = APTConfig(method="budget", alpha=0.3, scorer=scorer, device="cpu")
        fidelity = measure_fidelity(analyze_image(original, config), original).to_dict()
        apt = curves[f"apt:{scorer}"][0]  # the numbers of run's stats.json at the same setting
        assert apt["value"] == 0.3 and apt["vision_tokens"] == fidelity["apt"]["vision_tokens"]
        assert apt["psnr"] == fidelity["apt"]["psnr"] and apt["ssim"] == fidelity["apt"]["ssim"]
        assert apt["uniform_vision_psnr"] == fidelity["uniform_equal_vision"]["psnr"]
        assert apt["uniform_llm_psnr"] == fidelity["uniform_equal_llm"]["psnr"]
        if scorer == "entropy":
            assert curves["random"][0]["psnr"] == fidelity["random_equal_vision"]["psnr"]
        exact = curves[f"apt:{scorer}"][1]
        assert exact["psnr"] is None and exact["uniform_vision_psnr"] is None  # alpha 1: both exact, a tie
        # the crossover follows from the points: alpha 1.0 ties; at 0.3 the mark moves down iff APT wins
        wins = apt["psnr"] >= apt["uniform_vision_psnr"]
        assert image["crossover"][f"apt:{scorer}"]["vision_tokens"] == {
            "value": 0.3 if wins else 1.0, "tokens": apt["vision_tokens"] if wins else exact["vision_tokens"],
            "wins": 1 + wins, "points": 2}
    assert [p["vision_tokens"] for p in curves["uniform"]] == sorted(p["vision_tokens"] for p in curves["uniform"])
    assert rd["mean"]["images"] == 1 and rd["mean"]["crossover"] == image["crossover"]
    assert (tmp_path / "sweep_budget.html").is_file() and (tmp_path / "sweep_budget_rd.png").is_file()
    assert "sweep_budget_rd/000_rocket.jpg.png" in (tmp_path / "sweep_budget.html").read_text()
    plain = invoke("sweep", photo_paths["rocket"], "-m", "budget", "--values", "0.3", "--json", "--device", "cpu",
                   "-o", tmp_path / "plain")
    assert "rate_distortion" not in json.loads(plain.stdout)
