"""Rollout composition for GRPO and iGRPO: what gets sampled, scored and trained on in one step.

iGRPO (arXiv 2602.09000) is not a new loss. Per prompt q:
  stage 1: sample N drafts from the snapshot policy, score them, pick d-hat = argmax reward
           (no gradient through drafts or the selection);
  stage 2: sample G refinements from pi_old(. | q + d-hat), group-relative advantages over those G,
           and the ordinary GRPO loss on refinement tokens only (the draft is prompt context).
GRPO is stage 2 alone with the whole budget on q. Both return a `Rollout` the trainer feeds to the
same loss.

Beyond the paper (issue 11), each off by default so the default is the paper exactly:
- `draft_selection` picks d-hat by another rule (selection.py); the reason goes on the draft's row.
- `draft_loss`: the N drafts form their own GRPO group on the bare question and are trained too,
  their advantages scaled by `draft_loss_weight`: all N + G samples teach at the same budget.
- `adaptive_split`: G per prompt from what the drafts show (sampling.plan_refinements).
- `refine_rounds` R > 1: G refinements per prompt are split over R rounds; round r + 1 refines the
  best of what round r refined and its refinements; `refine_loss_rounds` trains the last or all.
- DAPO's overlong shaping (reward), `mask_truncated_completions` (loss mask), and dynamic sampling
  (`collect_dynamic`: drop zero-signal groups, draw more prompts up to a cap).

Deliberately left out: asynchronous rollouts; adaptive splits combined with several rounds.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch

from igrpo_core import sampling
from igrpo_core.engine import Completion, RolloutEngine, SamplingParams
from igrpo_core.options import SUMMED_METRICS
from igrpo_core.prompts import build_refine_prompt, render_prompt
from igrpo_core.rewards import RewardFns, Score, is_failure, score_batch
from igrpo_core.selection import choose_draft, select_draft  # noqa: F401  (select_draft: public here too)


@dataclass
class Rollout:
    prompt_ids: list[list[int]]      # (B) context of each trained sequence
    completion_ids: list[list[int]]  # (B) trained tokens
    rewards: torch.Tensor            # (B,) reward of each trained sequence (shaped, as advantages saw it)
    adv: torch.Tensor                # (B,) zero where the loss mask is 0
    rows: list[dict] = field(default_factory=list)   # rollout records, untrained samples included
    stats: dict = field(default_factory=dict)        # rollout-phase metrics
    loss_mask: torch.Tensor | None = None  # (B,) 1 trains, 0 masked (mask_truncated_completions); None: all
    group_of: list[int] = field(default_factory=list)  # (B) group_index (question in the step) of each
    num_groups: int = 0              # questions in this rollout
    sampling_logps: list[list[float]] | None = None  # (B) engine's log-prob of each completion token under the
                                     # distribution it was sampled from (mismatch.py); None if the engine gave none
    micro: list[slice] | None = None  # the trainer's micro-batches of these sequences, once decided
    question_tokens: int = 0         # longest question prompt (GRPO's and stage 1's) of the step; 0: unknown.
                                     # Sizes micro_batch_tokens="auto"


class Sample(NamedTuple):
    comp: Completion
    score: Score
    reward: float                    # score.total plus the overlong shaping
    overlong: float | None           # the shaping added (None when off)


@dataclass
class Group:
    """Samples of one question under one prompt; `trained` groups get group-relative advantages."""
    stage: str                       # "grpo" | "draft" | "refine"
    gi: int                          # question index within the step
    prompt_ids: list[int]
    prompt_text: str
    samples: list[Sample]
    trained: bool
    weight: float = 1.0              # factor on the advantages (draft_loss_weight for drafts)
    extra: dict = field(default_factory=dict)                 # row fields shared by the group
    sample_extra: list[dict] = field(default_factory=list)    # row fields per sample


def draft_failed(score: Score) -> bool:
    """Whether a draft is wrong: its correctness part (accuracy, else judge, else the total) is not > 0.

    Not the total: a wrong but well-formatted draft scores format 1 and would never count as failed.
    """
    for part in ("accuracy", "judge"):
        if part in score.parts:
            return not score.parts[part] > 0
    return not score.total > 0


def _sample(engine: RolloutEngine, prompts: list[list[int]], examples: list[dict], ns: list[int],
            params: SamplingParams, reward_fns: RewardFns, cfg) -> list[list[Sample]]:
    """ns[p] scored completions of prompt p (one generate call per distinct n), grouped by prompt."""
    out: list[list[Sample]] = [[] for _ in prompts]
    for n in sorted(set(ns) - {0}):
        idx = [p for p in range(len(prompts)) if ns[p] == n]
        comps = engine.generate([prompts[p] for p in idx], SamplingParams(**{**params.__dict__, "n": n}))
        scores = score_batch([c.text for c in comps], [examples[idx[c.prompt_index]] for c in comps], reward_fns)
        for c, s in zip(comps, scores):
            pen = None
            if cfg.overlong_buffer_len > 0:
                pen = sampling.overlong_penalty(len(c.ids), max_completion_length=cfg.max_completion_length,
                                                overlong_buffer_len=cfg.overlong_buffer_len,
                                                overlong_penalty_factor=cfg.overlong_penalty_factor)
            out[idx[c.prompt_index]].append(Sample(c, s, s.total + (pen or 0.0), pen))
    return out


def _row(step, stage, ex, gi, si, prompt_text, prompt_len, smp: Sample, adv=None, **extra) -> dict:
    comp, score = smp.comp, smp.score
    return dict(step=step, stage=stage, prompt_id=str(ex["id"]), group_index=gi, sample_index=si,
                prompt=prompt_text, completion=comp.text, gold=str(ex["answer"]), extracted=score.extracted,
                reward=smp.reward, reward_accuracy=score.parts.get("accuracy"),
                reward_format=score.parts.get("format"), reward_judge=score.parts.get("judge"),
                reward_status=score.status, advantage=adv, prompt_tokens=prompt_len,
                completion_tokens=len(comp.ids), finish_reason=comp.finish_reason,
                reward_overlong=smp.overlong, **extra)


def _group_advantages(groups: list[Group], cfg) -> dict[int, list[float]]:
    """id(group) -> advantages; groups of one stage/round share a batch (scale_rewards="batch")."""
    kinds: dict[tuple, list[Group]] = {}
    for g in groups:
        if g.trained:
            kinds.setdefault((g.stage, g.extra.get("refine_round")), []).append(g)
    out = {}
    for members in kinds.values():
        advs = sampling.ragged_advantages([[s.reward for s in g.samples] for g in members],
                                          scale_rewards=cfg.scale_rewards)
        out.update({id(g): [a * g.weight for a in adv] for g, adv in zip(members, advs)})
    return out


def assemble(step: int, examples: list[dict], groups: list[Group], cfg) -> Rollout:
    """Rows for every sample; advantages, loss mask and sequences for the trained groups."""
    advs = _group_advantages(groups, cfg)
    rows, prompts, comps, rewards, adv, keep, group_of, logps = [], [], [], [], [], [], [], []
    for g in groups:
        kept = sampling.loss_keep([s.comp.finish_reason for s in g.samples], cfg.mask_truncated_completions)
        for si, smp in enumerate(g.samples):
            a = (advs[id(g)][si] if kept[si] else 0.0) if g.trained else None
            extra = {**g.extra, **(g.sample_extra[si] if g.sample_extra else {})}
            if g.trained and cfg.mask_truncated_completions:
                extra["loss_masked"] = not kept[si]
            rows.append(_row(step, g.stage, examples[g.gi], g.gi, si, g.prompt_text, len(g.prompt_ids), smp,
                             adv=a, **extra))
            if g.trained:
                prompts.append(g.prompt_ids), comps.append(smp.comp.ids), rewards.append(smp.reward)
                adv.append(a), keep.append(float(kept[si])), group_of.append(g.gi)
                logps.append(smp.comp.logprobs)
    return Rollout(prompt_ids=prompts, completion_ids=comps, rewards=torch.tensor(rewards, dtype=torch.float64),
                   adv=torch.tensor(adv, dtype=torch.float32), rows=rows,
                   loss_mask=torch.tensor(keep) if cfg.mask_truncated_completions else None,
                   group_of=group_of, num_groups=len(examples),
                   sampling_logps=None if any(lp is None for lp in logps) else logps,
                   question_tokens=max((len(g.prompt_ids) for g in groups if g.stage in ("grpo", "draft")),
                                       default=0))


def _frac_zero_std(groups: list[Group]) -> float | None:
    flat = [len({s.reward for s in g.samples}) == 1 for g in groups if g.samples]
    return sum(flat) / len(flat) if flat else None


def _common_stats(samples: list[Sample], all_samples: list[Sample], ro: Rollout) -> dict:
    """Reward and length stats of `samples` (the trained stage); counts over everything sampled."""
    totals = torch.tensor([s.reward for s in samples])
    pens = [s.overlong for s in all_samples if s.overlong is not None]
    return {
        "reward_mean": totals.mean().item(), "reward_std": totals.std().item() if len(totals) > 1 else 0.0,
        "accuracy_mean": _mean([s.score.parts.get("accuracy") for s in samples]),
        "format_mean": _mean([s.score.parts.get("format") for s in samples]),
        "completion_len_mean": _mean([len(s.comp.ids) for s in samples]),
        "frac_length_capped": _mean([s.comp.finish_reason == "length" for s in samples]),
        "reward_failures": sum(is_failure(s.score.status) for s in all_samples),
        "generated_tokens": sum(len(s.comp.ids) for s in all_samples),
        "sampled_prompts": ro.num_groups, "sampled_completions": len(all_samples),
        "overlong_penalty_mean": _mean(pens), "loss_masked": int((ro.loss_mask == 0).sum()) if
        ro.loss_mask is not None else 0,
    }


def _mean(xs):
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def collect_grpo(engine, tokenizer, examples: list[dict], cfg, step: int, params: SamplingParams,
                 reward_fns: RewardFns) -> Rollout:
    prompts = [render_prompt(tokenizer, ex["problem"], cfg.system_prompt) for ex in examples]
    samples = _sample(engine, prompts, examples, [cfg.num_generations] * len(examples), params, reward_fns, cfg)
    groups = [Group("grpo", gi, prompts[gi], ex["problem"], samples[gi], trained=True)
              for gi, ex in enumerate(examples)]
    ro = assemble(step, examples, groups, cfg)
    flat = [s for g in samples for s in g]
    ro.stats = {**_common_stats(flat, flat, ro), "frac_zero_std": _frac_zero_std(groups)}
    return ro


def _draft_groups(examples, draft_prompts, drafts, plan, cfg, rng) -> tuple[list[Group], list[int]]:
    """Stage-1 groups with the selection recorded; and the chosen draft index per question."""
    groups, picks = [], []
    for gi, ex in enumerate(examples):
        smp = drafts[gi]
        correct = [not draft_failed(s.score) for s in smp]
        pick, reason = choose_draft(cfg.draft_selection, [s.reward for s in smp], correct,
                                    [len(s.comp.ids) for s in smp], cfg.draft_tie_break, rng)
        picks.append(pick)
        per = [dict(is_chosen_draft=i == pick, selection_reason=reason if i == pick else None,
                    planned_refinements=plan[gi]) for i in range(len(smp))]
        groups.append(Group("draft", gi, draft_prompts[gi], ex["problem"], smp, trained=cfg.draft_loss,
                            weight=cfg.draft_loss_weight, sample_extra=per))
    return groups, picks


def _refine_prompt(tokenizer, ex, anchor: Sample, any_right: bool, question_ids, cfg):
    """(ids, text, draft_truncated) of the stage-2 prompt that refines `anchor`."""
    if cfg.all_drafts_failed == "question_only" and not any_right:
        return question_ids, ex["problem"], False
    rp = build_refine_prompt(tokenizer, ex["problem"], anchor.comp.text, template=cfg.draft_template,
                             system_prompt=cfg.system_prompt, max_prompt_length=cfg.max_prompt_length)
    return rp.ids, rp.text, rp.draft_truncated


def collect_igrpo(engine, tokenizer, examples: list[dict], cfg, step: int, params: SamplingParams,
                  reward_fns: RewardFns) -> Rollout:
    N, R = cfg.num_drafts, cfg.refine_rounds
    rng = random.Random(params.seed)
    # Stage 1: drafts from the same snapshot policy; scored with the same reward.
    draft_prompts = [render_prompt(tokenizer, ex["problem"], cfg.system_prompt) for ex in examples]
    drafts = _sample(engine, draft_prompts, examples, [N] * len(examples), params, reward_fns, cfg)
    plan = sampling.plan_refinements([[not draft_failed(s.score) for s in g] for g in drafts],
                                     cfg.num_refinements, cfg.adaptive_split)
    groups, picks = _draft_groups(examples, draft_prompts, drafts, plan, cfg, rng)
    anchors = [drafts[gi][p] for gi, p in enumerate(picks)]
    any_right = [any(not draft_failed(s.score) for s in g) for g in drafts]
    refine_groups, truncations = [], 0
    # Stage 2, round by round: each refines its anchor; the GRPO loss sees the trained rounds.
    for r in range(1, R + 1):
        built = [_refine_prompt(tokenizer, ex, anchors[gi], any_right[gi], draft_prompts[gi], cfg)
                 for gi, ex in enumerate(examples)]
        truncations += sum(b[2] for gi, b in enumerate(built) if plan[gi] > 0)
        ns = [n // R for n in plan]
        out = _sample(engine, [b[0] for b in built], examples, ns,
                      SamplingParams(**{**params.__dict__, "seed": params.seed + r}), reward_fns, cfg)
        for gi, ex in enumerate(examples):
            if not out[gi]:
                continue
            extra = dict(draft_reward=anchors[gi].reward, draft_truncated=built[gi][2], refine_round=r)
            refine_groups.append(Group("refine", gi, built[gi][0], built[gi][1], out[gi],
                                       trained=r == R or cfg.refine_loss_rounds == "all", extra=extra))
            # best so far: the anchor unless a refinement of it scores strictly higher
            cand = [anchors[gi]] + out[gi]
            anchors[gi] = cand[select_draft([s.reward for s in cand], [0] * len(cand), "first", rng)]
            any_right[gi] = any_right[gi] or any(not draft_failed(s.score) for s in out[gi])
    ro = assemble(step, examples, groups + refine_groups, cfg)
    ro.stats = _igrpo_stats(groups, refine_groups, picks, plan, truncations, ro)
    return ro


def _igrpo_stats(draft_groups, refine_groups, picks, plan, truncations, ro) -> dict:
    drafts = [s for g in draft_groups for s in g.samples]
    refines = [s for g in refine_groups for s in g.samples]
    anchor = torch.tensor([g.extra["draft_reward"] for g in refine_groups for _ in g.samples])  # (B_r,)
    refine = torch.tensor([s.reward for s in refines])                                       # (B_r,)
    d_tot = torch.tensor([s.reward for s in drafts])
    chosen = [g.samples[p] for g, p in zip(draft_groups, picks)]
    return {
        **_common_stats(refines, drafts + refines, ro),
        "frac_zero_std": _frac_zero_std([g for g in refine_groups if g.trained]),
        "draft_reward_mean": d_tot.mean().item(), "draft_reward_std": d_tot.std().item(),
        "best_draft_reward_mean": _mean([s.reward for s in chosen]),
        "refine_reward_mean": refine.mean().item(), "refine_reward_std": refine.std().item(),
        "refine_gain": (refine - anchor).mean().item(),
        "refine_beats_draft": (refine > anchor).float().mean().item(),
        "refine_loses_to_draft": (refine < anchor).float().mean().item(),
        "draft_len_mean": _mean([len(s.comp.ids) for s in drafts]),
        "draft_truncations": truncations,
        "chosen_draft_correct": _mean([not draft_failed(s.score) for s in chosen]),
        "draft_frac_zero_std": _frac_zero_std(draft_groups),
        "adaptive_skipped": sum(n == 0 for n in plan),
    }


def collect_dynamic(draw: Callable[[int], Rollout], prompts_per_batch: int, max_resample_batches: int) -> Rollout:
    """DAPO's dynamic sampling: batches draw(0), draw(1), ... until prompts_per_batch questions carry
    signal or max_resample_batches extra batches were drawn; trains sampling.filter_groups' choice.

    A question carries signal when any of its trained sequences has a non-zero advantage (iGRPO: its
    refinement group, or its draft group under draft_loss). Every sampled row stays in the records
    (`dynamic_kept` says which trained); the rollout stats describe every batch sampled, before the
    filter, except `loss_masked`, which counts the trained sequences."""
    batches, signal = [], []
    for k in range(max_resample_batches + 1):
        ro = draw(k)
        batches.append(ro)
        signal.append([sampling.has_signal([a for a, g in zip(ro.adv.tolist(), ro.group_of) if g == p])
                       for p in range(ro.num_groups)])
        if sum(map(sum, signal)) >= prompts_per_batch:
            break
    plan = sampling.filter_groups(signal, prompts_per_batch)
    merged = merge_groups(batches, sorted(plan["kept"] + plan["padded"]))
    merged.stats.update(dynamic_dropped=len(plan["dropped"]), dynamic_resampled=len(batches) - 1,
                        dynamic_padded=len(plan["padded"]),
                        loss_masked=0 if merged.loss_mask is None else int((merged.loss_mask == 0).sum()))
    return merged


def merge_groups(batches: list[Rollout], take: list[tuple[int, int]]) -> Rollout:
    """One Rollout training the (batch, group) pairs in `take`; group indices renumbered step-wide."""
    offsets = [sum(b.num_groups for b in batches[:k]) for k in range(len(batches))]
    chosen = set(take)
    rows = [{**r, "group_index": offsets[k] + r["group_index"], "sample_batch": k,
             "dynamic_kept": (k, r["group_index"]) in chosen} for k, b in enumerate(batches) for r in b.rows]
    idx = [(k, i) for k, p in take for i, g in enumerate(batches[k].group_of) if g == p]  # sequences in order
    masks = [b.loss_mask for b in batches]
    have_logps = all(b.sampling_logps is not None for b in batches)
    return Rollout(
        prompt_ids=[batches[k].prompt_ids[i] for k, i in idx],
        completion_ids=[batches[k].completion_ids[i] for k, i in idx],
        rewards=torch.tensor([float(batches[k].rewards[i]) for k, i in idx], dtype=torch.float64),
        adv=torch.tensor([float(batches[k].adv[i]) for k, i in idx], dtype=torch.float32), rows=rows,
        loss_mask=None if masks[0] is None else torch.tensor([float(masks[k][i]) for k, i in idx]),
        group_of=[offsets[k] + batches[k].group_of[i] for k, i in idx],
        num_groups=sum(b.num_groups for b in batches), stats=_merge_stats([b.stats for b in batches]),
        sampling_logps=[batches[k].sampling_logps[i] for k, i in idx] if have_logps else None,
        question_tokens=max(b.question_tokens for b in batches))


def _merge_stats(stats: list[dict]) -> dict:
    """Rollout stats of several sampled batches: counts summed, the rest averaged."""
    out = {}
    for key in stats[0]:
        vals = [s[key] for s in stats if s.get(key) is not None]
        out[key] = (sum(vals) if key in SUMMED_METRICS else sum(vals) / len(vals)) if vals else None
    return out


def trained_tokens(ro: Rollout) -> int:
    """Completion tokens that reach the loss (masked completions excluded): DAPO's normaliser."""
    keep = [1.0] * len(ro.completion_ids) if ro.loss_mask is None else ro.loss_mask.tolist()
    return int(sum(len(c) * k for c, k in zip(ro.completion_ids, keep)))
