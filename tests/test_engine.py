import pytest
import torch

from igrpo_core.engine import SamplingParams, TransformersEngine, cut_at_eos, left_pad
from igrpo_core.models import load_model
from igrpo_core.prompts import render_prompt
from igrpo_core.trainer import sequence_logps


@pytest.fixture(scope="module")
def engine(tiny_model_path, tiny_tokenizer):
    torch.set_num_threads(1)
    model = load_model(tiny_model_path, tiny_tokenizer, device=torch.device("cpu"), dtype=torch.float32)
    return TransformersEngine(model, tiny_tokenizer, batch_size=16)


def prompts(tok, n=5):
    return [render_prompt(tok, f"Compute {i}+{i * 3}*2.", None) for i in range(1, n + 1)]


def test_pad_is_not_eos(engine):
    assert engine.pad_id not in engine.eos_ids


def test_cut_at_eos_keeps_the_eos_and_drops_the_rest():
    assert cut_at_eos([5, 6, 2, 0, 0], {2}) == ([5, 6, 2], "stop")
    assert cut_at_eos([5, 6, 7], {2}) == ([5, 6, 7], "length")


def test_left_pad_aligns_prompts_right():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0, device="cpu")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_seeded_sampling_is_reproducible_and_grouped(engine, tiny_tokenizer):
    p = prompts(tiny_tokenizer)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=40, seed=123)
    a, b = engine.generate(p, params), engine.generate(p, params)
    assert [c.ids for c in a] == [c.ids for c in b]
    assert [c.prompt_index for c in a] == [i for i in range(5) for _ in range(3)]
    c = engine.generate(p, SamplingParams(n=3, temperature=1.0, max_new_tokens=40, seed=124))
    assert [x.ids for x in a] != [x.ids for x in c]


def test_completions_end_at_eos_with_eos_included(engine, tiny_tokenizer):
    out = engine.generate(prompts(tiny_tokenizer), SamplingParams(n=4, max_new_tokens=60, seed=0))
    for c in out:
        eos_positions = [i for i, t in enumerate(c.ids) if t in engine.eos_ids]
        if c.finish_reason == "stop":
            assert eos_positions == [len(c.ids) - 1]
        else:
            assert eos_positions == [] and len(c.ids) == 60
        assert "<|eos|>" not in c.text  # decoded without special tokens


def test_batch_size_does_not_change_greedy_output(engine, tiny_tokenizer, tiny_model_path):
    p = prompts(tiny_tokenizer, 6)
    params = SamplingParams(n=1, greedy=True, max_new_tokens=40)
    small = TransformersEngine(engine.model, tiny_tokenizer, batch_size=2).generate(p, params)
    big = engine.generate(p, params)
    assert [c.ids for c in small] == [c.ids for c in big]  # left padding does not leak into outputs


def test_trainer_logps_match_the_sampler(engine, tiny_tokenizer):
    """The loss scores completions with the same positions/masking generate used (left padding)."""
    p = prompts(tiny_tokenizer, 4)
    model = engine.model
    ids, mask = left_pad(p, engine.pad_id, "cpu")
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12,
                         pad_token_id=engine.pad_id, eos_token_id=sorted(engine.eos_ids),
                         output_logits=True, return_dict_in_generate=True)
    gen = out.sequences[:, ids.shape[1]:]                                   # (B, T)
    step_logits = torch.stack(out.logits, dim=1).float()                    # (B, T, V)
    ref = torch.log_softmax(step_logits, -1).gather(-1, gen[..., None])[..., 0]
    comps = [cut_at_eos(g, engine.eos_ids)[0] for g in gen.tolist()]
    logp, lmask, _ = sequence_logps(model, p, comps, pad_id=engine.pad_id, device=torch.device("cpu"), amp_dtype=None)
    for i, c in enumerate(comps):
        torch.testing.assert_close(logp[i, : len(c)], ref[i, : len(c)], atol=1e-4, rtol=1e-4)
        assert lmask[i].sum().item() == len(c)


def _copy_with_generation_config(src: str, dst, **settings) -> str:
    import json
    import shutil
    shutil.copytree(src, dst)
    gc_path = dst / "generation_config.json"
    gc_path.write_text(json.dumps({**json.loads(gc_path.read_text()), **settings}))
    return str(dst)


def test_checkpoint_generation_config_does_not_leak_into_sampling(tiny_model_path, tiny_tokenizer, tmp_path):
    """Bug: generate started from the checkpoint's generation_config, so its repetition_penalty,
    no_repeat_ngram_size and min_length changed the samples away from the policy the loss models."""
    dirty_path = _copy_with_generation_config(tiny_model_path, tmp_path / "dirty", repetition_penalty=1.3,
                                              no_repeat_ngram_size=2, min_length=120)
    cpu = torch.device("cpu")
    clean = TransformersEngine(load_model(tiny_model_path, tiny_tokenizer, device=cpu, dtype=torch.float32),
                               tiny_tokenizer, batch_size=16)
    dirty = TransformersEngine(load_model(dirty_path, tiny_tokenizer, device=cpu, dtype=torch.float32),
                               tiny_tokenizer, batch_size=16)
    p = prompts(tiny_tokenizer)
    for params in (SamplingParams(n=3, temperature=0.8, max_new_tokens=40, seed=5),
                   SamplingParams(n=1, greedy=True, max_new_tokens=40)):
        a, b = clean.generate(p, params), dirty.generate(p, params)
        assert [c.ids for c in a] == [c.ids for c in b]
    assert any(c.finish_reason == "stop" for c in b)   # min_length did not hold EOS back


def _fake_vllm(monkeypatch, outputs_for):
    """A stand-in `vllm` module: records what the engine passes, returns scripted token ids."""
    import sys
    import types
    calls = {}

    class LLM:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def generate(self, prompts, sp, use_tqdm=False):
            calls["prompts"], calls["params"] = prompts, sp
            # logprobs=0: one {sampled id: Logprob} per token; scripted as -(position + 1) / 10
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(
                token_ids=t, finish_reason=r,
                logprobs=[{tok: types.SimpleNamespace(logprob=-(j + 1) / 10)} for j, tok in enumerate(t)])
                for t, r in outputs_for(i)]) for i in range(len(prompts))]

    class VSP:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, VSP
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: prompt_token_ids
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return calls


def test_vllm_engine_seeds_never_share_a_noise_stream(monkeypatch, tiny_tokenizer, tiny_model_path):
    """Bug: every prompt got the same seed and vLLM gives sample i seed + i, so sample i of every
    prompt, stage 2 (seed + 1) vs stage 1, and consecutive steps shared noise streams. Now each prompt
    gets its own request seed; the windows [seed, seed + n) of all prompts, stages and steps are disjoint.
    (Checked against a stand-in vllm module: vllm itself is not installed here.)"""
    from igrpo_core.config import Config
    from igrpo_core.engine_vllm import VLLMEngine
    n, P = 4, 6
    calls = _fake_vllm(monkeypatch, lambda i: [([5, 6], "length")] * n)
    eng = VLLMEngine(Config(model_name_or_path=tiny_model_path, rollout_engine="vllm"), tiny_tokenizer)
    windows = []
    for step in range(1, 30):
        call_seed = (0 * 1_000_003 + step * 101) % 2**31      # the trainer's derivation (batch 0)
        for stage_seed in (call_seed, call_seed + 1):          # iGRPO stage 1 and stage 2
            eng.generate([[3]] * P, SamplingParams(n=n, seed=stage_seed))
            sps = calls["params"]
            assert isinstance(sps, list) and len(sps) == P and all(sp.n == n for sp in sps)
            windows += [set(range(sp.seed, sp.seed + n)) for sp in sps]
    seen: set[int] = set()
    for w in windows:
        assert not (w & seen)
        seen |= w


def test_vllm_engine_stops_on_the_shared_eos_set_and_never_appends(monkeypatch, tiny_tokenizer, tiny_model_path,
                                                                 tmp_path):
    """Bug: the stop set came from the tokenizer only, and a vLLM "stop" without a tokenizer EOS
    got a token nobody sampled appended (and trained on). Now the stop set is the generation config's
    EOS ids plus the tokenizer's, and completions hold only sampled tokens."""
    from igrpo_core.config import Config
    from igrpo_core.engine_vllm import VLLMEngine
    path = _copy_with_generation_config(tiny_model_path, tmp_path / "m", eos_token_id=[1, 7])
    scripted = [([5, 7, 9], "stop"), ([5, 6], "stop"), ([5, 1], "stop"), ([5, 6, 8], "length")]
    calls = _fake_vllm(monkeypatch, lambda i: scripted)
    eng = VLLMEngine(Config(model_name_or_path=path, rollout_engine="vllm"), tiny_tokenizer)
    assert eng.eos_ids == {1, 7}
    out = eng.generate([[3]], SamplingParams(n=4, max_new_tokens=10, seed=0))
    assert sorted(calls["params"][0].stop_token_ids) == [1, 7]
    assert [(c.ids, c.finish_reason) for c in out] == [([5, 7], "stop"), ([5, 6], "stop"), ([5, 1], "stop"),
                                                       ([5, 6, 8], "length")]
    # the sampled tokens' processed log-probs (after temperature, top-k, top-p), cut with the ids
    assert calls["init"]["logprobs_mode"] == "processed_logprobs" and calls["params"][0].logprobs == 0
    assert [c.logprobs for c in out] == [[-0.1, -0.2], [-0.1, -0.2], [-0.1, -0.2], [-0.1, -0.2, -0.3]]


def test_vllm_pure_helpers_seeds_and_completion_post_processing():
    """The vLLM engine's seed derivation and post-processing, tested without vllm."""
    from igrpo_core.engine import prompt_seeds
    from igrpo_core.engine_vllm import finish_completion
    assert prompt_seeds(7, 3) == prompt_seeds(7, 3) and len(set(prompt_seeds(7, 64))) == 64
    assert all(0 <= s < 2**62 for s in prompt_seeds(7, 64))
    assert not set(prompt_seeds(7, 64)) & set(prompt_seeds(8, 64))
    assert prompt_seeds(7, 4, offset=2)[:2] == prompt_seeds(7, 4)[2:]          # a shard sees the same seeds
    assert finish_completion((4, 7, 9), "stop", {1, 7}) == ([4, 7], "stop")
    assert finish_completion((4, 5), "stop", {1, 7}) == ([4, 5], "stop")       # nothing appended
    assert finish_completion((4, 5), "length", {1, 7}) == ([4, 5], "length")


def test_samples_do_not_depend_on_batch_size_batch_mates_or_shard(engine, tiny_tokenizer):
    """Per-prompt seeds and per-row noise: a prompt's samples depend on (seed, global prompt index,
    sample index) only, so a shard of a batch (another process) draws exactly what the whole batch would."""
    p = prompts(tiny_tokenizer, 6)
    params = SamplingParams(n=3, max_new_tokens=30, seed=5)
    whole = engine.generate(p, params)
    small = TransformersEngine(engine.model, tiny_tokenizer, batch_size=4).generate(p, params)
    shard = engine.generate(p[4:], SamplingParams(**{**params.__dict__, "prompt_offset": 4}))
    assert [c.ids for c in small] == [c.ids for c in whole]
    assert [c.ids for c in shard] == [c.ids for c in whole[12:]]
    assert len({tuple(c.ids) for c in whole}) > 6                      # it really samples
    other = engine.generate(p, SamplingParams(**{**params.__dict__, "seed": 6}))
    assert [c.ids for c in other] != [c.ids for c in whole]


def test_each_distinct_prompt_is_prefilled_once_with_the_same_samples(engine, tiny_tokenizer):
    """The loop prefills a prompt once and copies its KV cache to its n rows (issue 10): the first
    forward sees the distinct prompts only; samples equal those of one prefill per row, log-probs to
    float rounding. batch_size 16 with n 3 also splits a prompt's samples across two chunks."""
    from igrpo_core.engine import distinct_rows
    assert distinct_rows([3, 3, 5, 5, 5, 3]) == ([3, 5, 3], [0, 0, 1, 1, 1, 2])
    p, params = prompts(tiny_tokenizer, 7), SamplingParams(n=3, temperature=0.8, max_new_tokens=20, seed=9)
    rows, model = [], engine.model
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: rows.append(kw["input_ids"].shape), with_kwargs=True)
    try:
        shared = engine.generate(p, params)
        first_shared = [r for r in rows if r[1] > 1]                       # prefill calls: (rows, prompt width)
        rows.clear()
        engine.share_prefill = False
        per_row = engine.generate(p, params)
        first_per_row = [r for r in rows if r[1] > 1]
    finally:
        engine.share_prefill = True
        hook.remove()
    assert [r[0] for r in first_shared] == [6, 2] and [r[0] for r in first_per_row] == [16, 5]  # 7 prompts x 3
    assert [c.ids for c in shared] == [c.ids for c in per_row]
    assert [c.finish_reason for c in shared] == [c.finish_reason for c in per_row]
    diffs = [abs(a - b) for x, y in zip(shared, per_row) for a, b in zip(x.logprobs, y.logprobs)]
    assert max(diffs) < 1e-5 and len(diffs) > 100


def test_buffered_kv_cache_gives_dynamic_caches_samples_and_writes_in_place(engine, tiny_tokenizer, monkeypatch):
    """The decode loop's cache writes each step into preallocated buffers (no per-step copy of the
    whole cache, issue 10) and yields exactly the samples and log-probs of transformers' DynamicCache;
    the prefill's reorder to the samples' rows moves it into fresh buffers once. (The copying cache:
    by default a prompt's KV is held once, tests/test_kvcache.py.)"""
    from transformers import DynamicCache

    from igrpo_core import kvcache
    monkeypatch.setattr(engine, "share_prefix_kv", False)
    p, params = prompts(tiny_tokenizer, 5), SamplingParams(n=3, temperature=0.9, max_new_tokens=24, seed=4)
    caches, real = [], kvcache.buffered

    def recording(model, capacity):
        caches.append(real(model, capacity))
        return caches[-1]

    monkeypatch.setattr(kvcache, "buffered", recording)
    buffered = engine.generate(p, params)
    monkeypatch.setattr(kvcache, "buffered", lambda model, capacity: DynamicCache(config=model.config))
    dynamic = engine.generate(p, params)
    assert [(c.ids, c.logprobs) for c in buffered] == [(c.ids, c.logprobs) for c in dynamic]
    layer = caches[0].layers[0]
    assert type(layer).__name__ == "BufferedLayer" and layer.keys.shape[-2] > 10
    assert layer.keys.data_ptr() == layer._kbuf.data_ptr() and layer.keys.shape[0] == 15   # 5 prompts x 3 rows
    assert layer._kbuf.shape[-2] == layer.capacity   # one buffer of the planned capacity, never regrown
