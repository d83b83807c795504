"""Multi-process data-parallel training through accelerate: who this process is, its shard of the
prompts, and the few collective operations the trainer needs.

The trainer stays one readable loop; `Dist` is the only place that knows about processes. Launched
by `accelerate launch` (which sets WORLD_SIZE), `setup` creates an `Accelerator` and the policy is
wrapped for DDP (or FSDP, when the accelerate config asks for it). Launched as a plain process it
returns a `Dist` of one whose every operation is the identity, so single-process runs are unchanged.

Data parallelism, as the trainer uses it:
- each process samples a contiguous shard of each step's prompts, with the global prompt index as
  `prompt_offset`, so (per-prompt seeds, engine.py) N processes draw exactly the rollouts of one;
  a group (GRPO's group; iGRPO's drafts and their refinements) never spans processes;
- per-process losses are normalised by process-local counts and DDP averages gradients, which is
  the global mean when shards are equal (checked); DAPO's global token count and `scale_rewards:
  batch`'s standard deviation are reduced across processes;
- rollout rows are gathered to the main process, which alone writes records and checkpoints.

Deliberately left out: a launcher of our own, pipeline/tensor parallelism, uneven shards.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    accelerator: object | None = None   # accelerate.Accelerator when launched with several processes
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This process's contiguous share of n items (n must divide evenly)."""
        if n % self.world:
            raise ValueError(f"{n} prompts per batch do not split evenly over {self.world} processes; "
                             f"make prompts_per_step a multiple of the number of processes")
        k = n // self.world
        return slice(self.rank * k, (self.rank + 1) * k)

    def sum(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor([float(x)], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(t, reduction="sum")[0])

    def gather(self, obj) -> list:
        """obj of every process, in rank order (python objects, e.g. rollout rows)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def reduce_metrics(self, row: dict, counts: dict[str, int], *, summed, pooled_stds: dict) -> dict:
        """A step's metrics for the whole batch from every process's: counts (`summed`) add up,
        standard deviations pool from each process's count, mean and std (`pooled_stds`: std key ->
        (mean key, counts key)), the rest average (shards are equal: the loss, ratio and clip metrics
        are per-process means). step, lr, grad_norm, entropy and the non-finite guard's verdict
        (nonfinite.decide) are already the same everywhere."""
        if self.world == 1:
            return row
        out = {}
        for key, v in row.items():
            if key in ("step", "lr", "grad_norm", "entropy", "skipped_nonfinite", "nonfinite") or v is None:
                out[key] = v
            elif key in pooled_stds:
                mean_key, count_key = pooled_stds[key]
                out[key] = self.pooled_std(counts[count_key], row[mean_key], v)
            else:
                total = self.sum(v)
                out[key] = total if key in summed else total / self.world
        return out

    def pooled_std(self, n: int, mean: float, std: float) -> float:
        """Unbiased std of the union of every process's n values, from each one's mean and std."""
        total_n = self.sum(n)
        grand = self.sum(n * mean) / total_n
        squares = self.sum((n - 1) * std ** 2 + n * mean ** 2)
        return max(0.0, (squares - total_n * grand ** 2) / max(1.0, total_n - 1)) ** 0.5

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    def prepare(self, model, optimizer):
        """DDP/FSDP-wrapped (model, optimizer) as the accelerate config says; unchanged for one process."""
        if self.world == 1:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def unwrap(self, model):
        return model if self.world == 1 else self.accelerator.unwrap_model(model)

    def backward(self, loss) -> None:
        if self.world == 1:
            loss.backward()
        else:
            self.accelerator.backward(loss)


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> Dist:
    """A Dist for this process: one process unless started by `accelerate launch` (WORLD_SIZE > 1)."""
    if launched_world_size() == 1:
        return Dist()
    from accelerate import Accelerator
    acc = Accelerator(cpu=device.type == "cpu")   # torchrun without CUDA: gloo on CPU
    return Dist(accelerator=acc, rank=acc.process_index, world=acc.num_processes)
