"""End-to-end trainer tests on the shipped tiny model (a few seconds each)."""
import polars as pl
import pytest
import torch

from conftest import small_config
from igrpo_core import records, trainer as T
from igrpo_core.records import ROLLOUT_SCHEMA

TIMING = {"gen_time_s", "step_time_s", "tokens_per_s"}


@pytest.mark.parametrize("algo", ["grpo", "igrpo"])
def test_short_run_writes_records_with_the_schema(tmp_path, algo):
    cfg = small_config(tmp_path, algo=algo)
    run_dir = T.train(cfg)
    assert records.read_json(run_dir / "config.json")["algo"] == algo
    assert records.read_json(run_dir / "status.json")["state"] == "finished"
    m = records.read_metrics(run_dir)
    assert m["step"].to_list() == [1, 2]
    for col in ("reward_mean", "entropy", "clip_frac", "kl", "loss", "frac_zero_std", "tokens_per_s"):
        assert m[col].null_count() == 0, col
    r = records.read_rollouts(run_dir)
    assert dict(r.schema) == ROLLOUT_SCHEMA
    per_step = r.filter(pl.col("step") == 1)
    if algo == "grpo":
        assert per_step.height == 4 * 4 and set(per_step["stage"]) == {"grpo"}
    else:
        drafts, refines = per_step.filter(pl.col("stage") == "draft"), per_step.filter(pl.col("stage") == "refine")
        assert drafts.height == 4 * 2 and refines.height == 4 * 2
        assert drafts["advantage"].null_count() == drafts.height  # drafts get no gradient
        assert drafts.group_by("group_index").agg(pl.col("is_chosen_draft").sum())["is_chosen_draft"].to_list() == [1] * 4
        # the chosen draft is a highest-reward one and its reward is recorded on the refinements
        best = drafts.group_by("group_index").agg(pl.col("reward").max().alias("best"))
        chosen = drafts.filter(pl.col("is_chosen_draft")).select("group_index", "reward")
        assert best.join(chosen, on="group_index").filter(pl.col("best") != pl.col("reward")).height == 0
        assert set(refines.join(chosen, on="group_index").select(
            (pl.col("draft_reward") == pl.col("reward_right")).all()).item(0, 0) for _ in [0]) == {True}
        assert m["best_draft_reward_mean"].null_count() == 0
    assert set(r["finish_reason"]) <= {"stop", "length"}
    assert (r["completion_tokens"] > 0).all()
    assert (r["reward"] == r["reward_accuracy"] + r["reward_format"]).all()  # explicit weighted sum, w = 1, 1


def test_advantages_are_group_relative_over_refinements(tmp_path):
    r = records.read_rollouts(T.train(small_config(tmp_path, max_steps=1)))
    refines = r.filter(pl.col("stage") == "refine")
    sums = refines.group_by("group_index").agg(pl.col("advantage").sum().abs())["advantage"]
    assert (sums < 1e-6).all()  # zero-mean within each group of G refinements


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    """N straight steps == N/2 steps, a crash (with records of a half-done later step), resume, N/2 more."""
    straight = T.train(small_config(tmp_path / "a", max_steps=4, save_steps=2, algo="igrpo"))

    def crash(step, row):
        if step == 3:
            raise RuntimeError("simulated crash")

    cfg = small_config(tmp_path / "b", max_steps=4, save_steps=2, algo="igrpo")
    with pytest.raises(RuntimeError, match="simulated crash"):
        T.train(cfg, callbacks=[crash])
    run_b = tmp_path / "b" / "runs" / "t"
    assert records.read_json(run_b / "status.json")["state"] == "failed"
    assert 3 in records.read_metrics(run_b)["step"].to_list()     # step 3 recorded, not checkpointed
    T.train(cfg)
    ma, mb = records.read_metrics(straight), records.read_metrics(run_b)
    cols = [c for c in ma.columns if c not in TIMING]
    assert mb["step"].to_list() == [1, 2, 3, 4]
    assert ma.select(cols).equals(mb.select(cols))
    assert records.read_rollouts(straight).equals(records.read_rollouts(run_b))
    from safetensors.torch import load_file
    wa = load_file(straight / "checkpoints/step_000004/model/model.safetensors")
    wb = load_file(run_b / "checkpoints/step_000004/model/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_draft_tokens_receive_zero_gradient(tmp_path, monkeypatch):
    """iGRPO trains refinement tokens only: targets inside the prompt (question + draft) get no gradient."""
    tr = T.Trainer(small_config(tmp_path, algo="igrpo"))
    ro = tr.collect(1, 0)
    draft_texts = [row["completion"] for row in ro.rows if row["stage"] == "draft" and row["is_chosen_draft"]]
    decoded_prompts = [tr.tokenizer.decode(p) for p in ro.prompt_ids]
    assert all(any(d in p for p in decoded_prompts) for d in draft_texts if d)  # drafts are context
    captured = {}
    real_forward = tr.model.forward

    def full_logits_forward(*args, logits_to_keep=0, **kwargs):  # score every position
        out = real_forward(*args, logits_to_keep=0, **kwargs)
        out.logits.retain_grad()
        captured["logits"] = out.logits
        return out

    monkeypatch.setattr(tr.model, "forward", full_logits_forward)
    sl = slice(0, len(ro.completion_ids))
    logp, mask, _ = T.sequence_logps(tr.model, ro.prompt_ids[sl], ro.completion_ids[sl], pad_id=tr.engine.pad_id,
                                     device=tr.device, amp_dtype=None)
    ro.adv[:] = torch.linspace(-1, 1, len(ro.adv))  # non-zero advantages so the loss has a gradient
    from igrpo_core.losses import policy_loss
    loss, _ = policy_loss(logp, logp.detach(), ro.adv, mask, loss_type="grpo")
    loss.backward()
    grad = captured["logits"].grad                                   # (B, Tp+T, V)
    Tp = max(len(p) for p in ro.prompt_ids)
    assert grad[:, : Tp - 1].abs().max().item() == 0.0              # positions predicting prompt/draft tokens
    assert grad[:, Tp - 1:].abs().max().item() > 0.0                # completion positions do learn


def test_prompt_budget_checked_before_model_loads(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("model must not load before the budget check")
    monkeypatch.setattr(T, "load_model", boom)
    with pytest.raises(ValueError, match="max_prompt_length=20"):
        T.Trainer(small_config(tmp_path, max_prompt_length=20))


def test_reward_that_raises_is_recorded_not_swallowed(tmp_path):
    def flaky(completion, example):
        if "1" in completion:
            raise ZeroDivisionError("bad reward")
        return 0.5

    cfg = small_config(tmp_path, algo="grpo", max_steps=1, reward_funcs=["accuracy"], reward_weights=[1.0])
    run_dir = T.train(cfg, custom_rewards={"flaky_test": (flaky, 2.0)})  # passed explicitly, no registry
    r = records.read_rollouts(run_dir)
    failed = r.filter(pl.col("reward_status").str.contains("flaky_test: ZeroDivisionError"))
    assert failed.height > 0                       # every failure is on its row...
    assert records.read_metrics(run_dir)["reward_failures"][0] >= failed.height  # ...and counted
    ok = r.filter(~pl.col("completion").str.contains("1"))
    assert ((ok["reward"] - ok["reward_accuracy"] - 1.0).abs() < 1e-9).all()  # 2.0 * 0.5 added


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model path not found"):
        T.Trainer(small_config(tmp_path, model_name_or_path=str(tmp_path / "nope")))


def test_lr_schedule_warmup_then_cosine_to_floor():
    f = T.lr_lambda("cosine", total=100, warmup=10, min_rate=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert 0.1 < f(55) < 1.0


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
    """A real kill -9 of `igrpo train` after its first checkpoint; rerunning the command resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def cmd(out):
        return [sys.executable, "-m", "igrpo_core", "train", "--output_dir", str(out), "--run_name", "k",
                "--max_steps", "6", "--save_steps", "2", "--prompts_per_step", "4", "--num_generations", "4",
                "--num_drafts", "2", "--max_completion_length", "40", "--tiny_num_problems", "200"]

    env = {**os.environ, "TQDM_DISABLE": "1"}
    subprocess.run(cmd(tmp_path / "a"), check=True, capture_output=True, env=env, timeout=600)
    proc = subprocess.Popen(cmd(tmp_path / "b"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    marker = tmp_path / "b" / "k" / "checkpoints" / "step_000002" / "trainer_state.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = records.read_json(tmp_path / "b" / "k" / "status.json")
    assert status["state"] == "running" and status["step"] < 6      # killed, not finished
    subprocess.run(cmd(tmp_path / "b"), check=True, capture_output=True, env=env, timeout=600)
    a, b = tmp_path / "a" / "k", tmp_path / "b" / "k"
    ma, mb = records.read_metrics(a), records.read_metrics(b)
    cols = [c for c in ma.columns if c not in TIMING]
    assert mb["step"].to_list() == list(range(1, 7))
    assert ma.select(cols).equals(mb.select(cols))
    assert records.read_rollouts(a).equals(records.read_rollouts(b))


def test_num_iterations_reuses_stored_old_logps(tmp_path):
    """mu = 2: the second update is off-policy against the stored old log-probs, so the ratio moves."""
    one = records.read_metrics(T.train(small_config(tmp_path / "a", algo="grpo", max_steps=1, learning_rate=1e-3)))
    two = records.read_metrics(T.train(small_config(tmp_path / "b", algo="grpo", max_steps=1, learning_rate=1e-3,
                                                    num_iterations=2)))
    assert one["ratio_mean"][0] == pytest.approx(1.0, abs=1e-6)   # on-policy
    assert abs(two["ratio_mean"][0] - 1.0) > 1e-6                  # logged from the second update


def test_reference_model_only_with_beta_and_kl_grows_after_updates(tmp_path):
    assert T.Trainer(small_config(tmp_path / "a")).ref_model is None
    m = records.read_metrics(T.train(small_config(tmp_path / "b", algo="grpo", max_steps=2, beta=0.1,
                                                  learning_rate=1e-3)))
    assert m["kl"][0] == pytest.approx(0.0, abs=1e-7)   # step 1: policy == reference
    assert m["kl"][1] > 0.0                              # after one update they differ


def test_data_order_is_a_seeded_permutation_per_epoch():
    ex = [{"id": i} for i in range(10)]
    epoch0 = [e["id"] for s in range(1, 6) for e in T.batch_examples(ex, s, 0, 2, 2, seed=3)]
    assert sorted(epoch0) == list(range(10))                       # every example once per epoch
    assert epoch0 != [e["id"] for s in range(1, 6) for e in T.batch_examples(ex, s, 0, 2, 2, seed=4)]
    epoch1 = [e["id"] for s in range(6, 11) for e in T.batch_examples(ex, s, 0, 2, 2, seed=3)]
    assert sorted(epoch1) == list(range(10)) and epoch1 != epoch0  # reshuffled each epoch


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_micro_batch_size_does_not_change_the_gradient(tmp_path, loss_type):
    """per_device_train_batch_size is a memory knob: accumulated micro-batch gradients equal the full batch's.

    (bnpo is TRL's per-micro-batch token mean, so for it the micro-batch size is part of the definition.)
    """
    grads = []
    for mb in (32, 3):
        cfg = small_config(tmp_path / f"mb{mb}", algo="grpo", loss_type=loss_type, per_device_train_batch_size=mb,
                           gradient_accumulation_steps=2)
        tr = T.Trainer(cfg)
        rollouts = [tr.collect(1, b) for b in range(cfg.gradient_accumulation_steps)]
        for ro in rollouts:
            ro.adv[:] = torch.linspace(-1, 1, len(ro.adv))  # a gradient on every sequence
        captured = {}
        tr.opt.step = lambda: captured.update({n: p.grad.clone() for n, p in tr.model.named_parameters()})
        tr.update(rollouts, [None] * len(rollouts), [None] * len(rollouts))
        grads.append(captured)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-7, rtol=1e-4)


def test_resume_false_starts_over_without_stale_checkpoints(tmp_path):
    run_dir = T.train(small_config(tmp_path, max_steps=2, save_steps=1))
    assert [p.name for p in records.checkpoint_dirs(run_dir)] == ["step_000001", "step_000002"]
    T.train(small_config(tmp_path, max_steps=1, save_steps=1, resume=False))
    assert [p.name for p in records.checkpoint_dirs(run_dir)] == ["step_000001"]
    assert records.read_metrics(run_dir)["step"].to_list() == [1]


def test_overlong_prompts_are_an_error_or_dropped_and_listed(tmp_path, tiny_model_path):
    """The paper presets could not start on full MATH (2 questions over 1,024 tokens): verl's
    filter_overlong_prompts drops them and the run lists what it dropped."""
    from igrpo_core.models import load_tokenizer
    from igrpo_core.trainer import check_prompt_budget
    tok = load_tokenizer(tiny_model_path)
    rows = [{"id": "short", "problem": "1+1"}, {"id": "long", "problem": "1+1 " * 400}]
    cfg = small_config(tmp_path, algo="grpo", max_prompt_length=64)
    with pytest.raises(ValueError, match="'long' needs .* filter_overlong_prompts"):
        check_prompt_budget(tok, rows, cfg)
    kept, dropped = check_prompt_budget(tok, rows, cfg.replace(filter_overlong_prompts=True))
    assert [r["id"] for r in kept] == ["short"] and list(dropped) == ["long"] and dropped["long"] > 64
    with pytest.raises(ValueError, match="no problem"):
        check_prompt_budget(tok, rows[1:], cfg.replace(filter_overlong_prompts=True))
    from igrpo_core import config
    assert config.load(preset="paper-r1-distill-qwen-7b").filter_overlong_prompts
