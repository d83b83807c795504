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
