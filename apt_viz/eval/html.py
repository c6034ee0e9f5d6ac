"""The offline HTML page of an eval run: each example's image, its APT reconstructions and the answers side by side.

One self-contained file (images inline as JPEG data URIs, inline CSS, no script, no network): for
each example shown, the image as the stock processor resized it with the gold and stock answers,
then, per APT setting, what the vision tower sees (:func:`apt_viz.fidelity.reconstruction.reconstruct`)
with its tokens, its answer and its baselines' answers. It is built after the run from the table
and DATA, so a resumed run's page shows every example. At most ``limit`` examples are shown.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

from .data import Example
from .settings import STOCK, EvalPlan

THUMBNAIL_SIDE = 320  # px, the longer side of every picture on the page

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.example { border-top: 1px solid #ccc; padding: 0.8em 0; display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; max-width: 340px; }
figcaption { font-size: 0.85em; margin-top: 0.3em; }
.answer { font-family: ui-monospace, monospace; white-space: pre-wrap; }
.agree { color: #176317; } .differ { color: #a0301a; } .error { color: #a0301a; }
.prompt { flex-basis: 100%; margin: 0; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<p>{overview}</p>
{body}
</body>
</html>
"""


def render_page(plan: EvalPlan, examples: Sequence[Example], rows: Sequence[dict[str, Any]], title: str,
                limit: int = 50) -> str:
    """The page's HTML.

    Args:
        plan: The run's settings (the APT settings get a reconstruction each).
        examples: DATA's examples.
        rows: The table's rows (dicts by column).
        title: The page title (e.g. the model folder).
        limit: Show at most this many examples (the first ones of DATA).

    Returns:
        The HTML text.
    """
    by_example: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_example.setdefault(row["example"], {})[row["setting"]] = row
    shown = [example for example in examples if example.index in by_example][:limit]
    body = "\n".join(_example(plan, example, by_example[example.index]) for example in shown)
    overview = (f"{len(shown)} of {len(by_example)} examples shown; answers in green agree with the stock "
                "model's, in red they differ.")
    return _PAGE.format(title=html.escape(title), style=_STYLE, overview=html.escape(overview), body=body)


def _example(plan: EvalPlan, example: Example, rows: dict[str, dict[str, Any]]) -> str:
    from ..imaging import load_image

    stock = rows.get(STOCK, {})
    header = (f'<p class="prompt"><b>#{example.index}</b> {html.escape(example.image)}: '
              f"{html.escape(example.prompt)}</p>")
    try:
        image = load_image(example.path)
    except ValueError as exc:
        return f'<div class="example">{header}<p class="error">{html.escape(str(exc))}</p></div>'
    gold = "" if example.gold is None else f"<br>gold: <span class=\"answer\">{html.escape(example.gold)}</span>"
    figures = [_figure(_resized(image, plan), f"stock: {_tokens(stock)}<br>{_answer(stock, stock=True)}{gold}")]
    for apt in plan.apt_settings():
        row = rows.get(apt.label)
        if row is None:
            continue
        caption = [f"<b>{html.escape(apt.label)}</b>: {_tokens(row)}<br>{_answer(row)}"]
        caption += [f"{html.escape(str(b.baseline))}: {_answer(rows[b.label])}"
                    for b in plan.baselines_of(apt) if b.label in rows]
        figures.append(_figure(_reconstruction(image, apt.config), "<br>".join(caption)))
    return f'<div class="example">{header}{"".join(figures)}</div>'


def _tokens(row: dict[str, Any]) -> str:
    if row.get("vision_tokens") is None:
        return "-"
    return f"{row['vision_tokens']} vision / {row['llm_tokens']} LLM tokens"


def _answer(row: dict[str, Any], stock: bool = False) -> str:
    """The row's answer (green: agrees with stock, red: differs; the stock answer plain) or its error."""
    if not row:
        return ""
    if row.get("error") is not None:
        return f'<span class="error">{html.escape(row["error"])}</span>'
    agree = "" if stock else " agree" if row["answer_agree"] else " differ"
    return f'<span class="answer{agree}">{html.escape(row["answer"] or "(empty)")}</span>'


def _figure(picture: Any, caption: str) -> str:
    picture = picture.copy()
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    source = base64.b64encode(buffer.getvalue()).decode()
    return f'<figure><img src="data:image/jpeg;base64,{source}" alt=""><figcaption>{caption}</figcaption></figure>'


def _resized(image: Any, plan: EvalPlan) -> Any:
    from ..imaging import resize_for_qwen2vl

    return resize_for_qwen2vl(image, plan.config.resize_spec, plan.config.backend)


def _reconstruction(image: Any, config: Any) -> Any:
    """What the vision tower sees under ``config``: the APT rows pasted back, upsampled to their cells."""
    from ..analysis import analyze_image
    from ..fidelity.reconstruction import reconstruct
    from ..imaging import pixels_to_image

    analysis = analyze_image(image, config.replace(device="cpu"))
    masks = {size: mask.unsqueeze(0) for size, mask in analysis.masks.items()}
    rebuilt = reconstruct(analysis.pixels[None].float(), masks, config.patch_size)
    return pixels_to_image(rebuilt[0].round().clamp(0, 255).to(dtype=analysis.pixels.dtype))
