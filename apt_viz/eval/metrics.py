"""How a setting's output compares with the stock model's, and with the gold answer.

- ``first_token_kl``: KL(stock || setting) of the next-token distribution after the prompt, in nats:
  ``sum_v p(v) (log p(v) - log q(v))`` with ``p``, ``q`` the softmax of the two models' logits at
  the first generated position (computed in float64). 0 when the two distributions are equal.
- ``top1_agree``: the two distributions have the same most likely token.
- ``answer_agree``: the greedy answers are the same text.
- ``correct``: the answer matches the gold answer after :func:`normalize_answer`, exactly or by
  containment (the gold's words appear, in order and contiguous, among the answer's words: "a red
  car" holds "red car", "12" does not hold "2"). None without a gold answer.

These measure agreement with the stock model, not quality: a random model agrees with itself.
"""
from __future__ import annotations

import re
import string

import torch

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation, " "))


def first_token_kl(stock_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """KL(stock || setting) in nats of the softmax of two (vocab,) logit vectors.

    Args:
        stock_logits: The stock model's logits at the first generated position.
        logits: The setting's logits at the same position.

    Returns:
        The divergence, >= 0 (clamped: rounding can make an exact 0 slightly negative).
    """
    p = stock_logits.double().log_softmax(-1)
    q = logits.double().log_softmax(-1)
    return max(0.0, float((p.exp() * (p - q)).sum()))


def top1_agree(stock_logits: torch.Tensor, logits: torch.Tensor) -> bool:
    """Whether the two (vocab,) logit vectors have the same argmax."""
    return int(stock_logits.argmax()) == int(logits.argmax())


def normalize_answer(text: str) -> str:
    """Lower case, punctuation to spaces, articles (a, an, the) dropped, white space collapsed.

    The normalisation of SQuAD's and VQA's answer matching: ``"The Cat."`` -> ``"cat"``.
    """
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def is_correct(answer: str, gold: str | None) -> bool | None:
    """Whether ``answer`` matches ``gold`` (normalized exact match or word containment); None without gold.

    Args:
        answer: The model's answer.
        gold: The given answer, or None.

    Returns:
        True / False, or None when there is no gold answer.
    """
    if gold is None:
        return None
    want, got = normalize_answer(gold).split(), normalize_answer(answer).split()
    if want == got:
        return True
    return bool(want) and any(got[i : i + len(want)] == want for i in range(len(got) - len(want) + 1))
