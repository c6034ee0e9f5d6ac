"""The Ray engine (``apt-viz stats --engine ray``): the same rows as the local engine, on Ray Data.

    read_binary_files --> map_batches(decode, CPU tasks) --> map_batches(score, CPU or GPU actors)
                      --> write_parquet

- Read: Ray reads the files, so remote storage (``s3://``, ``gs://``, ...) works wherever the
  cluster can reach it; local folders are expanded by apt-viz exactly as for the local engine.
- Decode: :func:`apt_viz.stats.decode.decode` on the bytes (the loader of ``apt-viz run``).
- Score: an actor per GPU (``--device cuda``) or per couple of CPUs holds a
  :class:`~apt_viz.stats.scoring.BatchScorer`: same-size images are scored together and every
  setting is selected from the same maps, as on one machine.
- Write: Ray writes a folder of Parquet files (one table). A local output appears atomically
  (written beside it, then renamed); on object storage Ray writes the files in place.

Ray is an optional dependency (``pip install 'apt-viz[ray]'``); this module imports it only when
a run starts.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .inputs import is_remote
from .local import RunReport
from .settings import StatsPlan

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pyarrow as pa

DECODE_BATCH = 16  # images per decode task


class RayUnavailable(ValueError):
    """Ray Data is not installed or the cluster cannot be reached (a usage error)."""


def run_ray(
    plan: StatsPlan,
    paths: Sequence[str],
    output: str,
    *,
    address: str | None = None,
    cpus: int | None = None,
    batch_size: int = 8,
    started: float | None = None,
) -> RunReport:
    """Compute the table of ``paths`` x ``plan.settings`` with Ray Data and write it to ``output``.

    Args:
        plan: Image settings, device and selection settings.
        paths: Local files and remote URIs (files or prefixes; a prefix is listed by Ray and
            filtered to image extensions).
        output: A local folder or a remote URI; it receives the Parquet files of the table.
        address: The Ray cluster (``auto``, ``ray://host:10001``); None starts a local Ray.
        cpus: CPUs of the local Ray (None: all); ignored with ``address``.
        batch_size: Images per scoring call within an actor.
        started: ``time.perf_counter()`` at the start of the command.

    Returns:
        A :class:`RunReport` (inputs, failures and images/s, read back from the written table).

    Raises:
        RayUnavailable: Ray is missing or the cluster cannot be joined.
    """
    started = time.perf_counter() if started is None else started
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayUnavailable("--engine ray needs Ray Data: pip install 'apt-viz[ray]'") from None
    with _ray_session(ray, address, cpus):
        target = output if is_remote(output) else _temporary_sibling(output)
        try:
            _dataset(ray, plan, paths, batch_size).write_parquet(target)
            if not is_remote(output):
                _replace(target, output)
        finally:
            if not is_remote(output):
                shutil.rmtree(target, ignore_errors=True)
    report = _report_from_table(output)
    report.seconds = time.perf_counter() - started
    return report


def _dataset(ray: Any, plan: StatsPlan, paths: Sequence[str], batch_size: int) -> Any:
    from ..batch.inputs import image_extensions

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    files = [path for path in paths if not (is_remote(path) and path.endswith("/"))]
    prefixes = [path for path in paths if is_remote(path) and path.endswith("/")]
    parts = []
    if files:
        parts.append(ray.data.read_binary_files(files, include_paths=True))
    if prefixes:
        extensions = sorted({ext.lstrip(".") for ext in image_extensions()})
        parts.append(ray.data.read_binary_files(prefixes, include_paths=True, file_extensions=extensions))
    dataset = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    decoded = dataset.map_batches(
        _decode_batch, fn_kwargs={"plan": plan}, batch_size=DECODE_BATCH, batch_format="numpy", num_cpus=1,
    )
    on_gpu = plan.config.device.startswith("cuda")
    resources = ray.cluster_resources()
    actors = max(1, int(resources.get("GPU", 1))) if on_gpu else max(1, int(resources.get("CPU", 2)) // 2)
    return decoded.map_batches(
        ScoreStage, fn_constructor_kwargs={"plan": plan, "batch_size": batch_size}, batch_size=batch_size * 4,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
        num_gpus=1 if on_gpu else 0, num_cpus=0 if on_gpu else 1,
    )


def _decode_batch(batch: dict[str, np.ndarray], plan: StatsPlan) -> dict[str, np.ndarray]:
    """Ray task: bytes -> resized uint8 pixels (as raw bytes with their shape), or the error."""
    import numpy as np

    from .decode import decode

    out: dict[str, list[Any]] = {name: [] for name in ("path", "error", "internal", "height", "width",
                                                        "resized_height", "resized_width", "pixels")}
    for path, data in zip(batch["path"], batch["bytes"]):
        image = decode(str(path), plan.config, plan.max_image_pixels, data=bytes(data), debug=plan.debug)
        height, width = image.original_hw or (-1, -1)
        resized = image.pixels.shape[:2] if image.pixels is not None else (-1, -1)
        out["path"].append(str(path))
        out["error"].append(image.error or "")
        out["internal"].append(image.internal)
        out["height"].append(height)
        out["width"].append(width)
        out["resized_height"].append(resized[0])
        out["resized_width"].append(resized[1])
        out["pixels"].append(b"" if image.pixels is None else image.pixels.tobytes())
    return {name: np.array(values, dtype=object if name in ("path", "error", "pixels") else None)
            for name, values in out.items()}


class ScoreStage:
    """Ray actor: decoded images -> table rows (an Arrow table in the schema of the local engine)."""

    def __init__(self, plan: StatsPlan, batch_size: int = 8) -> None:
        import torch

        from .rows import arrow_schema
        from .scoring import BatchScorer
        from .table import table_metadata

        if plan.config.device == "cpu":
            torch.set_num_threads(1)
        self.plan = plan
        self.batch_size = batch_size
        self.scorer = BatchScorer(plan)
        self.schema = arrow_schema(plan, table_metadata(plan))

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        import numpy as np
        import pyarrow as pa

        from .decode import Decoded
        from .scoring import Pending, SizeBatcher, failed_rows

        every = tuple(range(len(self.plan.settings)))
        rows = []
        batcher = SizeBatcher(self.batch_size, max_waiting=len(batch["path"]) + 1)
        for i, path in enumerate(batch["path"]):
            original = (int(batch["height"][i]), int(batch["width"][i]))
            if batch["error"][i]:
                failed = Decoded(str(path), original if original[0] >= 0 else None, error=str(batch["error"][i]),
                                 internal=bool(batch["internal"][i]))
                rows += failed_rows(failed, every, self.plan)
                continue
            shape = (int(batch["resized_height"][i]), int(batch["resized_width"][i]), 3)
            pixels = np.frombuffer(batch["pixels"][i], dtype=np.uint8).reshape(shape)
            for ready in batcher.add(Pending(str(path), original, pixels, every)):
                rows += self.scorer(ready)
        for ready in batcher.drain():
            rows += self.scorer(ready)
        return pa.Table.from_pylist(rows, schema=self.schema)


@contextlib.contextmanager
def _ray_session(ray: Any, address: str | None, cpus: int | None) -> Iterator[None]:
    """Join ``address`` or start a local Ray (quiet); shut down only what this call started."""
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR", configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(f"cannot start or join Ray{f' at {address}' if address else ''}: {exc}") from None
    for name in ("ray", "ray.data"):  # Ray's INFO lines would drown the summary; its errors still show
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


def _temporary_sibling(output: str) -> str:
    folder, name = os.path.split(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f".{name}.ray-{uuid.uuid4().hex[:8]}")


def _replace(written: str, output: str) -> None:
    """Put the folder ``written`` in place of ``output`` (a file or folder), never leaving a mix."""
    old = None
    if os.path.lexists(output):
        old = _temporary_sibling(output) + ".old"
        os.replace(output, old)
    os.replace(written, output)
    if old is not None:
        if os.path.isdir(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.unlink(old)


def _report_from_table(output: str) -> RunReport:
    """Inputs and failures of a finished Ray run, read back from its table (error rows name their kind)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(output, format="parquet").to_table(columns=["path", "error"])
    paths = set(table.column("path").to_pylist())
    errors = table.filter(pc.is_valid(table.column("error")))
    failed = set(errors.column("path").to_pylist())
    internal = {path for path, error in zip(errors.column("path").to_pylist(), errors.column("error").to_pylist())
                if ": internal error: " in error}
    return RunReport(inputs=len(paths), processed=len(paths), failed=len(failed), internal_errors=len(internal),
                     rows=table.num_rows)
