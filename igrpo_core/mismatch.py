"""Engine vs trainer log-probs: the train/inference mismatch metric and TRL's importance-sampling correction.

Each engine returns, per sampled token, its log-prob under the distribution it actually sampled from
(`Completion.logprobs`): logits / temperature, then top-k and top-p, renormalised over the kept
tokens (vLLM's `logprobs_mode="processed_logprobs"`, which TRL requests). The trainer recomputes each
token's log-prob at the same temperature over the full vocabulary, with the weights the rollout was
sampled with (`old_logp`). d = old_logp - engine_logp per token is the mismatch: ~0 when both sides
run the same weights in fp32 without top-k/top-p; larger under bf16 or other kernels (vLLM); and
with top_p < 1 or top_k > 0 every token also carries log S, the mass truncation kept (TRL issue
#6789): the metric then shows it, and the correction below would scale the loss by S.

`importance_weights` is TRL 1.16's `vllm_importance_sampling_correction`: ratio = exp(d) per token
(token_*) or exp(sum of d over the completion) per sequence (sequence_*), clamped to [clip_min,
clip_max] (*_truncate) or set to 0 outside it (*_mask). `losses.policy_loss(is_weight=)` multiplies
each token's clipped-surrogate term by it, before the KL term is added, as TRL does. Under
`num_iterations` > 1 the weight stays the one of the rollout weights (old_logp), as in TRL.

`MismatchMeter` gathers a step's micro-batches, and every process's, so means are token-weighted and
max/min true ones over the whole batch: a run under several processes reports what one process would.

Deliberately left out: renormalising the trainer's log-probs over the engine's kept set (top-k/top-p
"replay"), TRL's use_bias_correction_kl, and NaN engine log-probs (our engines always return them).
"""
from __future__ import annotations

import math

import torch

from igrpo_core.options import IS_METRICS, MISMATCH_METRICS, VLLM_IMPORTANCE_SAMPLING_MODES, check_choice


def pad_logps(rows: list[list[float]], width: int, device) -> torch.Tensor:
    """Engine log-probs of a micro-batch, right-padded with 0 like the completions: (b, width) float32."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.float32)
    return out.to(device)


def importance_weights(old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor, *, mode: str,
                       clip_max: float | None = 3.0, clip_min: float | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, raw ratio): (B, T) each for token_* modes, (B, 1) each for sequence_* modes.

    old_logp, engine_logp, mask: (B, T). Padding (mask 0) contributes a log-ratio of 0, so a padded
    token's ratio is 1 and a sequence's ratio is exp of the sum over its completion tokens only.
    """
    check_choice("vllm_importance_sampling_mode", mode, VLLM_IMPORTANCE_SAMPLING_MODES)
    keep = mask.bool()
    diff = torch.where(keep, old_logp.detach().float() - engine_logp.float(), 0.0)  # (B, T)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)                                          # (B, 1)
    ratio = diff.exp()
    lo = -math.inf if clip_min is None else clip_min
    hi = math.inf if clip_max is None else clip_max
    if mode.endswith("truncate"):
        weight = ratio.clamp(min=lo, max=hi)
    else:
        weight = ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)
    return weight, ratio


def options(cfg) -> dict:
    """The correction's settings from a Config, as `observe` takes them."""
    return dict(correction=cfg.vllm_importance_sampling_correction, mode=cfg.vllm_importance_sampling_mode,
                clip_max=cfg.vllm_importance_sampling_clip_max, clip_min=cfg.vllm_importance_sampling_clip_min)


def observe(meter: "MismatchMeter", old_logp: torch.Tensor, engine_rows: list[list[float]] | None,
            mask: torch.Tensor, *, correction: bool, mode: str, clip_max: float | None,
            clip_min: float | None) -> torch.Tensor | None:
    """Record one micro-batch's mismatch; return the importance weight when `correction` is on, else None.

    engine_rows: the engine's log-probs of each sequence's completion (None: the engine gave none,
    so there is no metric, and the correction is an error rather than silently absent).
    """
    if engine_rows is None:
        if correction:
            raise ValueError("vllm_importance_sampling_correction needs the rollout engine's sampling log-probs, "
                             "and this engine returned none")
        return None
    engine_logp = pad_logps(engine_rows, mask.shape[1], mask.device)                 # (b, T)
    meter.add(old_logp, engine_logp, mask)
    if not correction:
        return None
    weight, ratio = importance_weights(old_logp, engine_logp, mask, mode=mode, clip_max=clip_max, clip_min=clip_min)
    meter.add_weights(weight, ratio, mask, sequence=mode.startswith("sequence"), clip_max=clip_max,
                      clip_min=clip_min)
    return weight


class MismatchMeter:
    """Per-token log-ratios and IS weights of a step's micro-batches; `result()` gives the metrics."""

    def __init__(self):
        self.diffs: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] = []
        self.clipped: list[torch.Tensor] = []

    @torch.no_grad()
    def add(self, old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor) -> None:
        keep = mask.bool()
        self.diffs.append((old_logp.detach().float() - engine_logp.float())[keep].cpu())   # (n,)

    @torch.no_grad()
    def add_weights(self, weight: torch.Tensor, ratio: torch.Tensor, mask: torch.Tensor, *, sequence: bool,
                    clip_max: float | None, clip_min: float | None) -> None:
        """Token modes: the trained tokens' weights (B, T); sequence modes: one per trained sequence (B, 1)."""
        keep = mask.bool().any(-1, keepdim=True) if sequence else mask.bool()
        outside = torch.zeros_like(ratio, dtype=torch.bool)
        if clip_max is not None:
            outside |= ratio > clip_max
        if clip_min is not None:
            outside |= ratio < clip_min
        self.weights.append(weight[keep].cpu())
        self.clipped.append(outside[keep].cpu())

    def _sums(self) -> tuple[float, ...]:
        """(tokens, sum |d|, max |d|, sum k3, weights, sum w, min w, max w, clipped): this process's part."""
        d = torch.cat(self.diffs).double() if self.diffs else torch.zeros(0, dtype=torch.float64)
        w = torch.cat(self.weights).double() if self.weights else torch.zeros(0, dtype=torch.float64)
        c = torch.cat(self.clipped).double() if self.clipped else torch.zeros(0, dtype=torch.float64)
        return (d.numel(), d.abs().sum().item(), d.abs().max().item() if d.numel() else 0.0,
                (d.exp() - 1 - d).sum().item(), w.numel(), w.sum().item(),
                w.min().item() if w.numel() else math.inf, w.max().item() if w.numel() else -math.inf, c.sum().item())

    def result(self, gather=None) -> dict[str, float | None]:
        """options.MISMATCH_METRICS and IS_METRICS as floats; None where nothing was recorded.
        gather: `Dist.gather` (every process's object, in rank order), so all report the whole batch's."""
        parts = gather(self._sums()) if gather is not None else [self._sums()]
        n, abs_sum, _, kl_sum, nw, w_sum, _, _, clipped = (sum(p[i] for p in parts) for i in range(9))
        out: dict[str, float | None] = dict.fromkeys(MISMATCH_METRICS + IS_METRICS)
        if n:
            out.update(mismatch_mean_abs=abs_sum / n, mismatch_max_abs=max(p[2] for p in parts),
                       mismatch_kl=kl_sum / n)
        if nw:
            out.update(is_ratio_min=min(p[6] for p in parts), is_ratio_mean=w_sum / nw,
                       is_ratio_max=max(p[7] for p in parts), is_clipped_frac=clipped / nw)
        return out
