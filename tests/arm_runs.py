"""A synthetic study folder for the dashboard's arm views, written with records' writers (no training):
two arms (GRPO and iGRPO with draft_selection "worst") x two seeds, three steps each, a final held-out
evaluation per run, and iGRPO rollouts with recorded selection reasons, one fix and one break per step.

Every figure is chosen so the tests can compute the expected arm means by hand (EXPECTED). The
iGRPO refinements carry HTML/JS (DIFF_PAYLOAD) that the inline diff must show as text. Entropy of
seed 1 holds a NaN step, and GRPO seed 0's entropy never falls under 0.5 x its start.
"""
from __future__ import annotations

from pathlib import Path

from igrpo_core import records

DIFF_PAYLOAD = "<img src=x onerror=alert('diff')><script>alert('diff')</script><b>bold</b>"
STEPS = 3
# (algo, seed) -> held-out accuracy, frac_zero_std per step, entropy per step
RUNS = {
    ("grpo", 0): (0.50, [0.2, 0.4, 0.6], [2.0, 1.9, 1.7]),
    ("grpo", 1): (0.60, [0.2, 0.2, 0.2], [2.0, float("nan"), 0.9]),
    ("igrpo", 0): (0.40, [0.5, 0.7, 0.9], [2.0, 1.4, 0.8]),
    ("igrpo", 1): (0.44, [0.6, 0.6, 0.6], [1.0, 0.7, 0.4]),
}
EXPECTED = {"algo=grpo · draft_selection=best": {"heldout_accuracy": 0.55, "zero_std_share": 0.3},
            "algo=igrpo · draft_selection=worst": {"heldout_accuracy": 0.42, "zero_std_share": 0.65,
                                                   "fixes": 2.0, "breaks": 1.0}}


def _config(algo: str, seed: int, root: Path) -> dict:
    return {"algo": algo, "seed": seed, "run_name": f"{algo}-s{seed}", "output_dir": str(root), "max_steps": STEPS,
            "num_generations": 4, "num_drafts": 2, "draft_selection": "best" if algo == "grpo" else "worst",
            "learning_rate": 1e-5}


def _igrpo_rows(step: int) -> list[dict]:
    """One group: drafts #0 (right, reward 2) and #1 (wrong, 0.5; chosen by `worst`), then refinements
    #0 (right, with the payload: a fix) and #1 (wrong). On step 1 draft #0 is the chosen one, so #1
    is a break and #0 no near miss: per run 2 fixes, 1 break, 6 refinements."""
    base = dict(step=step, prompt_id="p7", group_index=0, gold="7", prompt_tokens=5, finish_reason="stop",
                reward_format=0.5, reward_status="ok")
    draft_wrong = "<think>3 + 4 = 8</think><answer>8</answer>"
    rows = [
        {**base, "stage": "draft", "sample_index": 0, "prompt": "3 + 4 = ?", "completion":
         "<think>3 + 4 = 7</think><answer>7</answer>", "extracted": "7", "reward": 2.0, "reward_accuracy": 1.0,
         "completion_tokens": 9, "is_chosen_draft": False},
        {**base, "stage": "draft", "sample_index": 1, "prompt": "3 + 4 = ?", "completion": draft_wrong,
         "extracted": "8", "reward": 0.5, "reward_accuracy": 0.0, "completion_tokens": 9, "is_chosen_draft": True,
         "selection_reason": "worst: lowest reward"},
    ]
    refine = dict(base, stage="refine", prompt="3 + 4 = ? draft: " + draft_wrong, draft_reward=0.5,
                  draft_truncated=False, refine_round=1, completion_tokens=12)
    rows += [{**refine, "sample_index": 0, "completion": f"<think>3 + 4 = 7 {DIFF_PAYLOAD}</think><answer>7</answer>",
              "extracted": "7", "reward": 2.0, "reward_accuracy": 1.0, "advantage": 1.0},
             {**refine, "sample_index": 1, "completion": draft_wrong, "extracted": "8", "reward": 0.5,
              "reward_accuracy": 0.0, "advantage": -1.0}]
    if step == 1:  # the chosen draft is right on step 1 of each run: refinement #1 breaks it
        rows[0]["is_chosen_draft"], rows[1]["is_chosen_draft"] = True, False
        rows[0]["selection_reason"], rows[1]["selection_reason"] = "worst: no mix", None
        rows[2]["draft_reward"] = rows[3]["draft_reward"] = 2.0
    return rows


def build_arm_runs(root: Path) -> Path:
    """Write the four runs under root/runs and return that folder."""
    runs = Path(root) / "runs"
    for (algo, seed), (acc, zero, ent) in RUNS.items():
        d = runs / f"{algo}-s{seed}"
        records.init_run_dir(d, _config(algo, seed, runs))
        for step in range(1, STEPS + 1):
            records.append_metrics(d, {"step": step, "frac_zero_std": zero[step - 1], "entropy": ent[step - 1],
                                       "reward_mean": 1.0, "step_time_s": 2.0 if algo == "grpo" else 3.0})
            if algo == "igrpo":
                records.write_rollouts(d, step, _igrpo_rows(step))
        records.write_status(d, "finished", STEPS, STEPS)
        ev = records.eval_dir(d, "final")
        ev.mkdir(parents=True)
        records.write_json(ev / "summary.json", {"metrics": {"tiny:heldout": {"avg@k": acc, "problems": 100},
                                                             "macro_avg": {"avg@k": acc}}})
    return runs
