"""A hostile runs folder (issue 12 item 5), built by hand in milliseconds: no model, no training.

    hr = build_hostile_runs(tmp_path)     # hr.root: the runs folder; hr.bad: file -> what is wrong

What it holds (run names carry payloads too, as far as a file name can: no "/"):
  PAYLOAD_RUN   iGRPO, every text field a payload (prompt, completion, gold, extracted, reward_status,
                finish_reason, prompt_id, config and provenance values, status error, eval names and
                samples); one refinement is a 10 MB completion; a truncated step 2 and a half-written
                step_000003.parquet.tmp; status "failed" with a payload error
  GRPO_RUN      metrics.parquet is random bytes; config values of the wrong types; one readable step
  bad-config-text   config.json is not JSON; status.json is not UTF-8
  bad-config-list   config.json is JSON but a list
  no-config         rollouts only, no config.json
  linked-run        a symlink to a complete run outside the runs folder (with SECRET in its text)
  linked-metrics    metrics.parquet is a symlink to a metrics file outside the runs folder (SECRET_VALUE)
  eval-broken       an evaluation directory under the root: summary.json garbage, a truncated part

`bad` lists every file a reader must name (relative to root), with a word of the reason.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from igrpo_core import records
from igrpo_core.options import METRIC_COLUMNS

TITLE = "document.title='PWNED'"
PAYLOADS = [f"<script>{TITLE}</script>", f"<img src=x onerror=\"{TITLE}\">",
            f"[x](javascript:{TITLE})", "{{7*7}}", "<b>bold</b><iframe src=javascript:alert(1)></iframe>"]
PAYLOAD = " ".join(PAYLOADS)            # one string holding every payload
SECRET = "SECRET-OUTSIDE-THE-RUNS-FOLDER"
SECRET_VALUE = 0.31337
BIG = 10 * 1024 * 1024                  # characters of the huge completion
PAYLOAD_RUN = "igrpo-<img src=x onerror=document.title='PWNED'>{{7*7}}"
GRPO_RUN = "grpo-[x](javascript:document.title='PWNED')"


@dataclass
class HostileRuns:
    root: Path
    outside: Path
    bad: dict[str, str] = field(default_factory=dict)   # path relative to root -> word of the reason


def _rows(step: int, algo: str, text: str, big: bool = False) -> list[dict]:
    """One group: 2 drafts (the chosen one wrong) + 2 refinements (the first right: a fix), or 4 grpo rows."""
    base = dict(step=step, prompt_id=f"p-{text}", group_index=0, prompt=f"Q {text}", gold=f"7 {text}",
                extracted=f"x {text}", reward_status=f"error: {text}", finish_reason=f"stop {text}",
                prompt_tokens=5, completion_tokens=9)
    if algo == "grpo":
        return [{**base, "stage": "grpo", "sample_index": i, "completion": f"{text} #{i}", "reward": float(i % 2),
                 "reward_accuracy": float(i % 2), "advantage": 0.5 - i % 2} for i in range(4)]
    drafts = [{**base, "stage": "draft", "sample_index": i, "completion": f"draft {i} {text}", "reward": 0.0,
               "reward_accuracy": 0.0, "is_chosen_draft": i == 0} for i in range(2)]
    huge = ("A" * 64 + "\n") * (BIG // 65) + text
    refines = [{**base, "stage": "refine", "sample_index": i, "prompt": f"Q {text} draft {text}",
                "completion": (huge if big and i == 0 else f"refined {i} {text}"), "reward": 1.0 - i,
                "reward_accuracy": 1.0 - i, "advantage": 0.5 - i, "draft_reward": 0.0, "draft_truncated": False}
               for i in range(2)]
    return drafts + refines


def _metrics(path: Path, steps: int, value: float = 0.5) -> None:
    rows = [{k: (s if k == "step" else value + 0.01 * s) for k in METRIC_COLUMNS} for s in range(1, steps + 1)]
    pl.DataFrame(rows, schema={k: pl.Int64 if k == "step" else pl.Float64 for k in METRIC_COLUMNS}).write_parquet(path)


def _run(d: Path, config: dict | None, algo: str, text: str, *, steps: int = 1, big: bool = False) -> Path:
    (d / "rollouts").mkdir(parents=True)
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    for s in range(1, steps + 1):
        records.write_rollouts(d, s, _rows(s, algo, text, big=big and s == 1))
    return d


def _payload_config(algo: str) -> dict:
    return {"algo": algo, "seed": 0, "max_steps": 3, "run_name": PAYLOAD, "model_name_or_path": PAYLOAD,
            "dataset_name": PAYLOAD, PAYLOAD: PAYLOAD, "reward_funcs": [PAYLOAD]}


def _payload_run(root: Path, hr: HostileRuns) -> None:
    d = _run(root / PAYLOAD_RUN, _payload_config("igrpo"), "igrpo", PAYLOAD, big=True)
    _metrics(d / "metrics.parquet", 3)
    (d / "status.json").write_text(json.dumps({"state": "failed", "step": 3, "max_steps": 3,
                                               "updated": PAYLOAD, "error": f"RuntimeError: {PAYLOAD}"}))
    (d / "provenance.json").write_text(json.dumps([{"git": {"commit": PAYLOAD}, "device": PAYLOAD}]))
    records.write_rollouts(d, 2, _rows(2, "igrpo", PAYLOAD))
    part = d / "rollouts" / "step_000002.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])            # truncated mid-file
    (d / "rollouts" / "step_000003.parquet.tmp").write_bytes(b"PAR1\x00\x01half")  # a crash mid-write
    hr.bad[f"{PAYLOAD_RUN}/rollouts/step_000002.parquet"] = "unreadable"
    hr.bad[f"{PAYLOAD_RUN}/rollouts/step_000003.parquet.tmp"] = "half-written"
    ev = d / "eval" / "<img src=x onerror=alert(2)>{{7*7}}"
    ev.mkdir(parents=True)
    ev.joinpath("summary.json").write_text(json.dumps({
        "model": PAYLOAD, "protocol": {"label": PAYLOAD, "temperature": 0.6},
        "metrics": {PAYLOAD: {"problems": 1, "samples_per_problem": 2, "avg@k": 0.5, "pass@1": 0.5},
                    "macro_avg": {"avg@k": 0.5}}}))
    pl.DataFrame([{"dataset": PAYLOAD, "problem_id": f"id {PAYLOAD}", "sample_index": i, "protocol": PAYLOAD,
                   "prompt_tokens": 3, "completion": f"{PAYLOAD} sample {i}", "gold": PAYLOAD, "extracted": PAYLOAD,
                   "correct": i == 0, "status": PAYLOAD, "completion_tokens": 4, "finish_reason": PAYLOAD}
                  for i in range(2)], schema_overrides=records.SAMPLE_SCHEMA).write_parquet(ev / "samples.parquet")


def build_hostile_runs(base: Path) -> HostileRuns:
    base = Path(base)
    root, outside = base / "runs", base / "outside"
    hr = HostileRuns(root=root, outside=outside)
    root.mkdir(parents=True)
    _payload_run(root, hr)

    g = _run(root / GRPO_RUN, {"algo": "grpo", "seed": [PAYLOAD], "max_steps": PAYLOAD, "run_name": PAYLOAD},
             "grpo", PAYLOAD)
    (g / "metrics.parquet").write_bytes(os.urandom(4096))
    hr.bad[f"{GRPO_RUN}/metrics.parquet"] = "unreadable"

    t = _run(root / "bad-config-text", None, "igrpo", PAYLOAD)
    (t / "config.json").write_text("{'algo': igrpo, <script>" + TITLE + "</script>")
    (t / "status.json").write_bytes(b"\xff\xfe\x00garbage \x80\x81")
    _metrics(t / "metrics.parquet", 2)
    hr.bad["bad-config-text/config.json"] = "unreadable"
    hr.bad["bad-config-text/status.json"] = "unreadable"

    lst = _run(root / "bad-config-list", None, "igrpo", PAYLOAD)
    (lst / "config.json").write_text(json.dumps([1, 2, PAYLOAD]))
    hr.bad["bad-config-list/config.json"] = "not a JSON object"

    _run(root / "no-config", None, "grpo", PAYLOAD)
    hr.bad["no-config/config.json"] = "missing"

    secret_run = _run(outside / "secret-run", {"algo": "igrpo", "seed": 0, "max_steps": 1, "run_name": SECRET},
                      "igrpo", SECRET)
    _metrics(secret_run / "metrics.parquet", 1, SECRET_VALUE)
    (root / "linked-run").symlink_to(secret_run, target_is_directory=True)
    hr.bad["linked-run"] = "outside the runs folder"

    _metrics(outside / "secret-metrics.parquet", 2, SECRET_VALUE)
    lm = _run(root / "linked-metrics", {"algo": "grpo", "seed": 0, "max_steps": 2}, "grpo", "plain")
    (lm / "metrics.parquet").symlink_to(outside / "secret-metrics.parquet")
    hr.bad["linked-metrics/metrics.parquet"] = "outside the runs folder"

    ev = root / "eval-broken"
    (ev / "parts").mkdir(parents=True)
    (ev / "summary.json").write_text('{"metrics": {"x": ')
    pl.DataFrame({"dataset": ["d"], "problem_id": ["p"]}).write_parquet(ev / "parts" / "000000.parquet")
    (ev / "parts" / "000000.parquet").write_bytes((ev / "parts" / "000000.parquet").read_bytes()[:40])
    hr.bad["eval-broken/summary.json"] = "unreadable"
    hr.bad["eval-broken/parts/000000.parquet"] = "unreadable"
    return hr
