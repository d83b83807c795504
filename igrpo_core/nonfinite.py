"""Non-finite numbers in a training step: find them, name them, agree on them across processes.

One NaN in an AdamW update poisons every later step (the moment estimates keep it), so a step whose
rewards, advantages, loss or gradients hold NaN or inf must never reach the weights. `Trainer.update`
runs the step's forwards and backwards as usual (under DDP every process must join every gradient
all-reduce, so no process may leave the loop early) and collects what this module finds:
- `rollout_problems`: non-finite rewards or advantages among the trained completions;
- `loss_problems`: a non-finite micro-batch loss;
- `clip_grad_norm`: the gradient norm, clipped exactly as `torch.nn.utils.clip_grad_norm_` does
  (same two calls, same result); when the norm is not finite it names the parameters whose
  gradients hold NaN/inf, looked up BEFORE clipping (a NaN norm would smear NaN over every gradient);
- `decide`: whether any process found something (one all-reduce, so every process takes the same
  branch) and, per `Config.nonfinite_policy`, either the message of a step to skip or NonFiniteError.
  A skipped step makes no optimizer and no scheduler step (weights, AdamW state and the learning-rate
  schedule stay bit-identical; HF Trainer also skips the scheduler when the optimizer was skipped);
  its metrics row says `skipped_nonfinite=1` and `nonfinite=<message>`. "stop" raises before the
  optimizer step, so the last checkpoint is the last good state and the run resumes from it.

Non-finite reward VALUES never get this far: rewards.score_one records them as failures (reward 0,
a status on the row, counted in reward_failures), and a weighted sum that overflows likewise. What
reaches this module is arithmetic beyond that: finite rewards near 1e308 whose group mean or std
overflows, a loss or gradient that does.

Deliberately left out: float16 loss scaling (float16 is not offered), lowering the learning rate
after a skip, a limit on consecutive skips (each skip is on the record; `stop` is the strict mode).
"""
from __future__ import annotations

import math

import torch

MAX_NAMED = 3   # parameters named in a message; the count says how many more


class NonFiniteError(FloatingPointError):
    """Training stopped (nonfinite_policy="stop") because a step's numbers were not finite."""


def rollout_problems(rollouts) -> list[str]:
    """Non-finite rewards or advantages among each rollout batch's trained completions."""
    out = []
    for b, ro in enumerate(rollouts):
        for what, values in (("reward", ro.rewards), ("advantage", ro.adv)):   # (B,) each
            bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
            if bad:
                out.append(f"{what} of {len(bad)} of {values.numel()} trained completions "
                           f"(batch {b}, first: completion {bad[0]} = {values[bad[0]].item()})")
    return out


def loss_problems(loss: float, batch: int, micro: int) -> list[str]:
    return [] if math.isfinite(loss) else [f"loss {loss} (batch {batch}, micro-batch {micro})"]


def clip_grad_norm(named_parameters, max_norm: float) -> tuple[float, list[str]]:
    """(total gradient norm, problems). Finite: gradients clipped as clip_grad_norm_ clips them.
    Not finite: gradients left as they are (the step will not use them) and the culprits named."""
    params = [(n, p) for n, p in named_parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm([p.grad for _, p in params])
    if torch.isfinite(total):
        torch.nn.utils.clip_grads_with_norm_([p for _, p in params], max_norm, total)
        return float(total), []
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    if not bad:   # every gradient finite, their squared sum is not
        return float(total), [f"grad norm {float(total)} (finite gradients whose norm overflows)"]
    more = f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
    return float(total), [f"grad of {len(bad)} of {len(params)} parameters: {', '.join(bad[:MAX_NAMED])}{more}"]


def decide(problems: list[str], dist, policy: str, step: int) -> str | None:
    """None: update as usual. Else the message of a step to skip ("skip"), or NonFiniteError
    ("stop"). Every process calls this with its own problems and gets the same answer."""
    if dist.sum(float(bool(problems))) == 0:
        return None
    found = problems if dist.world == 1 else [
        f"process {rank}: {p}" for rank, part in enumerate(dist.gather(problems)) for p in part]
    message = "non-finite " + "; ".join(found)
    if policy == "stop":
        raise NonFiniteError(f"step {step}: {message}. Training stopped (nonfinite_policy='stop') before the "
                             f"optimizer step; the run resumes from its last checkpoint")
    return message
