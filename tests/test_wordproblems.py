"""Word problems: gold answers, the arithmetic-disjoint held-out split, determinism, dataset specs."""
from __future__ import annotations

import random
import re

import pytest

from igrpo_core import wordproblems as wp
from igrpo_core.data import load_dataset as load_examples
from igrpo_core.prompts import attach_draft
from igrpo_core.config import Config
from igrpo_core.rewards import build_reward_fns, score_one

NUM = re.compile(r"\d+")


def _recompute(row: dict) -> int:
    """The answer from the problem text alone: the numbers in order, the ops named in the key."""
    level, ops, _ = row["key"].split(":")
    nums = [int(x) for x in NUM.findall(row["question"])]
    acc = nums[0]
    for op, x in zip(ops.split(","), nums[1:]):
        acc = {"+": acc + x, "-": acc - x, "*": acc * x, "/": acc // x}[op]
        if op == "/":
            assert nums[0] % x == 0, row
    return acc


@pytest.mark.parametrize("level", wp.LEVELS)
def test_gold_answers_match_the_text(level):
    rows = wp.make_split("train", 300, level) + wp.make_split("heldout", 100, level)
    for r in rows:
        assert int(r["answer"]) == _recompute(r) >= 0, r
        # The key's operands are the numbers the text states, in order.
        assert r["key"].split(":")[2] == ",".join(NUM.findall(r["question"])), r
        assert r["problem"] == f"{wp.EXAMPLE}{r['question']}\n{wp.INSTRUCTION}"
    assert {op for r in rows for op in r["key"].split(":")[1].split(",")} == (
        {"+", "-"} if level in (0, 1) else {"+", "-", "*", "/"} if level == 2 else {"+", "-", "*"})


@pytest.mark.parametrize("level", wp.LEVELS)
def test_heldout_is_disjoint_from_train_by_arithmetic_hash(level):
    train, held = wp.make_split("train", 2000, level), wp.make_split("heldout", 200, level)
    assert all(wp.is_heldout(r["key"]) for r in held)
    assert not any(wp.is_heldout(r["key"]) for r in train)
    assert not {r["key"] for r in train} & {r["key"] for r in held}  # no shared sum, whatever the wording
    assert not {r["problem"] for r in train} & {r["problem"] for r in held}
    assert len({r["problem"] for r in held}) == len(held)  # distinct within a split


def test_deterministic_and_seed_dependent():
    a = wp.make_split("heldout", 50, 2)
    assert a == wp.make_split("heldout", 50, 2)
    assert wp.make_split("heldout", 10, 2) == a[:10]  # prefix-stable in n
    assert wp.make_split("heldout", 50, 2, seed=1) != a
    assert a[3]["id"] == "words2/heldout/00003" and a[0]["source"] == "words"
    # The hash is blake2b, not Python's salted hash(): the split of a key is fixed across processes.
    assert wp.is_heldout("2:+:38,56") is wp.is_heldout("2:+:38,56")


def test_dataset_specs_resolve_through_load_dataset():
    assert load_examples("words:heldout", tiny_num_problems=20) == wp.make_split("heldout", 20, wp.DEFAULT_LEVEL)
    assert load_examples("words1:train", tiny_num_problems=5) == wp.make_split("train", 5, 1)
    assert load_examples("words3", tiny_num_problems=5) == wp.make_split("train", 5, 3)
    with pytest.raises(ValueError):
        load_examples("words9:train", tiny_num_problems=5)
    with pytest.raises(ValueError):
        load_examples("words:test", tiny_num_problems=5)


def test_accuracy_reward_reads_the_answer_format_the_prompt_asks_for():
    row = wp.make_split("heldout", 1, 2)[0]
    assert "####" in wp.SYSTEM_PROMPT and row["problem"].endswith(wp.INSTRUCTION) and "#### 7" in wp.EXAMPLE
    good = f"That makes 3 + 4 = 7, no: {row['answer']}.\n#### {row['answer']}"
    bad = f"#### {int(row['answer']) + 1}"
    fns = build_reward_fns(Config(reward_funcs=["accuracy"], reward_weights=[1.0]))
    assert score_one(good, row, fns).total == 1.0
    assert score_one(bad, row, fns).total == 0.0
    q = attach_draft(row["problem"], bad, wp.DRAFT_TEMPLATE)
    assert row["problem"] in q and bad in q and q.endswith("write #### and the answer.")


def test_unknown_level_and_split_are_errors():
    with pytest.raises(ValueError):
        wp.sample_problem(random.Random(0), 4)
    with pytest.raises(ValueError):
        wp.make_split("dev", 3, 1)


def test_smollm2_recipe_config_loads_and_matches_the_task_module():
    from pathlib import Path

    from igrpo_core import config
    cfg = config.load(Path(__file__).resolve().parents[1] / "configs" / "smollm2_words.yaml")
    assert cfg.system_prompt == wp.SYSTEM_PROMPT and cfg.draft_template == wp.DRAFT_TEMPLATE
    assert cfg.max_completion_length <= 64 and cfg.dataset.startswith("words")
    assert cfg.reward_funcs == ["accuracy"]
    assert config.load(Path(__file__).resolve().parents[1] / "configs" / "smollm2_words.yaml",
                       overrides={"algo": "grpo"}).num_refinements == cfg.num_generations
    assert cfg == config.load(preset="smollm2-words"), "the recipe file is the preset"


def test_missing_smollm2_directory_says_how_to_create_it(tmp_path):
    from igrpo_core import models
    with pytest.raises(FileNotFoundError, match="igrpo prepare-model smollm2"):
        models._check_model_source(str(tmp_path / "smollm2-135m-instruct"), None)
