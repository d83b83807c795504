import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    path = ROOT / "data" / "models" / "tiny-arith"
    if not (path / "config.json").exists():
        pytest.fail("the shipped tiny model is missing: run scripts/build_tiny_model.py")
    return str(path)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_path):
    from igrpo_core.models import load_tokenizer
    return load_tokenizer(tiny_model_path)


def small_config(tmp_path, **overrides):
    """A few-second run on the tiny model."""
    from igrpo_core.config import Config
    base = dict(output_dir=str(tmp_path / "runs"), max_steps=2, prompts_per_step=4, num_generations=4,
                num_drafts=2, max_completion_length=40, save_steps=1, tiny_num_problems=200,
                per_device_train_batch_size=8, generation_batch_size=32, run_name="t")
    base.update(overrides)
    return Config(**base)


@pytest.fixture(scope="session")
def tiny_served(tiny_model_path, tiny_tokenizer):
    """igrpo_core.serve over the shipped tiny model on a free loopback port: (server, engine)."""
    import torch

    from igrpo_core import serve
    from igrpo_core.engine import TransformersEngine
    from igrpo_core.models import load_model
    torch.set_num_threads(1)
    model = load_model(tiny_model_path, tiny_tokenizer, device=torch.device("cpu"), dtype=torch.float32)
    engine = TransformersEngine(model, tiny_tokenizer, batch_size=16)
    server, thread = serve.start_server(engine, tiny_tokenizer, "tiny-arith")
    try:
        yield server, engine
    finally:
        serve.stop_server(server, thread)
