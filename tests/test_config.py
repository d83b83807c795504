import json

import pytest

from igrpo_core import config as C
from igrpo_core.prompts import PAPER_SYSTEM_PROMPT


def test_defaults_are_valid_and_matched_budget():
    cfg = C.Config()
    assert cfg.algo == "igrpo" and cfg.num_generations == 8 and cfg.num_drafts == 4
    assert cfg.num_refinements == 4
    assert cfg.replace(algo="grpo").num_refinements == 8


@pytest.mark.parametrize("overrides, fragment", [
    (dict(num_drafts=8), "num_drafts < num_generations"),
    (dict(num_drafts=0), "num_drafts < num_generations"),
    (dict(num_drafts=7), "at least 2 refinements"),
    (dict(algo="ppo"), "algo='ppo'"),
    (dict(loss_type="sum"), "loss_type"),
    (dict(draft_template="{question} only"), "{draft}"),
    (dict(reward_weights=[1.0]), "reward_weights"),
    (dict(reward_funcs=["accuracy", "vibes"]), "unknown reward 'vibes'"),
    (dict(temperature=0.0), "temperatures"),
    (dict(max_steps=0), "max_steps"),
    (dict(reward_funcs=["judge"], reward_weights=[1.0]), "judge_model"),
    (dict(draft_selection="median"), "draft_selection='median'"),
    (dict(adaptive_split="always"), "adaptive_split"),
    (dict(refine_loss_rounds="first"), "refine_loss_rounds"),
    (dict(draft_loss="yes"), "draft_loss must be true or false"),
    (dict(num_generations=3, num_drafts=1, draft_loss=True), "draft_loss needs num_drafts >= 2"),
    (dict(draft_loss_weight=-1.0), "draft_loss_weight"),
    (dict(refine_rounds=3), "refine_rounds=3 must divide the 4 refinements"),
    (dict(num_generations=6, num_drafts=2, refine_rounds=4), "rounds of at least 2"),
    (dict(num_generations=6, num_drafts=2, refine_rounds=2, adaptive_split="agreement"), "adaptive_split needs"),
    (dict(refine_rounds=0), "refine_rounds must be a positive integer"),
    (dict(max_resample_batches=-1), "max_resample_batches"),
    (dict(overlong_buffer_len=100), "overlong_buffer_len"),
    (dict(overlong_penalty_factor=-0.5), "overlong_penalty_factor"),
])
def test_impossible_values_are_errors(overrides, fragment):
    with pytest.raises(ValueError, match="invalid config") as err:
        C.Config(**overrides)
    assert fragment in str(err.value)


def test_unknown_key_suggests_close_match(tmp_path):
    with pytest.raises(ValueError, match="did you mean num_generations"):
        C.load(overrides={"num_generation": 8})
    p = tmp_path / "c.yaml"
    p.write_text("algo: grpo\nlearning_rat: 1e-3\n")
    with pytest.raises(ValueError, match=r"learning_rat.*c.yaml.*learning_rate"):
        C.load(p)


def test_file_then_overrides_and_paper_preset(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"preset": "paper", "beta": 0.001, "max_steps": 5}))
    cfg = C.load(p, overrides=C.parse_overrides(["--max_steps", "7", "--reward_weights=1,0.5"]))
    assert cfg.learning_rate == 1e-6 and cfg.temperature == 0.7 and cfg.max_completion_length == 4096
    assert cfg.system_prompt == PAPER_SYSTEM_PROMPT and cfg.beta == 0.001
    assert cfg.max_steps == 7 and cfg.reward_weights == [1.0, 0.5]


def test_cli_value_parsing():
    got = C.parse_overrides(["--algo=grpo", "--epsilon_high", "0.28", "--eval_limit", "none",
                             "--eval-greedy", "true", "--reward_funcs", "accuracy,format"])
    assert got == {"algo": "grpo", "epsilon_high": 0.28, "eval_limit": None, "eval_greedy": True,
                   "reward_funcs": ["accuracy", "format"]}
    with pytest.raises(ValueError, match="expected int"):
        C.parse_overrides(["--max_steps", "ten"])
    with pytest.raises(ValueError, match="unknown config key"):
        C.parse_overrides(["--not_a_key", "1"])


def test_missing_config_file():
    with pytest.raises(FileNotFoundError):
        C.load("/nonexistent/cfg.yaml")


def test_precision_and_checkpointing_fields_are_validated():
    """dtype is the compute dtype (fp32 master weights); float16 is refused (it needs loss scaling,
    which the trainer does not do); gradient_checkpointing must be a bool."""
    from igrpo_core.config import Config
    assert Config(dtype="bfloat16", gradient_checkpointing=True).gradient_checkpointing is True
    with pytest.raises(ValueError, match="float16"):
        Config(dtype="float16")
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        Config(gradient_checkpointing="yes")


def test_issue_11_options_share_names_across_config_and_cli():
    """The new options parse from the command line by their config names, and GRPO ignores the
    iGRPO-only ones (a matched comparison replaces only `algo`)."""
    over = C.parse_overrides(["--draft_selection", "near_miss", "--draft_loss", "true", "--draft_loss_weight", "0.5",
                              "--adaptive_split", "solved", "--refine_rounds", "2", "--refine_loss_rounds", "all",
                              "--dynamic_sampling", "true", "--max_resample_batches", "2",
                              "--overlong_buffer_len", "16", "--overlong_penalty_factor", "0.5",
                              "--mask_truncated_completions", "true"])
    assert over["draft_loss"] is True and over["refine_rounds"] == 2 and over["overlong_penalty_factor"] == 0.5
    cfg = C.Config(**{**over, "adaptive_split": "none"})
    assert cfg.replace(algo="grpo").refine_rounds == 2       # valid: GRPO does not read it
