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


@pytest.mark.parametrize("answer", ["The answer is 20.", "#### 20", "Final answer: 20"])
def test_phrase_answer_survives_draft_truncation(tiny_tokenizer, answer):
    """Bug: only an answer in <answer> or \\boxed{} was kept when a long draft was cut, so a draft
    ending "The answer is 20." lost its answer. The kept tail now starts at the extractor's match."""
    question = "Compute 17+3*4-9."
    draft = "3*4=12 " * 40 + "\n" + answer
    rp = build_refine_prompt(tiny_tokenizer, question, draft, template=TINY_DRAFT_TEMPLATE,
                             system_prompt=None, max_prompt_length=90)
    assert rp.draft_truncated and len(rp.ids) <= 90
    assert rp.text.startswith(question) and answer in rp.text


def test_answer_start_follows_the_extractor():
    from igrpo_core.answers import answer_start, extract_answer
    cases = {"x \\boxed{1} y \\boxed{2} z": "\\boxed{2}", "a <answer>7</answer>": "<answer>7",
             "so\n#### 42": "#### 42", "The answer is 5. Then": "The answer is 5", "nothing here": None,
             "\\boxed{3} then \\boxed{unclosed": "\\boxed{3}"}
    for text, span in cases.items():
        start = answer_start(text)
        if span is None:
            assert start is None and extract_answer(text) is None
        else:
            assert text[start:].startswith(span), (text, start)
            assert extract_answer(text[start:]) == extract_answer(text)


def _tokenizer_without_chat_template(src: str, dst):
    import json
    import shutil
    shutil.copytree(src, dst)
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template")
    cfg_path.write_text(json.dumps(cfg))
    for f in dst.glob("chat_template*"):
        f.unlink()
    return str(dst)


def test_tokenizer_without_chat_template_gets_plain_text_prompts(tiny_model_path, tmp_path):
    """Bug: load_tokenizer raised for base models without a chat template. Now prompts are plain text
    (system prompt, blank line, question), as TRL allows, and prompt_format says which was used."""
    from igrpo_core.models import load_tokenizer
    base = _tokenizer_without_chat_template(tiny_model_path, tmp_path / "base")
    with pytest.warns(UserWarning, match="no chat template"):
        tok = load_tokenizer(base)
    from igrpo_core.prompts import prompt_format
    assert tok.chat_template is None and prompt_format(tok) == "plain"
    assert render_prompt(tok, "Compute 1+2.", None) == tok("Compute 1+2.")["input_ids"]
    assert tok.decode(render_prompt(tok, "Compute 1+2.", "Sys")) == "Sys\n\nCompute 1+2."
    assert prompt_format(load_tokenizer(tiny_model_path)) == "chat"
    from conftest import small_config
    from igrpo_core import records
    from igrpo_core.trainer import Trainer
    with pytest.warns(UserWarning, match="no chat template"):
        tr = Trainer(small_config(tmp_path, model_name_or_path=base, algo="grpo"))
    assert records.read_json(tr.run_dir / "model.json")["prompt_format"] == "plain"
