"""Evaluation metrics over sample records: unbiased pass@k, maj@k, and per-set summaries.

Pure functions of python values and polars frames (never torch), so the dashboard, notebooks and
tests use the same numbers `evaluate` writes into summary.json.

Deliberately left out: answer checking (answers.py decides `correct`), generation, file layout.
"""
from __future__ import annotations

from collections import Counter

import polars as pl

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), as a stable product."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def normalize_vote(answer: str) -> str:
    """Light normalisation for majority voting: spacing, $ signs, \\left/\\right, a trailing period."""
    s = answer.replace("\\left", "").replace("\\right", "").replace("$", "")
    s = "".join(s.split()).rstrip(".")
    return s


def majority_correct(extracted: list[str | None], correct: list[bool]) -> bool:
    """maj@k: is the most frequent extracted answer correct?

    Votes are normalize_vote(answer); samples without an answer do not vote; a tie goes to the answer
    seen first; no answer at all is wrong. The winner is correct if any sample giving it was judged
    correct (one sample's checker timeout does not flip the vote).
    """
    keys = [normalize_vote(e) if e is not None else None for e in extracted]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return False
    winner = votes.most_common(1)[0][0]  # most_common is stable: ties keep first-seen order
    return any(c for k, c in zip(keys, correct) if k == winner)


def summarize(samples: pl.DataFrame, ks: list[int] | None = None) -> dict:
    """Per-dataset metrics and their macro average across datasets.

    Per set: problems, samples_per_problem (min over problems), avg@k = mean over problems of the
    fraction of correct samples (= unbiased pass@1), pass@k for k in `ks` (default 1 and n) that do
    not exceed n, maj@k, no_answer (fraction of samples), check_failures (count of timeout/error),
    length_capped (fraction), completion_tokens_mean; refine rows also give draft_avg@k.
    macro_avg: the unweighted mean over sets of avg@k, pass@1 and maj@k.
    """
    out: dict[str, dict] = {}
    for (ds,), df in samples.group_by(["dataset"], maintain_order=True):
        has_draft = "draft_correct" in df.columns and df["draft_correct"].null_count() < df.height
        per = df.group_by("problem_id", maintain_order=True).agg(
            pl.col("correct"), pl.col("extracted"), pl.len().alias("n"),
            pl.col("correct").cast(pl.Float64).mean().alias("acc"),
            *([pl.col("draft_correct").cast(pl.Float64).mean().alias("draft_acc")] if has_draft else []))
        n = int(per["n"].min())
        row = {"problems": per.height, "samples_per_problem": n, "avg@k": float(per["acc"].mean())}
        for k in sorted({k for k in (ks or [1, n]) if 0 < k <= n}):
            row[f"pass@{k}"] = sum(pass_at_k(len(c), sum(c), k) for c in per["correct"]) / per.height
        row["maj@k"] = sum(majority_correct(e, c) for e, c in zip(per["extracted"], per["correct"])) / per.height
        if has_draft:
            row["draft_avg@k"] = float(per["draft_acc"].mean())
        row["no_answer"] = float((df["status"] == "no_answer").mean())
        row["check_failures"] = int(df["status"].is_in(["timeout", "error"]).sum())
        if "finish_reason" in df.columns:
            row["length_capped"] = float((df["finish_reason"] == "length").mean())
        if "completion_tokens" in df.columns:
            row["completion_tokens_mean"] = float(df["completion_tokens"].mean())
        out[ds] = row
    if out:
        sets = list(out.values())
        out["macro_avg"] = {m: sum(r[m] for r in sets) / len(sets)
                            for m in ("avg@k", "pass@1", "maj@k") if all(m in r for r in sets)}
        out["macro_avg"]["sets"] = len(sets)
    return out
