"""LoRA through peft: adapters on the policy, the base as the reference, merged weights for vLLM.

With `use_peft`, only the adapters train (and only they have AdamW state); the frozen base is
bit-identical before and after training. The KL reference is the same model with its adapters
disabled (`adapters_disabled`), so no second copy of the weights exists. A checkpoint holds only
the adapters (adapter_config.json + adapter_model.safetensors, with the tokenizer); `load_merged`
turns such a directory back into a plain model (base + merged adapters) for evaluation, and
`merged_state_dict` gives a rollout engine the effective weights under the base model's names.

Deliberately left out: QLoRA/quantised bases, DoRA and other adapter types, several adapters.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

ADAPTER_CONFIG = "adapter_config.json"


def apply_lora(model, *, r: int, alpha: int, dropout: float, target_modules: list[str] | None):
    """Wrap `model` with fresh LoRA adapters (peft); target_modules None: peft's per-architecture default."""
    from peft import LoraConfig, get_peft_model
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def adapters_disabled(model):
    """Context in which a peft model computes with its base weights only (the KL reference)."""
    return model.disable_adapter() if is_peft(model) else contextlib.nullcontext()


def parameter_counts(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable_parameters": trainable}


def is_adapter_dir(path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_adapters(model, adapter_dir: Path) -> None:
    """Put the adapters saved in `adapter_dir` (a checkpoint) into a peft model, in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    result = set_peft_model_state_dict(model, load_file(Path(adapter_dir) / "adapter_model.safetensors"))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise RuntimeError(f"adapters in {adapter_dir} do not match the model: unexpected {unexpected}")


def load_merged(adapter_dir: str, base_loader):
    """A plain model from a LoRA checkpoint: base_loader(base path) with the adapters merged in."""
    from peft import PeftConfig, PeftModel
    base_path = PeftConfig.from_pretrained(adapter_dir).base_model_name_or_path
    model = PeftModel.from_pretrained(base_loader(base_path), adapter_dir)
    return model.merge_and_unload()


@torch.no_grad()
def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """The effective weights (base + scaled adapter product) under the base model's own names.

    Computed beside the model, never by merging into it: merge_adapter/unmerge_adapter round-trips
    change the frozen base weights by rounding, and the base must stay bit-identical.
    """
    if not is_peft(model):
        return {k: v.detach() for k, v in model.state_dict().items()}
    base = model.get_base_model()
    out = {k.replace(".base_layer.", "."): v.detach() for k, v in base.state_dict().items() if "lora_" not in k}
    for name, module in base.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "get_delta_weight"):
            for adapter in module.active_adapters:
                key = f"{name}.weight"
                out[key] = out[key] + module.get_delta_weight(adapter).to(out[key].dtype)
    return out
