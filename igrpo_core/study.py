"""The study of issue 11: GRPO, iGRPO and each beyond-the-paper option, over seeds and tiny-world levels.

A study is a grid of level x arm x seed cells at one matched sampling budget (the base config's
num_generations x prompts_per_step per step). Every arm except `grpo` is iGRPO as in the paper
(`ARMS["igrpo"]`) plus the overrides of one option; `combo` merges the single options that beat
iGRPO on a level (`choose_combination`, decided on the first seed's cells only, so the later seeds'
cells of combo are free of the choice). Each cell is one run directory, trained and evaluated through
ablations.run_cell (resumable: a rerun with the same tag reads finished cells back and resumes the
rest). `study_table` reduces cells to one row per level and arm, with a bootstrap CI over seeds x
problems (`bootstrap_ci`) and the CI of the difference to iGRPO on the same problems.

Deliberately left out: plotting (the notebook), significance tests beyond percentile bootstrap
intervals, and any correction for the number of arms compared (read the CIs as per-arm intervals).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from igrpo_core import ablations, records
from igrpo_core.analysis import near_miss_counts
from igrpo_core.config import Config

LEVELS = ("tiny", "tiny-hard")
BASELINE = "igrpo"      # the arm every option is added to, and the one the difference CI is taken against
COMBO = "combo"

# Arm -> overrides of the base config. Every arm but "grpo" runs iGRPO as in the paper plus its option.
ARMS: dict[str, dict] = {
    "grpo": {"algo": "grpo"},
    "igrpo": {},
    "near_miss": {"draft_selection": "near_miss"},
    "minority": {"draft_selection": "minority"},
    "worst": {"draft_selection": "worst"},
    "random": {"draft_selection": "random"},
    "draft_loss": {"draft_loss": True},
    "adaptive": {"adaptive_split": "agreement"},
    "rounds2": {"refine_rounds": 2},
    "dynamic": {"dynamic_sampling": True},
    "overlong": {"overlong_buffer_len": "quarter"},   # a quarter of max_completion_length (see arm_overrides)
    "mask_truncated": {"mask_truncated_completions": True},
}
PAPER_IGRPO = {"algo": "igrpo", "draft_selection": "best", "draft_loss": False, "adaptive_split": "none",
               "refine_rounds": 1, "dynamic_sampling": False, "overlong_buffer_len": 0,
               "mask_truncated_completions": False}
DEFAULT_ARMS = ["grpo", "igrpo", "near_miss", "draft_loss", "adaptive", "dynamic", "minority", "rounds2",
                "overlong", "mask_truncated", COMBO]   # by priority: run_study runs arms outermost


def arm_overrides(arm: str, base: Config) -> dict:
    """Config overrides of one named arm (not combo): iGRPO as in the paper, then the arm's option."""
    if arm not in ARMS:
        raise ValueError(f"unknown study arm {arm!r}; known: {sorted(ARMS)} and {COMBO!r}")
    ov = dict(ARMS[arm])
    if ov.get("overlong_buffer_len") == "quarter":
        ov["overlong_buffer_len"] = max(1, base.max_completion_length // 4)
    return ov if arm == "grpo" else {**PAPER_IGRPO, **ov}


def cell_config(base: Config, level: str, overrides: dict, seed: int, run_name: str) -> Config:
    """One cell's config: the level's train and held-out splits, the arm's overrides, the seed."""
    if level not in LEVELS:
        raise ValueError(f"unknown tiny-world level {level!r}; known: {list(LEVELS)}")
    return base.replace(dataset=f"{level}:train", eval_dataset=f"{level}:heldout", seed=seed,
                        run_name=run_name, **overrides)


def choose_combination(means: dict[str, float], arm_ovs: dict[str, dict], base: Config,
                       baseline: str = BASELINE) -> tuple[dict, list[str]]:
    """(overrides, arms used): the options of every arm that beat the baseline's mean, best first.

    An arm joins only if it sets no key a better arm already set (near_miss and minority both set
    draft_selection: the better one wins) and the merged config stays valid (adaptive_split needs
    refine_rounds 1). When no arm beats the baseline, the best arm alone (ties: listed order).
    Pure: `means` maps arm -> mean held-out accuracy, `arm_ovs` arm -> its overrides.
    """
    singles = [a for a in means if a not in (baseline, "grpo", COMBO) and a in arm_ovs]
    if not singles:
        raise ValueError("no single-option arm to combine")
    ranked = sorted(singles, key=lambda a: -means[a])   # stable: ties keep the listed order
    winners = [a for a in ranked if means[a] > means[baseline]] or ranked[:1]
    merged, used = dict(PAPER_IGRPO), []
    for arm in winners:
        own = {k: v for k, v in arm_ovs[arm].items() if PAPER_IGRPO.get(k, object()) != v}
        if any(k in merged and merged[k] != PAPER_IGRPO.get(k) for k in own):
            continue
        try:
            base.replace(**{**merged, **own})
        except ValueError:
            continue
        merged.update(own)
        used.append(arm)
    return merged, used


# --- bootstrap --------------------------------------------------------------------------------

def bootstrap_ci(correct: np.ndarray, baseline: np.ndarray | None = None, n_boot: int = 2000,
                 ci: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high): percentile bootstrap of mean accuracy over seeds x problems.

    correct: (S, P) accuracy of each seed's run on each held-out problem (1 sample: 0/1). Each
    replicate draws S seeds and P problems with replacement (a two-way bootstrap: seed-to-seed and
    problem-to-problem variation both widen the interval). With `baseline` (S', P), the statistic
    is mean(correct) - mean(baseline) on the same resampled problems (paired on problems). Seeds are
    drawn independently per arm: conservative, since same-numbered seeds share the data order and
    the evaluation's sampling seed, which pairing on seeds would exploit.
    """
    correct = np.asarray(correct, dtype=float)
    if correct.ndim != 2 or 0 in correct.shape:
        raise ValueError(f"correct must be a non-empty (seeds, problems) array, got shape {correct.shape}")
    if baseline is not None:
        baseline = np.asarray(baseline, dtype=float)
        if baseline.ndim != 2 or baseline.shape[1] != correct.shape[1] or baseline.shape[0] == 0:
            raise ValueError(f"baseline must be (seeds, {correct.shape[1]}) on the same problems, got {baseline.shape}")
    rng = np.random.default_rng(seed)
    P = correct.shape[1]
    p_idx = rng.integers(0, P, size=(n_boot, P))   # (B, P), shared by both arms: paired on problems

    def means(m: np.ndarray) -> np.ndarray:   # (B,) mean over resampled seeds and problems
        s_idx = rng.integers(0, m.shape[0], size=(n_boot, m.shape[0]))   # (B, S)
        per_problem = m[s_idx].mean(axis=1)   # (B, P): seed-averaged
        return np.take_along_axis(per_problem, p_idx, axis=1).mean(axis=1)

    stats = means(correct)
    point = correct.mean()
    if baseline is not None:
        stats = stats - means(baseline)
        point = point - baseline.mean()
    lo, hi = np.quantile(stats, [(1 - ci) / 2, (1 + ci) / 2])
    return float(point), float(lo), float(hi)


def correct_matrix(samples: list[pl.DataFrame]) -> np.ndarray:
    """(S, P) per-problem accuracy, one row per seed's evaluation samples; problems aligned by id."""
    per_seed = [s.group_by("problem_id").agg(pl.col("correct").cast(pl.Float64).mean()) for s in samples]
    ids = sorted(set.intersection(*(set(p["problem_id"]) for p in per_seed)))
    if not ids:
        raise ValueError("the seeds' evaluations share no problem")
    return np.array([[dict(zip(p["problem_id"], p["correct"]))[i] for i in ids] for p in per_seed])


# --- the grid ---------------------------------------------------------------------------------

def study_dir(base: Config, tag: str) -> Path:
    """Where a study's results.parquet, table.parquet and combination.json go (beside its runs)."""
    return Path(base.output_dir) / f"study-{tag}"


def _finished(cfg: Config) -> Path | None:
    """The run directory of a cell that trained to max_steps and was evaluated with this config."""
    run_dir = Path(cfg.output_dir) / cfg.run_name
    try:
        status = records.read_json(run_dir / "status.json")
        same = records.read_json(run_dir / "config.json") == json.loads(json.dumps(cfg.to_dict()))
    except FileNotFoundError:
        return None
    done = status.get("state") == "finished" and status.get("step") == cfg.max_steps
    return run_dir if same and done and (run_dir / "eval" / "final" / "summary.json").exists() else None


def cell_metrics(run_dir: Path) -> dict:
    """A finished cell's study figures: held-out accuracy and means / sums over all training steps."""
    run_dir = Path(run_dir)
    m = records.read_metrics(run_dir)
    summary = records.read_json(run_dir / "eval" / "final" / "summary.json")

    def mean(col):
        return m[col].cast(pl.Float64).mean() if col in m.columns and m[col].null_count() < m.height else None
    nm = near_miss_counts(records.read_rollouts(run_dir))
    return {"run_dir": str(run_dir), "eval_acc": summary["metrics"]["macro_avg"]["avg@k"],
            "steps": m.height, "frac_zero_std": mean("frac_zero_std"), "refine_gain": mean("refine_gain"),
            "refinements": int(nm["refinements"].sum()) if nm.height else 0,
            "fixes": int(nm["fix"].sum()) if nm.height else 0, "breaks": int(nm["break"].sum()) if nm.height else 0,
            "step_time_s": mean("step_time_s"), "completions_per_step": mean("sampled_completions"),
            "frac_length_capped": mean("frac_length_capped")}


def _combination(combo, rows: list[dict], level: str, seed: int, arm_ovs: dict, base: Config):
    """(overrides, label) of the combo arm on a level: given, or chosen from `seed`'s single-option cells."""
    if isinstance(combo, dict):
        return {**PAPER_IGRPO, **combo}, "given: " + ", ".join(f"{k}={v}" for k, v in combo.items())
    means = {r["arm"]: r["eval_acc"] for r in rows if r["level"] == level and r["seed"] == seed}
    if BASELINE not in means:
        raise ValueError(f"combo 'auto' needs the {BASELINE!r} arm before it in `arms`")
    ov, used = choose_combination(means, arm_ovs, base)
    return ov, "+".join(used)


def run_study(base: Config, levels=LEVELS, arms=DEFAULT_ARMS, seeds=(0, 1, 2), tag: str | None = None,
              combo="auto", eval_workers: int = 1, progress: bool = False, log=print) -> pl.DataFrame:
    """Train and evaluate every arm x level x seed cell, in that nesting; one row per cell.

    Arms run outermost in the listed order, so an interrupted study holds whole arms (every level and
    seed): list them by priority. `combo` ("auto", or a dict of overrides on top of paper iGRPO) is
    the combo arm; "auto" chooses it per level from the first seed's cells of the single-option arms
    listed before it. Rows go to <output_dir>/study-<tag>/results.parquet after every cell; a rerun
    with the same tag reads finished cells back and resumes the others (more arms or seeds may be
    added). Cells with identical configs (a combo equal to one arm) train once and share the run.
    eval_workers: see experiments.train_and_evaluate (1: inline answer checks, fast on a busy CPU).
    """
    import time
    tag = ablations.new_tag(tag)
    out = study_dir(base, tag)
    out.mkdir(parents=True, exist_ok=True)
    arm_ovs = {a: arm_overrides(a, base) for a in arms if a != COMBO}
    combos, done, rows = {}, {}, []
    for arm in arms:
        for level in levels:
            if arm == COMBO and level not in combos:
                combos[level] = _combination(combo, rows, level, seeds[0], arm_ovs, base)
                records.write_json(out / "combination.json", {lv: {"overrides": o, "arms": a}
                                                              for lv, (o, a) in combos.items()})
                log(f"combo on {level}: {combos[level][1]}")
            ov = combos[level][0] if arm == COMBO else arm_ovs[arm]
            for seed in seeds:
                cfg = cell_config(base, level, ov, seed, f"{tag}-{level}-{ablations._slug(arm)}-s{seed}")
                key = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "run_name"}, sort_keys=True)
                if key not in done:
                    t0 = time.perf_counter()
                    run_dir = _finished(cfg) or ablations.run_cell(cfg, progress, eval_workers)["run_dir"]
                    done[key] = cell_metrics(run_dir)
                    log(f"{time.strftime('%H:%M:%S')} {level} {arm} s{seed}: acc {done[key]['eval_acc']:.3f} "
                        f"({time.perf_counter() - t0:.0f} s)")
                rows.append({"level": level, "arm": arm, "seed": seed,
                             "combo_arms": combos[level][1] if arm == COMBO else None, **done[key]})
                pl.DataFrame(rows, infer_schema_length=None).write_parquet(out / "results.parquet")
    return pl.DataFrame(rows, infer_schema_length=None)


# --- the table --------------------------------------------------------------------------------

def correct_matrices(results: pl.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """(level, arm) -> (S, P) per-problem accuracy of each seed's final evaluation."""
    out = {}
    for (level, arm), cells in results.group_by("level", "arm", maintain_order=True):
        samples = [records.read_eval_samples(Path(d) / "eval" / "final") for d in cells.sort("seed")["run_dir"]]
        out[(level, arm)] = correct_matrix(samples)
    return out


def study_table(results: pl.DataFrame, correct: dict[tuple[str, str], np.ndarray], n_boot: int = 2000,
                baseline: str = BASELINE) -> pl.DataFrame:
    """One row per level and arm (levels, then arms, in first-seen order): accuracy mean, std over seeds and bootstrap CI,
    its difference to the baseline arm with CI, and the training records' means over seeds.

    zero_var: share of trained groups with all-equal rewards; refine_gain: refinement minus chosen
    draft reward; fixes / breaks: refinements right where their draft was wrong / wrong where it was
    right (summed over a run, mean over seeds); capped: share of trained completions that hit
    max_completion_length (what overlong shaping and mask_truncated_completions act on); step_s:
    seconds per step; completions: sampled per step (the budget spent; dynamic sampling draws more).
    """
    rows = []
    for (level, arm), cells in results.group_by("level", "arm", maintain_order=True):
        acc, mat = cells["eval_acc"].cast(pl.Float64), correct[(level, arm)]
        _, lo, hi = bootstrap_ci(mat, n_boot=n_boot)
        row = {"level": level, "arm": arm, "seeds": cells.height, "acc_mean": acc.mean(),
               "acc_std": acc.std(), "ci_low": lo, "ci_high": hi}
        base = correct.get((level, baseline))
        if base is not None and arm != baseline and base.shape[1] == mat.shape[1]:
            row["diff_vs_" + baseline], row["diff_low"], row["diff_high"] = bootstrap_ci(mat, base, n_boot=n_boot)
        for col, name in (("frac_zero_std", "zero_var"), ("refine_gain", "refine_gain"), ("fixes", "fixes"),
                          ("breaks", "breaks"), ("frac_length_capped", "capped"), ("step_time_s", "step_s"),
                          ("completions_per_step", "completions")):
            row[name] = cells[col].cast(pl.Float64).mean() if col in cells.columns else None
        row["combo_arms"] = cells["combo_arms"][0] if "combo_arms" in cells.columns else None
        rows.append(row)
    levels = list(dict.fromkeys(r["level"] for r in rows))   # grouped by level, arms in run order within
    return pl.DataFrame(sorted(rows, key=lambda r: levels.index(r["level"])), infer_schema_length=None)


def to_markdown(table: pl.DataFrame) -> str:
    """The study table as a Markdown table (README), numbers rounded for reading."""
    def fmt(v):
        return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    cols = table.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in table.iter_rows()]
    return "\n".join(lines)
