"""The paper's Table 1 models: Hugging Face ids, preset names and architecture facts (no weights).

The facts are the public config.json values, written down here so `igrpo train --dry_run` can
estimate memory offline. Fine-tunes keep their base model's shape, so where a fine-tune's own
config.json was not at hand the base model's is cited (checked against published parameter
counts by tests/test_dryrun.py):

- DeepSeek-R1-Distill-Qwen-7B and OpenMath-Nemotron-7B are fine-tunes of Qwen2.5-Math-7B;
  OpenReasoning-Nemotron-7B of Qwen2.5-7B-Instruct. All three: Qwen/Qwen2.5-Math-7B and
  Qwen/Qwen2.5-7B-Instruct config.json (hidden 3584, 28 layers, 28 heads / 4 KV heads,
  intermediate 18944, vocab 152064, untied). Qwen2.5-7B has 7,615,616,512 parameters.
- DeepSeek-R1-Distill-Qwen-14B and OpenMath-Nemotron-14B: Qwen/Qwen2.5-14B(-Instruct) config.json
  (hidden 5120, 48 layers, 40 / 8 heads, intermediate 13824, vocab 152064, untied); 14,770,033,664.
- nvidia/Nemotron-H-8B-Base-8K: a hybrid Mamba-2/Transformer, 52 blocks = 24 Mamba-2, 24 MLP
  (relu^2, no gate), 4 self-attention; hidden 4096, FFN 21504, 32 / 8 heads of 128, Mamba 128 heads
  x 64, state 128, 8 groups, conv 4, vocab 131072, untied. The layer order is the published
  pattern of Nemotron-H-4B (pruned from the 8B in width only, same 24/4/24 counts as the 8B's
  config). Counted this way it has 8,100,852,736 parameters, matching the published analysis of
  the checkpoint. Its activation estimate is an approximation (Mamba-2 scan internals).

Values from memory of the public configs, cross-checked against configs of the base models found
with a code/doc search (Qwen2.5-Math-7B, Qwen2.5-7B-Instruct, Qwen2.5-14B-Instruct config.json;
a Nemotron-H-8B config.json walkthrough: hidden 4096, mamba heads 128 x 64, state 128, groups 8,
conv 4, kv heads 8, head dim 128, 24 M / 24 - / 4 *).
"""
from __future__ import annotations

from igrpo_core.memory import Arch, arch_from_hf_config

_QWEN25_7B = dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)
_QWEN25_14B = dict(model_type="qwen2", hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                   num_attention_heads=40, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False)
_NEMOTRON_H_8B = dict(
    model_type="nemotron_h", hidden_size=4096, intermediate_size=21504, num_hidden_layers=52,
    num_attention_heads=32, num_key_value_heads=8, attention_head_dim=128, vocab_size=131072,
    tie_word_embeddings=False, mamba_num_heads=128, mamba_head_dim=64, ssm_state_size=128, n_groups=8,
    conv_kernel=4, chunk_size=128,
    hybrid_override_pattern="M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-")

# preset name -> (Hugging Face id, config.json facts, published parameter count, source note)
PAPER_MODELS: dict[str, tuple[str, dict, int, str]] = {
    "paper-nemotron-h-8b": ("nvidia/Nemotron-H-8B-Base-8K", _NEMOTRON_H_8B, 8_100_852_736,
                            "Nemotron-H-8B-Base-8K config.json; hybrid Mamba-2: APPROXIMATE activations"),
    "paper-r1-distill-qwen-7b": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", _QWEN25_7B, 7_615_616_512,
                                 "shape of its base Qwen2.5-Math-7B config.json"),
    "paper-r1-distill-qwen-14b": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", _QWEN25_14B, 14_770_033_664,
                                  "shape of its base Qwen2.5-14B config.json"),
    "paper-openmath-nemotron-7b": ("nvidia/OpenMath-Nemotron-7B", _QWEN25_7B, 7_615_616_512,
                                   "shape of its base Qwen2.5-Math-7B config.json"),
    "paper-openmath-nemotron-14b": ("nvidia/OpenMath-Nemotron-14B", _QWEN25_14B, 14_770_033_664,
                                    "shape of its base Qwen2.5-14B config.json"),
    "paper-openreasoning-nemotron-7b": ("nvidia/OpenReasoning-Nemotron-7B", _QWEN25_7B, 7_615_616_512,
                                        "shape of its base Qwen2.5-7B-Instruct config.json"),
}

# The paper's six evaluation benchmarks (Table 1), all bundled under data/benchmarks.
PAPER_EVAL_SETS = "aime24,aime25,math500,amc23,minerva,olympiadbench"


def paper_arch(model_name_or_path: str) -> Arch | None:
    """The stored Arch of a Table 1 model by Hugging Face id, or None."""
    for hf_id, facts, params, note in PAPER_MODELS.values():
        if hf_id == model_name_or_path:
            return arch_from_hf_config(facts, note=note, public_params=params)
    return None
