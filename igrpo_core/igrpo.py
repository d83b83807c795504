"""Rollout composition for GRPO and iGRPO: what gets sampled, scored and trained on in one step.

iGRPO (arXiv 2602.09000) is not a new loss. Per prompt q:
  stage 1: sample N drafts from the snapshot policy, score them, pick d-hat = argmax reward
           (no gradient through drafts or the selection);
  stage 2: sample G refinements from pi_old(. | q + d-hat), group-relative advantages over those G,
           and the ordinary GRPO loss on refinement tokens only (the draft is prompt context).
GRPO is stage 2 alone with the whole budget on q. Both return a `Rollout` the trainer feeds to the
same loss.

Deliberately left out: multi-round refinement, adaptive N/G splits (the paper's future work).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch

from igrpo_core import losses
from igrpo_core.engine import RolloutEngine, SamplingParams
from igrpo_core.prompts import build_refine_prompt, render_prompt
from igrpo_core.rewards import RewardFns, Score, is_failure, score_batch


@dataclass
class Rollout:
    prompt_ids: list[list[int]]      # (B) context of each trained sequence
    completion_ids: list[list[int]]  # (B) trained tokens
    rewards: torch.Tensor            # (P, G)
    adv: torch.Tensor                # (B,) = (P*G,)
    rows: list[dict] = field(default_factory=list)   # rollout records, drafts included
    stats: dict = field(default_factory=dict)        # rollout-phase metrics


def select_draft(rewards: list[float], lengths: list[int], tie_break: str, rng: random.Random) -> int:
    """Index of the best draft; ties broken by lowest index (default), shortest, or at random.

    A non-finite reward (NaN, inf) ranks below every finite one: NaN == max is never true, which
    used to leave no candidate at all (IndexError).
    """
    rewards = [r if math.isfinite(r) else -math.inf for r in rewards]
    best = max(rewards)
    tied = [i for i, r in enumerate(rewards) if r == best]
    if tie_break == "first":
        return tied[0]
    if tie_break == "shortest":
        return min(tied, key=lambda i: (lengths[i], i))
    if tie_break == "random":
        return rng.choice(tied)
    raise ValueError(f"unknown draft_tie_break {tie_break!r}")


def draft_failed(score: Score) -> bool:
    """Whether a draft is wrong: its correctness part (accuracy, else judge, else the total) is not > 0.

    Not the total: a wrong but well-formatted draft scores format 1 and would never count as failed.
    """
    for part in ("accuracy", "judge"):
        if part in score.parts:
            return not score.parts[part] > 0
    return not score.total > 0


def _sample_group(engine: RolloutEngine, prompts: list[list[int]], examples: list[dict], n: int,
                  params: SamplingParams, reward_fns: RewardFns) -> tuple[list, list[Score]]:
    """n completions per prompt (grouped), each scored."""
    comps = engine.generate(prompts, SamplingParams(**{**params.__dict__, "n": n}))
    scores = score_batch([c.text for c in comps], [examples[c.prompt_index] for c in comps], reward_fns)
    return comps, scores


def _row(step, stage, ex, gi, si, prompt_text, prompt_len, comp, score, adv=None, **extra) -> dict:
    return dict(step=step, stage=stage, prompt_id=str(ex["id"]), group_index=gi, sample_index=si,
                prompt=prompt_text, completion=comp.text, gold=str(ex["answer"]), extracted=score.extracted,
                reward=score.total, reward_accuracy=score.parts.get("accuracy"),
                reward_format=score.parts.get("format"), reward_judge=score.parts.get("judge"),
                reward_status=score.status, advantage=adv, prompt_tokens=prompt_len,
                completion_tokens=len(comp.ids), finish_reason=comp.finish_reason, **extra)


def _train_group(step, stage, examples, prompt_ids, prompt_texts, comps, scores, G, cfg, extra_rows):
    """Advantages over each group of G and the rows/sequences the loss trains on."""
    P = len(examples)
    rewards = torch.tensor([s.total for s in scores], dtype=torch.float64).view(P, G)  # (P, G)
    adv = losses.group_advantages(rewards, scale_rewards=cfg.scale_rewards).reshape(-1)  # (B,)
    rows = []
    for b, (c, s) in enumerate(zip(comps, scores)):
        gi = b // G
        rows.append(_row(step, stage, examples[gi], gi, b % G, prompt_texts[gi], len(prompt_ids[gi]), c, s,
                         adv=float(adv[b]), **extra_rows[gi]))
    stats = losses.advantage_stats(rewards)
    return Rollout(prompt_ids=[prompt_ids[c.prompt_index] for c in comps], completion_ids=[c.ids for c in comps],
                   rewards=rewards, adv=adv.float(), rows=rows,
                   stats={"frac_zero_std": stats["frac_zero_std"]})


def _common_stats(scores: list[Score], comps) -> dict:
    totals = torch.tensor([s.total for s in scores])
    return {
        "reward_mean": totals.mean().item(), "reward_std": totals.std().item() if len(totals) > 1 else 0.0,
        "accuracy_mean": _mean([s.parts.get("accuracy") for s in scores]),
        "format_mean": _mean([s.parts.get("format") for s in scores]),
        "completion_len_mean": _mean([len(c.ids) for c in comps]),
        "frac_length_capped": _mean([c.finish_reason == "length" for c in comps]),
        "reward_failures": sum(is_failure(s.status) for s in scores),
        "generated_tokens": sum(len(c.ids) for c in comps),
    }


def _mean(xs):
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def collect_grpo(engine, tokenizer, examples: list[dict], cfg, step: int, params: SamplingParams,
                 reward_fns: RewardFns) -> Rollout:
    prompts = [render_prompt(tokenizer, ex["problem"], cfg.system_prompt) for ex in examples]
    comps, scores = _sample_group(engine, prompts, examples, cfg.num_generations, params, reward_fns)
    ro = _train_group(step, "grpo", examples, prompts, [ex["problem"] for ex in examples], comps, scores,
                      cfg.num_generations, cfg, [{} for _ in examples])
    ro.stats.update(_common_stats(scores, comps))
    return ro


def collect_igrpo(engine, tokenizer, examples: list[dict], cfg, step: int, params: SamplingParams,
                  reward_fns: RewardFns) -> Rollout:
    N, G = cfg.num_drafts, cfg.num_refinements
    rng = random.Random(params.seed)
    # Stage 1: drafts from the same snapshot policy; scored with the same reward; no gradient.
    draft_prompts = [render_prompt(tokenizer, ex["problem"], cfg.system_prompt) for ex in examples]
    d_comps, d_scores = _sample_group(engine, draft_prompts, examples, N, params, reward_fns)
    rows, refine_prompts, refine_texts, extra, chosen_rewards, truncations = [], [], [], [], [], 0
    for gi, ex in enumerate(examples):
        group = range(gi * N, (gi + 1) * N)
        rewards = [d_scores[b].total for b in group]
        pick = gi * N + select_draft(rewards, [len(d_comps[b].ids) for b in group], cfg.draft_tie_break, rng)
        for b in group:
            rows.append(_row(step, "draft", ex, gi, b - gi * N, ex["problem"], len(draft_prompts[gi]),
                             d_comps[b], d_scores[b], is_chosen_draft=(b == pick)))
        chosen_rewards.append(d_scores[pick].total)
        if cfg.all_drafts_failed == "question_only" and all(draft_failed(d_scores[b]) for b in group):
            rp_ids, rp_text, truncated = draft_prompts[gi], ex["problem"], False
        else:
            rp = build_refine_prompt(tokenizer, ex["problem"], d_comps[pick].text, template=cfg.draft_template,
                                     system_prompt=cfg.system_prompt, max_prompt_length=cfg.max_prompt_length)
            rp_ids, rp_text, truncated = rp.ids, rp.text, rp.draft_truncated
        truncations += truncated
        refine_prompts.append(rp_ids)
        refine_texts.append(rp_text)
        extra.append(dict(draft_reward=d_scores[pick].total, draft_truncated=truncated))
    # Stage 2: refinements conditioned on q + d-hat; the GRPO loss sees only these.
    r_comps, r_scores = _sample_group(engine, refine_prompts, examples, G,
                                      SamplingParams(**{**params.__dict__, "seed": params.seed + 1}), reward_fns)
    ro = _train_group(step, "refine", examples, refine_prompts, refine_texts, r_comps, r_scores, G, cfg, extra)
    ro.rows = rows + ro.rows
    best = torch.tensor(chosen_rewards).unsqueeze(1)           # (P, 1)
    refine = ro.rewards.float()                               # (P, G)
    d_tot = torch.tensor([s.total for s in d_scores])
    ro.stats.update(_common_stats(r_scores, r_comps))
    ro.stats.update({
        "reward_failures": ro.stats["reward_failures"] + sum(is_failure(s.status) for s in d_scores),
        "generated_tokens": ro.stats["generated_tokens"] + sum(len(c.ids) for c in d_comps),
        "draft_reward_mean": d_tot.mean().item(), "draft_reward_std": d_tot.std().item(),
        "best_draft_reward_mean": best.mean().item(),
        "refine_reward_mean": refine.mean().item(), "refine_reward_std": refine.std().item(),
        "refine_gain": (refine - best).mean().item(),
        "refine_beats_draft": (refine > best).float().mean().item(),
        "refine_loses_to_draft": (refine < best).float().mean().item(),
        "draft_len_mean": _mean([len(c.ids) for c in d_comps]),
        "draft_truncations": truncations,
    })
    return ro
