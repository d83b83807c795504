"""Loading policies and tokenizers by the names a Config uses; device and dtype choice; and
`make_engine`, the one place where a Config's `rollout_engine` picks the engine class.

Deliberately left out: datasets (data.load_dataset), quantisation, LoRA, multi-GPU placement.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from igrpo_core import lora


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch sees no CUDA device")
    return torch.device(device)


def weight_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Storage dtype for inference-only models (evaluation, judge, serving): the compute dtype.

    Training never uses this: the trainer keeps fp32 parameters and optimizer state and computes
    under autocast (`autocast_dtype`), because AdamW updates at lr ~1e-6 vanish in bf16 weights.
    """
    if dtype in ("auto", "float32"):
        return torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """Compute dtype for autocast over fp32 weights; None means plain fp32.

    "auto" is bf16 on CUDA and fp32 on CPU; "bfloat16" is bf16 on any device (CPU autocast
    supports it).
    """
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def setup_threads(torch_threads: int | None) -> None:
    if torch_threads:
        torch.set_num_threads(torch_threads)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _check_model_source(name_or_path: str, gguf_file: str | None) -> None:
    """A missing local path is an error now, not a hub lookup that fails obscurely offline."""
    path = Path(name_or_path).expanduser()
    if not path.exists() and (not HUB_ID.match(name_or_path) or name_or_path.startswith(".")):
        hint = ("; `igrpo prepare-model smollm2` creates the SmolLM2 directory (once, offline)"
                if "smollm2" in name_or_path else "")
        raise FileNotFoundError(f"model path not found: {name_or_path}{hint}")
    if gguf_file and path.is_dir() and not (path / gguf_file).is_file():
        raise FileNotFoundError(f"gguf_file {gguf_file!r} not found in {name_or_path}")


def _from_pretrained(cls, name_or_path: str, **kwargs):
    if name_or_path.startswith("~"):  # config files name cache paths like ~/.cache/igrpo/...
        name_or_path = str(Path(name_or_path).expanduser())
    try:
        return cls.from_pretrained(name_or_path, **kwargs)
    except OSError as exc:
        raise OSError(f"could not load {name_or_path!r}: not a local model directory, and the hub is "
                      f"unreachable or has no such model ({exc})") from exc


def load_tokenizer(name_or_path: str, gguf_file: str | None = None):
    from transformers import AutoTokenizer
    _check_model_source(name_or_path, gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tok = _from_pretrained(AutoTokenizer, name_or_path, **kwargs)
    if tok.pad_token_id is None:  # never reuse EOS as pad silently: add a dedicated pad token
        tok.add_special_tokens({"pad_token": "<|igrpo_pad|>"})
    if tok.chat_template is None:  # a base model: prompts.render_prompt falls back to plain text
        warnings.warn(f"tokenizer of {name_or_path} has no chat template; prompts are rendered as plain text")
    return tok


def context_length(name_or_path: str, gguf_file: str | None = None) -> int | None:
    """The model's position limit from its config alone (no weights are read); None if unstated."""
    from transformers import AutoConfig
    _check_model_source(name_or_path, gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    config = _from_pretrained(AutoConfig, name_or_path, **kwargs)
    n = getattr(config, "max_position_embeddings", None)
    return int(n) if n else None


def load_model(name_or_path: str, tokenizer, *, device: torch.device, dtype: torch.dtype,
               gguf_file: str | None = None):
    """A causal LM by path or hub id; a LoRA checkpoint (adapters only) loads as base + merged adapters."""
    from transformers import AutoModelForCausalLM
    _check_model_source(name_or_path, gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if lora.is_adapter_dir(name_or_path):
        model = lora.load_merged(name_or_path, lambda base: _from_pretrained(AutoModelForCausalLM, base, dtype=dtype))
    else:
        model = _from_pretrained(AutoModelForCausalLM, name_or_path, dtype=dtype, **kwargs)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device)


def load_transformers_engine(name_or_path: str, gguf_file: str | None = None, *, device: str = "auto",
                             dtype: str = "auto", batch_size: int = 128):
    """(TransformersEngine, tokenizer) for a local model or hub id, on the resolved device."""
    from igrpo_core.engine import TransformersEngine
    dev = resolve_device(device)
    tok = load_tokenizer(name_or_path, gguf_file)
    model = load_model(name_or_path, tok, device=dev, dtype=weight_dtype(dtype, dev), gguf_file=gguf_file).eval()
    return TransformersEngine(model, tok, batch_size=batch_size), tok


def make_engine(cfg, tokenizer, model=None, *, model_path: str | None = None):
    """The rollout engine a Config asks for.

    transformers: samples with `model` itself (loaded from `model_path` or the config's model when
    not given), so a trainer's updates are seen without a copy. vllm: its own copy of the weights
    at `model_path` (default the config's model); a trainer syncs them after each update.
    """
    path = model_path or cfg.model_name_or_path
    gguf = cfg.gguf_file if path == cfg.model_name_or_path else None
    if cfg.rollout_engine == "vllm":
        from igrpo_core.engine_vllm import VLLMEngine
        return VLLMEngine(cfg.replace(model_name_or_path=path, gguf_file=gguf), tokenizer)
    from igrpo_core.engine import TransformersEngine
    dev = resolve_device(cfg.device)
    if model is None:
        model = load_model(path, tokenizer, device=dev, dtype=weight_dtype(cfg.dtype, dev), gguf_file=gguf).eval()
    # rollouts in the same compute dtype as the loss (autocast over the trainer's fp32 weights)
    return TransformersEngine(model, tokenizer, batch_size=cfg.generation_batch_size,
                              amp_dtype=autocast_dtype(cfg.dtype, dev), sampler=cfg.sampler)
