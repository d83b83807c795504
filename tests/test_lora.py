"""LoRA (igrpo_core.lora + the trainer's use_peft): only adapters train, the base stays
bit-identical, the KL reference is the base with adapters off (no copy), checkpoints hold adapters
and resume exactly, evaluation loads an adapter checkpoint as a merged model, and a rollout engine
receives the merged weights under the base model's names."""
import pytest
import torch
from safetensors.torch import load_file

from igrpo_core import lora, records
from igrpo_core import trainer as T
from igrpo_core.models import load_model
from tests.conftest import small_config

TIMING = {"gen_time_s", "step_time_s", "tokens_per_s"}
LORA = dict(use_peft=True, lora_r=4, lora_alpha=8, learning_rate=5e-3)


def base_weights(model) -> dict[str, torch.Tensor]:
    base = model.get_base_model() if lora.is_peft(model) else model
    return {k.replace(".base_layer.", "."): v.detach().clone() for k, v in base.state_dict().items()
            if "lora_" not in k}


@pytest.mark.slow
def test_lora_trains_adapters_only_and_the_base_stays_bit_identical(tmp_path, tiny_model_path):
    tr = T.Trainer(small_config(tmp_path, max_steps=3, beta=0.01, **LORA))
    assert tr.ref_model is None                                                    # no second copy
    info = records.read_json(tr.run_dir / "model.json")
    # peft's default targets for Llama are q_proj and v_proj: r * (in + out) per module and layer
    expected = sum(4 * (m.in_features + m.out_features) for n, m in tr.model.get_base_model().named_modules()
                   if n.endswith(("q_proj.base_layer", "v_proj.base_layer")))
    assert info["trainable_parameters"] == expected and 0 < expected < info["parameters"] / 10
    assert info["peft"]["lora_r"] == 4
    before = base_weights(tr.model)
    tr.train()
    after = base_weights(tr.model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    adapters = load_file(tr.run_dir / "checkpoints/step_000003/model/adapter_model.safetensors")
    assert adapters and all("lora_" in k for k in adapters)
    assert any(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)  # B starts at 0: it learned
    m = records.read_metrics(tr.run_dir)
    assert m["kl"][0] == pytest.approx(0.0, abs=1e-9)       # step 1: adapters are zero, policy == base
    assert m["kl"][-1] > 0                                   # later: the reference stayed the base


@pytest.mark.slow
def test_lora_resume_matches_an_uninterrupted_run(tmp_path):
    straight = T.train(small_config(tmp_path / "a", max_steps=4, save_steps=2, **LORA))

    def crash(step, row):
        if step == 3:
            raise RuntimeError("simulated crash")

    cfg = small_config(tmp_path / "b", max_steps=4, save_steps=2, **LORA)
    with pytest.raises(RuntimeError, match="simulated crash"):
        T.train(cfg, callbacks=[crash])
    resumed = T.train(cfg)
    ma, mb = records.read_metrics(straight), records.read_metrics(resumed)
    cols = [c for c in ma.columns if c not in TIMING]
    assert ma.select(cols).equals(mb.select(cols))
    wa = load_file(straight / "checkpoints/step_000004/model/adapter_model.safetensors")
    wb = load_file(resumed / "checkpoints/step_000004/model/adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_merged_weights_and_adapter_checkpoints_load_as_the_effective_model(tmp_path, tiny_tokenizer, tiny_model_path):
    cpu = torch.device("cpu")
    model = load_model(tiny_model_path, tiny_tokenizer, device=cpu, dtype=torch.float32)
    plain = lora.merged_state_dict(model)
    assert plain.keys() == model.state_dict().keys()
    peft_model = lora.apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules=None)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)                                                 # a trained-looking adapter
    merged = lora.merged_state_dict(peft_model)
    assert merged.keys() == plain.keys()                                           # the base's own names
    ids = torch.tensor([tiny_tokenizer("Compute 3+4*2.")["input_ids"]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
        fresh = load_model(tiny_model_path, tiny_tokenizer, device=cpu, dtype=torch.float32)
        fresh.load_state_dict(merged, strict=False)
        assert torch.allclose(fresh(input_ids=ids).logits, want, atol=1e-5)
        with lora.adapters_disabled(peft_model):                                   # the reference
            assert torch.allclose(peft_model(input_ids=ids).logits, fresh.__class__.from_pretrained(
                tiny_model_path)(input_ids=ids).logits, atol=1e-6)
        peft_model.save_pretrained(tmp_path / "ckpt")
        tiny_tokenizer.save_pretrained(tmp_path / "ckpt")
        assert lora.is_adapter_dir(tmp_path / "ckpt")
        loaded = load_model(str(tmp_path / "ckpt"), tiny_tokenizer, device=cpu, dtype=torch.float32)
        assert not lora.is_peft(loaded)
        assert torch.allclose(loaded(input_ids=ids).logits, want, atol=1e-5)


def test_lora_options_are_validated():
    from igrpo_core.config import Config
    with pytest.raises(ValueError, match="lora_r"):
        Config(use_peft=True, lora_r=0)
    with pytest.raises(ValueError, match="use_peft must be true or false"):
        Config(use_peft="yes")
