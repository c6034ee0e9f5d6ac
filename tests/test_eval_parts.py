"""The parts of ``apt-viz eval`` on hand-made cases: DATA, where the image goes in a prompt, the metrics, settings."""
from __future__ import annotations

import json
import math

import pytest
import torch

from apt_viz.core.config import APTConfig
from apt_viz.eval.data import DataError, read_examples
from apt_viz.eval.metrics import first_token_kl, is_correct, normalize_answer, top1_agree
from apt_viz.eval.prompts import IMAGE_PLACEHOLDER, Placement, placement, prompt_text
from apt_viz.eval.settings import Baseline, EvalPlan, parse_baselines
from apt_viz.stats.settings import settings_of

from helpers import CHAT_TEMPLATE, PHOTO_PATHS, REPO_ROOT

# --- DATA --------------------------------------------------------------------------------------------


def test_jsonl_paths_are_relative_to_the_file_and_answers_may_be_numbers(tmp_path):
    (tmp_path / "sub").mkdir()
    data = tmp_path / "sub" / "d.jsonl"
    data.write_text("\n".join([
        json.dumps({"image": "../a.jpg", "prompt": "what ?", "answer": 3}),
        "",
        json.dumps({"image": "/abs/b.png", "answer": "cat", "id": "x"}),  # no prompt: --prompt's
    ]) + "\n")
    first, second = read_examples(data, prompt="describe .")
    assert (first.index, first.image, first.prompt, first.gold) == (0, "../a.jpg", "what ?", "3")
    assert first.path == str(tmp_path / "sub" / "../a.jpg")
    assert (second.index, second.path, second.prompt, second.gold) == (1, "/abs/b.png", "describe .", "cat")
    assert read_examples(data)[1].prompt == ""  # an empty prompt is the example's error, found when it runs


@pytest.mark.parametrize("line, message", [
    ("[1, 2]", "d.jsonl:1: not a JSON object"),
    ('{"prompt": "x"}', "d.jsonl:1: no image path"),
    ('{"image": "a.jpg", "prompt": 3}', "prompt must be a string"),
    ('{"image": "a.jpg", "answer": ["cat"]}', "answer must be a string or a number"),
])
def test_a_bad_line_makes_data_unusable(tmp_path, line, message):
    (tmp_path / "d.jsonl").write_text(line + "\n")
    with pytest.raises(DataError, match=message):
        read_examples(tmp_path / "d.jsonl")


def test_a_folder_gives_its_images_with_the_one_prompt(tmp_path):
    folder = PHOTO_PATHS["coffee"].parent
    examples = read_examples(folder, prompt="what is this ?")
    assert [e.image for e in examples] == sorted(p.name for p in PHOTO_PATHS.values())
    assert all(e.prompt == "what is this ?" and e.gold is None for e in examples)
    with pytest.raises(DataError, match="needs --prompt"):
        read_examples(folder)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no examples"):
        read_examples(tmp_path / "empty.jsonl")


# --- where the image goes --------------------------------------------------------------------------------

class TemplateProcessor:
    """What prompt_text reads of a processor: its chat template and apply_chat_template (rendered with jinja2)."""

    def __init__(self, template):
        self.chat_template = template

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        import jinja2

        assert tokenize is False
        return jinja2.Template(self.chat_template).render(messages=messages,
                                                          add_generation_prompt=add_generation_prompt)


def test_the_image_is_placed_as_given_by_the_template_or_prepended():
    templated, bare = TemplateProcessor(CHAT_TEMPLATE), TemplateProcessor(None)
    given = f"{IMAGE_PLACEHOLDER} what is this ?"
    assert placement(given, templated) is Placement.AS_GIVEN and prompt_text(given, templated) == given
    assert placement("what ?", templated) is Placement.CHAT_TEMPLATE
    assert prompt_text("what ?", templated) == (
        f"<|im_start|> user {IMAGE_PLACEHOLDER} what ? <|im_end|> <|im_start|> assistant ")
    assert placement("what ?", bare) is Placement.PREPENDED and prompt_text("what ?", bare) == IMAGE_PLACEHOLDER + "what ?"


# --- metrics -----------------------------------------------------------------------------------------

def test_first_token_kl_is_the_formula():
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.5, 0.25, 0.25])
    expected = sum(a * math.log(a / b) for a, b in zip(p.tolist(), q.tolist()))  # 0.0851... nats
    assert first_token_kl(p.log() + 3.0, q.log() - 1.0) == pytest.approx(expected, rel=1e-6)  # softmax: shifts cancel
    same = torch.randn(50)
    assert first_token_kl(same, same.clone()) == 0.0 and top1_agree(same, same + 1)
    assert not top1_agree(p.log(), torch.tensor([0.1, 0.8, 0.1]).log())


@pytest.mark.parametrize("answer, gold, correct", [
    ("The Cat.", "cat", True),  # articles, case and punctuation dropped
    ("It is a red car", "red car", True),  # containment of whole words, in order
    ("car red", "red car", False),
    ("12 apples", "2", False),  # not inside a word
    ("Two", "2", False),
    ("anything", None, None),
])
def test_correct_is_normalized_exact_match_or_containment(answer, gold, correct):
    assert is_correct(answer, gold) is correct


def test_normalize_answer():
    assert normalize_answer("  The  Eiffel-Tower, in PARIS! ") == "eiffel tower in paris"


# --- settings ----------------------------------------------------------------------------------------

def test_settings_are_stock_then_each_apt_setting_with_its_baselines():
    plan = EvalPlan(APTConfig(), settings_of("budget", [0.3, 0.5]), parse_baselines("random_equal_vision,uniform_equal_llm"))
    assert plan.labels == ("stock", "budget alpha=0.3", "random_equal_vision @ budget alpha=0.3",
                           "uniform_equal_llm @ budget alpha=0.3", "budget alpha=0.5",
                           "random_equal_vision @ budget alpha=0.5", "uniform_equal_llm @ budget alpha=0.5")
    assert [s.baseline for s in plan.baselines_of(plan.apt_settings()[1])] == [Baseline.RANDOM_EQUAL_VISION,
                                                                               Baseline.UNIFORM_EQUAL_LLM]
    assert parse_baselines("none") == ()
    with pytest.raises(ValueError, match="unknown baseline uniform"):
        parse_baselines("uniform")
    llm = EvalPlan(APTConfig(), settings_of("budget", [0.3]), (), budget_unit="llm")
    assert llm.labels == ("stock", "budget alpha=0.3 unit=llm")
    assert llm.settings[1].apt_kwargs()["budget_unit"] == "llm"


# --- docs/eval.md's export of a datasets dataset ------------------------------------------------------

def test_the_export_snippet_of_docs_eval_writes_data_eval_reads(tmp_path):
    """The snippet, run on rows shaped as a datasets dataset yields them (PIL images, VQAv2-style answer lists)."""
    from PIL import Image

    text = (REPO_ROOT / "docs" / "eval.md").read_text()
    block = next(b for b in text.split("```python")[1:] if "def export_vqa" in b).split("```")[0]
    namespace: dict = {}
    exec(block, namespace)
    photo = Image.open(PHOTO_PATHS["chelsea"])
    rows = [
        {"image": photo, "question": "What animal is this?", "answers": [{"answer": "cat", "answer_id": 1}]},
        {"image": photo.convert("L"), "question": "Is it red?", "answers": []},
    ]
    namespace["export_vqa"](rows, tmp_path / "vqa", answer="answers")
    first, second = read_examples(tmp_path / "vqa" / "data.jsonl")
    assert (first.image, first.prompt, first.gold) == ("images/000000.png", "What animal is this?", "cat")
    assert (second.prompt, second.gold) == ("Is it red?", None)
    saved = Image.open(first.path)
    assert saved.mode == "RGB" and saved.tobytes() == photo.convert("RGB").tobytes()  # PNG: the same pixels
