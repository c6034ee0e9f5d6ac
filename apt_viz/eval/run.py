"""One eval run: every example under every setting, batch by batch, into the table.

For each batch of examples:

1. each example's image is loaded and checked, its prompt placed (:mod:`.prompts`) and its inputs
   prepared for every setting it still needs (:mod:`.inputs`): stock, each APT setting, then each
   baseline, matched to that APT setting's tokens on this image;
2. the stock model runs once on the batch (the reference every other setting is compared with),
   then each other setting runs on it (:mod:`.runner`);
3. the rows (:mod:`.table`) are committed: a kill loses at most the batch in flight.

A bad example (missing or unreadable image, a size the processor refuses, an empty prompt) gets
error rows and the run goes on (exit 1). A batch whose model call raises (out of memory, a bug) is
retried example by example, so only the example that fails gets error rows; an unexpected
exception is an internal error (exit 3). With ``--resume`` only the missing (example, setting)
rows are computed; the stock pass runs again whenever an example needs any row, since every row
is compared with it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..batch.failures import failure_of
from ..batch.parts import Row
from ..report.summary import Failure
from .data import Example
from .inputs import Prepared, collate, prepare
from .model import EvalModel
from .runner import Pass, generate, greedy_config
from .settings import STOCK, EvalPlan, EvalSetting
from .table import EvalTable, error_row, result_row

Advance = Callable[..., None]


@dataclass
class EvalReport:
    """What a run did (the table holds the results)."""

    examples: int  # examples in DATA
    processed: int = 0  # examples handled in this run
    failed: int = 0  # of those, examples with an error row
    internal_errors: int = 0  # of those, examples with an internal error (exit 3)
    skipped: int = 0  # examples whose every row was already in the table (--resume)
    rows: int = 0  # rows in the table written
    seconds: float = 0.0  # wall time of the run (model loading included)
    interrupted: bool = False
    failures: list[Failure] = field(default_factory=list)  # one per failed example (its first)

    @property
    def examples_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Work:
    """One example of a batch on its way through the settings."""

    example: Example
    needed: set[str]  # labels of the rows still to write
    inputs: dict[str, Prepared] = field(default_factory=dict)
    passes: dict[str, Pass] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)  # STOCK: the whole example failed


def run_eval(
    plan: EvalPlan,
    model: EvalModel,
    examples: Sequence[Example],
    table: EvalTable,
    *,
    batch_size: int = 1,
    max_image_pixels: int | None = None,
    stop: Any = None,
    progress: Callable[[int], contextlib.AbstractContextManager[Advance]] | None = None,
    debug: bool = False,
    report: EvalReport | None = None,
) -> EvalReport:
    """Compute the missing rows of every example and commit them to ``table`` (not finished here).

    Args:
        plan: The settings.
        model: The loaded checkpoint.
        examples: The examples of DATA.
        table: The open table (``table.done()`` says what is there already).
        batch_size: Examples per model call.
        max_image_pixels: Refuse larger images (None: no limit).
        stop: Truthy once the run should stop before the next batch (a :class:`~apt_viz.batch.workers.StopFlag`).
        progress: ``progress(total)`` -> context manager yielding ``advance(n)``, called after each batch
            (a progress bar over the examples that need rows).
        debug: Append tracebacks to internal errors.
        report: The report to fill in (default: a new one).

    Returns:
        The :class:`EvalReport` (``rows`` and ``seconds`` are the caller's to set).
    """
    report = report or EvalReport(examples=len(examples))
    done = table.done()
    todo = []
    for example in examples:
        needed = {label for label in plan.labels if (example.index, label) not in done}
        if needed:
            todo.append(_Work(example, needed))
        else:
            report.skipped += 1
    generation = greedy_config(model, plan.max_new_tokens)
    with (progress or _no_progress)(len(todo)) as advance:
        for batch in _batches(todo, max(1, batch_size)):
            if stop:
                report.interrupted = True
                break
            table.add(_evaluate(batch, plan, model, generation, max_image_pixels, debug))
            table.commit()
            for work in batch:
                _count(work, report)
            advance(len(batch))
    return report


# --- one batch -----------------------------------------------------------------------------------

def _evaluate(batch: list[_Work], plan: EvalPlan, model: EvalModel, generation: Any, max_image_pixels: int | None,
              debug: bool) -> list[Row]:
    for work in batch:
        _prepare_all(work, plan, model, max_image_pixels, debug)
    for setting in plan.settings:  # stock first: the reference
        label = setting.label
        _run(label, [w for w in batch if label in w.inputs and (label == STOCK or label in w.needed)
                     and STOCK not in w.failures], model, generation, debug)
    return [row for work in batch for row in _rows(work, plan)]


def _prepare_all(work: _Work, plan: EvalPlan, model: EvalModel, max_image_pixels: int | None, debug: bool) -> None:
    """The inputs of every setting ``work`` needs (stock always), or the failure that stops it."""
    from ..fidelity.uniform import uniform_hw
    from ..imaging import load_image
    from .prompts import prompt_text

    example = work.example
    try:
        if not example.prompt.strip():
            work.failures[STOCK] = Failure(example.path, f"{example.path}: empty prompt")
            return
        image = load_image(example.path, max_image_pixels)
        uniform_hw((image.height, image.width), plan.config.max_pixels, plan.config)  # sizes the processor refuses
        text = prompt_text(example.prompt, model.stock_processor)
        work.inputs[STOCK] = prepare(model.stock_processor, image, text)
    except Exception as exc:
        work.failures[STOCK] = failure_of(example.path, exc, debug)
        return
    for apt in plan.apt_settings():
        baselines = [b for b in plan.baselines_of(apt) if b.label in work.needed]
        if apt.label not in work.needed and not baselines:
            continue
        try:
            work.inputs[apt.label] = prepare(model.apt_processor, image, text, apt.apt_kwargs())
        except Exception as exc:
            work.failures[apt.label] = failure_of(example.path, exc, debug)
            continue
        for baseline in baselines:
            try:
                work.inputs[baseline.label] = _baseline_inputs(baseline, work, apt, image, text, plan, model)
            except Exception as exc:
                work.failures[baseline.label] = failure_of(example.path, exc, debug)


def _baseline_inputs(baseline: EvalSetting, work: _Work, apt: EvalSetting, image: Any, text: str, plan: EvalPlan,
                     model: EvalModel) -> Prepared:
    """A baseline's inputs, matched to the APT setting's tokens on this image."""
    from ..fidelity.measure import random_baseline_config
    from ..fidelity.uniform import matched_max_pixels
    from .settings import Baseline

    cost = work.inputs[apt.label]
    config = plan.config
    if baseline.baseline is Baseline.RANDOM_EQUAL_VISION:
        random = random_baseline_config(apt.apt_config, cost.vision_tokens, work.inputs[STOCK].vision_tokens)
        return prepare(model.apt_processor, image, text, baseline.apt_kwargs(random))
    target = cost.vision_tokens if baseline.baseline is Baseline.UNIFORM_EQUAL_VISION else (
        cost.llm_tokens * config.merge_size**2)
    max_pixels = matched_max_pixels((image.height, image.width), target, config)
    return prepare(model.stock_processor, image, text,
                   {"size": {"shortest_edge": config.min_pixels, "longest_edge": max_pixels}})


def _run(label: str, works: list[_Work], model: EvalModel, generation: Any, debug: bool) -> None:
    """Run one setting on ``works`` in one call; if it raises, example by example (only the culprit fails)."""
    if not works:
        return
    try:
        batch = collate([work.inputs[label] for work in works], model.pad_token_id, model.device)
        for work, result in zip(works, generate(model, batch, generation)):
            work.passes[label] = result
    except Exception as exc:
        if len(works) == 1:
            works[0].failures[label] = failure_of(works[0].example.path, exc, debug)
            return
        for work in works:
            _run(label, [work], model, generation, debug)


def _rows(work: _Work, plan: EvalPlan) -> Iterator[Row]:
    stock = work.passes.get(STOCK)
    for setting in plan.settings:
        if setting.label not in work.needed:
            continue
        failure = _failure(work, setting, plan)
        result = work.passes.get(setting.label)
        if failure is None and result is not None and stock is not None:
            prepared = work.inputs[setting.label]
            yield result_row(work.example, setting, (prepared.vision_tokens, prepared.llm_tokens), result, stock)
            continue
        if failure is None:  # never expected: every needed setting ran or failed
            failure = Failure(work.example.path, f"{work.example.path}: internal error: {setting.label} gave no "
                              "result", kind="internal")
            work.failures[setting.label] = failure
        yield error_row(work.example, setting, failure.error, stock)


def _failure(work: _Work, setting: EvalSetting, plan: EvalPlan) -> Failure | None:
    """The failure that stops ``setting`` on this example: its own, its APT setting's, or the stock one's."""
    keys = [setting.label]
    if setting.baseline is not None:
        keys += [apt.label for apt in plan.apt_settings() if apt.selection == setting.selection]
    for key in [*keys, STOCK]:
        if key in work.failures:
            return work.failures[key]
    return None


def _count(work: _Work, report: EvalReport) -> None:
    report.processed += 1
    if work.failures:
        report.failed += 1
        report.internal_errors += any(f.kind == "internal" for f in work.failures.values())
        report.failures.append(next(iter(work.failures.values())))


def _batches(items: Sequence[_Work], size: int) -> Iterator[list[_Work]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@contextlib.contextmanager
def _no_progress(_total: int) -> Iterator[Advance]:
    yield lambda _n=1, description=None: None
