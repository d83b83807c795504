"""Each issue-11 option in a 2-step training run on the tiny model: the run finishes, its records
keep the schema, and the option leaves its evidence on the rows and in the metrics."""
import polars as pl
import pytest

from igrpo_core import records
from igrpo_core import trainer as T
from igrpo_core.options import METRIC_COLUMNS
from igrpo_core.records import ROLLOUT_SCHEMA
from tests.conftest import small_config


def _evidence_selection(r, m, cfg):
    reasons = r.filter(pl.col("is_chosen_draft").fill_null(False))["selection_reason"].to_list()
    assert len(reasons) == 2 * cfg.prompts_per_step and all(x.startswith("minority") for x in reasons)
    assert r.filter(pl.col("stage") == "draft")["selection_reason"].null_count() > 0  # only the chosen


def _evidence_draft_loss(r, m, cfg):
    assert r.filter(pl.col("stage") == "draft")["advantage"].null_count() == 0
    assert m["draft_frac_zero_std"].null_count() == 0


def _evidence_adaptive(r, m, cfg):
    assert r.filter(pl.col("stage") == "draft")["planned_refinements"].null_count() == 0
    per_step = r.group_by("step").len()["len"].to_list()
    assert per_step == [cfg.prompts_per_step * cfg.num_generations] * 2             # the budget, every step
    assert m["sampled_completions"].to_list() == [cfg.prompts_per_step * cfg.num_generations] * 2


def _evidence_rounds(r, m, cfg):
    rounds = r.filter(pl.col("stage") == "refine")
    assert sorted(rounds["refine_round"].unique().to_list()) == [1, 2]
    assert rounds["advantage"].null_count() == 0                                   # refine_loss_rounds="all"


def _evidence_dapo(r, m, cfg):
    assert r["sample_batch"].null_count() == 0 and r["reward_overlong"].null_count() == 0
    trained = r.filter(pl.col("advantage").is_not_null())                         # iGRPO: refinements
    assert trained["loss_masked"].null_count() == 0
    assert all(x <= cfg.max_resample_batches for x in m["dynamic_resampled"].to_list())
    kept = r.filter(pl.col("dynamic_kept")).group_by("step").agg(pl.col("group_index").n_unique())
    assert kept.sort("step")["group_index"].to_list() == [cfg.prompts_per_step] * 2  # P groups train each step
    capped = trained.filter(pl.col("finish_reason") == "length")
    assert capped.height > 0 and capped["loss_masked"].all() and (capped["advantage"] == 0).all()


def _evidence_hard(r, m, cfg):
    assert r["prompt_id"].str.starts_with("tiny-hard/train/").all()


CASES = {
    "draft_selection": (dict(draft_selection="minority"), _evidence_selection),
    "draft_loss": (dict(draft_loss=True, draft_loss_weight=0.5), _evidence_draft_loss),
    "adaptive_split": (dict(adaptive_split="agreement"), _evidence_adaptive),
    "refine_rounds": (dict(num_generations=6, refine_rounds=2, refine_loss_rounds="all"), _evidence_rounds),
    "dapo_grpo": (dict(algo="grpo", dynamic_sampling=True, max_resample_batches=1, overlong_buffer_len=8,
                       mask_truncated_completions=True, max_completion_length=26), _evidence_dapo),
    "dapo_igrpo": (dict(dynamic_sampling=True, max_resample_batches=1, overlong_buffer_len=8,
                        mask_truncated_completions=True, max_completion_length=26), _evidence_dapo),
    "tiny_hard": (dict(dataset="tiny-hard:train", eval_dataset="tiny-hard:heldout"), _evidence_hard),
}


@pytest.mark.parametrize("name", list(CASES))
def test_two_step_run_with_option(tmp_path, name):
    over, evidence = CASES[name]
    cfg = small_config(tmp_path, **over)
    run_dir = T.train(cfg)
    r, m = records.read_rollouts(run_dir), records.read_metrics(run_dir)
    assert dict(r.schema) == ROLLOUT_SCHEMA and m.columns == list(METRIC_COLUMNS)
    assert m["step"].to_list() == [1, 2] and records.read_json(run_dir / "status.json")["state"] == "finished"
    evidence(r, m, cfg)
