"""The package's shape: a torch-only core, layers that import only downwards, a lazy top level."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "apt_viz"

# Lower layers first; a module may import its own layer and the layers before it, never a later one.
LAYERS = [
    {"core"},
    {"_text", "atomic", "imaging", "checkpoint"},
    {"analysis"},
    {"fidelity"},
    {"sweep"},
    {"render", "report"},
    {"batch"},
    {"stats", "hf"},
    {"bench", "eval"},
    {"cli", "__main__"},
]
BLOCKED = ("PIL", "matplotlib", "cv2", "typer", "rich", "transformers", "torchvision")


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "apt_viz"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    return -1  # apt_viz/__init__.py: the lazy map may name every layer


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(["apt_viz", *(parts[:-1] if parts[-1] == "__init__" else parts)])


def imported_modules(path: Path) -> list[str]:
    """apt_viz modules imported by ``path`` (relative imports resolved), at any depth of the file."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
                found.extend([name] if node.module else [f"{name}.{alias.name}" for alias in node.names])
            elif node.module and node.module.startswith("apt_viz"):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names if alias.name.startswith("apt_viz"))
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layers_import_only_downwards(path):
    module = module_name(path)
    own = layer_of(module)
    if own < 0:
        return
    upward = [name for name in imported_modules(path) if name != "apt_viz" and layer_of(name) > own]
    assert not upward, f"{module} (layer {own}) imports upper layers: {upward}"


def run_blocked(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which the app-side libraries cannot be imported."""
    guard = (
        "import sys\n"
        f"BLOCKED = {BLOCKED!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'blocked for this test: {name}')\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    return subprocess.run([sys.executable, "-c", guard + code], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_core_runs_without_pillow_and_the_app_libraries():
    code = (
        "import torch\n"
        "from apt_viz.core import (compute_patch_entropy_batched, compute_patch_laplacian_batched,\n"
        "    compute_patch_upsample_mse_batched, select_patches_by_threshold, select_patches_by_threshold_v2,\n"
        "    select_patches_by_budget, smart_resize, PatchTokenizer, run_apt, APTConfig, token_stats)\n"
        "images = torch.rand(2, 3, 70, 98, generator=torch.Generator().manual_seed(0)) * 255\n"
        "maps = compute_patch_entropy_batched(images)\n"
        "assert compute_patch_laplacian_batched(images)[28].shape == (2, 3, 4)\n"
        "assert compute_patch_upsample_mse_batched(images)[56].shape == (2, 2, 2)\n"
        "size = (70, 98)\n"
        "for masks in (select_patches_by_threshold(maps, [3.0, 2.0], size),\n"
        "              select_patches_by_threshold_v2(maps, 1.0, size), select_patches_by_budget(maps, 0.3, size)[0]):\n"
        "    assert sum(int(m.sum()) for m in masks.values()) > 0\n"
        "assert smart_resize(427, 640) == (420, 644)\n"
        "out = PatchTokenizer(patch_selection_method='budget', alpha=0.5)((images / 255 - 0.5) / 0.25)\n"
        "assert len(out['seqlens']) == 2\n"
        "assert run_apt(images, APTConfig(method='v2')).stats[0].base_tokens == 35\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)\n"
        "print('OK', leaked)\n"
    )
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr
    assert "OK []" in result.stdout


@pytest.mark.slow
def test_import_apt_viz_is_lazy():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, apt_viz; print(sorted(m.split('.')[0] for m in sys.modules "
         "if m.split('.')[0] in ('torch', 'numpy', 'PIL', 'transformers', 'typer')))"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
