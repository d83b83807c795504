import pytest

from igrpo_core.prompts import (PAPER_DRAFT_TEMPLATE, PAPER_SYSTEM_PROMPT, TINY_DRAFT_TEMPLATE,
                                build_refine_prompt, render_prompt)


def test_short_draft_is_not_truncated(tiny_tokenizer):
    rp = build_refine_prompt(tiny_tokenizer, "Compute 1+2.", "<think>1+2=3</think><answer>\\boxed{3}</answer>",
                             template=TINY_DRAFT_TEMPLATE, system_prompt=None, max_prompt_length=200)
    assert not rp.draft_truncated and "\\boxed{3}" in rp.text


@pytest.mark.parametrize("budget", [60, 80, 120])
def test_question_survives_truncation_and_final_answer_is_kept(tiny_tokenizer, budget):
    """Regression for the paper's weak point: a long draft must never push the question out."""
    question = "Compute 17+3*4-9."
    draft = "<think>" + "3*4=12 " * 40 + "</think><answer>\\boxed{20}</answer>"
    rp = build_refine_prompt(tiny_tokenizer, question, draft, template=TINY_DRAFT_TEMPLATE,
                             system_prompt=None, max_prompt_length=budget)
    assert rp.draft_truncated and rp.draft_chars_dropped > 0
    assert len(rp.ids) <= budget
    assert rp.text.startswith(question)
    assert "\\boxed{20}" in rp.text
    decoded = tiny_tokenizer.decode(rp.ids)
    assert question in decoded


def test_question_too_long_is_an_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="max_prompt_length"):
        build_refine_prompt(tiny_tokenizer, "Compute " + "1+" * 60 + "1.", "x", template=TINY_DRAFT_TEMPLATE,
                            system_prompt=None, max_prompt_length=50)


def test_paper_template_and_system_prompt_render(tiny_tokenizer):
    text = PAPER_DRAFT_TEMPLATE.format(question="Q?", draft="D")
    ids = render_prompt(tiny_tokenizer, text, PAPER_SYSTEM_PROMPT)
    decoded = tiny_tokenizer.decode(ids)
    assert "Q?" in decoded and "<draft>" in decoded and "internal monologue" in decoded
