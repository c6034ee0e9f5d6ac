"""The core paths that ``apt-viz stats`` leans on: entropy under any allocation history, selection
without host synchronisation, batched maps equal to one-image maps.

Speed itself is measured by ``benchmarks/bench_core.py`` and ``benchmarks/bench_stats.py``; these
tests pin the properties that make it fast and the results that must not change.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from apt_viz.core.config import APTConfig
from apt_viz.core.pipeline import compute_maps
from apt_viz.core.scoring import compute_importance_maps, compute_patch_entropy_batched
from apt_viz.core.selection import select_patches, select_patches_by_budget

from helpers import PHOTO_NAMES, REPO_ROOT, load_photo_tensor

SIZES = (14, 28, 56)


def _photo_hwc(name: str = "astronaut", size: tuple[int, int] = (392, 588)) -> np.ndarray:
    return load_photo_tensor(name, size=size)[0].permute(1, 2, 0).to(torch.uint8).numpy()  # c h w -> h w c


# --- entropy: workspace reuse ------------------------------------------------------------------------

def test_entropy_is_the_same_for_any_input_layout_and_dtype():
    hwc = _photo_hwc()
    contiguous = torch.from_numpy(hwc).permute(2, 0, 1).contiguous().float()[None]  # h w c -> 1 c h w
    layouts = {
        "hwc view": torch.from_numpy(hwc).permute(2, 0, 1).float()[None],  # h w c -> 1 c h w, not contiguous
        "uint8": torch.from_numpy(hwc).permute(2, 0, 1)[None],
        "float64": contiguous.double(),
    }
    expected = compute_patch_entropy_batched(contiguous)
    for name, images in layouts.items():
        got = compute_patch_entropy_batched(images)
        assert all(torch.equal(got[size], expected[size]) for size in SIZES), name


def test_entropy_results_do_not_share_the_workspace():
    first_image = load_photo_tensor("coffee", size=(392, 588))
    first = compute_patch_entropy_batched(first_image)
    kept = {size: m.clone() for size, m in first.items()}
    compute_patch_entropy_batched(load_photo_tensor("rocket", size=(392, 588)))  # same shapes: same buffers
    compute_patch_entropy_batched(load_photo_tensor("rocket", size=(420, 644)))
    assert all(torch.equal(first[size], kept[size]) for size in SIZES)


def test_entropy_from_several_threads_at_once():
    images = {name: load_photo_tensor(name, size=(280, 420)) for name in PHOTO_NAMES}
    expected = {name: compute_patch_entropy_batched(image) for name, image in images.items()}
    errors: list[str] = []

    def work(name: str) -> None:
        for _ in range(5):
            got = compute_patch_entropy_batched(images[name])
            if not all(torch.equal(got[size], expected[name][size]) for size in SIZES):
                errors.append(name)

    threads = [threading.Thread(target=work, args=(name,)) for name in PHOTO_NAMES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


FAULT_PROBE = """
import resource, sys
import numpy as np, torch
from apt_viz.core.scoring import compute_patch_entropy_batched
torch.set_num_threads(1)
hwc = np.load(sys.argv[1])
images = torch.from_numpy(hwc).permute(2, 0, 1).float()[None]  # h w c -> 1 c h w, not contiguous
compute_patch_entropy_batched(images)  # warm-up: the workspace is made
before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
for _ in range(3):
    compute_patch_entropy_batched(images)
print((resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / 3)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="minor page-fault counts are read from getrusage")
def test_entropy_after_warm_up_maps_no_fresh_memory(tmp_path):
    """The cause of the old 11-28 ms spread: every call page-faulted fresh temporaries, how many depending
    on what glibc's adaptive mmap threshold had learnt from the process's past. With the threshold
    fixed at its floor (the worst history: every temporary over 128 KiB mapped afresh) a warm call must
    map nothing new."""
    np.save(tmp_path / "photo.npy", _photo_hwc(size=(1008, 1008)))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", FAULT_PROBE, str(tmp_path / "photo.npy")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    faults = float(done.stdout.split()[-1])
    assert faults < 100, f"{faults:.0f} page faults per call (about 2500 without the workspace)"


# --- batches -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("scorer", ["entropy", "laplacian", "upsample_mse"])
def test_batched_maps_equal_one_image_maps(scorer):
    """``stats`` scores same-size images together; each image's maps must be those of a run alone."""
    images = torch.cat([load_photo_tensor(name, size=(252, 378)) for name in PHOTO_NAMES])
    config = APTConfig(scorer=scorer)
    batched = compute_maps(images, config)
    for index in range(len(PHOTO_NAMES)):
        alone = compute_maps(images[index : index + 1], config)
        assert all(torch.equal(batched[size][index], alone[size][0]) for size in SIZES)


# --- selection without host synchronisation ---------------------------------------------------------

class SyncProneOps(TorchDispatchMode):
    """Records the aten ops that make a CUDA host wait for the device (data-dependent sizes or values)."""

    SYNCING = frozenset({"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::masked_select",
               "aten::unique_consecutive", "aten::_unique2"})

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        overload = f"{name}.{func._overloadname}" if func._overloadname else name
        bool_index = name in ("aten::index", "aten::index_put", "aten::index_put_") and any(
            isinstance(index, torch.Tensor) and index.dtype == torch.bool
            for index in (args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else [])
        )
        # repeat_interleave reads its repeats back unless it is told the output size.
        sized = name == "aten::repeat_interleave" and kwargs.get("output_size", args[3] if len(args) > 3 else None)
        if name in self.SYNCING or bool_index or (name == "aten::repeat_interleave" and not sized):
            self.seen.append(overload + (" (bool index)" if bool_index else ""))
        return func(*args, **kwargs)


@pytest.mark.parametrize("method, alpha", [("v2", 1.0), ("budget", 0.3), ("budget", 0.01), ("v1", 1.0)])
def test_selection_of_a_batch_never_waits_for_the_device(method, alpha):
    """No .item(), int(tensor), nonzero or boolean indexing in the per-batch path (checked on the CPU,
    where the same ops would make a GPU stall); the results themselves are pinned by the selection tests."""
    images = torch.cat([load_photo_tensor(name, size=(250, 370)) for name in PHOTO_NAMES])  # partial cells
    maps = compute_importance_maps(images)
    select_patches(maps, method, alpha=alpha, image_size=(250, 370))  # geometry is cached per image size
    with SyncProneOps() as recorder:
        select_patches(maps, method, alpha=alpha, image_size=(250, 370))
    assert recorder.seen == []


@pytest.mark.parametrize("alpha", [0.3, 0.01])
def test_llm_budget_of_a_batch_never_waits_for_the_device(alpha):
    images = torch.cat([load_photo_tensor(name, size=(250, 370)) for name in PHOTO_NAMES])
    maps = compute_importance_maps(images)
    select_patches(maps, "budget", alpha=alpha, image_size=(250, 370), budget_unit="llm")
    with SyncProneOps() as recorder:
        select_patches(maps, "budget", alpha=alpha, image_size=(250, 370), budget_unit="llm")
    assert recorder.seen == []


def test_budget_with_a_count_per_image_chooses_each_prefix():
    from apt_viz.core._budget_splits import choose_splits

    priorities = torch.tensor([[5.0, 1.0, 3.0, 3.0], [0.0, 2.0, 9.0, 1.0]])
    chosen = choose_splits(priorities, torch.tensor([2, 3]))
    assert chosen.tolist() == [[True, False, True, False], [False, True, True, True]]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method, alpha", [("v2", 1.0), ("budget", 0.3)])
def test_cuda_selection_synchronises_once_per_batch(method, alpha):
    images = torch.cat([load_photo_tensor(name, size=(250, 370)) for name in PHOTO_NAMES]).cuda()
    maps = compute_importance_maps(images)
    expected = select_patches({s: m.cpu() for s, m in maps.items()}, method, alpha=alpha, image_size=(250, 370))
    select_patches(maps, method, alpha=alpha, image_size=(250, 370))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning) as caught:
            result = select_patches(maps, method, alpha=alpha, image_size=(250, 370))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 1  # v2: the thresholds it reports; budget: the counts of BudgetInfo
    assert all(torch.equal(result.masks[s].cpu(), expected.masks[s]) for s in SIZES)


def test_budget_info_is_unchanged_by_the_host_side_geometry():
    maps = compute_importance_maps(load_photo_tensor("rocket", size=(250, 370)))
    masks, info = select_patches_by_budget(maps, 0.4, (250, 370))
    rows, cols = math.ceil(250 / 14), math.ceil(370 / 14)
    assert info[0].base_tokens == rows * cols
    assert info[0].vision_tokens == int(sum(m.sum() for m in masks.values()))
    assert info[0].min_tokens < info[0].vision_tokens <= info[0].budget


# --- the resize of the torchvision backend ---------------------------------------------------------------

@pytest.mark.parametrize("source, target", [((816, 1224), (812, 1232)), ((300, 451), (308, 448)),
                                            ((17, 3000), (28, 2968)), ((1000, 999), (1400, 1400)), ((56, 56), (1, 5))])
def test_uint8_antialias_resize_gives_the_same_bytes_for_either_layout(source, target):
    """imaging resizes the HWC view instead of the planar copy transformers makes; the bytes must not change."""
    import torch.nn.functional as F

    hwc = torch.randint(0, 256, (*source, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    planar = F.interpolate(hwc.permute(2, 0, 1).contiguous()[None], size=target, mode="bicubic",  # h w c -> 1 c h w
                           align_corners=False, antialias=True)
    view = F.interpolate(hwc.permute(2, 0, 1)[None], size=target, mode="bicubic",  # h w c -> 1 c h w (a view)
                         align_corners=False, antialias=True)
    assert torch.equal(planar, view)


def test_cached_buffers_work_inside_and_outside_inference_mode():
    """The workspace and the cached geometry are made once: when that happens under torch.inference_mode
    they must still be usable (in place) outside it, and the other way round."""
    images = load_photo_tensor("chelsea", size=(210, 322))  # a size no other test uses: fresh caches
    with torch.inference_mode():
        inside = compute_patch_entropy_batched(images)
        chosen = select_patches(inside, "budget", alpha=0.3, image_size=(210, 322)).masks
    outside = compute_patch_entropy_batched(images)
    again = select_patches(outside, "budget", alpha=0.3, image_size=(210, 322)).masks
    assert all(torch.equal(inside[size], outside[size]) and torch.equal(chosen[size], again[size]) for size in SIZES)
