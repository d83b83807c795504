"""The decode loop's sampler: same warping as transformers, same distribution as torch.multinomial.

Statistical tests use a fixed seed, so they are deterministic; their thresholds (p > 1e-3) are what
a correct sampler passes with probability 0.999 for an arbitrary seed, and a sampler off by one
token, or one that ignores top-k/top-p/temperature, fails with p ~ 0 (checked by hand).
"""
import pytest
import torch

from igrpo_core.engine import SamplingParams, TransformersEngine, left_pad, sample_inverse_cdf, warp_logits
from igrpo_core.models import load_model
from igrpo_core.prompts import render_prompt

SETTINGS = [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 5, 1.0), (1.0, 0, 0.8), (0.7, 8, 0.9), (1.3, 3, 0.5), (2.0, 6, 0.7)]


def chi2_pvalue(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson chi-square goodness of fit (regularised gamma); cells expecting < 5 are pooled into one,
    cells expecting 0 are left out (the tests check separately that they are never drawn)."""
    small = (expected > 0) & (expected < 5)
    observed = torch.cat([observed[~small], observed[small].sum()[None]])
    expected = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = expected > 0
    stat = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    df = int(keep.sum()) - 1
    if df == 0:  # one token left (e.g. a small top-p): every draw must be it
        return 1.0 if stat == 0 else 0.0
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat.double() / 2))


def hf_warp(scores, temperature, top_k, top_p):
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)
    procs = LogitsProcessorList()
    if temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k:
        procs.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    return procs(None, scores.clone())


@pytest.mark.parametrize("temperature,top_k,top_p", SETTINGS)
def test_warp_logits_equals_transformers_warpers(temperature, top_k, top_p):
    scores = torch.randn(6, 300, generator=torch.Generator().manual_seed(0)) * 3
    torch.testing.assert_close(warp_logits(scores, temperature, top_k, top_p),
                               hf_warp(scores, temperature, top_k, top_p), rtol=0, atol=0)


@pytest.mark.parametrize("V", [24, 700])   # one block / three blocks, the last one partial
@pytest.mark.parametrize("temperature,top_k,top_p", SETTINGS)
def test_inverse_cdf_sampler_matches_multinomial_distribution(temperature, top_k, top_p, V):
    """Chi-square of 200k inverse-CDF draws against the warped softmax, and against 200k draws of
    torch.multinomial (homogeneity); tokens removed by top-k/top-p are never drawn."""
    torch.manual_seed(1)
    N = 200_000
    logits = torch.randn(1, V) * (2 if V < 100 else 1)                       # (1, V)
    warped = warp_logits(logits, temperature, top_k, top_p).expand(N, V)     # (N, V)
    probs = torch.softmax(warped[:1], -1)[0]                                 # (V,)
    ours = torch.bincount(sample_inverse_cdf(warped), minlength=V).double()
    theirs = torch.bincount(torch.multinomial(torch.softmax(warped, -1), 1)[:, 0], minlength=V).double()
    assert ours[probs == 0].sum() == 0
    assert chi2_pvalue(ours, N * probs.double()) > 1e-3
    assert chi2_pvalue(theirs, N * probs.double()) > 1e-3                    # the test itself is sound
    pooled = (ours + theirs) / 2                                            # two-sample homogeneity
    stat_p = chi2_pvalue(torch.cat([ours, theirs]), torch.cat([pooled, pooled]))
    assert stat_p > 1e-3


def test_inverse_cdf_sampler_rows_are_independent_distributions():
    """Each row samples from its own distribution (a row-mixing bug would put mass on row 0's peak)."""
    torch.manual_seed(2)
    scores = torch.full((2, 5), -float("inf"))
    scores[0, 1], scores[1, 3] = 0.0, 0.0
    draws = sample_inverse_cdf(scores.repeat(500, 1)).view(500, 2)
    assert (draws[:, 0] == 1).all() and (draws[:, 1] == 3).all()


@pytest.fixture(scope="module")
def tiny(tiny_model_path, tiny_tokenizer):
    torch.set_num_threads(1)
    return load_model(tiny_model_path, tiny_tokenizer, device=torch.device("cpu"), dtype=torch.float32)


def test_decode_loop_greedy_equals_generate(tiny, tiny_tokenizer):
    """The loop feeds the model exactly as generate does (cache, positions, pads after EOS)."""
    p = [render_prompt(tiny_tokenizer, f"Compute {i}+{i * 7}.", None) for i in range(1, 7)]
    params = SamplingParams(greedy=True, max_new_tokens=30)
    loop = TransformersEngine(tiny, tiny_tokenizer, batch_size=6).generate(p, params)
    gen = TransformersEngine(tiny, tiny_tokenizer, batch_size=6, decode="generate").generate(p, params)
    assert [(c.ids, c.finish_reason) for c in loop] == [(c.ids, c.finish_reason) for c in gen]


@pytest.mark.parametrize("sampler", ["inverse_cdf", "multinomial"])
def test_decode_loop_gives_generates_samples(tiny, tiny_tokenizer, sampler):
    """The loop and model.generate (with the same per-row draw in a logits processor) give the same
    samples token for token (top-k, top-p, T): the loop feeds the model exactly as generate does."""
    p = [render_prompt(tiny_tokenizer, f"Compute {i}*{i + 2}.", None) for i in range(1, 5)]
    params = SamplingParams(n=3, temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=30, seed=9)
    loop = TransformersEngine(tiny, tiny_tokenizer, batch_size=12, sampler=sampler).generate(p, params)
    gen = TransformersEngine(tiny, tiny_tokenizer, batch_size=12, decode="generate",
                             sampler=sampler).generate(p, params)
    assert [c.ids for c in loop] == [c.ids for c in gen]
    assert len({tuple(c.ids) for c in loop}) > 4                        # it really samples


def test_uniforms_drawn_up_front_are_the_per_step_draws():
    """The loop draws each row's uniforms for all steps at once (issue 10: B calls per generate
    instead of B per step): the same values, in the same order, as one draw per step."""
    from igrpo_core.engine import row_generators, row_uniforms
    once = row_uniforms(row_generators([5, 5, 8], [0, 1, 0]), 40)                       # (3, 40)
    gens = row_generators([5, 5, 8], [0, 1, 0])
    steps = torch.cat([row_uniforms(gens, 1) for _ in range(40)], dim=1)               # (3, 40)
    assert once.dtype == torch.float64 and torch.equal(once, steps)
    assert not torch.equal(once[0], once[1])


def test_decode_loop_first_token_distribution_matches_the_model(tiny, tiny_tokenizer):
    """Many one-token samples of one prompt through the engine vs the model's warped softmax."""
    p = [render_prompt(tiny_tokenizer, "Compute 3+4.", None)]
    params = SamplingParams(n=4000, temperature=0.9, top_k=6, top_p=0.95, max_new_tokens=1, seed=3)
    eng = TransformersEngine(tiny, tiny_tokenizer, batch_size=4000, sampler="inverse_cdf")
    first = torch.tensor([c.ids[0] for c in eng.generate(p, params)])
    ids, mask = left_pad(p, eng.pad_id, "cpu")
    with torch.no_grad():
        logits = tiny(input_ids=ids, attention_mask=mask).logits[:, -1].float()
    probs = torch.softmax(warp_logits(logits, 0.9, 6, 0.95), -1)[0].double()
    counts = torch.bincount(first, minlength=probs.numel()).double()
    assert counts[probs == 0].sum() == 0
    assert chi2_pvalue(counts, 4000 * probs) > 1e-3
