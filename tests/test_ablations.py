"""Ablation grids (igrpo_core.ablations): each family's arms keep the budgets they claim, and the
seed summary's statistics are right. The ablations notebook itself runs in test_notebooks.py."""
import json
from pathlib import Path

import polars as pl
import pytest

from igrpo_core import ablations as abl
from igrpo_core.config import Config


def _arms(family, **base):
    arms, notes = abl.plan(Config(**base), [family])
    return {arm: cfg for _, arm, cfg in arms}, notes


def test_split_family_keeps_the_total_budget_fixed():
    arms, _ = _arms("split")
    assert list(arms) == ["grpo G8", "igrpo N2+G6", "igrpo N4+G4", "igrpo N6+G2"]
    for name, cfg in arms.items():
        assert cfg.num_generations == 8
        if cfg.algo == "igrpo":
            assert cfg.num_drafts + cfg.num_refinements == cfg.num_generations
    assert [arms[a].num_drafts for a in ("igrpo N2+G6", "igrpo N4+G4", "igrpo N6+G2")] == [2, 4, 6]
    small, _ = _arms("split", num_generations=4, num_drafts=2)
    assert all(c.num_refinements >= 2 for c in small.values()) and "igrpo N1+G3" in small


def test_budget_family_matches_grpo_and_igrpo_at_each_total():
    arms, _ = _arms("budget")
    for total in abl.TOTALS:
        grpo, igrpo = arms[f"grpo {total}"], arms[f"igrpo {total // 2}+{total // 2}"]
        assert grpo.algo == "grpo" and grpo.num_refinements == total
        assert igrpo.algo == "igrpo" and igrpo.num_drafts + igrpo.num_refinements == total == igrpo.num_generations


def test_beta_and_base_algo_families():
    betas, _ = _arms("beta")
    assert [c.beta for c in betas.values()] == [0.0, 1e-4, 1e-3, 1e-2]
    algos, _ = _arms("base_algo")
    assert list(algos) == ["grpo", "igrpo(grpo)", "dapo", "igrpo(dapo)", "gspo", "igrpo(gspo)"]
    for name in ("dapo", "igrpo(dapo)"):
        c = algos[name]
        assert (c.loss_type, c.epsilon, c.epsilon_high, c.importance_sampling_level) == ("dapo", 0.2, 0.28, "token")
    for name in ("gspo", "igrpo(gspo)"):
        c = algos[name]
        assert (c.importance_sampling_level, c.epsilon, c.epsilon_high) == ("sequence", 3e-4, 4e-4)
    for plain in ("grpo", "dapo", "gspo"):   # each base algorithm vs iGRPO around it, same budget
        assert algos[plain].algo == "grpo" and algos[f"igrpo({plain})"].algo == "igrpo"
        assert algos[plain].num_generations == algos[f"igrpo({plain})"].num_generations


def test_judge_arm_is_skipped_with_a_note_without_judge_model():
    arms, notes = _arms("reward")
    assert list(arms) == ["rule"] and len(notes) == 1 and "judge_model" in notes[0]
    arms, notes = _arms("reward", judge_model="http://localhost:8000/v1")
    assert arms["judge"].reward_funcs == ["judge"] and not notes


def test_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="unknown ablation families"):
        abl.plan(Config(), ["split", "lr"])


def test_summarize_over_seeds():
    df = pl.DataFrame({"family": ["beta"] * 4 + ["split"] * 2, "arm": ["b0", "b0", "b1", "b1", "s", "s"],
                       "seed": [0, 1, 0, 1, 0, 1], "eval_avg@k": [0.2, 0.4, 0.5, 0.5, 0.1, 0.3],
                       "final_reward": [1.0, 3.0, 2.0, 2.0, 0.0, 4.0]})
    s = abl.summarize(df)
    assert s["arm"].to_list() == ["b0", "b1", "s"] and s["seeds"].to_list() == [2, 2, 2]
    assert s["eval_avg@k_mean"].to_list() == pytest.approx([0.3, 0.5, 0.2])
    assert s["eval_avg@k_std"].to_list() == pytest.approx([0.1414214, 0.0, 0.1414214])   # sample std (ddof 1)
    assert s["final_reward_min"].to_list() == [1.0, 2.0, 0.0] and s["final_reward_max"].to_list() == [3.0, 2.0, 4.0]


def test_base_algo_gspo_and_dapo_arms_are_off_policy():
    """Bug: GSPO and DAPO arms ran at num_iterations=1, where the ratio is 1, neither clip range acts
    and GSPO equals GRPO. They now take 2 updates per rollout batch (TRL's GSPO recipe), and the
    notebook says so."""
    algos, _ = _arms("base_algo")
    for name in ("dapo", "igrpo(dapo)", "gspo", "igrpo(gspo)"):
        assert algos[name].num_iterations == 2, name
    book = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "ablations.ipynb").read_text())
    md = "".join("".join(c["source"]) for c in book["cells"] if c["cell_type"] == "markdown")
    assert "num_iterations = 2" in md
