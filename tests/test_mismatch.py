"""Engine vs trainer log-probs: the mismatch metrics and TRL's importance-sampling correction, on
hand-computed values, then end to end on the tiny model (fp32, transformers engine: mismatch ~ 0)."""
import math

import pytest
import torch

from conftest import small_config
from igrpo_core import losses, records, trainer as T
from igrpo_core.config import Config
from igrpo_core.engine import SamplingParams, TransformersEngine
from igrpo_core.igrpo import Rollout, merge_groups
from igrpo_core.logprobs import sequence_logps
from igrpo_core.mismatch import MismatchMeter, importance_weights, observe, pad_logps
from igrpo_core.models import load_model
from igrpo_core.options import IS_METRICS, METRIC_COLUMNS, MISMATCH_METRICS
from igrpo_core.prompts import render_prompt

# Two sequences, three columns; row 1's last column is padding with a garbage engine value (9.0)
# that must not count. d = old - engine = [[0.5, -1.0, 0.0], [0.0, 1.3, pad]].
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -4.0]])
ENG = torch.tensor([[-1.5, -1.0, -0.5], [-0.3, -2.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
E = math.exp


def weights(mode, **kw):
    w, ratio = importance_weights(OLD, ENG, MASK, mode=mode, **kw)
    return w.tolist(), ratio.tolist()


def close(a, b):
    torch.testing.assert_close(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                               rtol=1e-6, atol=1e-6)


def test_token_modes_truncate_or_zero_each_token_above_the_cap():
    w, ratio = weights("token_truncate", clip_max=3.0)
    close(ratio, [[E(0.5), E(-1.0), 1.0], [1.0, E(1.3), 1.0]])          # padding: log-ratio 0, ratio 1
    close(w, [[E(0.5), E(-1.0), 1.0], [1.0, 3.0, 1.0]])                 # e^1.3 = 3.67 truncated to 3
    w, _ = weights("token_mask", clip_max=3.0)
    close(w, [[E(0.5), E(-1.0), 1.0], [1.0, 0.0, 1.0]])                 # e^1.3 > 3: masked
    w, _ = weights("token_truncate", clip_max=3.0, clip_min=0.5)
    close(w, [[E(0.5), 0.5, 1.0], [1.0, 3.0, 1.0]])                     # e^-1 = 0.37 raised to 0.5
    w, _ = weights("token_mask", clip_max=3.0, clip_min=0.5)
    close(w, [[E(0.5), 0.0, 1.0], [1.0, 0.0, 1.0]])
    w, _ = weights("token_truncate", clip_max=None)                     # no bounds: the raw ratio
    close(w, [[E(0.5), E(-1.0), 1.0], [1.0, E(1.3), 1.0]])


def test_sequence_modes_use_the_sum_of_the_completion_log_ratios():
    w, ratio = weights("sequence_truncate", clip_max=3.0)
    close(ratio, [[E(0.5 - 1.0)], [E(1.3)]])                            # (B, 1): sums -0.5 and 1.3, not means
    close(w, [[E(-0.5)], [3.0]])
    w, _ = weights("sequence_mask", clip_max=3.0)
    close(w, [[E(-0.5)], [0.0]])                                        # the whole of row 1 is dropped
    w, _ = weights("sequence_mask", clip_max=4.0)
    close(w, [[E(-0.5)], [E(1.3)]])
    w, _ = weights("sequence_truncate", clip_max=3.0, clip_min=0.7)
    close(w, [[0.7], [3.0]])                                            # e^-0.5 = 0.61 raised to 0.7


def test_the_cap_keeps_ratios_at_or_below_it():
    old, eng, mask = torch.tensor([[math.log(2.9), math.log(3.1)]]), torch.zeros(1, 2), torch.ones(1, 2)
    w, _ = importance_weights(old, eng, mask, mode="token_mask", clip_max=3.0)
    close(w.tolist(), [[2.9, 0.0]])
    w, _ = importance_weights(old, eng, mask, mode="token_truncate", clip_max=3.0)
    close(w.tolist(), [[2.9, 3.0]])
    with pytest.raises(ValueError, match="vllm_importance_sampling_mode"):
        importance_weights(old, eng, mask, mode="token_clip")


def test_meter_is_token_weighted_over_micro_batches_and_matches_a_hand_computation():
    meter = MismatchMeter()
    observe(meter, OLD, [[-1.5, -1.0, -0.5], [-0.3, -2.0]], MASK, correction=True, mode="token_truncate",
            clip_max=3.0, clip_min=None)
    observe(meter, torch.tensor([[-0.3, -8.0]]), [[-0.1]], torch.tensor([[1.0, 0.0]]), correction=True,
            mode="token_truncate", clip_max=3.0, clip_min=None)
    d = [0.5, -1.0, 0.0, 0.0, 1.3, -0.2]                                 # the 6 completion tokens
    m = meter.result()
    assert set(m) == set(MISMATCH_METRICS + IS_METRICS)
    assert m["mismatch_mean_abs"] == pytest.approx(sum(map(abs, d)) / 6, rel=1e-6)
    assert m["mismatch_max_abs"] == pytest.approx(1.3, rel=1e-6)
    assert m["mismatch_kl"] == pytest.approx(sum(E(x) - 1 - x for x in d) / 6, rel=1e-5)
    w = [min(E(x), 3.0) for x in d]
    assert m["is_ratio_mean"] == pytest.approx(sum(w) / 6, rel=1e-6)
    assert (m["is_ratio_min"], m["is_ratio_max"]) == (pytest.approx(E(-1.0)), pytest.approx(3.0))
    assert m["is_clipped_frac"] == pytest.approx(1 / 6)


def test_meter_over_processes_reports_what_one_process_would():
    """Each process sees part of the batch; gathered, they report the whole batch's mean, max and min."""
    kw = dict(correction=True, mode="token_mask", clip_max=3.0, clip_min=None)
    one, a, b = MismatchMeter(), MismatchMeter(), MismatchMeter()
    rows = [[-1.5, -1.0, -0.5], [-0.3, -2.0]]
    observe(one, OLD, rows, MASK, **kw)
    observe(a, OLD[:1], rows[:1], MASK[:1], **kw)
    observe(b, OLD[1:], rows[1:], MASK[1:], **kw)
    want = one.result()
    for meter in (a, b):   # a stand-in Dist.gather: both processes' parts, in rank order
        got = meter.result(lambda part: [a._sums(), b._sums()])
        assert got == pytest.approx(want, rel=1e-12)
    assert a.result()["mismatch_max_abs"] == pytest.approx(1.0) and want["mismatch_max_abs"] == pytest.approx(1.3)
    assert want["is_ratio_min"] == 0.0 and want["is_ratio_max"] == pytest.approx(E(0.5))


def test_sequence_mode_stats_count_sequences_and_no_engine_logps_means_no_metrics():
    meter = MismatchMeter()
    w = observe(meter, OLD, [[-1.5, -1.0, -0.5], [-0.3, -2.0]], MASK, correction=True, mode="sequence_mask",
                clip_max=3.0, clip_min=None)
    assert w.shape == (2, 1)
    m = meter.result()
    assert (m["is_ratio_min"], m["is_ratio_max"], m["is_clipped_frac"]) == (0.0, pytest.approx(E(-0.5)), 0.5)
    empty = MismatchMeter()
    assert observe(empty, OLD, None, MASK, correction=False, mode="sequence_mask", clip_max=3.0, clip_min=None) is None
    assert set(empty.result().values()) == {None}
    with pytest.raises(ValueError, match="sampling log-probs"):
        observe(empty, OLD, None, MASK, correction=True, mode="sequence_mask", clip_max=3.0, clip_min=None)
    # correction off: the metric is still measured, no weight is returned
    assert observe(empty, OLD, [[0.0] * 3, [0.0] * 2], MASK, correction=False, mode="token_mask", clip_max=3.0,
                   clip_min=None) is None
    assert empty.result()["mismatch_max_abs"] == pytest.approx(2.0) and empty.result()["is_ratio_mean"] is None
    assert pad_logps([[1.0], [2.0, 3.0]], 3, "cpu").tolist() == [[1.0, 0.0, 0.0], [2.0, 3.0, 0.0]]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_policy_loss_multiplies_the_surrogate_not_the_kl(loss_type):
    torch.manual_seed(0)
    logp = (-torch.rand(3, 4) * 2).requires_grad_()
    old, ref = logp.detach() + 0.1 * torch.randn(3, 4), logp.detach() + 0.1 * torch.randn(3, 4)
    adv, mask = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([[1.0] * 4, [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    kw = dict(loss_type=loss_type, max_completion_length=4, ref_logp=ref, beta=0.1, num_items=9)
    for w in (torch.rand(3, 4) * 2, torch.rand(3, 1) * 2):
        got, _ = losses.policy_loss(logp, old, adv, mask, is_weight=w, **kw)
        want, _ = losses.reference_policy_loss(logp, old, adv, mask, is_weight=w, **kw)
        torch.testing.assert_close(got, want)
        g1, = torch.autograd.grad(got, logp)
        g2, = torch.autograd.grad(want, logp)
        torch.testing.assert_close(g1, g2)
    # by hand: on-policy (ratio 1), advantage 1, grpo: loss = -mean_t w_t; the KL (0 here) is not weighted
    one = torch.zeros(1, 3)
    loss, _ = losses.policy_loss(one, None, torch.ones(1), torch.ones(1, 3), is_weight=torch.tensor([[2.0, 0.5, 0.0]]))
    assert loss.item() == pytest.approx(-2.5 / 3)
    with pytest.raises(ValueError, match="is_weight"):
        losses.policy_loss(one, None, torch.ones(1), torch.ones(1, 3), is_weight=torch.ones(1, 2))


@pytest.fixture(scope="module")
def engine(tiny_model_path, tiny_tokenizer):
    torch.set_num_threads(1)
    model = load_model(tiny_model_path, tiny_tokenizer, device=torch.device("cpu"), dtype=torch.float32)
    return TransformersEngine(model, tiny_tokenizer, batch_size=16)


def _engine_vs_trainer(engine, tok, decode="loop", **params):
    engine.decode = decode
    prompts = [render_prompt(tok, f"Compute {i}+{i * 3}*2.", None) for i in range(1, 5)]
    comps = engine.generate(prompts, SamplingParams(n=2, max_new_tokens=30, seed=5, **params))
    engine.decode = "loop"
    logp, mask, _ = sequence_logps(engine.model, [prompts[c.prompt_index] for c in comps], [c.ids for c in comps],
                                   pad_id=engine.pad_id, device=torch.device("cpu"), amp_dtype=None,
                                   temperature=params.get("temperature", 1.0), chunked=True)
    assert all(len(c.logprobs) == len(c.ids) for c in comps)
    return comps, logp, pad_logps([c.logprobs for c in comps], logp.shape[1], "cpu"), mask.bool()


@pytest.mark.parametrize("decode", ["loop", "generate"])
def test_transformers_engine_logprobs_are_the_trainers_at_the_temperature(engine, tiny_tokenizer, decode):
    comps, trainer, eng, keep = _engine_vs_trainer(engine, tiny_tokenizer, decode, temperature=0.7)
    d = (trainer - eng)[keep].abs()
    assert d.max().item() < 1e-4 and d.mean().item() < 1e-5, (d.max().item(), d.mean().item())
    assert eng[keep].min().item() < -1e-3   # real log-probs, not zeros: the comparison can fail


def test_top_k_logprobs_are_renormalised_over_the_kept_tokens(engine, tiny_tokenizer):
    """With top-k the engine reports log p - log S (S: the kept mass), the trainer log p: d = log S <= 0."""
    _, trainer, eng, keep = _engine_vs_trainer(engine, tiny_tokenizer, temperature=1.0, top_k=2)
    d = (trainer - eng)[keep]
    assert d.max().item() < 1e-5 and d.min().item() < -1e-3
    greedy = engine.generate([[1, 2, 3]], SamplingParams(greedy=True, max_new_tokens=3))
    assert greedy[0].logprobs is None


def test_merge_groups_carries_the_engine_logprobs():
    def ro(tag):
        return Rollout([[1]] * 2, [[5], [6, 7]], torch.zeros(2, dtype=torch.float64), torch.zeros(2),
                       group_of=[0, 1], num_groups=2, stats={"reward_mean": 0.0},
                       sampling_logps=[[tag], [tag, tag]])
    merged = merge_groups([ro(-1.0), ro(-2.0)], [(0, 1), (1, 0)])
    assert merged.sampling_logps == [[-1.0, -1.0], [-2.0]]
    missing = ro(-1.0)
    missing.sampling_logps = None
    assert merge_groups([missing, ro(-2.0)], [(0, 1)]).sampling_logps is None


def test_config_uses_trls_names_defaults_and_the_deprecated_cap():
    c = Config()
    assert (c.vllm_importance_sampling_correction, c.vllm_importance_sampling_mode,
            c.vllm_importance_sampling_clip_max, c.vllm_importance_sampling_clip_min) == (False, "sequence_mask", 3.0, None)
    c = Config(vllm_importance_sampling_cap=2.0)
    assert (c.vllm_importance_sampling_clip_max, c.vllm_importance_sampling_cap) == (2.0, None)
    assert c.replace(vllm_importance_sampling_clip_max=5.0).vllm_importance_sampling_clip_max == 5.0
    for bad in (dict(vllm_importance_sampling_mode="token"), dict(vllm_importance_sampling_clip_min=3.0),
                dict(vllm_importance_sampling_clip_max=0.0), dict(vllm_importance_sampling_correction="yes")):
        with pytest.raises(ValueError, match="vllm_importance_sampling"):
            Config(**bad)
    assert set(MISMATCH_METRICS + IS_METRICS) <= set(METRIC_COLUMNS)


def test_zero_mismatch_correction_leaves_loss_and_gradients_unchanged(engine, tiny_tokenizer):
    """Engine log-probs equal to the trainer's: every mode's weight is exactly 1, so loss and gradients are
    bit-identical to the uncorrected ones."""
    comps, _, _, _ = _engine_vs_trainer(engine, tiny_tokenizer, temperature=0.7)
    prompts = [render_prompt(tiny_tokenizer, f"Compute {i}+{i * 3}*2.", None) for i in range(1, 5)]
    args = ([prompts[c.prompt_index] for c in comps], [c.ids for c in comps])
    adv = torch.linspace(-1, 1, len(comps))
    results = []
    for mode in (None, "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
        engine.model.zero_grad()
        logp, mask, _ = sequence_logps(engine.model, *args, pad_id=engine.pad_id, device=torch.device("cpu"),
                                       amp_dtype=None, temperature=0.7, chunked=True)
        w = None if mode is None else importance_weights(logp.detach(), logp.detach(), mask, mode=mode)[0]
        loss, _ = losses.policy_loss(logp, None, adv, mask, is_weight=w)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in engine.model.parameters() if p.grad is not None]))
    for loss, grads in results[1:]:
        assert torch.equal(loss, results[0][0]) and all(torch.equal(a, b) for a, b in zip(grads, results[0][1]))
    assert any(g.abs().sum() > 0 for g in results[0][1])


@pytest.mark.parametrize("algo,mode", [("grpo", "token_truncate"), ("igrpo", "sequence_mask")])
def test_short_run_measures_near_zero_mismatch_in_fp32(tmp_path, algo, mode):
    """Transformers engine, fp32: the engine's sampling log-probs are the trainer's (KV-cached decode vs one
    full forward differ only by float rounding); the correction then changes the loss by ~nothing."""
    off = records.read_metrics(T.train(small_config(tmp_path / "off", algo=algo, dtype="float32")))
    on = records.read_metrics(T.train(small_config(tmp_path / "on", algo=algo, dtype="float32",
                                                   vllm_importance_sampling_correction=True,
                                                   vllm_importance_sampling_mode=mode)))
    for m in (off, on):
        assert m["mismatch_mean_abs"].max() < 1e-5 and m["mismatch_max_abs"].max() < 1e-4
        assert 0 <= m["mismatch_kl"].min() and m["mismatch_kl"].max() < 1e-9
    assert off["is_ratio_mean"].null_count() == off.height                 # correction off: no weights
    assert (on["is_ratio_min"] > 1 - 1e-3).all() and (on["is_ratio_max"] < 1 + 1e-3).all()
    assert (on["is_clipped_frac"] == 0).all()
    first_off, first_on = off.row(0, named=True), on.row(0, named=True)   # same samples at step 1
    assert first_on["mismatch_mean_abs"] == first_off["mismatch_mean_abs"]
    assert first_on["grad_norm"] == pytest.approx(first_off["grad_norm"], rel=1e-4)
    assert first_on["loss"] == pytest.approx(first_off["loss"], abs=1e-4)
