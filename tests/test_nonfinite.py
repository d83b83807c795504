"""Non-finite numbers in a step (issue 12 item 3): NaN/inf in rewards, advantages, loss or gradients
is found and named; the update is skipped (weights, AdamW and schedule bit-identical, the metrics row
says why) or training stops with that message and resumes from its last checkpoint. A run without
faults is unchanged. Faults are injected: a wrapped policy_loss (NaN loss), a gradient hook (inf in
one parameter's gradient), custom rewards (inf values; values near 1e308 whose group mean overflows).
"""
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import small_config
from igrpo_core import losses, nonfinite, records, rewards
from igrpo_core import trainer as T
from igrpo_core.distributed import Dist

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"gen_time_s", "step_time_s", "tokens_per_s"}
FAST = dict(algo="grpo", max_steps=3, save_steps=1, save_total_limit=3, max_completion_length=24)
PARAM = "model.layers.0.mlp.down_proj.weight"   # a parameter of the tiny model (checked in the test)


def weights(run_dir: Path, step: int) -> dict:
    return load_file(run_dir / f"checkpoints/step_{step:06d}/model/model.safetensors")


def optimizer_state(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / f"checkpoints/step_{step:06d}/state.pt", weights_only=False)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_state(a, b) -> bool:
    """Nested optimizer/scheduler state dicts equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A fault-free run: the reference for 'unchanged' and for resume."""
    return T.train(small_config(tmp_path_factory.mktemp("straight"), **FAST))


def nan_loss_at(monkeypatch, steps: set[int], trainer_step) -> None:
    """policy_loss returns NaN while the trainer is on one of `steps` (its gradients are NaN too)."""
    real = losses.policy_loss

    def policy_loss(*args, **kwargs):
        loss, m = real(*args, **kwargs)
        return (loss * math.nan, m) if trainer_step() in steps else (loss, m)
    monkeypatch.setattr(losses, "policy_loss", policy_loss)


def test_fault_free_run_records_no_skip(straight):
    m = records.read_metrics(straight)
    assert m["skipped_nonfinite"].to_list() == [0.0, 0.0, 0.0] and m["nonfinite"].null_count() == 3
    assert all(math.isfinite(x) for x in m["grad_norm"].to_list())
    assert not same_tensors(weights(straight, 1), weights(straight, 2))   # updates happened


def test_inf_gradient_skips_the_update_and_names_the_parameter(tmp_path):
    hooks = []

    def inject(step, row):   # after step 1: poison one gradient during step 2 only
        if step == 1:
            p = dict(tr.model.named_parameters())[PARAM]
            hooks.append(p.register_hook(lambda g: torch.full_like(g, math.inf)))
        elif step == 2:
            hooks.pop().remove()
    tr = T.Trainer(small_config(tmp_path, **FAST), callbacks=[inject])
    run = tr.train()
    m = records.read_metrics(run)
    assert m["skipped_nonfinite"].to_list() == [0.0, 1.0, 0.0]
    msg = m["nonfinite"][1]
    assert msg.startswith("non-finite grad of 1 of ") and msg.endswith(PARAM), msg
    assert m["grad_norm"][1] == math.inf
    # the skipped step changed nothing: weights, AdamW moments and step counts, lr schedule
    assert same_tensors(weights(run, 1), weights(run, 2))
    s1, s2 = optimizer_state(run, 1), optimizer_state(run, 2)
    assert same_state(s1["optimizer"], s2["optimizer"]) and same_state(s1["scheduler"], s2["scheduler"])
    assert m["lr"][2] == m["lr"][1]                      # step 3 uses the lr step 2 would have
    assert not same_tensors(weights(run, 2), weights(run, 3))   # and training goes on
    assert records.read_json(run / "status.json")["state"] == "finished"


def test_nan_loss_skips_and_says_loss(tmp_path, monkeypatch):
    tr = T.Trainer(small_config(tmp_path, **{**FAST, "max_steps": 2}))
    nan_loss_at(monkeypatch, {2}, lambda: tr.step + 1)
    run = tr.train()
    m = records.read_metrics(run)
    assert m["skipped_nonfinite"].to_list() == [0.0, 1.0]
    msg = m["nonfinite"][1]
    assert msg.startswith("non-finite loss nan (batch 0, micro-batch 0)") and "grad of" in msg, msg
    assert same_tensors(weights(run, 1), weights(run, 2))


def test_stop_raises_names_the_loss_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, straight):
    cfg = small_config(tmp_path, **FAST, nonfinite_policy="stop")
    tr = T.Trainer(cfg)
    nan_loss_at(monkeypatch, {3}, lambda: tr.step + 1)
    with pytest.raises(nonfinite.NonFiniteError, match=r"step 3: non-finite loss nan .*resumes from its last checkpoint"):
        tr.train()
    run = tmp_path / "runs" / "t"
    status = records.read_json(run / "status.json")
    assert status["state"] == "failed" and status["error"].startswith("NonFiniteError: step 3: non-finite loss nan")
    assert records.read_metrics(run)["step"].to_list() == [1, 2]     # the bad step left no record
    assert [d.name for d in records.checkpoint_dirs(run)] == ["step_000001", "step_000002"]
    monkeypatch.undo()                                                # the fault was transient
    T.train(cfg)
    ma, mb = records.read_metrics(straight), records.read_metrics(run)
    cols = [c for c in ma.columns if c not in TIMING]
    assert ma.select(cols).equals(mb.select(cols))
    assert records.read_rollouts(straight).equals(records.read_rollouts(run))
    assert same_tensors(weights(straight, 3), weights(run, 3))


def test_nonfinite_reward_values_are_recorded_failures_not_skips(tmp_path):
    """inf/NaN reward values never reach the loss (rewards.score_one: 0 and a status); an
    overflowing weighted sum neither; rewards that are finite but overflow the group mean do."""
    def inf_on_odd(c, e):
        return math.inf if len(c) % 2 else 0.5

    run = T.train(small_config(tmp_path / "a", **{**FAST, "max_steps": 1}), custom_rewards={"bad": (inf_on_odd, 1.0)})
    m, r = records.read_metrics(run), records.read_rollouts(run)
    assert m["skipped_nonfinite"].to_list() == [0.0] and m["reward_failures"][0] > 0
    assert m["reward_failures"][0] == r["reward_status"].str.contains("error: bad: non-finite reward inf").sum()
    assert all(math.isfinite(x) for x in r["reward"].to_list())

    def huge(c, e):   # finite, but four of them sum to inf: the group mean overflows
        return 1.7e308 if len(c) % 2 else 1.6e308
    run = T.train(small_config(tmp_path / "b", **{**FAST, "max_steps": 1}), custom_rewards={"huge": (huge, 1.0)})
    m = records.read_metrics(run)
    assert m["skipped_nonfinite"].to_list() == [1.0]
    assert m["nonfinite"][0].startswith("non-finite advantage of "), m["nonfinite"][0]


def test_overflowing_weighted_sum_is_a_recorded_failure():
    fns = {"big": rewards.WeightedReward(lambda c, e: 1e308, 10.0)}
    s = rewards.score_one("x", {"answer": "1"}, fns)
    assert s.total == 0.0 and s.status == "error: non-finite weighted reward sum inf"
    assert rewards.is_failure(s.status)


def test_clip_grad_norm_is_torchs_and_names_culprits_before_clipping():
    torch.manual_seed(0)
    ps = {n: torch.nn.Parameter(torch.randn(5, 3)) for n in "abc"}
    grads = {n: torch.randn(5, 3) * 3 for n in ps}
    ref = {n: torch.nn.Parameter(p.detach().clone()) for n, p in ps.items()}
    for n in ps:
        ps[n].grad, ref[n].grad = grads[n].clone(), grads[n].clone()
    norm, problems = nonfinite.clip_grad_norm(ps.items(), 1.0)
    assert problems == [] and norm == float(torch.nn.utils.clip_grad_norm_(ref.values(), 1.0))
    assert all(torch.equal(ps[n].grad, ref[n].grad) for n in ps)        # clipped bit for bit alike
    ps["b"].grad[2, 1] = math.nan
    before = {n: p.grad.clone() for n, p in ps.items()}
    norm, problems = nonfinite.clip_grad_norm(ps.items(), 1.0)
    assert math.isnan(norm) and problems == ["grad of 1 of 3 parameters: b"]
    assert all(torch.equal(ps[n].grad, before[n]) for n in "ac")       # not smeared with NaN
    for n in ps:
        ps[n].grad = torch.full((5, 3), 1e30)                           # finite, the norm is not
    assert nonfinite.clip_grad_norm(ps.items(), 1.0)[1] == ["grad norm inf (finite gradients whose norm overflows)"]


class TwoProcesses(Dist):
    """Process `rank` of two whose peer found `peer` problems (stand-in for the collectives)."""

    def __init__(self, rank: int, mine: list, peer: list):
        super().__init__(accelerator=None, rank=rank, world=2)
        self.parts = [mine, peer] if rank == 0 else [peer, mine]

    def sum(self, x):
        return sum(float(bool(p)) for p in self.parts)

    def gather(self, obj):
        return self.parts


def test_decide_every_process_takes_the_same_branch():
    assert nonfinite.decide([], Dist(), "stop", 1) is None
    assert nonfinite.decide(["loss nan (batch 0, micro-batch 0)"], Dist(), "skip", 1) == \
        "non-finite loss nan (batch 0, micro-batch 0)"
    found = ["grad of 1 of 9 parameters: w"]
    a, b = nonfinite.decide([], TwoProcesses(0, [], found), "skip", 4), nonfinite.decide(found, TwoProcesses(1, found, []), "skip", 4)
    assert a == b == "non-finite process 1: grad of 1 of 9 parameters: w"
    with pytest.raises(nonfinite.NonFiniteError, match="step 4: non-finite process 1: grad of 1"):
        nonfinite.decide([], TwoProcesses(0, [], found), "stop", 4)
    row = TwoProcesses(0, [], found).reduce_metrics({"step": 4, "skipped_nonfinite": 1.0, "nonfinite": a}, {},
                                                    summed=(), pooled_stds={})
    assert row["nonfinite"] == a and row["skipped_nonfinite"] == 1.0   # passed through, not summed


AGREE = """
import json, os, sys, torch
from igrpo_core import distributed, nonfinite
d = distributed.setup(torch.device("cpu"))
mine = ["loss nan (batch 0, micro-batch 1)"] if d.rank == 1 else []
out = {"clean": nonfinite.decide([], d, "stop", 5), "skip": nonfinite.decide(mine, d, "skip", 5)}
try:
    nonfinite.decide(mine, d, "stop", 6)
except nonfinite.NonFiniteError as exc:
    out["stop"] = str(exc)
import atexit, torch.distributed as dist
atexit._run_exitfuncs()          # what interpreter exit runs first: setup's handler destroys the group
out["closed"] = not dist.is_initialized()
open(os.path.join(sys.argv[1], f"rank{d.rank}.json"), "w").write(json.dumps(out))
"""


def test_two_real_processes_agree(tmp_path):
    """Two gloo processes (accelerate's Accelerator, as `accelerate launch` gives the trainer): only
    process 1 sees a NaN; both skip (policy skip), both stop (policy stop), with the same message. And
    the process group is destroyed at exit (a process exiting with gloo's threads alive aborted now
    and then, SIGABRT "terminate called without an active exception": 8 of 60 before the fix)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": "2"}
        procs.append(subprocess.Popen([sys.executable, "-c", AGREE, str(tmp_path)], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out[-3000:]
    a, b = (records.read_json(tmp_path / f"rank{r}.json") for r in range(2))
    assert a == b and a["clean"] is None and a["closed"] is True
    assert a["skip"] == "non-finite process 1: loss nan (batch 0, micro-batch 1)"
    assert a["stop"].startswith("step 6: non-finite process 1: loss nan (batch 0, micro-batch 1). Training stopped")
