"""Issue 11's options in the rollout composition, through a scripted engine and checked by hand:
drafts under the loss (and their gradient through the real tiny model), multi-round refinement,
the adaptive split's budget, overlong shaping and truncation masks on rows, dynamic sampling's cap."""
import pytest
import torch

from igrpo_core import losses
from igrpo_core.config import Config
from igrpo_core.engine import Completion, SamplingParams
from igrpo_core.igrpo import Rollout, collect_dynamic, collect_grpo, collect_igrpo
from igrpo_core.rewards import build_reward_fns
from tests.test_igrpo import EXAMPLES, ans


class Scripted:
    """Call c, prompt p, sample j -> script[c][p][j]; a text starting "LEN:" ends by the length cap."""

    pad_id = 0

    def __init__(self, script, tokenizer):
        self.script, self.calls, self.tok = script, [], tokenizer

    def generate(self, prompts, params: SamplingParams):
        texts = self.script[len(self.calls)]
        self.calls.append((prompts, params))
        out = []
        for pi in range(len(prompts)):
            for j in range(params.n):
                t = texts[pi][j]
                ids = self.tok(t, add_special_tokens=False)["input_ids"]
                out.append(Completion(pi, ids + ([] if t.startswith("LEN:") else [self.tok.eos_token_id]), t,
                                      "length" if t.startswith("LEN:") else "stop"))
        return out

    def sync_weights(self, model):
        pass




def run_igrpo(tok, script, **over):
    cfg = Config(algo="igrpo", **{"num_generations": 5, "num_drafts": 2, **over})
    eng = Scripted(script, tok)
    return cfg, eng, collect_igrpo(eng, tok, EXAMPLES, cfg, 1, SamplingParams(seed=4), build_reward_fns(cfg))


DRAFTS = [["wrong 4", ans(3)], [ans(7), ans(10)]]        # accuracy: q0 [0, 1], q1 [0, 1]
REFINES = [[ans(3), ans(3), ans(5)], [ans(10), ans(9), ans(9)]]


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_draft_loss_trains_drafts_as_their_own_group_on_the_bare_question(tiny_tokenizer, weight):
    _, eng, ro = run_igrpo(tiny_tokenizer, [DRAFTS, REFINES], draft_loss=True, draft_loss_weight=weight)
    d_prompts = eng.calls[0][0]
    assert len(ro.completion_ids) == 2 * 2 + 2 * 3                         # all N + G samples train
    draft_rows = [r for r in ro.rows if r["stage"] == "draft"]
    d_rewards = torch.tensor([[r["reward"] for r in draft_rows[:2]], [r["reward"] for r in draft_rows[2:]]])
    want = (losses.group_advantages(d_rewards) * weight).reshape(-1)       # over the N drafts only
    assert [r["advantage"] for r in draft_rows] == pytest.approx(want.tolist())
    assert ro.adv[:4].tolist() == pytest.approx(want.tolist())
    assert ro.prompt_ids[:4] == [d_prompts[0]] * 2 + [d_prompts[1]] * 2    # the bare question
    r_rewards = torch.tensor([r["reward"] for r in ro.rows if r["stage"] == "refine"]).view(2, 3)
    assert ro.adv[4:].tolist() == pytest.approx(losses.group_advantages(r_rewards).reshape(-1).tolist())


def test_refine_rounds_refine_the_best_so_far_and_train_the_last_round(tiny_tokenizer):
    # G = 4 over 2 rounds of 2. q0: draft right; q1: drafts wrong, round 1 finds 10, round 2 refines it.
    drafts = [[ans(3), ans(4)], [ans(7), ans(8)]]
    r1 = [[ans(3), ans(3)], [ans(9), ans(10)]]
    r2 = [[ans(3), ans(6)], [ans(10), ans(10)]]
    cfg, eng, ro = run_igrpo(tiny_tokenizer, [drafts, r1, r2], num_generations=6, refine_rounds=2)
    assert len(eng.calls) == 3 and [c[1].n for c in eng.calls] == [2, 2, 2]
    q1_round2 = tiny_tokenizer.decode(eng.calls[2][0][1])
    assert "\\boxed{10}" in q1_round2 and "\\boxed{7}" not in q1_round2    # the refinement that beat the draft
    assert "\\boxed{3}" in tiny_tokenizer.decode(eng.calls[2][0][0])       # a tie keeps the anchor (the draft)
    refine = [r for r in ro.rows if r["stage"] == "refine"]
    assert [r["refine_round"] for r in refine] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [r["draft_reward"] for r in refine if r["refine_round"] == 2 and r["group_index"] == 1] == [2.0, 2.0]
    assert all((r["advantage"] is None) == (r["refine_round"] == 1) for r in refine)  # "last"
    assert len(ro.completion_ids) == 4
    _, _, ro_all = run_igrpo(tiny_tokenizer, [drafts, r1, r2], num_generations=6, refine_rounds=2,
                             refine_loss_rounds="all")
    assert len(ro_all.completion_ids) == 8 and all(r["advantage"] is not None for r in ro_all.rows
                                                     if r["stage"] == "refine")
    assert ro_all.adv[2:4].tolist() == pytest.approx([-0.7070, 0.7070], abs=1e-3)  # round 1 of q1: its own group


def test_adaptive_split_moves_agreed_prompts_budget_and_keeps_the_total(tiny_tokenizer):
    # N = 2, G = 2: q0's drafts agree (both right): skipped; q1's disagree: refined 4 times.
    drafts = [[ans(3), ans(3)], [ans(10), ans(11)]]
    refines = [[ans(10), ans(9), ans(10), ans(12)]]                        # one prompt in the call
    cfg, eng, ro = run_igrpo(tiny_tokenizer, [drafts, refines], num_generations=4, adaptive_split="agreement")
    assert len(eng.calls[1][0]) == 1 and eng.calls[1][1].n == 4
    assert "Compute 2*5." in tiny_tokenizer.decode(eng.calls[1][0][0])
    assert [r["planned_refinements"] for r in ro.rows if r["stage"] == "draft"] == [0, 0, 4, 4]
    assert ro.stats["sampled_completions"] == len(EXAMPLES) * cfg.num_generations == 8
    assert ro.stats["adaptive_skipped"] == 1 and ro.group_of == [1, 1, 1, 1]


def test_truncated_completions_are_masked_and_overlong_shaping_lands_in_the_reward(tiny_tokenizer):
    cfg = Config(algo="grpo", num_generations=3, mask_truncated_completions=True, max_completion_length=40,
                 overlong_buffer_len=10)
    # character tokens; <think> </think> <answer> \boxed{ } </answer> are one token each, EOS one more
    long3 = "<think>" + "y" * 25 + "</think><answer>\\boxed{3}</answer>"      # 6 + 25 + 1 + EOS = 33 tokens
    eng = Scripted([[[ans(3), "LEN:" + long3[:36], long3], [ans(10)] * 3]], tiny_tokenizer)
    ro = collect_grpo(eng, tiny_tokenizer, EXAMPLES, cfg, 1, SamplingParams(seed=0), build_reward_fns(cfg))
    assert ro.loss_mask.tolist() == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0] and ro.adv[1] == 0.0
    assert [r["loss_masked"] for r in ro.rows] == [False, True, False, False, False, False]
    assert [r["completion_tokens"] for r in ro.rows[:3]] == [9, 34, 33]  # "LEN:" 4 + 1 + 25 + "</th" 4
    # penalty min(-(n - (40 - 10)) / 10 * 1, 0): 9 -> 0, 34 -> -0.4, 33 -> -0.3
    assert [r["reward_overlong"] for r in ro.rows[:3]] == pytest.approx([0.0, -0.4, -0.3])
    assert [r["reward"] for r in ro.rows[:3]] == pytest.approx([2.0, 0.0 - 0.4, 2.0 - 0.3])
    assert ro.stats["loss_masked"] == 1
    assert ro.stats["overlong_penalty_mean"] == pytest.approx(-0.7 / 6)


def fake_batches(signal_per_batch: list[list[bool]]):
    """draw(k) -> a 1-sequence-per-group Rollout whose group p carries signal as scripted."""
    calls = []

    def draw(k):
        calls.append(k)
        sig = signal_per_batch[k]
        return Rollout(prompt_ids=[[k, p] for p in range(len(sig))], completion_ids=[[p] for p in range(len(sig))],
                       rewards=torch.zeros(len(sig), dtype=torch.float64),
                       adv=torch.tensor([1.0 if s else 0.0 for s in sig]),
                       rows=[{"group_index": p, "step": 1} for p in range(len(sig))],
                       stats={"sampled_prompts": len(sig), "reward_mean": float(k)},
                       group_of=list(range(len(sig))), num_groups=len(sig))
    return draw, calls


def test_dynamic_sampling_respects_the_resampling_cap():
    draw, calls = fake_batches([[False, False]] * 10)
    ro = collect_dynamic(draw, prompts_per_batch=2, max_resample_batches=3)
    assert calls == [0, 1, 2, 3]                                           # 1 + cap batches, no more
    assert ro.stats["dynamic_resampled"] == 3 and ro.stats["dynamic_padded"] == 2
    assert ro.stats["dynamic_dropped"] == 6 and ro.stats["sampled_prompts"] == 8
    assert len(ro.completion_ids) == 2 and len({r["group_index"] for r in ro.rows}) == 8


def test_dynamic_sampling_stops_once_enough_groups_carry_signal():
    draw, calls = fake_batches([[True, False, False], [False, True, True], [True, True, True]])
    ro = collect_dynamic(draw, prompts_per_batch=3, max_resample_batches=5)
    assert calls == [0, 1]
    assert ro.prompt_ids == [[0, 0], [1, 1], [1, 2]] and ro.group_of == [0, 4, 5]
    assert [r["dynamic_kept"] for r in ro.rows] == [True, False, False, False, True, True]
    assert [r["sample_batch"] for r in ro.rows] == [0, 0, 0, 1, 1, 1]
    assert ro.stats["dynamic_dropped"] == 3 and ro.stats["dynamic_padded"] == 0
    assert ro.stats["reward_mean"] == 0.5                                  # averaged over the batches drawn


# --- gradients through the real tiny model ------------------------------------------------------

def _param_grads(model, ro: Rollout, pad_id: int) -> torch.Tensor:
    from igrpo_core.trainer import sequence_logps
    model.zero_grad(set_to_none=True)
    logp, mask, _ = sequence_logps(model, ro.prompt_ids, ro.completion_ids, pad_id=pad_id,
                                   device=torch.device("cpu"), amp_dtype=None)
    loss, _ = losses.policy_loss(logp, logp.detach(), ro.adv, mask, loss_type="grpo")
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def test_drafts_get_gradient_only_under_draft_loss_and_the_weight_scales_it(tiny_model_path, tiny_tokenizer):
    from igrpo_core.models import load_model
    torch.manual_seed(0)
    model = load_model(tiny_model_path, tiny_tokenizer, device=torch.device("cpu"), dtype=torch.float32)
    grads = {}
    for name, over in {"off": {}, "w0": dict(draft_loss=True, draft_loss_weight=0.0),
                       "w1": dict(draft_loss=True, draft_loss_weight=1.0),
                       "w2": dict(draft_loss=True, draft_loss_weight=2.0)}.items():
        _, _, ro = run_igrpo(tiny_tokenizer, [DRAFTS, REFINES], **over)
        grads[name] = (_param_grads(model, ro, tiny_tokenizer.pad_token_id), len(ro.completion_ids))
    (g_off, b_off), (g0, b_on), (g1, _), (g2, _) = grads["off"], grads["w0"], grads["w1"], grads["w2"]
    draft_part = g1 - g0                        # the drafts' own contribution at weight 1
    assert draft_part.norm() > 1e-3 * g1.norm() and draft_part.norm() > 0
    assert torch.allclose(g2 - g0, 2 * draft_part, atol=1e-6, rtol=1e-4)   # the weight scales it linearly
    assert torch.allclose(g0 * b_on / b_off, g_off, atol=1e-6, rtol=1e-4)  # weight 0 = off (GRPO's 1/B aside)


def test_masked_completions_contribute_zero_gradient_in_the_trainer(tmp_path, tiny_tokenizer):
    """Through Trainer.update: a batch with a masked, length-capped completion (non-zero advantage on
    purpose) gives exactly the gradient of the batch without it (loss_type "dapo": same token count)."""
    from tests.conftest import small_config
    from igrpo_core import trainer as T
    tr = T.Trainer(small_config(tmp_path, algo="grpo", loss_type="dapo", max_grad_norm=1e9,
                                mask_truncated_completions=True, per_device_train_batch_size=64))
    captured = []
    tr.opt.step = lambda: captured.append(torch.cat([p.grad.reshape(-1).clone() for p in tr.model.parameters()]))
    enc = [tiny_tokenizer(ans(x), add_special_tokens=False)["input_ids"] for x in (3, 4, 5)]
    prompt = tiny_tokenizer("Q: Compute 1+2.\nA: ", add_special_tokens=False)["input_ids"]

    def rollout(keep: list[int]):
        return Rollout(prompt_ids=[prompt] * len(keep), completion_ids=[enc[i] for i in keep],
                       rewards=torch.zeros(len(keep)), adv=torch.tensor([[1.0, -0.5, 0.7][i] for i in keep]),
                       loss_mask=torch.tensor([[1.0, 0.0, 1.0][i] for i in keep]))
    tr.update([rollout([0, 1, 2])], [None], [None])
    tr.update([rollout([0, 2])], [None], [None])
    with_masked, without = captured
    assert without.abs().max() > 0
    assert torch.allclose(with_masked, without, atol=1e-7, rtol=1e-5)
