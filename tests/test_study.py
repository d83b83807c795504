"""The study grid (igrpo_core.study): arms, the combination rule, the bootstrap, the table, and one
tiny resumable grid end to end. The study notebook itself runs in test_notebooks.py."""
import json

import numpy as np
import polars as pl
import pytest

from igrpo_core import study
from igrpo_core.config import Config


# --- arms and the combination rule ---------------------------------------------------------------

def test_every_arm_but_grpo_is_paper_igrpo_plus_one_option():
    base = Config()
    for arm in study.ARMS:
        cfg = base.replace(**study.arm_overrides(arm, base))   # every arm is a valid config
        if arm == "grpo":
            assert cfg.algo == "grpo"
            continue
        diff = {k for k, v in study.PAPER_IGRPO.items() if getattr(cfg, k) != v}
        assert cfg.algo == "igrpo" and len(diff) <= 1, (arm, diff)
        assert cfg.num_generations == base.num_generations and cfg.num_drafts == base.num_drafts
    assert study.arm_overrides("overlong", base)["overlong_buffer_len"] == base.max_completion_length // 4
    with pytest.raises(ValueError, match="unknown study arm"):
        study.arm_overrides("nearmiss", base)


def test_combination_merges_the_options_that_beat_igrpo_best_first():
    base = Config()
    ovs = {a: study.arm_overrides(a, base) for a in ("near_miss", "minority", "draft_loss", "adaptive", "rounds2",
                                                     "dynamic")}
    means = {"grpo": 0.9, "igrpo": 0.50, "near_miss": 0.55, "minority": 0.60, "draft_loss": 0.52,
             "adaptive": 0.58, "rounds2": 0.57, "dynamic": 0.40}
    ov, used = study.choose_combination(means, ovs, base)
    # minority beats near_miss (both set draft_selection); rounds2 cannot join adaptive (config error);
    # dynamic lost to igrpo; grpo is not an option
    assert used == ["minority", "adaptive", "draft_loss"]
    assert (ov["draft_selection"], ov["adaptive_split"], ov["draft_loss"], ov["refine_rounds"]) == \
        ("minority", "agreement", True, 1)
    assert not ov["dynamic_sampling"]
    base.replace(**ov)


def test_combination_without_a_winner_is_the_best_single_arm():
    base = Config()
    ovs = {a: study.arm_overrides(a, base) for a in ("near_miss", "dynamic")}
    ov, used = study.choose_combination({"igrpo": 0.7, "near_miss": 0.6, "dynamic": 0.65}, ovs, base)
    assert used == ["dynamic"] and ov == {**study.PAPER_IGRPO, "dynamic_sampling": True}


# --- bootstrap -----------------------------------------------------------------------------------

def test_bootstrap_of_a_constant_is_that_constant():
    assert study.bootstrap_ci(np.ones((3, 50))) == (1.0, 1.0, 1.0)
    assert study.bootstrap_ci(np.ones((3, 50)), np.ones((2, 50))) == (0.0, 0.0, 0.0)


def test_bootstrap_width_matches_the_binomial_standard_error():
    rng = np.random.default_rng(1)
    correct = (rng.random((1, 2000)) < 0.5).astype(float)   # one seed: only problems vary
    point, lo, hi = study.bootstrap_ci(correct, n_boot=4000)
    half = 1.96 * np.sqrt(point * (1 - point) / 2000)           # about 0.022
    assert lo < point < hi and (hi - lo) / 2 == pytest.approx(half, rel=0.15)


def test_bootstrap_seed_spread_widens_the_interval():
    rng = np.random.default_rng(2)
    problems = rng.random(400) < 0.5
    same = np.tile(problems, (3, 1)).astype(float)             # 3 seeds that agree on every problem
    flip = same.copy()
    flip[0] = rng.random(400) < 0.2                            # one seed far worse
    _, lo1, hi1 = study.bootstrap_ci(same)
    _, lo2, hi2 = study.bootstrap_ci(flip)
    assert hi2 - lo2 > 1.5 * (hi1 - lo1)


def test_paired_difference_sees_a_shift_that_overlapping_cis_hide():
    """Both arms' own CIs overlap, but on the same problems one is right wherever the other is, and on
    ~20 problems more (seeds agree here, so only the pairing on problems separates the arms)."""
    rng = np.random.default_rng(3)
    b = np.tile(rng.random(500) < 0.5, (3, 1)).astype(float)
    a = b.copy()
    a[:, :40] = 1.0                                             # right on 40 problems, never worse
    gain = a.mean() - b.mean()
    _, alo, ahi = study.bootstrap_ci(a)
    _, blo, bhi = study.bootstrap_ci(b)
    d, dlo, dhi = study.bootstrap_ci(a, b)
    assert alo < bhi                                            # the per-arm intervals overlap
    assert d == pytest.approx(gain) and 0 < dlo <= d <= dhi    # the paired difference excludes 0
    assert study.bootstrap_ci(a, b, seed=5) == study.bootstrap_ci(a, b, seed=5)


def test_bootstrap_rejects_mismatched_problems():
    with pytest.raises(ValueError, match="same problems"):
        study.bootstrap_ci(np.ones((2, 10)), np.ones((2, 9)))
    with pytest.raises(ValueError, match="non-empty"):
        study.bootstrap_ci(np.ones((0, 10)))


def test_correct_matrix_aligns_problems_by_id():
    s0 = pl.DataFrame({"problem_id": ["b", "a", "c"], "correct": [True, False, True]})
    s1 = pl.DataFrame({"problem_id": ["a", "b", "b"], "correct": [True, True, False]})   # 2 samples of b
    assert study.correct_matrix([s0, s1]).tolist() == [[0.0, 1.0], [1.0, 0.5]]


# --- the table -----------------------------------------------------------------------------------

def test_study_table_means_stds_and_the_difference_to_igrpo():
    results = pl.DataFrame({
        "level": ["tiny"] * 4, "arm": ["igrpo", "igrpo", "near_miss", "near_miss"], "seed": [0, 1, 0, 1],
        "eval_acc": [0.5, 0.7, 0.6, 0.6], "frac_zero_std": [0.6, 0.4, 0.2, 0.4], "refine_gain": [-0.1, -0.3, 0.0, 0.2],
        "fixes": [2, 4, 6, 8], "breaks": [10, 20, 5, 5], "step_time_s": [2.0, 4.0, 3.0, 3.0],
        "completions_per_step": [128.0] * 4, "combo_arms": [None] * 4})
    correct = {("tiny", "igrpo"): np.array([[1.0, 0.0], [1.0, 1.0]]), ("tiny", "near_miss"): np.array([[1.0, 1.0], [0.0, 1.0]])}
    t = study.study_table(results, correct, n_boot=200)
    assert t["arm"].to_list() == ["igrpo", "near_miss"] and t["seeds"].to_list() == [2, 2]
    assert t["acc_mean"].to_list() == pytest.approx([0.6, 0.6])
    assert t["acc_std"].to_list() == pytest.approx([0.1414214, 0.0])
    assert t["zero_var"].to_list() == pytest.approx([0.5, 0.3]) and t["fixes"].to_list() == [3.0, 7.0]
    assert t["breaks"].to_list() == [15.0, 5.0] and t["step_s"].to_list() == [3.0, 3.0]
    assert t["diff_vs_igrpo"].to_list() == pytest.approx([None, 0.0])
    assert all(lo <= hi for lo, hi in zip(t["ci_low"], t["ci_high"]))
    assert "| near_miss |" in study.to_markdown(t)
    both = pl.concat([results, results.with_columns(pl.lit("tiny-hard").alias("level"))]).sort("arm", maintain_order=True)
    correct |= {("tiny-hard", a): m for (_, a), m in correct.items()}
    t2 = study.study_table(both, correct, n_boot=50)   # cells arrive arm by arm; rows come level by level
    assert t2.select("level", "arm").rows() == [("tiny", "igrpo"), ("tiny", "near_miss"),
                                                ("tiny-hard", "igrpo"), ("tiny-hard", "near_miss")]


# --- one tiny grid, resumed ------------------------------------------------------------------------

SMALL = dict(max_steps=1, prompts_per_step=2, num_generations=4, num_drafts=2, eval_limit=4,
             max_completion_length=32, tiny_num_problems=200, generation_batch_size=64, save_steps=1)


def test_tiny_grid_runs_chooses_a_combo_and_resumes(tmp_path):
    base = Config(output_dir=str(tmp_path), **SMALL)
    lines = []
    df = study.run_study(base, levels=["tiny-hard"], arms=["igrpo", "near_miss", "combo"], seeds=[0],
                         tag="t", log=lines.append)
    assert df["arm"].to_list() == ["igrpo", "near_miss", "combo"] and df["level"].unique().to_list() == ["tiny-hard"]
    cfg = json.loads((tmp_path / "t-tiny-hard-near-miss-s0" / "config.json").read_text())
    assert (cfg["dataset"], cfg["eval_dataset"], cfg["draft_selection"]) == ("tiny-hard:train", "tiny-hard:heldout", "near_miss")
    # the only option is near_miss, so the combo is near_miss alone: the same config, trained once
    assert df["combo_arms"][2] == "near_miss" and df["run_dir"][2] == df["run_dir"][1]
    assert not (tmp_path / "t-tiny-hard-combo-s0").exists()
    assert json.loads((tmp_path / "study-t" / "combination.json").read_text())["tiny-hard"]["arms"] == "near_miss"
    assert pl.read_parquet(tmp_path / "study-t" / "results.parquet").height == 3
    assert df["refinements"].to_list()[0] == 2 * 2 and df["completions_per_step"][0] == 8.0
    table = study.study_table(df, study.correct_matrices(df), n_boot=100)
    assert table.height == 3 and table["ci_low"][0] <= table["acc_mean"][0] <= table["ci_high"][0]
    # a rerun reads finished cells back without training them again
    stamp = (tmp_path / "t-tiny-hard-igrpo-s0" / "metrics.parquet").stat().st_mtime_ns
    again = study.run_study(base, levels=["tiny-hard"], arms=["igrpo", "near_miss", "combo"], seeds=[0],
                            tag="t", log=lines.append)
    assert again.drop("run_dir").equals(df.drop("run_dir"))
    assert (tmp_path / "t-tiny-hard-igrpo-s0" / "metrics.parquet").stat().st_mtime_ns == stamp
