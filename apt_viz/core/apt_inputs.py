"""The ``apt_*`` inputs of a batch of images: their one declaration and their checks (pure torch).

:class:`APTInputs` holds the five tensors; their key names (:attr:`APTInputs.KEYS`) are declared
here and nowhere else. The image processors produce it, the models consume it.

A pipeline that builds the tensors itself, or slices a processor batch, can hand a model inputs
that do not fit together. :func:`check_apt_inputs` finds every such inconsistency before any
model computation and raises a one-line ``ValueError`` naming the image (and the row or base cell,
rows counted within their image) and the problem, in this order:

1. the tensors: types, dims, dtypes, one device, row width, one entry per image;
2. the grids (t = 1, h and w multiples of m) and ``apt_num_tokens`` (at least one row per image);
3. the row counts of ``apt_pixel_values``, ``apt_patch_sizes`` and ``apt_patch_positions``, and
   ``apt_num_tokens`` against them;
4. every row: a size among the scales, a cell inside its image's grid, aligned to its own size;
5. the cover: every base cell under exactly one cell (no overlap, no hole);
6. the LLM tokens the rows make against ``apt_num_llm_tokens``;
7. (:func:`check_image_tokens`) the image tokens of the prompt against ``apt_num_llm_tokens``.

The checks are vectorized: steps 4 to 6 are a few dozen tensor ops over the rows and one host
sync; only a failing input pays for finding the culprit.
"""
from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: compare the fields
class APTInputs:
    """The APT view of a batch of images, as the image processor returns it and the model takes it.

    Each field ``x`` travels under the key ``apt_x`` (:attr:`KEYS`) in the processor's
    ``BatchFeature`` and in the model's keyword arguments. Rows: n = sum(num_tokens), images
    concatenated in input order.
    """

    pixel_values: torch.Tensor | None  # (n, C*T*p*p) one stock-format row per cell (None: layout only)
    patch_sizes: torch.Tensor  # (n,) cell size of every row in pixels
    patch_positions: torch.Tensor  # (n, 2) (row, col) of every cell's top-left base cell
    num_tokens: torch.Tensor  # (images,) rows per image
    num_llm_tokens: torch.Tensor  # (images,) LLM tokens per image after the m x m merger

    PREFIX: ClassVar[str] = "apt_"
    KEYS: ClassVar[tuple[str, ...]]  # ("apt_pixel_values", ...), set below from the fields

    @classmethod
    def key(cls, name: str) -> str:
        """The key of field ``name`` (``"num_llm_tokens"`` -> ``"apt_num_llm_tokens"``)."""
        key = cls.PREFIX + name
        if key not in cls.KEYS:
            raise KeyError(f"APTInputs has no field {name!r}")
        return key

    @classmethod
    def pop_from(cls, kwargs: MutableMapping[str, Any], pixels: bool = True) -> APTInputs | None:
        """Remove the ``apt_*`` keys from ``kwargs`` and return them, or None when none is given.

        Args:
            kwargs: Keyword arguments of a model call (changed in place).
            pixels: Whether ``apt_pixel_values`` is needed (the rope index needs only the layout).

        Returns:
            The inputs (``pixel_values`` None where not given and not needed), or None.

        Raises:
            ValueError: some keys are given and others are missing (one line).
        """
        given = {key: kwargs.pop(key) for key in cls.KEYS if key in kwargs}
        given = {key: value for key, value in given.items() if value is not None}
        if not given:
            return None
        pixel_key = cls.key("pixel_values")
        if pixels and pixel_key not in given:
            raise ValueError(f"{', '.join(given)} given without {pixel_key}")
        missing = [key for key in cls.KEYS if key != pixel_key and key not in given]
        if missing:
            raise ValueError(f"APT inputs are incomplete: {', '.join(missing)} missing")
        return cls(**{key.removeprefix(cls.PREFIX): given.get(key) for key in cls.KEYS})  # type: ignore[arg-type]

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> APTInputs:
        """The ``apt_*`` values of a mapping (a ``BatchFeature``), as they are (no conversion)."""
        return cls(**{key.removeprefix(cls.PREFIX): mapping[key] for key in cls.KEYS})

    @classmethod
    def concat(cls, parts: Sequence[APTInputs]) -> APTInputs:
        """One batch from per-image (or per-batch) inputs, in order."""
        def cat(name: str) -> Any:
            values = [getattr(part, name) for part in parts]
            return None if any(value is None for value in values) else torch.cat(values)

        return cls(**{field.name: cat(field.name) for field in fields(cls)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        """``{"apt_pixel_values": ..., ...}``; a field that is None is left out."""
        values = {self.PREFIX + field.name: getattr(self, field.name) for field in fields(self)}
        return {key: value for key, value in values.items() if value is not None}

    def to(self, device: torch.device | str) -> APTInputs:
        """The same inputs on ``device``."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return replace(self, **{name: value.to(device) for name, value in values.items() if value is not None})


APTInputs.KEYS = tuple(APTInputs.PREFIX + field.name for field in fields(APTInputs))


@dataclass(frozen=True)
class CheckedRows:
    """What the checks computed, reused by :func:`apt_viz.core.layout.apt_layout` (n rows)."""

    rows: torch.Tensor  # (n,) long top-left base row of every cell
    cols: torch.Tensor  # (n,) long top-left base column
    cells: torch.Tensor  # (n,) long cell side in base patches
    image: torch.Tensor  # (n,) long image of every row
    grids: torch.Tensor  # (images, 3) long, on the rows' device
    num_tokens: list[int]
    llm_tokens: list[int]


def check_apt_inputs(
    inputs: APTInputs,
    image_grid_thw: torch.Tensor,
    patch_size: int,
    merge_size: int,
    num_scales: int,
    row_width: int | None = None,
    device: torch.device | None = None,
) -> CheckedRows:
    """Raise a one-line ``ValueError`` at the first inconsistency of ``inputs`` (module docstring, steps 1-6).

    Args:
        inputs: The ``apt_*`` tensors (``pixel_values`` None: its checks are skipped).
        image_grid_thw: (images, 3) stock grids (t, h, w) in base patches.
        patch_size: Base patch size p.
        merge_size: Spatial merge size m.
        num_scales: Cell sizes allowed: p * 2**k for k < num_scales (sides 1 or multiples of m).
        row_width: Values per row of ``pixel_values`` (C * T * p * p), if known.
        device: Where the model runs: the inputs must be there too (None: not checked).

    Returns:
        The per-row tensors the checks computed.

    Raises:
        ValueError: one line naming the image and the problem.
    """
    _check_tensors(inputs, image_grid_thw, row_width, device)
    grid_list = image_grid_thw.tolist()
    num_tokens, num_llm = inputs.num_tokens.tolist(), inputs.num_llm_tokens.tolist()
    _check_counts(inputs, grid_list, num_tokens, merge_size)

    device = inputs.patch_sizes.device
    grids = image_grid_thw.long()
    sizes = inputs.patch_sizes.long()
    image = torch.repeat_interleave(torch.arange(len(num_tokens), device=device), inputs.num_tokens.long())
    rows, cols = inputs.patch_positions.long().unbind(-1)
    sides = [2**k for k in range(num_scales) if k == 0 or 2**k % merge_size == 0]
    scales = [patch_size * side for side in sides]
    good_size = torch.isin(sizes, torch.tensor(scales, device=device))
    cells = torch.where(good_size, sizes // patch_size, 1)  # a bad size counts as a base patch from here on
    height, width = grids[image, 1], grids[image, 2]
    outside = (rows < 0) | (cols < 0) | (rows + cells > height) | (cols + cells > width)
    unaligned = (rows % cells != 0) | (cols % cells != 0)
    coverage = _coverage(rows, cols, cells, image, grids, good_size & ~outside, max(sides))
    kinds = torch.bincount(image * 2 + (cells > 1).long(), minlength=2 * len(num_tokens)).view(-1, 2)
    llm_tokens = kinds[:, 0] // merge_size**2 + kinds[:, 1]  # a base group of m*m rows or a larger cell: 1 token
    flags = torch.stack([
        ~good_size.all(), outside.any(), unaligned.any(), (coverage > 1).any(), (coverage == 0).any(),
        (llm_tokens != inputs.num_llm_tokens).any(),
    ])
    if bool(flags.any()):
        failed = _Failure(sizes, rows, cols, cells, image, grids, num_tokens)
        failed.explain(flags.tolist(), good_size, outside, unaligned, coverage, llm_tokens, num_llm, scales)
    return CheckedRows(rows, cols, cells, image, grids, num_tokens, num_llm)


def check_image_tokens(
    input_ids: torch.Tensor, image_token_id: int, num_llm_tokens: torch.Tensor, processor_name: str
) -> None:
    """Raise when the prompt's image tokens disagree with ``apt_num_llm_tokens``.

    Each image is a run of ``image_token_id`` in the prompts (Qwen wraps it in
    ``<|vision_start|>`` / ``<|vision_end|>``); runs are matched to images in order. When the runs
    cannot be told apart (two images with nothing between them), the totals are compared.

    Args:
        input_ids: (batch, length) prompts.
        image_token_id: The ``<|image_pad|>`` id.
        num_llm_tokens: (images,) ``apt_num_llm_tokens``.
        processor_name: The processor that writes matching prompts (named in the message).

    Raises:
        ValueError: one line naming the image, or the totals.
    """
    is_image = F.pad(input_ids == image_token_id, (1, 0))  # a False column keeps runs of two prompts apart
    starts = (is_image[:, 1:] & ~is_image[:, :-1]).flatten()
    run = starts.cumsum(0) - 1  # the image-token run of every position
    lengths = torch.bincount(run[is_image[:, 1:].flatten()], minlength=len(num_llm_tokens))
    expected = num_llm_tokens.to(lengths.device)
    if len(lengths) == len(expected) and bool((lengths == expected).all()):
        return
    key, fix = APTInputs.key("num_llm_tokens"), f"build the inputs with {processor_name}"
    if len(lengths) == len(expected):
        i = int((lengths != expected).nonzero()[0])
        raise ValueError(
            f"image {i}: the prompt holds {int(lengths[i])} image tokens for it "
            f"but {key}[{i}] = {int(expected[i])}: {fix}"
        )
    total, want = int(lengths.sum()), int(expected.sum())
    if total != want:
        raise ValueError(
            f"the prompt holds {total} image tokens but {key} gives {want} for {len(expected)} images: {fix}"
        )


# --- steps 1 to 3: the tensors and the counts ---------------------------------------------------

_SPECS = (  # field, rank, last dim, floating, shape in words
    ("pixel_values", 2, None, True, "(rows, C*T*p*p)"),
    ("patch_sizes", 1, None, False, "(rows,)"),
    ("patch_positions", 2, 2, False, "(rows, 2)"),
    ("num_tokens", 1, None, False, "(images,)"),
    ("num_llm_tokens", 1, None, False, "(images,)"),
)


def _check_tensors(inputs: APTInputs, grid: Any, row_width: int | None, device: torch.device | None) -> None:
    named = [(inputs.key(field), getattr(inputs, field), *spec) for field, *spec in _SPECS]
    named.append(("image_grid_thw", grid, 2, 3, False, "(images, 3)"))
    named = [entry for entry in named if entry[1] is not None]
    for name, value, rank, last, floating, shape in named:
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{name} must be a torch.Tensor, got {type(value).__name__} "
                "(call the processor with return_tensors='pt')"
            )
        if value.dim() != rank or (last is not None and value.shape[-1] != last):
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
        if value.dtype == torch.bool or value.is_complex() or value.is_floating_point() != floating:
            raise ValueError(f"{name} must hold {'floats' if floating else 'integers'}, got {value.dtype}")
    first_name, first = named[0][:2]
    for name, value, *_ in named[1:]:
        if value.device != first.device:
            raise ValueError(
                f"{name} is on {value.device} but {first_name} on {first.device}: "
                "move the processor's outputs together (inputs.to(device))"
            )
    if device is not None and first.device != device:
        raise ValueError(
            f"{first_name} is on {first.device} but the model on {device}: move the inputs with .to(model.device)"
        )
    pixels = inputs.pixel_values
    if row_width is not None and pixels is not None and pixels.shape[1] != row_width:
        raise ValueError(
            f"{inputs.key('pixel_values')} rows hold {pixels.shape[1]} values but the vision tower takes "
            f"{row_width} (channels x temporal x patch x patch)"
        )
    images = len(grid)
    if images == 0:
        raise ValueError("image_grid_thw holds no image, but APT inputs are given")
    for field in ("num_tokens", "num_llm_tokens"):
        count, key = len(getattr(inputs, field)), inputs.key(field)
        if count < images:
            raise ValueError(f"image {count}: {key} has no entry for it ({count} entries for {images} images)")
        if count > images:
            raise ValueError(f"image {images}: {key} has an entry for it but image_grid_thw has only {images} images")


def _check_counts(inputs: APTInputs, grids: list[list[int]], num_tokens: list[int], merge_size: int) -> None:
    for i, (t, h, w) in enumerate(grids):
        if t != 1 or h < 1 or w < 1 or h % merge_size or w % merge_size:
            raise ValueError(
                f"image {i}: image_grid_thw is ({t}, {h}, {w}); APT images need t = 1 and h, w positive "
                f"multiples of {merge_size}"
            )
    key = inputs.key("num_tokens")
    for i, count in enumerate(num_tokens):
        if count < 1:
            raise ValueError(f"image {i}: {key}[{i}] is {count}; an image has at least one APT row")
    ends = list(itertools.accumulate(num_tokens))
    lengths = {
        inputs.key(field): len(value)
        for field in ("pixel_values", "patch_sizes", "patch_positions")
        if (value := getattr(inputs, field)) is not None
    }
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{name} has {count}" for name, count in lengths.items())
        image = _image_of_row(ends, min(lengths.values()))
        raise ValueError(f"image {image}: the APT row counts disagree: {counts} rows")
    total, available = ends[-1], len(inputs.patch_sizes)
    if total > available:
        i = _image_of_row(ends, available)
        left = available - (ends[i - 1] if i else 0)
        raise ValueError(
            f"image {i}: {key}[{i}] = {num_tokens[i]} but {left} of the {available} APT rows are left for it"
        )
    if total < available:
        raise ValueError(
            f"image {len(num_tokens) - 1}: {key} sums to {total} but there are {available} APT rows "
            f"({available - total} after the last image)"
        )


def _image_of_row(ends: list[int], row: int) -> int:
    """The image holding batch row ``row``, given each image's end (the last image when the row is past them all)."""
    return min(bisect.bisect_right(ends, row), len(ends) - 1)


# --- steps 4 to 6: rows, cover, LLM tokens -----------------------------------------------------

def _coverage(
    rows: torch.Tensor, cols: torch.Tensor, cells: torch.Tensor, image: torch.Tensor, grids: torch.Tensor,
    usable: torch.Tensor, largest: int,
) -> torch.Tensor:
    """(sum h*w,) how many cells cover each base cell of the batch (rows not ``usable`` cover nothing)."""
    device = rows.device
    width = grids[image, 2]
    offsets = F.pad((grids[:, 1] * grids[:, 2]).cumsum(0), (1, 0))
    total = int(offsets[-1])
    offset = torch.arange(largest * largest, device=device)
    dy, dx = offset // largest, offset % largest  # every (row, col) offset inside the largest cell
    inside = (dy < cells[:, None]) & (dx < cells[:, None]) & usable[:, None]  # (n, largest**2)
    covered = (offsets[image] + rows * width + cols)[:, None] + dy * width[:, None] + dx
    index = torch.where(inside, covered, total)  # offsets outside a cell go to a spare bin at the end
    return torch.bincount(index.flatten(), minlength=total + 1)[:total]


@dataclass(frozen=True)
class _Failure:
    """The per-row tensors of an input that failed, to name the first culprit."""

    sizes: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    cells: torch.Tensor
    image: torch.Tensor
    grids: torch.Tensor
    num_tokens: list[int]

    def locate(self, mask: torch.Tensor) -> tuple[int, str, str]:
        """The first row in ``mask``, ``"image i, row j"`` and ``"the s px cell at base cell (r, c)"``."""
        row = int(mask.nonzero()[0])
        i = int(self.image[row])
        where = f"image {i}, row {row - sum(self.num_tokens[:i])}"
        cell = f"the {int(self.sizes[row])} px cell at base cell ({int(self.rows[row])}, {int(self.cols[row])})"
        return row, where, cell

    def explain(
        self, flags: list[bool], good_size: torch.Tensor, outside: torch.Tensor, unaligned: torch.Tensor,
        coverage: torch.Tensor, llm_tokens: torch.Tensor, num_llm: list[int], scales: list[int],
    ) -> None:
        """Raise the message of the first failing check (``flags`` in the order of :func:`check_apt_inputs`)."""
        bad_size, out, misaligned, overlap, hole, llm = flags
        if bad_size:
            row, where, _ = self.locate(~good_size)
            raise ValueError(
                f"{where}: patch size {int(self.sizes[row])} px is not one of the scales "
                f"{', '.join(map(str, scales))} px"
            )
        if out:
            row, where, cell = self.locate(outside)
            _, h, w = self.grids[int(self.image[row])].tolist()
            raise ValueError(f"{where}: {cell} reaches outside the image's {h} x {w} grid")
        if misaligned:
            row, where, cell = self.locate(unaligned)
            raise ValueError(
                f"{where}: {cell} is not aligned to its size "
                f"(row and column must be multiples of {int(self.cells[row])})"
            )
        if overlap or hole:
            first = int(((coverage > 1) if overlap else (coverage == 0)).nonzero()[0])
            ends = list(itertools.accumulate(h * w for _, h, w in self.grids.tolist()))
            i = _image_of_row(ends, first)
            r, c = divmod(first - (ends[i - 1] if i else 0), int(self.grids[i, 2]))
            if overlap:
                raise ValueError(
                    f"image {i}: base cell ({r}, {c}) is covered by {int(coverage[first])} APT cells "
                    "(overlapping or duplicated rows)"
                )
            raise ValueError(f"image {i}: base cell ({r}, {c}) is covered by no APT cell (a hole: a dropped row?)")
        if llm:
            made = llm_tokens.tolist()
            i = next(k for k, (have, want) in enumerate(zip(made, num_llm)) if have != want)
            raise ValueError(
                f"image {i}: {APTInputs.key('num_llm_tokens')}[{i}] = {num_llm[i]} "
                f"but its rows make {made[i]} LLM tokens"
            )
