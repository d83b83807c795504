"""Token-capped micro-batches (Config.micro_batch_tokens): the update's peak memory follows the cap,
not the sequences' lengths, and the gradient is the same maths however the batch is cut."""
import pytest
import torch
from conftest import small_config
from hypothesis import given, settings
from hypothesis import strategies as st

from igrpo_core import trainer as T
from igrpo_core.config import Config
from igrpo_core.distributed import Dist
from igrpo_core.trainer import micro_batch_slices


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


def test_config_refuses_a_negative_cap(tmp_path):
    with pytest.raises(ValueError, match="micro_batch_tokens must be an integer >= 0"):
        Config(output_dir=str(tmp_path), micro_batch_tokens=-1)


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


def test_dry_run_estimates_the_capped_micro_batch():
    """The dry run's memory estimate counts the micro-batch a full-length batch would get under the cap."""
    from igrpo_core import dryrun
    base = dict(max_prompt_length=100, max_completion_length=156, per_device_train_batch_size=16)
    assert dryrun.micro_batch_rows(Config(**base)) == 16
    assert dryrun.micro_batch_rows(Config(**base, micro_batch_tokens=4 * 256 + 10)) == 4
    assert dryrun.micro_batch_rows(Config(**base, micro_batch_tokens=100)) == 1       # a sequence always fits
