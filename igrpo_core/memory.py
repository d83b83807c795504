"""GPU memory estimate for one training run, from architecture facts alone (no weights).

An `Arch` holds what a model's config.json says about its shape; `arch_from_hf_config` reads one
(decoder-only Llama/Qwen2 stacks exactly, Nemotron-H's hybrid Mamba-2/attention/MLP pattern
approximately), `PAPER_ARCHS` holds the public config.json values of the paper's Table 1 models,
and `estimate` turns an Arch plus a Config into bytes per device for one device, for N devices
under FSDP (params, grads and optimizer state sharded) and under DDP (replicated).

Precision assumed (the mode the trainer is moving to, issue 8 fix 1): parameters, gradients and
both AdamW moments in fp32 (16 bytes/param, no separate master copy because the parameters are the
master), compute under bf16 autocast. Activations are counted as the tensors autograd keeps per
token per layer with SDPA/flash attention (no T^2 term): fp32 for the residual stream and RMSNorm
(params are fp32, so the residual stream is too), bf16 for matmul inputs. These are estimates of
the order of magnitude, good to +-30%; allocator fragmentation, CUDA context (~0.5-1 GB),
NCCL buffers and temporary workspaces are left out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

GIB = 2 ** 30
FP32, BF16 = 4, 2


@dataclass(frozen=True)
class Arch:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int | None = None        # None: hidden // heads
    qkv_bias: bool = False             # Qwen2 has q/k/v biases
    gated_mlp: bool = True             # SwiGLU (3 matrices) vs up/down with relu^2 (2 matrices)
    pattern: str | None = None         # Nemotron-H hybrid_override_pattern: M mamba, * attention, - MLP
    mamba: dict = field(default_factory=dict)  # heads, head_dim, d_state, n_groups, conv_kernel, chunk_size
    public_params: int | None = None   # the published parameter count, when known
    note: str = ""                     # source and caveats

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def layer_kinds(self) -> dict[str, int]:
        """Number of blocks of each kind: "decoder" (attention + MLP) or hybrid "mamba"/"attention"/"mlp"."""
        if not self.pattern:
            return {"decoder": self.layers}
        return {"mamba": self.pattern.count("M"), "attention": self.pattern.count("*"),
                "mlp": self.pattern.count("-")}


def arch_from_hf_config(cfg: dict, note: str = "", public_params: int | None = None) -> Arch:
    """An Arch from a config.json dict (llama, qwen2, nemotron_h)."""
    common = dict(hidden=cfg["hidden_size"], intermediate=cfg["intermediate_size"],
                  layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
                  kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
                  vocab=cfg["vocab_size"], tied=bool(cfg.get("tie_word_embeddings", False)),
                  note=note, public_params=public_params)
    if cfg.get("model_type") == "nemotron_h":
        pattern = cfg["hybrid_override_pattern"]
        if len(pattern) != cfg["num_hidden_layers"] or set(pattern) - set("M*-"):
            raise ValueError(f"unsupported hybrid_override_pattern {pattern!r}")
        mamba = dict(heads=cfg["mamba_num_heads"], head_dim=cfg["mamba_head_dim"], d_state=cfg["ssm_state_size"],
                     n_groups=cfg["n_groups"], conv_kernel=cfg["conv_kernel"], chunk_size=cfg.get("chunk_size", 256))
        return Arch(**common, head_dim=cfg.get("attention_head_dim") or cfg.get("head_dim"), gated_mlp=False,
                    pattern=pattern, mamba=mamba)
    if cfg.get("model_type") not in ("llama", "qwen2", "mistral"):
        raise ValueError(f"model_type {cfg.get('model_type')!r}: only llama/qwen2/mistral/nemotron_h are modelled")
    return Arch(**common, head_dim=cfg.get("head_dim"), qkv_bias=cfg.get("model_type") == "qwen2",
                gated_mlp=True)


def arch_from_dir(path: str | Path) -> Arch | None:
    """Read a local model directory's config.json (no weights); None if there is none."""
    p = Path(path) / "config.json"
    if not p.is_file():
        return None
    return arch_from_hf_config(json.loads(p.read_text()), note=f"read from {p}")


# --- parameter counts --------------------------------------------------------------------------

def _attn_params(a: Arch) -> int:
    q, kv = a.heads * a.hd, a.kv_heads * a.hd
    bias = (q + 2 * kv) if a.qkv_bias else 0
    return a.hidden * (q + 2 * kv) + bias + q * a.hidden


def _mlp_params(a: Arch) -> int:
    return (3 if a.gated_mlp else 2) * a.hidden * a.intermediate


def _mamba_dims(a: Arch) -> tuple[int, int, int]:
    """(d_inner, conv channels, in_proj width) of a Mamba-2 mixer."""
    m = a.mamba
    d_inner = m["heads"] * m["head_dim"]
    conv_ch = d_inner + 2 * m["n_groups"] * m["d_state"]
    return d_inner, conv_ch, d_inner + conv_ch + m["heads"]  # z, xBC, dt


def _mamba_params(a: Arch) -> int:
    d_inner, conv_ch, proj = _mamba_dims(a)
    conv = conv_ch * a.mamba["conv_kernel"] + conv_ch          # depthwise conv weight + bias
    return a.hidden * proj + conv + 3 * a.mamba["heads"] + d_inner + d_inner * a.hidden  # A_log, D, dt_bias; norm


def layer_params(a: Arch, kind: str) -> int:
    """Parameters of one block of `kind`, norms included."""
    h = a.hidden
    return {"decoder": lambda: _attn_params(a) + _mlp_params(a) + 2 * h,
            "attention": lambda: _attn_params(a) + h,
            "mlp": lambda: _mlp_params(a) + h,
            "mamba": lambda: _mamba_params(a) + h}[kind]()


def param_count(a: Arch) -> int:
    """Total parameters: embeddings, blocks, final norm, LM head unless tied."""
    emb = a.vocab * a.hidden
    blocks = sum(n * layer_params(a, k) for k, n in a.layer_kinds.items())
    return emb * (1 if a.tied else 2) + blocks + a.hidden


# --- activations -------------------------------------------------------------------------------

def layer_activation_bytes(a: Arch, kind: str) -> int:
    """Bytes autograd keeps per token for one block under bf16 autocast with fp32 params.

    RMSNorm keeps its fp32 input and normalised output (2h fp32); each linear keeps its bf16 input;
    SDPA keeps roped q, k, v and its output; SwiGLU keeps gate, up, silu(gate) and their product.
    """
    h, q, kv, i = a.hidden, a.heads * a.hd, a.kv_heads * a.hd, a.intermediate
    attn = FP32 * 2 * h + BF16 * (h + 2 * q + 2 * kv)
    mlp = FP32 * 2 * h + BF16 * (h + (4 if a.gated_mlp else 2) * i)
    if kind == "decoder":
        return attn + mlp
    if kind == "attention":
        return attn
    if kind == "mlp":
        return mlp
    # Mamba-2 (approximate): in_proj output, conv output before/after SiLU, scan output, gated
    # norm (fp32), out_proj input, and the chunked scan's per-chunk states (fp32) spread per token.
    d_inner, conv_ch, proj = _mamba_dims(a)
    m = a.mamba
    states = m["heads"] * m["head_dim"] * m["d_state"] // m["chunk_size"]
    return FP32 * (2 * h + 2 * d_inner + states) + BF16 * (h + proj + 2 * conv_ch + 2 * d_inner)


def activation_bytes(a: Arch, tokens: int, checkpointing: bool) -> int:
    """Activations for `tokens` tokens of one micro-batch (sum over blocks).

    With per-block gradient checkpointing only each block's fp32 input is kept, plus one block's
    full activations while it is recomputed in backward.
    """
    kinds = a.layer_kinds
    if not checkpointing:
        return tokens * sum(n * layer_activation_bytes(a, k) for k, n in kinds.items())
    largest = max(layer_activation_bytes(a, k) for k in kinds)
    return tokens * (a.layers * FP32 * a.hidden + largest)


CHUNK_ELEMENTS = 1 << 23   # chunked.CHUNK_ELEMENTS: logits per chunk of the chunked log-probs


def logits_bytes(a: Arch, batch: int, completion_tokens: int, chunked: bool = False) -> int:
    """Logits for completion positions only (logits_to_keep = T + 1). Unchunked: the bf16 lm_head
    output plus the fp32 log-softmax its backward keeps. Chunked (the trainer's path for a plain
    linear head): two fp32 buffers of at most CHUNK_ELEMENTS logits (logits and their exponentials)
    and the bf16 lm_head output of one chunk, plus a logsumexp per token."""
    tokens = batch * (completion_tokens + 1)
    if chunked:
        return min(tokens * a.vocab, CHUNK_ELEMENTS) * (BF16 + 2 * FP32) + tokens * FP32
    return tokens * a.vocab * (BF16 + FP32)


def kv_cache_bytes_per_token(a: Arch, elt: int) -> int:
    """KV cache per token across attention layers (Mamba layers hold a fixed-size state instead)."""
    n_attn = a.layer_kinds.get("decoder", 0) + a.layer_kinds.get("attention", 0)
    return 2 * n_attn * a.kv_heads * a.hd * elt


# --- the estimate ------------------------------------------------------------------------------

def estimate(a: Arch, *, micro_batch: int, prompt_len: int, completion_len: int, generation_batch: int,
             n_devices: int = 1, strategy: str = "single", checkpointing: bool = False,
             reference_model: bool = False, kv_elt: int = FP32, chunked_logits: bool = False) -> dict[str, int]:
    """Bytes per device of each component, plus `train_peak` and `rollout_peak`.

    strategy: "single" (1 device), "ddp" (full replica per device) or "fsdp" (params, grads and
    optimizer state sharded over n_devices; the gathered blocks are counted as a transient of the
    two largest units, one in use and one prefetched).
    chunked_logits: the trainer's chunked log-probs (a plain linear head) instead of full logits.
    """
    if strategy not in ("single", "ddp", "fsdp"):
        raise ValueError(f"strategy {strategy!r}")
    P = param_count(a)
    shard = n_devices if strategy == "fsdp" else 1
    out = {"params": FP32 * P // shard, "grads": FP32 * P // shard, "optimizer": 2 * FP32 * P // shard}
    out["reference"] = FP32 * P // shard if reference_model else 0
    biggest_unit = max([layer_params(a, k) for k in a.layer_kinds] + [a.vocab * a.hidden])
    if strategy == "fsdp":  # all-gathered fp32 units, then autocast's bf16 casts of the one in use
        out["gathered_params"] = 2 * FP32 * biggest_unit + BF16 * biggest_unit
    else:  # autocast's bf16 weight casts, kept for backward (one block at a time when recomputing)
        out["gathered_params"] = BF16 * (biggest_unit if checkpointing else P)
    tokens = micro_batch * (prompt_len + completion_len)
    out["activations"] = activation_bytes(a, tokens, checkpointing)
    out["logits"] = logits_bytes(a, micro_batch, completion_len, chunked=chunked_logits)
    state = out["params"] + out["optimizer"] + out["reference"]
    out["train_peak"] = state + out["grads"] + out["gathered_params"] + out["activations"] + out["logits"]
    # Rollouts (transformers engine): grads are freed (zero_grad set_to_none); the KV cache holds
    # generation_batch sequences of prompt + completion tokens.
    out["kv_cache"] = generation_batch * (prompt_len + completion_len) * kv_cache_bytes_per_token(a, kv_elt)
    full_weights = FP32 * P if strategy == "fsdp" else 0  # generate() needs the unsharded model
    out["rollout_peak"] = state + full_weights + out["kv_cache"]
    return out


def gib(n: int) -> str:
    return f"{n / GIB:8.1f} GiB"
