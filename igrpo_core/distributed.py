"""Multi-process data-parallel training through accelerate: who this process is, its shard of the
prompts, and the few collective operations the trainer needs.

The trainer stays one readable loop; `Dist` is the only place that knows about processes. Launched
by `accelerate launch` (which sets WORLD_SIZE), `setup` creates an `Accelerator` and the policy is
wrapped for DDP, or sharded with FSDP2 (`fully_shard`) when the accelerate config says
`distributed_type: FSDP` with `fsdp_version: 2`. Launched as a plain process it
returns a `Dist` of one whose every operation is the identity, so single-process runs are unchanged.

Data parallelism, as the trainer uses it:
- each process samples a contiguous shard of each step's prompts, with the global prompt index as
  `prompt_offset`, so (per-prompt seeds, engine.py) N processes draw exactly the rollouts of one;
  a group (GRPO's group; iGRPO's drafts and their refinements) never spans processes;
- per-process losses are normalised by process-local counts and DDP averages gradients, which is
  the global mean when shards are equal (checked); DAPO's global token count and `scale_rewards:
  batch`'s standard deviation are reduced across processes;
- rollout rows are gathered to the main process, which alone writes records and checkpoints.

FSDP2 (each process holds 1/N of the parameters, gradients and AdamW state):
- the transformers engine samples with the policy itself, and a process decodes as many tokens as
  its own prompts need, so the shards are gathered for the whole of generation (`full_weights`):
  no collective may run per forward while processes decode different numbers of tokens;
- checkpoints hold the full state, gathered to the main process (`state_dicts`), in the same files
  as a one-process run (optimizer state keyed by parameter name); resume shards it again.
- On CPU, accelerate ignores an FSDP config (its MULTI_CPU mode has no FSDP branch), so `setup`
  selects accelerate's own FSDP2 path there itself; on GPUs accelerate selects it.

Deliberately left out: a launcher of our own, pipeline/tensor parallelism, uneven shards, FSDP1,
FSDP with LoRA or with the vLLM engine (both refused), a sharded KL reference model.
"""
from __future__ import annotations

import atexit
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    accelerator: object | None = None   # accelerate.Accelerator when launched with several processes
    rank: int = 0
    world: int = 1
    fsdp: bool = False                  # parameters sharded by FSDP2 (fully_shard)

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

    def check(self, cfg) -> None:
        """What this process layout cannot run, as errors before any work."""
        self.shard(cfg.prompts_per_step)
        if self.fsdp and (cfg.rollout_engine != "transformers" or cfg.use_peft):
            raise ValueError("FSDP runs with rollout_engine=transformers and without use_peft only "
                             "(vLLM weight sync and LoRA adapters of sharded weights are not implemented); "
                             "use a DDP accelerate config for those")

    def full_weights(self, model):
        """Context: FSDP2's shards gathered into full parameters (e.g. for generation), no collective
        per forward, resharded on exit. A no-op without FSDP."""
        return _unsharded(model, self.accelerator.state.fsdp_plugin.reshard_after_forward) if self.fsdp \
            else nullcontext()

    def state_dicts(self, model, optimizer) -> tuple[dict | None, dict]:
        """(model, optimizer) state for a checkpoint. FSDP: the full state, gathered onto the main
        process (a collective: every process calls it; the others get empty dicts), the optimizer's
        keyed by parameter name. Otherwise (None: the model's own, optimizer.state_dict())."""
        if not self.fsdp:
            return None, optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)

    def load_model_state(self, model, state: dict):
        """Full (unsharded) weights into the model, sharding them under FSDP; (missing, unexpected)."""
        if not self.fsdp:
            return model.load_state_dict(state, strict=False)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        return set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))

    def load_optimizer_state(self, model, optimizer, state: dict) -> None:
        if not self.fsdp:
            return optimizer.load_state_dict(state)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def backward(self, loss) -> None:
        if self.world == 1:
            loss.backward()
        else:
            self.accelerator.backward(loss)


@contextmanager
def _unsharded(model, reshard_after_forward: bool):
    from torch.distributed.fsdp import FSDPModule
    mods = [m for m in model.modules() if isinstance(m, FSDPModule)]   # root first
    for m in mods:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        for m in mods:
            m.reshard()
            # torch keeps the root unsharded after forward (backward needs it at once); the rest as configured
            m.set_reshard_after_forward(reshard_after_forward and m is not mods[0], recurse=False)


def _close_process_group() -> None:
    """Destroy the process group while the interpreter is still whole. A process that exits with
    it alive leaves gloo's worker threads to be torn down during interpreter finalisation, which
    now and then aborts the process (SIGABRT, "terminate called without an active exception") after
    its work has finished; registered with atexit by `setup`, so every entry point (the CLI, a
    notebook kernel, a test's child) gets it. A no-op if the group is already gone."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def fsdp_requested() -> bool:
    """`accelerate launch` with `distributed_type: FSDP` in its config sets ACCELERATE_USE_FSDP."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def setup(device: torch.device) -> Dist:
    """A Dist for this process: one process unless started by `accelerate launch` (WORLD_SIZE > 1)."""
    if launched_world_size() == 1:
        return Dist()
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    fsdp = fsdp_requested()
    if fsdp and os.environ.get("FSDP_VERSION", "1") != "2":
        raise ValueError("FSDP needs fsdp_version: 2 in the accelerate config's fsdp_config (FSDP1 is not supported)")
    acc = Accelerator(cpu=device.type == "cpu")   # torchrun without CUDA: gloo on CPU
    if fsdp and acc.distributed_type != DistributedType.FSDP:
        # CPU: accelerate's MULTI_CPU state ignores the FSDP config; select its FSDP2 path (the plugin
        # reads the config from the FSDP_* variables the launcher set), as it does itself on GPUs.
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        acc.state.distributed_type = DistributedType.FSDP
    atexit.register(_close_process_group)
    return Dist(accelerator=acc, rank=acc.process_index, world=acc.num_processes, fsdp=fsdp)
