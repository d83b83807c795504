"""GPU checks: skipped without CUDA. scripts/gpu_check.py is the longer, timed version."""
import pytest
import torch

from conftest import small_config
from igrpo_core import records
from igrpo_core.trainer import Trainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("algo", ["grpo", "igrpo"])
def test_trainer_picks_cuda_with_bf16_autocast(tmp_path, algo):
    tr = Trainer(small_config(tmp_path, algo=algo, torch_threads=None))
    assert tr.device.type == "cuda" and tr.amp == torch.bfloat16
    run_dir = tr.train()
    m = records.read_metrics(run_dir)
    assert m.height == 2 and m["loss"].is_finite().all()
