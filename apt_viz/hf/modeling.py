"""Kept only so that ``apt_viz/hf/bench.py`` imports as before; the model lives in :mod:`apt_viz.hf.qwen2_vl`.

Delete this module once the bench moves to ``apt_viz/bench/`` and imports from :mod:`apt_viz.hf`.
"""
from __future__ import annotations

from .qwen2_vl import APTQwen2VLForConditionalGeneration, APTQwen2VLModel

__all__ = ["APTQwen2VLForConditionalGeneration", "APTQwen2VLModel"]
