"""The Ray engine (``apt-viz stats --engine ray``): the same rows as the local engine, on Ray Data.

    inputs --> map_batches(decode, CPU tasks) --> map_batches(score, CPU or GPU actors)
           --> streamed to this process, which writes the one Parquet file

- Inputs: local files (as the local engine expands them) are read by the decode tasks, at their
  absolute path, so on a cluster every node must see them there (a shared file system); remote
  URIs (``s3://``, ``gs://``, ...; a URI ending in ``/`` is a prefix, listed recursively) are read
  by Ray's ``read_binary_files`` wherever the cluster can reach them. The ``path`` column holds
  the input as given either way (the full URI for remote files).
- Decode: :func:`apt_viz.stats.decode.decode` (the loader of ``apt-viz run``).
- Score: an actor per GPU (``--device cuda``) or per couple of CPUs holds a
  :class:`~apt_viz.stats.scoring.BatchScorer`: same-size images are scored together and every
  setting is selected from the same maps, as on one machine.
- Write: this process (the driver) receives the rows and writes them as one Parquet file, in the
  schema and with the metadata of the local engine's table, so ``--resume`` (local engine),
  :func:`apt_viz.read_masks` and the summary read both alike. The file appears whole or not at
  all: a local output goes through :func:`apt_viz.atomic.atomic_open`; a remote one is written
  under a hidden temporary name beside it and then moved onto its name (on object storage a
  server-side copy, which makes the object appear whole).

Resources each stage asks Ray for (docs/ray.md): decode tasks 1 CPU each; scoring actors 1 CPU
each on the CPU, at most half the cluster's CPUs of them, or 1 GPU (and no CPU) each with
``--device cuda``, at most one per GPU of the cluster.

Ray is an optional dependency (``pip install 'apt-viz[ray]'``); this module imports it only when
a run starts.
"""
from __future__ import annotations

import contextlib
import os
import posixpath
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

from ..atomic import TEMP_SUFFIX, atomic_open
from ._ray_connect import RayUnavailable, ray_session
from .inputs import StatsInputError, is_remote
from .local import RunReport
from .settings import StatsPlan
from .table import StatsTableError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pyarrow as pa

    from .decode import Decoded

DECODE_BATCH = 16  # images per decode task
INTERNAL_MARK = ": internal error: "  # in the error of a row that failed from a bug (failure_of's wording)


def run_ray(
    plan: StatsPlan,
    paths: Sequence[str],
    output: str,
    *,
    address: str | None = None,
    cpus: int | None = None,
    batch_size: int = 8,
    row_group_size: int = 4096,
    started: float | None = None,
) -> RunReport:
    """Compute the table of ``paths`` x ``plan.settings`` with Ray Data and write it to ``output``.

    Args:
        plan: Image settings, device and selection settings.
        paths: Local files and remote URIs (files or prefixes; a prefix ends in ``/``, is listed by
            Ray and filtered to image extensions).
        output: The Parquet file to write: a local path or a remote URI. It is replaced whole.
        address: The Ray cluster (``HOST:PORT``, ``auto``, ``ray://HOST:10001``); None starts a local Ray.
        cpus: CPUs of the local Ray (None: all); ignored with ``address``.
        batch_size: Images per scoring call within an actor.
        row_group_size: Rows per Parquet row group.
        started: ``time.perf_counter()`` at the start of the command.

    Returns:
        A :class:`RunReport` (inputs, failures, rows and images/s).

    Raises:
        RayUnavailable: Ray is missing, or the cluster cannot be joined (one line with the fix).
        StatsTableError: ``output`` cannot be written as asked.
        StatsInputError: the remote prefixes hold no image (and no file was named).
    """
    from .rows import arrow_schema
    from .table import table_metadata

    started = time.perf_counter() if started is None else started
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayUnavailable("--engine ray needs Ray Data: pip install 'apt-viz[ray]'") from None
    check_output(output)
    schema = arrow_schema(plan, table_metadata(plan))
    named = [path for path in paths if is_remote(path) and not path.endswith("/")]
    with ray_session(ray, address, cpus):
        dataset = _dataset(ray, plan, paths, batch_size)
        if dataset is None and not named:
            raise StatsInputError(f"no images found in {', '.join(paths)}")
        tables = () if dataset is None else dataset.iter_batches(batch_size=None, batch_format="pyarrow")
        report = write_table(_with_missing(tables, named, plan), output, schema, row_group_size)
    report.seconds = time.perf_counter() - started
    return report


def check_output(output: str) -> None:
    """Refuse, before any work, an output that cannot become one Parquet file.

    Raises:
        StatsTableError: a local folder (an older Ray table: remove it or choose another name), or a
            URI whose scheme pyarrow cannot write.
    """
    if is_remote(output):
        from pyarrow import fs

        try:
            fs.FileSystem.from_uri(output)
        except (ValueError, OSError) as exc:
            raise StatsTableError(f"--output {output}: cannot write there ({exc})") from None
    elif os.path.isdir(output):
        raise StatsTableError(f"--output {output}: is a folder; give the Parquet file to write")


def write_table(tables: Iterable[pa.Table], output: str, schema: pa.Schema, row_group_size: int) -> RunReport:
    """Write ``tables`` (rows in ``schema``'s columns) as one Parquet file at ``output``, whole or not at all.

    Args:
        tables: The rows, in any number of pieces.
        output: A local path or a remote URI.
        schema: The table's schema (with its metadata).
        row_group_size: Rows per row group.

    Returns:
        A :class:`RunReport` of the inputs, failures and rows written (``seconds`` left at 0).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    paths: set[str] = set()
    failed: set[str] = set()
    internal: set[str] = set()
    rows = 0
    with _open_output(output) as handle, pq.ParquetWriter(handle, schema) as writer:
        pending: list[pa.Table] = []
        waiting = 0
        for table in tables:
            table = table.select(schema.names).cast(schema)
            paths.update(table.column("path").to_pylist())
            errors = table.filter(pc.is_valid(table.column("error")))
            for path, error in zip(errors.column("path").to_pylist(), errors.column("error").to_pylist()):
                failed.add(path)
                if INTERNAL_MARK in error:
                    internal.add(path)
            pending.append(table)
            waiting += table.num_rows
            rows += table.num_rows
            if waiting >= row_group_size:
                rest = _write_groups(writer, pa.concat_tables(pending), row_group_size)
                pending, waiting = [rest], rest.num_rows
        if waiting or not rows:
            writer.write_table(pa.concat_tables(pending) if pending else schema.empty_table())
    return RunReport(inputs=len(paths), processed=len(paths), failed=len(failed), internal_errors=len(internal),
                     rows=rows)


def _write_groups(writer: Any, table: pa.Table, row_group_size: int) -> pa.Table:
    """Write the whole row groups of ``table``; return the rows left over."""
    whole = table.num_rows - table.num_rows % row_group_size
    for start in range(0, whole, row_group_size):
        writer.write_table(table.slice(start, row_group_size))
    return table.slice(whole)


@contextlib.contextmanager
def _open_output(output: str) -> Iterator[IO[bytes]]:
    """A binary stream whose content becomes ``output`` only once it is complete."""
    if not is_remote(output):
        with atomic_open(output, "wb") as handle:
            yield handle
        return
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(output)
    folder, name = posixpath.split(path)
    if folder and filesystem.get_file_info(folder).type == fs.FileType.NotFound:
        filesystem.create_dir(folder)  # a local folder (file://); object storage has none to make
    temporary = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    moved = False
    try:
        with filesystem.open_output_stream(temporary) as handle:
            yield handle
        filesystem.move(temporary, path)
        moved = True
    finally:
        if not moved:
            with contextlib.suppress(OSError):
                filesystem.delete_file(temporary)


def _with_missing(tables: Iterable[pa.Table], named: Sequence[str], plan: StatsPlan) -> Iterator[pa.Table]:
    """``tables``, then error rows for the remote files named in the inputs that Ray did not find."""
    import pyarrow as pa

    from .decode import Decoded
    from .rows import arrow_schema
    from .scoring import failed_rows

    seen: set[str] = set()
    for table in tables:
        seen.update(table.column("path").to_pylist())
        yield table
    every = tuple(range(len(plan.settings)))
    rows = [row for path in named if path not in seen
            for row in failed_rows(Decoded(path, error=f"{path}: no such file"), every, plan)]
    if rows:
        yield pa.Table.from_pylist(rows, schema=arrow_schema(plan))


def _dataset(ray: Any, plan: StatsPlan, paths: Sequence[str], batch_size: int) -> Any | None:
    """The Ray Data pipeline from the inputs to the rows; None when no input was found to read."""
    from ..batch.inputs import image_extensions

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    decode = {"batch_size": DECODE_BATCH, "batch_format": "numpy", "num_cpus": 1}
    parts = []
    local = [path for path in paths if not is_remote(path)]
    if local:
        items = ray.data.from_items([{"path": path} for path in local])
        parts.append(items.map_batches(_decode_local_batch, fn_kwargs={"plan": plan, "cwd": os.getcwd()}, **decode))
    extensions = sorted({ext.lstrip(".") for ext in image_extensions()})
    by_scheme: dict[str, list[str]] = {}
    for path in paths:
        if is_remote(path):
            by_scheme.setdefault(path.partition("://")[0], []).append(path)
    for scheme, uris in by_scheme.items():  # one read per file system; prefixes keep image files only
        files = [uri for uri in uris if not uri.endswith("/")]
        prefixes = [uri for uri in uris if uri.endswith("/")]
        for group, only in ((files, None), (prefixes, extensions)):
            read = _read_remote(ray, group, only)
            if read is not None:
                parts.append(read.map_batches(_decode_remote_batch, fn_kwargs={"plan": plan, "scheme": scheme},
                                              **decode))
    if not parts:
        return None
    decoded = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    on_gpu = plan.config.device.startswith("cuda")
    resources = ray.cluster_resources()
    actors = max(1, int(resources.get("GPU", 1))) if on_gpu else max(1, int(resources.get("CPU", 2)) // 2)
    return decoded.map_batches(
        ScoreStage, fn_constructor_kwargs={"plan": plan, "batch_size": batch_size}, batch_size=batch_size * 4,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
        num_gpus=1 if on_gpu else 0, num_cpus=0 if on_gpu else 1,
    )


def _read_remote(ray: Any, uris: Sequence[str], extensions: Sequence[str] | None) -> Any | None:
    """Ray's read of ``uris`` (one file system), or None when they hold no file at all.

    Missing files are skipped here and get their error rows at the end (:func:`_with_missing`).
    """
    if not uris:
        return None
    try:
        return ray.data.read_binary_files(list(uris), include_paths=True, ignore_missing_paths=True,
                                          file_extensions=extensions)
    except ValueError as exc:
        if "No files found" in str(exc):  # Ray refuses an empty read, even with ignore_missing_paths
            return None
        raise


def _decode_local_batch(batch: dict[str, np.ndarray], plan: StatsPlan, cwd: str) -> dict[str, np.ndarray]:
    """Ray task: local paths (relative to the driver's ``cwd``) -> resized pixels, or the error."""
    from .decode import decode

    images = []
    for path in map(str, batch["path"]):
        local = os.path.join(cwd, path)  # an absolute path stays as it is
        image = decode(local, plan.config, plan.max_image_pixels, debug=plan.debug, keep_original=plan.fidelity)
        if image.error and image.error.startswith(local):  # name the input as given, as the local engine does
            image.error = path + image.error[len(local):]
        image.path = path
        images.append(image)
    return _columns(images)


def _decode_remote_batch(batch: dict[str, np.ndarray], plan: StatsPlan, scheme: str) -> dict[str, np.ndarray]:
    """Ray task: bytes read by Ray (paths without their scheme) -> resized pixels, or the error."""
    from .decode import decode

    return _columns([decode(f"{scheme}://{path}", plan.config, plan.max_image_pixels, data=bytes(data),
                            debug=plan.debug, keep_original=plan.fidelity)
                     for path, data in zip(batch["path"], batch["bytes"])])


def _columns(images: Sequence[Decoded]) -> dict[str, np.ndarray]:
    """Decoded images as the columns a Ray block holds (pixels as raw bytes with their shape)."""
    import numpy as np

    out: dict[str, list[Any]] = {name: [] for name in ("path", "error", "internal", "height", "width",
                                                        "resized_height", "resized_width", "pixels", "original")}
    for image in images:
        height, width = image.original_hw or (-1, -1)
        resized = image.pixels.shape[:2] if image.pixels is not None else (-1, -1)
        out["path"].append(image.path)
        out["error"].append(image.error or "")
        out["internal"].append(image.internal)
        out["height"].append(height)
        out["width"].append(width)
        out["resized_height"].append(resized[0])
        out["resized_width"].append(resized[1])
        out["pixels"].append(b"" if image.pixels is None else image.pixels.tobytes())
        out["original"].append(b"" if image.original is None else image.original.tobytes())  # --fidelity: h x w x 3
    return {name: np.array(values, dtype=object if name in ("path", "error", "pixels", "original") else None)
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
            kept = None
            if self.plan.fidelity:  # the image as loaded, for the uniform baselines
                kept = np.frombuffer(batch["original"][i], dtype=np.uint8).reshape(*original, 3)
            for ready in batcher.add(Pending(str(path), original, pixels, every, original=kept)):
                rows += self.scorer(ready)
        for ready in batcher.drain():
            rows += self.scorer(ready)
        return pa.Table.from_pylist(rows, schema=self.schema)
