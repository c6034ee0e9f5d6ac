"""The baseline that ``bench_core.py`` divides by: the official APT entropy, or a one-hot stand-in.

The official ``compute_patch_entropy_batched`` (rccchoudhury/apt, ``src/models/entropy_utils.py``)
builds a one-hot tensor of (cells, pixels per cell, bins) floats per grid and sums it. Its module
imports cv2, ipdb and torchvision, so :func:`load_official` compiles that one function out of a
checkout the user points at (its code is read at run time, never copied here). Without a checkout,
:func:`onehot_entropy` is the stand-in: the formula of docs/contract.md section 3 computed the
same one-hot way, so it costs what the official code costs.
"""
from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

OFFICIAL_FILE = Path("src") / "models" / "entropy_utils.py"
OFFICIAL_FUNCTION = "compute_patch_entropy_batched"


def onehot_entropy(images: Any, patch_size: int = 14, num_scales: int = 3, bins: int = 512,
                   pad_value: float = 1e6) -> dict[int, Any]:
    """docs/contract.md section 3, one-hot: {cell size: (B, rows, cols)} entropies in bits.

    gray = 0.2989 R + 0.5870 G + 0.1140 B (float32), level = clamp(floor(gray * bins / 256)),
    zero padding to the grid counted as level 0, p_b = count_b / s^2, entropy =
    -sum_b p_b log2(p_b + 1e-10), the padded last row / column set to ``pad_value``.
    """
    import torch
    import torch.nn.functional as F

    r, g, b = images.float().unbind(1)
    gray = 0.2989 * r + 0.5870 * g + 0.1140 * b
    levels = (gray * (bins / 256)).floor().clamp(0, bins - 1).long()
    batch, height, width = levels.shape
    maps = {}
    for size in (patch_size * 2**i for i in range(num_scales)):
        rows, cols = math.ceil(height / size), math.ceil(width / size)
        padded = F.pad(levels, (0, cols * size - width, 0, rows * size - height))
        # b (r y) (c x) -> (b r c) (y x)
        cells = padded.unfold(1, size, size).unfold(2, size, size).reshape(-1, size * size)
        one_hot = torch.zeros(cells.shape[0], size * size, bins, device=images.device)
        histograms = one_hot.scatter_(2, cells.unsqueeze(2), 1).sum(1)
        p = histograms / (size * size)
        entropy = -(p * torch.log2(p + 1e-10)).sum(dim=1).view(batch, rows, cols)
        if height % size:
            entropy[:, -1, :] = pad_value
        if width % size:
            entropy[:, :, -1] = pad_value
        maps[size] = entropy
    return maps


def load_official(path: Path) -> Callable[..., dict[int, Any]]:
    """The official ``compute_patch_entropy_batched`` from an APT checkout (or its entropy_utils.py).

    Only that function is compiled, with ``torch``, ``F`` and ``math`` as its globals.

    Raises:
        ValueError: the file or the function is not there.
    """
    import torch
    import torch.nn.functional as F

    source_file = path / OFFICIAL_FILE if path.is_dir() else path
    if not source_file.is_file():
        raise ValueError(f"{source_file}: no such file (give an APT checkout or its {OFFICIAL_FILE})")
    tree = ast.parse(source_file.read_text(), filename=str(source_file))
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == OFFICIAL_FUNCTION]
    if not found:
        raise ValueError(f"{source_file}: no function {OFFICIAL_FUNCTION}")
    namespace: dict[str, Any] = {"torch": torch, "F": F, "math": math}
    exec(compile(ast.Module(body=found, type_ignores=[]), str(source_file), "exec"), namespace)
    return namespace[OFFICIAL_FUNCTION]
