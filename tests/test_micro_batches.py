"""Token-capped micro-batches (Config.micro_batch_tokens): the update's peak memory follows the cap,
not the sequences' lengths, and the gradient is the same maths however the batch is cut. "auto" (the
default) caps at what a GRPO micro-batch of the step's questions holds: GRPO is never cut, iGRPO's
question + draft prompts are."""
import pytest
import torch
from conftest import small_config
from hypothesis import given, settings
from hypothesis import strategies as st

from igrpo_core import trainer as T
from igrpo_core.config import Config
from igrpo_core.distributed import Dist
from igrpo_core.trainer import micro_batch_slices, token_cap


def padded(sl, pl, cl):
    return (sl.stop - sl.start) * (max(pl[sl]) + max(cl[sl]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 60), st.integers(1, 80)), max_size=40), st.integers(1, 12),
       st.integers(0, 900), st.integers(0, 30))
def test_slices_cover_in_order_and_respect_both_caps(seqs, max_rows, max_tokens, at_least):
    pl, cl = [p for p, _ in seqs], [c for _, c in seqs]
    try:
        out = micro_batch_slices(pl, cl, max_rows, max_tokens, at_least=at_least)
    except ValueError as exc:                       # only when there are fewer sequences than asked for
        assert at_least > len(seqs) and "cannot make" in str(exc)
        return
    assert [i for sl in out for i in range(sl.start, sl.stop)] == list(range(len(seqs)))   # contiguous, in order
    assert all(sl.stop > sl.start for sl in out) and len(out) >= at_least
    for sl in out:
        assert sl.stop - sl.start <= max_rows
        assert not max_tokens or sl.stop - sl.start == 1 or padded(sl, pl, cl) <= max_tokens
    if not at_least:   # greedy: no micro-batch could have taken its successor's first sequence
        for a, b in zip(out, out[1:]):
            grown = slice(a.start, a.stop + 1)
            assert a.stop - a.start == max_rows or (max_tokens and padded(grown, pl, cl) > max_tokens)


def test_without_a_cap_the_slices_are_the_fixed_size_ones():
    assert micro_batch_slices([5] * 10, [7] * 10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    # 3 x (9 + 7) = 48 > 40: two rows per micro-batch; a sequence over the cap goes alone
    assert micro_batch_slices([9, 5, 5, 5, 50], [7] * 5, 8, 40) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    with pytest.raises(ValueError, match="2 prompts for 1 completions"):
        micro_batch_slices([1, 2], [3], 4)


@pytest.mark.parametrize("bad", [-1, "4k", True, 2.5])
def test_config_refuses_a_cap_that_is_not_a_count_or_auto(tmp_path, bad):
    with pytest.raises(ValueError, match="micro_batch_tokens must be an integer >= 0 .* or \"auto\""):
        Config(output_dir=str(tmp_path), micro_batch_tokens=bad)


def test_the_command_line_reads_a_count_or_auto():
    from igrpo_core.config import parse_overrides
    assert Config().micro_batch_tokens == "auto"
    assert parse_overrides(["--micro_batch_tokens", "4096"]) == {"micro_batch_tokens": 4096}
    assert parse_overrides(["--micro_batch_tokens=0"]) == {"micro_batch_tokens": 0}
    assert parse_overrides(["--micro_batch_tokens", "auto"]) == {"micro_batch_tokens": "auto"}
    with pytest.raises(ValueError, match="micro_batch_tokens must be"):
        Config(**parse_overrides(["--micro_batch_tokens", "lots"]))


def test_auto_is_a_grpo_micro_batch_of_the_questions():
    assert token_cap(4096, 64, 30, [10, 40]) == 4096 and token_cap(0, 64, 30, [10, 40]) == 0
    assert token_cap("auto", 64, 30, [10, 40, 25]) == 64 * (30 + 40)
    assert token_cap("auto", 64, 0, [10]) == 0          # a rollout that does not know its questions: no cap
    assert token_cap("auto", 64, 30, []) == 0


class Peer(Dist):
    """Process 0 of two whose peer needs `peer` micro-batches (stand-in for the gather)."""

    def __init__(self, peer: int):
        super().__init__(accelerator=None, rank=0, world=2)
        self.peer = peer

    def gather(self, obj):
        return [obj, self.peer]


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_igrpo_update_under_a_token_cap_has_the_uncapped_gradient(tmp_path, loss_type):
    """iGRPO's refinements carry the draft in their prompt; a cap of 3 full-length sequences cuts its
    update into several micro-batches, each within the cap, and the gradient is the uncapped one's."""
    grads, cuts = [], []
    for cap in (0, 3 * (192 + 40)):
        cfg = small_config(tmp_path / f"cap{cap}", algo="igrpo", loss_type=loss_type, micro_batch_tokens=cap,
                           per_device_train_batch_size=64)
        tr = T.Trainer(cfg)
        ro = tr.collect(1, 0)
        ro.adv[:] = torch.linspace(-1, 1, len(ro.adv))   # a gradient on every sequence
        captured = {}
        tr.opt.step = lambda: captured.update({n: p.grad.clone() for n, p in tr.model.named_parameters()})
        tr.update([ro], [None], [None])
        grads.append(captured)
        cuts.append(ro.micro)
        pl, cl = [len(p) for p in ro.prompt_ids], [len(c) for c in ro.completion_ids]
        assert not cap or all(padded(sl, pl, cl) <= cap or sl.stop - sl.start == 1 for sl in ro.micro)
    assert len(cuts[0]) == 1 and len(cuts[1]) > 1, cuts
    assert max(g.abs().max().item() for g in grads[0].values()) > 1e-2          # a gradient worth comparing
    for name in grads[0]:   # other float rounding of the sums: a few elements differ at ~1e-7
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)


def test_processes_agree_on_the_count_of_micro_batches(tmp_path):
    """Under DDP/FSDP every forward/backward runs collectives: a process whose sequences fit in fewer
    micro-batches splits further to match the process that needs most."""
    cfg = small_config(tmp_path, algo="grpo", micro_batch_tokens=4000, per_device_train_batch_size=64)
    tr = T.Trainer(cfg)
    ro = tr.collect(1, 0)
    own = micro_batch_slices([len(p) for p in ro.prompt_ids], [len(c) for c in ro.completion_ids], 64, 4000)
    tr.dist = Peer(len(own) + 3)
    got = tr._micro_batches(ro)
    assert len(got) == len(own) + 3 and got is tr._micro_batches(ro)      # decided once per rollout
    assert [i for sl in got for i in range(sl.start, sl.stop)] == list(range(len(ro.prompt_ids)))


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_auto_leaves_grpo_whole_and_cuts_igrpo_to_grpos_padded_tokens(tmp_path):
    """The default: a GRPO rollout keeps the fixed-size micro-batches; iGRPO's refinements, whose
    prompts carry a draft, are cut so no micro-batch holds more padded tokens than a GRPO micro-batch
    of the same questions and completion lengths could, and the step's rollouts know their questions."""
    rows = 4    # iGRPO trains 4 questions x 2 refinements: two full micro-batches before any cap
    cuts = {}
    for algo in ("grpo", "igrpo"):
        tr = T.Trainer(small_config(tmp_path / algo, algo=algo, per_device_train_batch_size=rows))
        ro = tr.collect(1, 0)
        pl, cl = [len(p) for p in ro.prompt_ids], [len(c) for c in ro.completion_ids]
        questions = [r["prompt_tokens"] for r in ro.rows if r["stage"] in ("grpo", "draft")]
        assert questions and ro.question_tokens == max(questions)
        cuts[algo] = (ro, tr._micro_batches(ro), rows * (ro.question_tokens + max(cl)))
    ro, micro, cap = cuts["grpo"]
    assert micro == micro_batch_slices([len(p) for p in ro.prompt_ids], [1] * len(ro.prompt_ids), rows)
    ro, micro, cap = cuts["igrpo"]
    pl, cl = [len(p) for p in ro.prompt_ids], [len(c) for c in ro.completion_ids]
    assert min(pl) > ro.question_tokens                       # every refinement prompt holds a draft
    assert all(padded(sl, pl, cl) <= cap or sl.stop - sl.start == 1 for sl in micro)
    assert len(micro) > len(micro_batch_slices(pl, cl, rows)), micro   # so the default did cut it


def test_merged_batches_keep_the_longest_question():
    from igrpo_core.igrpo import Rollout, merge_groups
    batches = [Rollout(prompt_ids=[[1] * q], completion_ids=[[2]], rewards=torch.zeros(1), adv=torch.ones(1),
                       group_of=[0], num_groups=1, question_tokens=q, stats={"reward_mean": 0.0}) for q in (5, 9)]
    assert merge_groups(batches, [(0, 0), (1, 0)]).question_tokens == 9


def test_dry_run_estimates_the_capped_micro_batch():
    """The dry run's memory estimate counts the micro-batch a full-length batch would get under the cap."""
    from igrpo_core import dryrun
    base = dict(max_prompt_length=100, max_completion_length=156, per_device_train_batch_size=16)
    assert dryrun.micro_batch_rows(Config(**base)) == 16                              # auto keeps them
    assert dryrun.micro_batch_rows(Config(**base, micro_batch_tokens=0)) == 16
    assert dryrun.micro_batch_rows(Config(**base, micro_batch_tokens=4 * 256 + 10)) == 4
    assert dryrun.micro_batch_rows(Config(**base, micro_batch_tokens=100)) == 1       # a sequence always fits
