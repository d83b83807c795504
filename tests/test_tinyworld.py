"""Tiny world: problem generation, solutions, drafts, the character tokenizer and the shipped model."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from igrpo_core import tinyworld as tw
from igrpo_core.prompts import TINY_DRAFT_TEMPLATE, attach_draft, render_prompt

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "data/models/tiny-arith"


@pytest.fixture(scope="module")
def tok():
    return tw.build_tokenizer()


def _true_value(expr: str) -> int:
    # The expression grammar is digits and + - * only, so Python's precedence is the task's precedence.
    assert set(expr) <= set("0123456789+-*")
    return eval(expr)  # noqa: S307 - checked to be arithmetic above


def test_make_split_is_deterministic_and_ids_are_stable():
    a, b = tw.make_split("train", 50, seed=3), tw.make_split("train", 50, seed=3)
    assert a == b
    assert tw.make_split("train", 50, seed=4) != a
    assert tw.make_split("heldout", 30)[:10] == tw.make_split("heldout", 10)  # prefix-stable in n
    assert a[7]["id"] == "tiny/train/00007"
    assert {"id", "problem", "answer", "source", "solution"} <= set(a[0])
    assert all(e["source"] == "tiny" for e in a)
    assert len({e["problem"] for e in a}) == len(a)


def test_train_and_heldout_are_disjoint_across_seeds():
    train = {e["problem"] for s in (0, 1) for e in tw.make_split("train", 2000, seed=s)}
    held = {e["problem"] for s in (0, 1) for e in tw.make_split("heldout", 500, seed=s)}
    assert not train & held
    assert all(tw.is_heldout(p[len("Compute "):-1]) for p in held)


def test_stable_hash_is_not_pythons_salted_hash():
    # Regression: hash() of str changes per process (PYTHONHASHSEED), which would reshuffle the split.
    assert tw.stable_hash("7+12*3-4") == tw.stable_hash("7+12*3-4")
    code = "from igrpo_core import tinyworld as tw; print(tw.stable_hash('7+12*3-4'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert int(out.stdout) == tw.stable_hash("7+12*3-4")


def test_solutions_are_correct_and_well_formed():
    rng = random.Random(0)
    for _ in range(500):
        ex = tw.make_example(rng)
        value = _true_value(ex["expression"])
        assert ex["answer"] == str(value) and tw.boxed_answer(ex["solution"]) == str(value)
        assert ex["problem"] == f"Compute {ex['expression']}."
        steps = tw.parse_steps(ex["solution"])
        assert len(steps) == ex["expression"].count("+") + ex["expression"].count("-") + ex["expression"].count("*")
        assert all(c >= 0 for *_, c in steps)
        assert all(tw._apply(a, op, b) == c for a, op, b, c in steps)
        assert ex["solution"].startswith("<think>") and ex["solution"].endswith("</answer>")


def test_worked_solution_format_matches_the_paper():
    steps = tw.solve_steps([7, 12, 3, 4], ["+", "*", "-"])
    assert tw.format_solution(steps, 39) == r"<think>12*3=36 7+36=43 43-4=39</think><answer>\boxed{39}</answer>"


def test_difficulty_knob_is_respected():
    d = tw.Difficulty(num_ops=(1, 1), max_operand=5, mul_range=(2, 2))
    for ex in tw.make_split("train", 20, difficulty=d):
        assert len(tw.parse_steps(ex["solution"])) == 1


def test_hard_level_is_harder_disjoint_and_loaded_by_its_spec():
    from igrpo_core.data import load_dataset
    hard = load_dataset("tiny-hard:train", tiny_num_problems=300)
    assert hard == tw.make_split("train", 300, difficulty=tw.HARD, name="tiny-hard")
    assert hard[3]["id"] == "tiny-hard/train/00003"
    for ex in hard:
        steps = tw.parse_steps(ex["solution"])
        assert len(steps) == 3 and all(0 <= c for *_, c in steps)                   # always 3 operations
        assert all(2 <= b <= 7 for _, op, b, _ in steps if op == "*") and _true_value(ex["expression"]) == int(ex["answer"])
    assert max(int(e["answer"]) for e in hard) > max(int(e["answer"]) for e in tw.make_split("train", 300))
    held = {e["problem"] for e in load_dataset("tiny-hard:heldout", tiny_num_problems=300)}
    assert not held & {e["problem"] for e in hard} and all(tw.is_heldout(p[len("Compute "):-1]) for p in held)
    assert load_dataset("tiny:train", tiny_num_problems=50) == tw.make_split("train", 50)   # default unchanged


def test_corrupt_solution_always_changes_the_final_answer():
    rng = random.Random(1)
    for ex in tw.make_split("train", 500):
        bad = tw.corrupt_solution(rng, ex["solution"])
        assert bad != ex["solution"]
        assert tw.boxed_answer(bad) != ex["answer"] and not tw.is_correct(bad, ex["answer"])


def test_is_correct_is_an_exact_integer_match():
    assert tw.is_correct(r"<answer>\boxed{ 39 }</answer>", "39")
    assert tw.is_correct(r"\boxed{1} then \boxed{039}", "39")  # last box wins
    assert not tw.is_correct(r"\boxed{38}", "39")
    assert not tw.is_correct("39", "39")
    assert not tw.is_correct(r"\boxed{3x}", "39")


def test_tokenizer_round_trips_and_separates_pad_from_eos(tok):
    assert tok.pad_token_id != tok.eos_token_id
    rng = random.Random(2)
    texts = [ex["solution"] for ex in tw.make_split("train", 50)]
    texts += [tw.corrupt_solution(rng, t) for t in texts[:10]]
    texts += ["a  b\n\tc", "non-ASCII — é ∑ 🙂 falls back to bytes"]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    ids = tok.encode(r"<think>1+2=3</think><answer>\boxed{3}</answer>", add_special_tokens=False)
    assert len(ids) == 5 + 5 + 2  # 5 format tokens, "1+2=3", "3}"
    assert tok.unk_token_id is None or tok.unk_token_id not in tok.encode("— é", add_special_tokens=False)


def test_chat_template_and_render_prompt(tok):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Compute 1+2."},
            {"role": "assistant", "content": "X"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == "S\nQ: Compute 1+2.\nA: X<|eos|>\n"
    ids = render_prompt(tok, "Compute 1+2.", None)
    assert tok.decode(ids) == "Q: Compute 1+2.\nA: "
    assert tok.decode(render_prompt(tok, "Compute 1+2.", "Sys")) == "Sys\nQ: Compute 1+2.\nA: "
    q = attach_draft("Compute 1+2.", r"<think>1+2=4</think><answer>\boxed{4}</answer>", TINY_DRAFT_TEMPLATE)
    ids = render_prompt(tok, q, None)
    assert tok.decode(ids) == f"Q: {q}\nA: "


@pytest.mark.skipif(not (SHIPPED / "config.json").exists(), reason="shipped model not built yet")
def test_shipped_model_loads_and_answers_in_format():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(SHIPPED)
    model = AutoModelForCausalLM.from_pretrained(SHIPPED)
    cfg = model.config
    assert (cfg.head_dim, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (64, 128, 2, 2)
    assert cfg.vocab_size == len(tok) and cfg.tie_word_embeddings
    assert cfg.eos_token_id == tok.eos_token_id and cfg.pad_token_id == tok.pad_token_id != tok.eos_token_id
    assert model.dtype == torch.float32
    gen = json.loads((SHIPPED / "generation_config.json").read_text())
    assert gen["top_k"] == 0 and gen["top_p"] == 1.0  # transformers would otherwise apply top_k=50
    assert model.generation_config.top_k == 0
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                   tokenize=False) == "Q: hi\nA: "
    ex = tw.make_split("heldout", 1)[0]
    ids = torch.tensor([render_prompt(tok, ex["problem"], None)])
    out = model.generate(ids, do_sample=False, max_new_tokens=64)
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert text.startswith("<think>") and tw.boxed_answer(text) is not None
    assert out[0, -1].item() == tok.eos_token_id  # learned to stop
    assert (SHIPPED / "BUILD.md").exists()
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) < 10e6


def test_quick_build_runs_end_to_end(tmp_path):
    out = tmp_path / "m"
    subprocess.run([sys.executable, str(REPO / "scripts/build_tiny_model.py"), "--out", str(out), "--quick"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).pad_token == "<pad>"
    assert AutoModelForCausalLM.from_pretrained(out).config.head_dim == 64
    assert "direct | greedy" in (out / "BUILD.md").read_text()


def test_training_labels_cover_completion_and_eos_only(tok):
    sys.path.insert(0, str(REPO / "scripts"))
    import build_tiny_model as b

    rng = random.Random(0)
    pairs = [b.make_training_example(rng, tok, draft_frac=0.5) for _ in range(8)]
    ids, mask, labels = b.collate(pairs, tok.pad_token_id)
    for i, (p, t) in enumerate(pairs):
        kept = labels[i][labels[i] != -100].tolist()
        assert kept == t and kept[-1] == tok.eos_token_id  # EOS is trained even though pad != eos
        assert mask[i].sum().item() == len(p) + len(t)
        assert tok.decode(t, skip_special_tokens=True) == tok.decode(t[:-1])


def test_warm_start_is_deterministic(tmp_path):
    """Same seed, same weights: the shipped model must be rebuildable bit for bit on one machine."""
    sys.path.insert(0, str(REPO / "scripts"))
    import build_tiny_model as b

    for name in ("a", "b"):
        b.main(["--out", str(tmp_path / name), "--quick", "--steps", "2"])
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()
