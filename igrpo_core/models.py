"""Loading policies, tokenizers and datasets by the names a Config uses; device and dtype choice.

Deliberately left out: quantisation, LoRA, multi-GPU placement.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch sees no CUDA device")
    return torch.device(device)


def weight_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Weights stay fp32 under "auto" (bf16 autocast on GPU); "bfloat16" stores bf16 weights."""
    if dtype in ("auto", "float32"):
        return torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    if device.type == "cuda" and dtype == "auto":
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
        raise FileNotFoundError(f"model path not found: {name_or_path}")
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
    if tok.chat_template is None:
        raise ValueError(f"tokenizer of {name_or_path} has no chat template; prompts cannot be rendered")
    return tok


def load_model(name_or_path: str, tokenizer, *, device: torch.device, dtype: torch.dtype,
               gguf_file: str | None = None):
    from transformers import AutoModelForCausalLM
    _check_model_source(name_or_path, gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
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


def load_examples(spec: str, *, tiny_num_problems: int = 4000, limit: int | None = None) -> list[dict]:
    """"tiny:train" / "tiny:heldout" and "words[N]:train|heldout" generate built-in tasks (tiny_num_problems
    rows); anything else goes to data.load_any."""
    if spec.startswith("tiny"):
        from igrpo_core import tinyworld
        split = spec.partition(":")[2] or "train"
        rows = tinyworld.make_split(split, tiny_num_problems)
    elif spec.startswith("words"):  # "words:train", "words1:heldout": see wordproblems
        from igrpo_core import wordproblems
        rows = wordproblems.load_spec(spec, tiny_num_problems)
    else:
        from igrpo_core import data
        rows = data.load_any(spec)
        rows = rows.rows if hasattr(rows, "rows") else rows
    rows = rows[:limit] if limit else rows
    if not rows:
        raise ValueError(f"dataset {spec!r} has no rows")
    return rows
