"""``apt-viz eval``: what an APT setting costs in answers, on the user's own checkpoint and data.

- :mod:`.data`: DATA (a JSONL file or a folder of images) as :class:`Example` objects.
- :mod:`.prompts`: where the image goes in a prompt (as given, the chat template, or prepended).
- :mod:`.settings`: stock, the APT settings and their baselines at equal cost (:class:`EvalPlan`).
- :mod:`.model`: the checkpoint's APT model and its stock and APT processors (:func:`load_eval_model`).
- :mod:`.inputs`: one example's inputs under one setting, and a batch of them.
- :mod:`.runner`: greedy generation of a batch: first-token logits, answers, prefill time.
- :mod:`.metrics`: ``first_token_kl``, ``top1_agree``, answer matching (``correct``).
- :mod:`.table`: the Parquet table (committed parts, ``--resume``).
- :mod:`.run`: one run, batch by batch (:func:`run_eval`).
- :mod:`.summary`, :mod:`.html`: the per-setting summary and the offline page.

docs/eval.md describes the command and every column. Names load lazily (torch and transformers
are imported only by a run).
"""
from __future__ import annotations

from ..core._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("Example", "DataError", "read_examples", "data_fingerprint"), "data"),
    **dict.fromkeys(("IMAGE_PLACEHOLDER", "Placement", "placement", "prompt_text"), "prompts"),
    **dict.fromkeys(("Baseline", "DType", "EvalPlan", "EvalSetting", "STOCK", "parse_baselines"), "settings"),
    **dict.fromkeys(("EvalModel", "ModelError", "load_eval_model"), "model"),
    **dict.fromkeys(("first_token_kl", "top1_agree", "normalize_answer", "is_correct"), "metrics"),
    **dict.fromkeys(("EvalTable", "COLUMNS"), "table"),
    **dict.fromkeys(("EvalReport", "run_eval"), "run"),
    **dict.fromkeys(("SettingSummary", "summarise"), "summary"),
    "render_page": "html",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
