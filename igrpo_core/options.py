"""The vocabulary of the workbench, written once: every option's allowed values and every metric name.

Option values are `typing.Literal` types. `Config` annotates its fields with them and validates
every Literal field from its annotation, `losses` checks its keyword arguments against the same
tuples, and the CLI/notebooks take the same strings, so a new value is added in exactly one place.
Metric names are the keys `losses`, `igrpo` and the trainer emit and the columns of
`metrics.parquet`: one name from the function that computes a number to the dashboard that plots it.

Deliberately left out: anything that imports torch or polars (the dashboard reads this too).
"""
from __future__ import annotations

from typing import Literal, get_args

Algo = Literal["grpo", "igrpo"]
LossType = Literal["grpo", "bnpo", "dapo", "dr_grpo"]
ImportanceSamplingLevel = Literal["token", "sequence"]   # "sequence" is GSPO
ScaleRewards = Literal["group", "batch", "none"]
LrScheduler = Literal["cosine", "constant", "linear"]
DraftTieBreak = Literal["first", "shortest", "random"]
AllDraftsFailed = Literal["append", "question_only"]
DraftSelection = Literal["best", "worst", "random", "near_miss", "minority"]  # selection.choose_draft
AdaptiveSplit = Literal["none", "agreement", "solved"]      # sampling.plan_refinements
RefineLossRounds = Literal["last", "all"]                   # which refinement rounds the loss trains
RolloutEngineName = Literal["transformers", "vllm"]
SamplerName = Literal["multinomial", "inverse_cdf"]  # transformers engine: engine.SAMPLERS
Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["auto", "float32", "bfloat16"]   # float16 would need loss scaling (not implemented)
BuiltinReward = Literal["accuracy", "format", "judge"]
Tracker = Literal["tensorboard", "trackio", "wandb"]   # report_to (TRL's name); "none": no tracker
# TRL 1.16's vllm_importance_sampling_mode (mismatch.importance_weights): ratio per token or per sequence,
# truncated to [clip_min, clip_max] or zeroed outside it
VllmImportanceSamplingMode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
NonFinitePolicy = Literal["skip", "stop"]        # a step with NaN/inf: skip its update, or stop (nonfinite.py)

ALGOS = get_args(Algo)
LOSS_TYPES = get_args(LossType)
IMPORTANCE_SAMPLING_LEVELS = get_args(ImportanceSamplingLevel)
SCALE_REWARDS = get_args(ScaleRewards)
DRAFT_SELECTIONS = get_args(DraftSelection)
ADAPTIVE_SPLITS = get_args(AdaptiveSplit)
BUILTIN_REWARDS = get_args(BuiltinReward)
TRACKERS = get_args(Tracker)
VLLM_IMPORTANCE_SAMPLING_MODES = get_args(VllmImportanceSamplingMode)


def check_choice(name: str, value, allowed: tuple) -> None:
    """A clear error for a value outside an option's vocabulary."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; valid: {allowed}")


def report_to_names(report_to) -> list[str]:
    """TRL's `report_to` as a list of tracker names: a name, a list of names, or "none" (or None,
    or []) for no tracker. Unknown names are an error."""
    names = [report_to] if isinstance(report_to, str) or report_to is None else list(report_to)
    names = [n for n in names if n not in ("none", None)]
    for n in names:
        check_choice("report_to", n, TRACKERS + ("none",))
    return list(dict.fromkeys(names))


# --- metric names ---------------------------------------------------------------------------
# Policy-loss metrics (losses.policy_loss); the trainer averages them over micro-batches.
LOSS_METRICS = ("pg_loss", "kl", "clip_frac", "clip_frac_low", "clip_frac_high", "ratio_mean")
# Rollout metrics (igrpo.py); for iGRPO the reward and length columns describe the refinements.
ROLLOUT_METRICS = (
    "reward_mean", "reward_std", "accuracy_mean", "format_mean", "frac_zero_std",
    "completion_len_mean", "frac_length_capped", "reward_failures",
)
IGRPO_METRICS = (
    "draft_reward_mean", "draft_reward_std", "best_draft_reward_mean", "refine_reward_mean",
    "refine_reward_std", "refine_gain", "refine_beats_draft", "refine_loses_to_draft",
    "draft_len_mean", "draft_truncations",
    "chosen_draft_correct",      # share of chosen drafts that are right (compares draft_selection rules)
    "draft_frac_zero_std",       # share of draft groups with all-equal rewards (draft_loss, adaptive_split)
    "adaptive_skipped",          # prompts whose refinement the adaptive split skipped (count)
)
# Sampling tricks (sampling.py); counts are summed over accumulation batches.
SAMPLING_METRICS = (
    "sampled_prompts",           # prompts sampled this step, resamples included (count)
    "sampled_completions",       # completions generated this step: the sampling budget spent (count)
    "dynamic_dropped",           # zero-signal groups left out of the loss by dynamic sampling (count)
    "dynamic_resampled",         # extra prompt batches drawn by dynamic sampling (count)
    "dynamic_padded",            # zero-signal groups trained anyway to fill prompts_per_step (count)
    "overlong_penalty_mean",     # mean overlong reward shaping over scored completions (<= 0)
    "loss_masked",               # trained completions masked out by mask_truncated_completions (count)
)
# Engine vs trainer log-probs of the trained tokens (mismatch.MismatchMeter): d = old_logp - engine_logp,
# both at the sampling temperature, over every completion token of the trained sequences (as TRL);
# null when the engine returned no log-probs.
MISMATCH_METRICS = (
    "mismatch_mean_abs",         # mean |d| (TRL: sampling/sampling_logp_difference/mean)
    "mismatch_max_abs",          # max |d| (TRL: sampling/sampling_logp_difference/max)
    "mismatch_kl",               # mean of exp(d) - 1 - d: k3 estimate of KL(engine || trainer), >= 0
)
# vllm_importance_sampling_correction's weights (after truncation or masking, as TRL logs them), over completion
# tokens (token_* modes) or sequences (sequence_* modes); null when the correction is off.
IS_METRICS = (
    "is_ratio_min", "is_ratio_mean", "is_ratio_max",
    "is_clipped_frac",           # share of ratios outside [clip_min, clip_max]: truncated or masked
)
# Rollout stats that are counts: summed, not averaged, over accumulation batches.
SUMMED_METRICS = (
    "reward_failures", "draft_truncations", "generated_tokens", "adaptive_skipped", "sampled_prompts",
    "sampled_completions", "dynamic_dropped", "dynamic_resampled", "dynamic_padded", "loss_masked",
)
# Non-finite guard (nonfinite.py): 1 when the step's update was skipped, and what was not finite.
NONFINITE_METRICS = ("skipped_nonfinite", "nonfinite")
TEXT_METRICS = ("nonfinite",)    # string columns of metrics.parquet (the others are numbers)
# One row of metrics.parquet per optimizer step: these columns, in this order.
METRIC_COLUMNS = (
    ("step", "lr", "loss", "grad_norm", "entropy") + LOSS_METRICS + ROLLOUT_METRICS + IGRPO_METRICS + SAMPLING_METRICS
    + MISMATCH_METRICS + IS_METRICS + ("gen_time_s", "step_time_s", "tokens_per_s") + NONFINITE_METRICS
)
