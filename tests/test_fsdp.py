"""FSDP2 training on this machine's CPUs: 2 gloo processes, each holding half of every decoder
layer (configs/accelerate/fsdp_cpu_2proc.yaml), must produce the run one process produces on the
same global batch: the same rollout rows (generation runs with the shards gathered), the same
metrics and the same weights within float reduction order (the tolerance of test_distributed.py).
A SIGKILL of the job after its second checkpoint and a relaunch resume exactly from the full state
gathered on the main process. The refusals (FSDP1, FSDP with vLLM or LoRA) come before any work."""
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from igrpo_core import distributed, records
from igrpo_core import trainer as T
from tests.conftest import small_config
from tests.test_distributed import (ACCELERATE, BASE, ROOT, assert_same_run, finish, free_port,
                                    kill_after_second_checkpoint, launch)

FSDP = "fsdp_cpu_2proc.yaml"


@pytest.mark.slow
def test_fsdp_two_processes_equal_one_then_sigkill_and_relaunch_resume_exactly(tmp_path):
    steps = dict(algo="igrpo", max_steps=3, save_steps=1)
    straight = T.train(small_config(tmp_path / "one", run_name="one", **{**BASE, **steps}))
    proc = launch(tmp_path / "two", "two", config=FSDP, **steps)
    run = tmp_path / "two" / "two"
    kill_after_second_checkpoint(proc, run)
    assert records.read_json(run / "model.json")["fsdp"] is True
    # the checkpoint holds every parameter in full (gathered from both processes' shards)
    saved = load_file(run / "checkpoints/step_000002/model/model.safetensors")
    w0 = load_file(T.Config().model_name_or_path + "/model.safetensors")
    assert {k: v.shape for k, v in saved.items() if k in w0} == {k: v.shape for k, v in w0.items()}
    finish(launch(tmp_path / "two", "two", config=FSDP, **steps))
    assert records.read_metrics(run)["step"].to_list() == [1, 2, 3]
    assert_same_run(straight, run, step=3)


@pytest.mark.slow
def test_fsdp_grpo_two_processes_equal_one(tmp_path):
    one = T.train(small_config(tmp_path / "one", run_name="one", algo="grpo", **BASE))
    log = finish(launch(tmp_path / "two", "two", config=FSDP, algo="grpo"))
    two = tmp_path / "two" / "two"
    assert records.read_json(two / "model.json")["fsdp"] is True, log[-2000:]
    assert_same_run(one, two, step=2)


def test_processes_decoding_different_lengths_generate_with_gathered_weights():
    """Two FSDP processes run 1 and 5 forwards inside Dist.full_weights, then train a step from
    their halves of each layer (tests/fsdp_unequal_decode.py)."""
    cmd = [str(ACCELERATE), "launch", "--config_file", str(ROOT / "configs/accelerate" / FSDP),
           "--main_process_port", str(free_port()), str(ROOT / "tests/fsdp_unequal_decode.py"), "gathered"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = sorted(line for line in out.stdout.splitlines() if line.startswith("rank "))
    assert lines == ["rank 0 ok 192 384", "rank 1 ok 192 384"], out.stdout[-3000:]   # half of each layer


def test_fsdp1_is_refused_before_any_process_group(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="fsdp_version: 2"):
        distributed.setup(torch.device("cpu"))


@pytest.mark.parametrize("overrides", [dict(rollout_engine="vllm"), dict(use_peft=True)], ids=["vllm", "lora"])
def test_fsdp_refuses_what_it_cannot_run(tmp_path, overrides):
    cfg = small_config(tmp_path, **overrides)
    with pytest.raises(ValueError, match="FSDP runs with rollout_engine=transformers and without use_peft"):
        distributed.Dist(rank=0, world=2, fsdp=True).check(cfg)
    distributed.Dist(rank=0, world=2).check(cfg)   # DDP runs them
