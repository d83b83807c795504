"""Single-shot evaluation: k samples per problem, avg@k (mean pass@1), unbiased pass@k, maj@k.

Protocol. The paper's is the default: temperature 0.6, top-p 0.95, and k samples per problem with
pass@1 averaged over them, k = 64 for AIME (aime24, aime25) and 8 for every other set. The rule for
k, per set: greedy decoding -> 1 (all samples would be identical); else `num_samples` > 0 -> that k
for every set; else (`num_samples=0`, i.e. Config.eval_num_samples=0) -> `paper_num_samples(set)`.

The layout of an evaluation directory and its record schemas live in `records` (beside the
training records); the metrics are `metrics.summarize`.
Work proceeds in chunks of problems with a seed derived from (seed, set, chunk), so an interrupted
evaluation resumes at the first missing part and ends with exactly the samples and metrics of an
uninterrupted one. Answer checks run in worker processes (checkpool.check_many: math-verify's alarm
needs a main thread), in input order.

A problem whose prompt plus `max_new_tokens` exceeds the model context (`max_model_len`, e.g. a
GSM8K question for the 512-position tiny model) is skipped and counted (`skipped_too_long`; metrics
cover the evaluated problems, `coverage` says how many that is), never truncated and never a crash.

`refine_rounds >= 1` is a test-time analysis, NOT the paper's protocol (single-shot inference): each
of the k answers is fed back as a draft (prompts.build_refine_prompt) and refined, once per round.
Rows carry protocol "test_time_refine_r<R> (not paper protocol)" and the single-shot draft beside the
final answer, so `draft_avg@k` vs `avg@k` shows what refinement buys at test time.

Deliberately left out: tool use, multi-turn chat, LLM-judged correctness, any execution of model text.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import polars as pl

from igrpo_core import provenance, records
from igrpo_core.checkpool import check_many
from igrpo_core.metrics import summarize
from igrpo_core.records import SAMPLE_SCHEMA, SKIP_SCHEMA
from igrpo_core.engine import SamplingParams
from igrpo_core.prompts import TRUNCATION_MARK, attach_draft, build_refine_prompt, render_prompt

SINGLE_SHOT = "single_shot"
PAPER_TEMPERATURE, PAPER_TOP_P = 0.6, 0.95
PAPER_K = {"aime24": 64, "aime25": 64}   # paper: pass@1 averaged over 64 samples on AIME ...
PAPER_K_OTHER = 8                        # ... and over 8 on every other benchmark
ChunkHook = Callable[[dict], None]


def refine_protocol(rounds: int) -> str:
    return SINGLE_SHOT if rounds == 0 else f"test_time_refine_r{rounds} (not paper protocol)"


def paper_num_samples(set_name: str) -> int:
    """The paper's k for a set: 64 for AIME24/25, 8 otherwise ("aime24:test" -> 64)."""
    base = Path(set_name.split(":")[0]).stem.lower()
    return PAPER_K.get(base, PAPER_K_OTHER)


def resolve_num_samples(set_name: str, num_samples: int, greedy: bool) -> int:
    """k for one set: greedy -> 1; num_samples > 0 -> num_samples; 0 -> the paper's per-set k."""
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0 (0 = paper default per set), got {num_samples}")
    if greedy:
        return 1
    return num_samples or paper_num_samples(set_name)


# --------------------------------------------------------------------------- planning

def _refine_budget(max_prompt_length: int, max_model_len: int | None, max_new_tokens: int) -> int:
    return max_prompt_length if max_model_len is None else min(max_prompt_length, max_model_len - max_new_tokens)


def plan_set(tokenizer, name: str, examples: list[dict], *, system_prompt, max_new_tokens: int,
             max_model_len: int | None, refine_rounds: int, draft_template: str,
             max_prompt_length: int) -> tuple[list[dict], list[list[int]], list[dict]]:
    """Split a set into (kept examples, their prompt ids, skipped rows) by the context budget."""
    kept, prompts, skipped = [], [], []
    for ex in examples:
        ids = render_prompt(tokenizer, ex["problem"], system_prompt)
        reason = None
        if max_model_len is not None and len(ids) + max_new_tokens > max_model_len:
            reason = f"prompt {len(ids)} + max_new_tokens {max_new_tokens} > model context {max_model_len}"
        elif refine_rounds:
            bare = render_prompt(tokenizer, attach_draft(ex["problem"], TRUNCATION_MARK.strip(), draft_template),
                                 system_prompt)
            budget = _refine_budget(max_prompt_length, max_model_len, max_new_tokens)
            if len(bare) > budget:
                reason = f"refine prompt {len(bare)} tokens with an empty draft > budget {budget}"
        if reason:
            skipped.append(dict(dataset=name, problem_id=str(ex["id"]), prompt_tokens=len(ids), reason=reason))
        else:
            kept.append(ex)
            prompts.append(ids)
    return kept, prompts, skipped


def _part_path(out_dir: Path, set_index: int, name: str, chunk: int) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[-60:]
    return out_dir / "parts" / f"{set_index:02d}-{safe}-{chunk:05d}.parquet"


def _chunk_seed(seed: int, name: str, chunk: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode()) + chunk * 104_729) % 2**31


def _prepare_dir(out_dir: Path, fingerprint: dict, resume: bool) -> None:
    """Start fresh, or resume only an evaluation with the same fingerprint."""
    cfg_path = out_dir / "eval_config.json"
    if not resume:
        # summary.json, which marks an evaluation finished, goes first: a kill midway must not leave
        # the old samples looking like a finished evaluation
        for p in (out_dir / "summary.json", out_dir / "samples.parquet", out_dir / "parts",
                  out_dir / "skipped.parquet", out_dir / "provenance.json", cfg_path):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    elif not cfg_path.exists() and any((out_dir / "parts").glob("*.parquet")):
        raise ValueError(f"{out_dir}/parts holds samples of an unknown evaluation (no eval_config.json); "
                         "choose another output directory or pass resume=False (--resume false)")
    elif cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if diff:
            raise ValueError(f"{out_dir} holds an evaluation with different settings ({', '.join(diff)}); "
                             "choose another output directory or pass resume=False (--resume false)")
    with records.writing(out_dir / "parts"):
        (out_dir / "parts").mkdir(parents=True, exist_ok=True)
    records.write_json(cfg_path, fingerprint)
    for tmp in (out_dir / "parts").glob("*.tmp"):  # a part half-written when interrupted
        tmp.unlink()


# --------------------------------------------------------------------------- one chunk

@dataclass
class EvalSettings:
    """What decides the samples of an evaluation; recorded in summary.json, and a resume must match it."""
    num_samples: dict[str, int]   # k per set (resolve_num_samples)
    greedy: bool
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    refine_rounds: int            # 0 = single-shot (paper); >= 1 = test-time refinement analysis
    system_prompt: str | None
    draft_template: str | None    # refine rounds only
    refine_prompt_budget: int     # tokens for question + draft in a refine prompt
    max_model_len: int | None     # model context; longer problems are skipped
    label: str = ""
    paper_protocol: bool = False

    def __post_init__(self):
        self.label = refine_protocol(self.refine_rounds)
        self.paper_protocol = (not self.greedy and self.temperature == PAPER_TEMPERATURE
                               and self.top_p == PAPER_TOP_P and self.refine_rounds == 0
                               and all(k == paper_num_samples(n) for n, k in self.num_samples.items()))

    def params(self, name: str, chunk: int) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=0, greedy=self.greedy,
                              max_new_tokens=self.max_new_tokens, seed=_chunk_seed(self.seed, name, chunk))


def generate_chunk(engine, tokenizer, chunk: list[dict], prompts: list[list[int]], k: int,
                   params: SamplingParams, st: EvalSettings) -> tuple[list, list]:
    """[(completion, prompt length)], k per problem grouped by problem, and per row its draft info.

    With st.refine_rounds = R, each answer is attached as a draft and refined R times (n=1 per draft);
    drafts[i] = (single-shot completion, whether any draft was truncated), else None.
    """
    comps = engine.generate(prompts, SamplingParams(**{**params.__dict__, "n": k}))
    lens = [len(prompts[c.prompt_index]) for c in comps]
    first, truncated = comps, [False] * len(comps)
    for r in range(st.refine_rounds):
        rps = [build_refine_prompt(tokenizer, chunk[c.prompt_index]["problem"], c.text, template=st.draft_template,
                                   system_prompt=st.system_prompt, max_prompt_length=st.refine_prompt_budget)
               for c in comps]
        nxt = engine.generate([rp.ids for rp in rps],
                              SamplingParams(**{**params.__dict__, "n": 1, "seed": params.seed + r + 1}))
        for i, (c, rp) in enumerate(zip(nxt, rps)):
            c.prompt_index = comps[i].prompt_index  # the engine numbers refine prompts 0..len-1
            truncated[i] |= rp.draft_truncated
        comps, lens = nxt, [len(rp.ids) for rp in rps]
    drafts = list(zip(first, truncated)) if st.refine_rounds else [None] * len(comps)
    return list(zip(comps, lens)), drafts


def chunk_rows(name: str, chunk: list[dict], k: int, protocol: str, outs: list, drafts: list, *,
               timeout_s: float, workers: int) -> list[dict]:
    """Check answers (and drafts) in worker processes and build one row per sample, in order."""
    golds = [str(chunk[c.prompt_index]["answer"]) for c, _ in outs]
    pairs = [(c.text, g) for (c, _), g in zip(outs, golds)]
    pairs += [(d[0].text, g) for d, g in zip(drafts, golds) if d is not None]
    checks = check_many(pairs, timeout_s=timeout_s, workers=workers)
    finals, draft_checks = checks[: len(outs)], iter(checks[len(outs):])
    rows = []
    for i, ((c, plen), g, res, d) in enumerate(zip(outs, golds, finals, drafts)):
        dres = next(draft_checks) if d is not None else None
        rows.append(dict(
            dataset=name, problem_id=str(chunk[c.prompt_index]["id"]), sample_index=i % k, protocol=protocol,
            prompt_tokens=plen, completion=c.text, gold=g, extracted=res.extracted, correct=res.correct,
            status=res.status, completion_tokens=len(c.ids), finish_reason=c.finish_reason,
            draft=d[0].text if d else None, draft_extracted=dres.extracted if dres else None,
            draft_correct=dres.correct if dres else None, draft_truncated=d[1] if d else None))
    return rows


def _run_chunk(engine, tokenizer, part: Path, name: str, chunk, prompts, ci: int, st: EvalSettings,
               timeout_s: float, workers: int, speed: dict) -> None:
    t0 = time.perf_counter()
    k = st.num_samples[name]
    outs, drafts = generate_chunk(engine, tokenizer, chunk, prompts, k, st.params(name, ci), st)
    t1 = time.perf_counter()
    rows = chunk_rows(name, chunk, k, st.label, outs, drafts, timeout_s=timeout_s, workers=workers)
    records.atomic_write(part, lambda p: pl.DataFrame(rows, schema=SAMPLE_SCHEMA).write_parquet(p),
                         window="eval_part")
    speed["gen_s"] += t1 - t0
    speed["check_s"] += time.perf_counter() - t1
    speed["problems"] += len(chunk)
    speed["samples"] += len(rows)
    speed["tokens"] += sum(len(c.ids) for c, _ in outs) + sum(len(d[0].ids) for d in drafts if d)


# --------------------------------------------------------------------------- driver

def evaluate(engine, tokenizer, datasets: dict[str, list[dict]], out_dir: str | Path, *, num_samples: int = 0,
             greedy: bool = False, temperature: float = PAPER_TEMPERATURE, top_p: float = PAPER_TOP_P,
             max_new_tokens: int = 64, system_prompt: str | None = None, seed: int = 0, chunk_size: int = 32,
             refine_rounds: int = 0, draft_template: str = "{question}\n{draft}", max_prompt_length: int = 1024,
             max_model_len: int | None = None, timeout_s: float = 5.0, workers: int = 2, resume: bool = True,
             progress: bool = True, on_chunk: ChunkHook | None = None, model_name: str | None = None,
             model_version: str | None = None, provenance_entry: dict | None = None) -> dict:
    """Evaluate `engine` on named example lists; writes parts, samples.parquet and summary.json.

    num_samples: k for every set, or 0 for the paper's per-set k (see the module docstring).
    max_model_len: model context in tokens; longer problems are skipped and counted (None: no check).
    workers: answer-check processes (<= 1: inline in this thread, without the hang guard).
    on_chunk(info): called after each chunk's part is written (progress hooks; tests interrupt here).
    model_name, model_version: recorded, and part of what a resumed evaluation must match.
    provenance_entry: an entry (provenance.collect) appended to provenance.json, one per attempt.
    A script calling this with workers >= 2 needs an `if __name__ == "__main__":` guard.
    """
    if refine_rounds < 0:
        raise ValueError(f"refine_rounds must be >= 0, got {refine_rounds}")
    from tqdm.auto import tqdm
    out_dir = Path(out_dir)
    st = EvalSettings({name: resolve_num_samples(name, num_samples, greedy) for name in datasets}, greedy,
                      temperature, top_p, max_new_tokens, seed, refine_rounds, system_prompt,
                      draft_template if refine_rounds else None,
                      _refine_budget(max_prompt_length, max_model_len, max_new_tokens), max_model_len)
    plans = {name: plan_set(tokenizer, name, exs, system_prompt=system_prompt, max_new_tokens=max_new_tokens,
                            max_model_len=max_model_len, refine_rounds=refine_rounds,
                            draft_template=draft_template, max_prompt_length=max_prompt_length)
             for name, exs in datasets.items()}
    _prepare_dir(out_dir, {"model": model_name, "model_version": model_version, **asdict(st),
                           "chunk_size": chunk_size, "generation_batch_size": getattr(engine, "batch_size", None),
                           "problems": {n: _ids_digest(p[0]) for n, p in plans.items()}}, resume)
    if provenance_entry is not None:
        records.append_provenance(out_dir, provenance_entry)
    skipped = [s for p in plans.values() for s in p[2]]
    records.atomic_write(out_dir / "skipped.parquet",
                                lambda p: pl.DataFrame(skipped, schema=SKIP_SCHEMA).write_parquet(p))
    bar = tqdm(total=sum(len(p[0]) for p in plans.values()), desc="eval", unit="problem", disable=not progress)
    speed = dict(problems=0, samples=0, tokens=0, gen_s=0.0, check_s=0.0)
    try:
        for si, (name, (kept, prompts, _)) in enumerate(plans.items()):
            bar.set_description(f"eval {name} k={st.num_samples[name]}")
            for ci, start in enumerate(range(0, len(kept), chunk_size)):
                part = _part_path(out_dir, si, name, ci)
                sl = slice(start, start + chunk_size)
                if not part.exists():  # resume: finished chunks are kept as they are
                    _run_chunk(engine, tokenizer, part, name, kept[sl], prompts[sl], ci, st, timeout_s, workers, speed)
                bar.update(len(kept[sl]))
                if on_chunk is not None:
                    on_chunk(dict(dataset=name, chunk=ci, part=str(part), problems_done=bar.n,
                                  problems_total=bar.total))
    finally:
        bar.close()
    return _finish(out_dir, plans, chunk_size, asdict(st), model_name, speed)


def _finish(out_dir: Path, plans: dict, chunk_size: int, protocol: dict, model_name, speed: dict) -> dict:
    parts = [_part_path(out_dir, si, name, ci) for si, (name, (kept, _, _)) in enumerate(plans.items())
             for ci in range(-(-len(kept) // chunk_size))]
    frames = [pl.read_parquet(p) for p in parts]
    samples = pl.concat(frames) if frames else pl.DataFrame(schema=SAMPLE_SCHEMA)
    records.atomic_write(out_dir / "samples.parquet", lambda p: samples.write_parquet(p), window="eval_samples")
    metrics = summarize(samples)
    for name, (kept, _, skip) in plans.items():
        m = metrics.setdefault(name, {"problems": 0, "samples_per_problem": 0, "avg@k": None})
        m["skipped_too_long"] = len(skip)
        m["coverage"] = len(kept) / (len(kept) + len(skip)) if kept or skip else None
    metrics = {name: metrics[name] for name in plans} | ({"macro_avg": metrics["macro_avg"]}
                                                         if "macro_avg" in metrics else {})
    elapsed = speed["gen_s"] + speed["check_s"]
    summary = {"model": model_name, "metrics": metrics, "protocol": protocol,
               "skipped": {name: len(p[2]) for name, p in plans.items()},
               "problems_evaluated_now": speed["problems"],
               "problems_per_s": speed["problems"] / elapsed if speed["problems"] else None,
               "samples_per_s": speed["samples"] / elapsed if speed["samples"] else None,
               "generated_tokens_per_s": speed["tokens"] / speed["gen_s"] if speed["gen_s"] else None,
               "generation_s": speed["gen_s"], "answer_check_s": speed["check_s"]}
    records.write_json(out_dir / "summary.json", summary, window="eval_summary")
    return summary


def _ids_digest(examples: list[dict]) -> str:
    return f"{len(examples)}:{zlib.crc32(chr(0).join(str(e['id']) for e in examples).encode()):08x}"


# --------------------------------------------------------------------------- tables and entry point

def format_table(results: dict[str, dict], metric: str = "avg@k") -> str:
    """Rows: model/run; columns: datasets (+ macro average). "-" where a set has no evaluated problem."""
    cols = list(dict.fromkeys(ds for r in results.values() for ds in r["metrics"] if ds != "macro_avg"))
    cols.append("macro_avg")
    width = max([12] + [len(c) for c in cols])
    lines = [" | ".join([f"{'model':<28}"] + [f"{c:>{width}}" for c in cols])]
    for name, r in results.items():
        vals = [r["metrics"].get(c, {}).get(metric) for c in cols]
        lines.append(" | ".join([f"{name:<28}"] + [f"{v:{width}.3f}" if v is not None else f"{'-':>{width}}"
                                                  for v in vals]))
    return "\n".join(lines)


def describe(summary: dict) -> str:
    """A few lines on the protocol, skips and speed, for the CLI."""
    p = summary["protocol"]
    decoding = "greedy" if p["greedy"] else f"temperature {p['temperature']}, top-p {p['top_p']}"
    paper = "" if p.get("paper_protocol") or p["refine_rounds"] else "  (not the paper's protocol)"
    lines = [f"protocol: {p['label']}; {decoding}; k per set {p['num_samples']}; "
             f"max_new_tokens {p['max_new_tokens']}{paper}"]
    for name, m in summary["metrics"].items():
        if m.get("draft_avg@k") is not None:
            lines.append(f"{name}: single-shot draft avg@k {m['draft_avg@k']:.3f} -> after {p['refine_rounds']} "
                         f"test-time refine round(s) {m['avg@k']:.3f}")
    for name, n in summary["skipped"].items():
        if n:
            m = summary["metrics"][name]
            lines.append(f"{name}: {n} problem(s) skipped, prompt + max_new_tokens exceed the model context "
                         f"({p['max_model_len']}); metrics cover {m['problems']} (see skipped.parquet)")
    if summary.get("problems_per_s"):
        lines.append(f"speed: {summary['problems_per_s']:.2f} problems/s, {summary['samples_per_s']:.2f} samples/s, "
                     f"{summary['generated_tokens_per_s']:.0f} generated tokens/s "
                     f"(generation {summary['generation_s']:.1f}s, answer checks {summary['answer_check_s']:.1f}s)")
    else:
        lines.append("speed: nothing left to generate (all chunks were already on disk)")
    return "\n".join(lines)


def settings_digest(cfg, model: str) -> str:
    """8 hex digits over the model and every Config setting that changes an evaluation's samples:
    the name of its directory, so a re-run resumes and changed settings never meet stale samples."""
    keys = ("eval_dataset", "eval_num_samples", "eval_temperature", "eval_top_p", "eval_greedy", "eval_limit",
            "max_completion_length", "seed", "system_prompt", "tiny_num_problems", "generation_batch_size")
    blob = json.dumps({**{k: getattr(cfg, k) for k in keys}, "model": model}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def model_files_digest(model_path: str) -> str | None:
    """Names, sizes and mtimes of a local model's weight files: a changed model never resumes old parts."""
    path = Path(model_path)
    if not path.is_dir():
        return None
    files = sorted(p for ext in ("*.safetensors", "*.bin", "*.gguf", "*.pt") for p in path.glob(ext))
    sig = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return f"{zlib.crc32(sig.encode()):08x}"


def model_context_length(engine) -> int | None:
    """The engine's context limit: `engine.max_model_len`, else the model's max_position_embeddings."""
    n = getattr(engine, "max_model_len", None)
    if n is None:
        n = getattr(getattr(getattr(engine, "model", None), "config", None), "max_position_embeddings", None)
    return int(n) if n else None


def evaluate_model(cfg, model_path: str, out_dir: str | Path, *, datasets: dict[str, list[dict]] | None = None,
                   refine_rounds: int = 0, workers: int = 2, progress: bool = True,
                   on_chunk: ChunkHook | None = None, resume: bool | None = None) -> dict:
    """Load `model_path` and evaluate it with the config's eval_* settings on cfg.eval_dataset.

    cfg.eval_num_samples = 0 uses the paper's k per set; cfg.resume (or `resume`) continues an
    interrupted evaluation in out_dir.
    """
    from igrpo_core.data import load_dataset
    from igrpo_core.models import load_tokenizer, make_engine, resolve_device, setup_threads
    setup_threads(cfg.torch_threads)
    if datasets is None:
        datasets = {spec.strip(): load_dataset(spec.strip(), tiny_num_problems=cfg.tiny_num_problems,
                                               limit=cfg.eval_limit)
                    for spec in cfg.eval_dataset.split(",") if spec.strip()}
    gguf = cfg.gguf_file if model_path == cfg.model_name_or_path else None
    tok = load_tokenizer(model_path, gguf)
    engine = make_engine(cfg, tok, model_path=model_path)
    entry = provenance.collect(model=model_path, gguf_file=gguf, device=str(resolve_device(cfg.device)),
                               dtype=cfg.dtype, datasets=datasets)
    return evaluate(engine, tok, datasets, out_dir, num_samples=cfg.eval_num_samples, greedy=cfg.eval_greedy,
                    temperature=cfg.eval_temperature, top_p=cfg.eval_top_p,
                    max_new_tokens=cfg.max_completion_length, system_prompt=cfg.system_prompt, seed=cfg.seed,
                    refine_rounds=refine_rounds, draft_template=cfg.draft_template,
                    max_prompt_length=cfg.max_prompt_length, max_model_len=model_context_length(engine),
                    timeout_s=cfg.reward_timeout_s, workers=workers, progress=progress, on_chunk=on_chunk,
                    resume=cfg.resume if resume is None else resume, model_name=model_path,
                    model_version=model_files_digest(model_path), provenance_entry=entry)
