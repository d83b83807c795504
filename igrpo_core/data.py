"""Load math problems — the bundled benchmarks and users' own files — as rows of one schema.

A row is a dict: `id` (unique within the file), `problem`, `answer` (the gold final answer, a
string), `source`, plus `solution`, `level`, `subject` where present, plus any other columns a
user file carries (so custom rewards can read them).

- `load_benchmark("gsm8k")` reads data/benchmarks/<name>/<split>.jsonl, built and checksummed
  by scripts/build_data.py (see data/benchmarks/README.md for provenance and gold extraction).
- `load_file(path)` reads a user's .jsonl / .json / .parquet / .csv, maps column names,
  and validates every row; a bad row raises `DatasetError` naming the file and line (or row),
  or, with `skip_bad_rows=True`, is skipped and listed in `LoadResult.skipped` — never silently.
- `load_any(spec)` takes either a benchmark name ("math500", "gsm8k:train") or a path.
- `load_dataset(spec)` is what a Config's `dataset` / `eval_dataset` names: the generated tiny
  world ("tiny:train", "tiny:heldout"; "tiny-hard:train", "tiny-hard:heldout"), generated word
  problems ("words0:train", ...), or anything `load_any` takes; it returns the rows.

Deliberately left out: downloads (no dataset hub is reachable), prompt formatting (prompts.py),
answer checking (answers.py; only its `parse_gold` is called, to reject gold answers math-verify
cannot read), shuffling and train/eval splitting. Bundled benchmarks are not re-run through
`parse_gold` on load (about 3 ms a row); the build and tests check them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from igrpo_core.answers import AnswerParseError, parse_gold

BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "data" / "benchmarks"

# name -> default split (the evaluation split; gsm8k and math also have "train")
BENCHMARKS = {
    "gsm8k": "test",
    "math": "test",
    "math500": "test",
    "aime24": "test",
    "aime25": "test",
    "amc23": "test",
    "minerva": "test",
    "olympiadbench": "test",
}

FIELDS = ("id", "problem", "answer", "source", "solution", "level", "subject")
SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")


class DatasetError(ValueError):
    """A bad dataset name, file or row; the message names the file and the line or row."""


@dataclass
class LoadResult:
    rows: list[dict]  # the good rows, in file order
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line or row number, reason)
    path: str = ""  # the file the rows came from


# ---------------------------------------------------------------------------------------------
# bundled benchmarks


def list_benchmarks() -> list[str]:
    return list(BENCHMARKS)


def benchmark_path(name: str, split: str | None = None) -> Path:
    """Path of a bundled benchmark file; DatasetError for an unknown name or split."""
    if name not in BENCHMARKS:
        raise DatasetError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    split = split or BENCHMARKS[name]
    path = BENCHMARK_DIR / name / f"{split}.jsonl"
    if not path.exists():
        splits = sorted(p.stem for p in (BENCHMARK_DIR / name).glob("*.jsonl"))
        if not splits:
            raise DatasetError(f"{BENCHMARK_DIR / name}: no files; run scripts/build_data.py")
        raise DatasetError(f"benchmark {name!r} has no split {split!r}; "
                           f"splits: {', '.join(splits)}")
    return path


def load_benchmark(name: str, split: str | None = None, limit: int | None = None) -> list[dict]:
    """Rows of a bundled benchmark split (default split from BENCHMARKS), the first `limit` only."""
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
    path = benchmark_path(name, split)
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            rows.append(json.loads(line))
    return rows


# ---------------------------------------------------------------------------------------------
# user files


def load_file(path: str | Path, *, columns: dict | None = None, skip_bad_rows: bool = False,
                  source: str | None = None) -> LoadResult:
    """Read and validate a user's dataset file.

    columns maps our field to the file's column, e.g. {"problem": "question", "answer": "final"}.
    A row without `id` gets f"{file stem}/{index:05d}" (0-based record index); without `source`
    it gets `source`, else the file stem. Line numbers are exact for .jsonl; .json, .parquet and
    .csv rows are numbered from 1 in data order (a csv header is not counted). Every gold goes
    through math-verify (`parse_gold`, about 3 ms a row), so a 7,500-row file takes ~20 s.
    """
    path = Path(path)
    columns = _check_columns(columns or {})
    records, unit = _read_records(path, columns)
    rows, skipped, seen = [], [], {}
    for index, (number, record, error) in enumerate(records):
        try:
            if error:
                raise DatasetError(error)
            row = _normalise_row(record, index, path.stem, columns, source)
            if row["id"] in seen:
                first = seen[row["id"]]
                raise DatasetError(f"duplicate id {row['id']!r} (first at {unit} {first})")
        except DatasetError as e:
            if not skip_bad_rows:
                raise DatasetError(f"{path}: {unit} {number}: {e}") from None
            skipped.append((number, str(e)))
            continue
        seen[row["id"]] = number
        rows.append(row)
    if not rows:
        why = f"; {len(skipped)} skipped, first: {unit} {skipped[0][0]}: {skipped[0][1]}" if skipped else \
            " (the file holds no records)"
        raise DatasetError(f"{path}: no usable rows" + why)
    return LoadResult(rows=rows, skipped=skipped, path=str(path))


def load_any(spec: str, *, split: str | None = None, limit: int | None = None,
             columns: dict | None = None, skip_bad_rows: bool = False,
             source: str | None = None) -> LoadResult:
    """A benchmark name ("math500", or "gsm8k:train") or else a file path; first `limit` rows."""
    name, _, spec_split = str(spec).partition(":")
    if name in BENCHMARKS:
        if columns:
            raise DatasetError(f"columns= applies to files, not to the benchmark {name!r}")
        path = benchmark_path(name, spec_split or split)
        return LoadResult(rows=load_benchmark(name, spec_split or split, limit), path=str(path))
    result = load_file(spec, columns=columns, skip_bad_rows=skip_bad_rows, source=source)
    if limit is not None:
        result.rows = result.rows[:limit]
    return result


def load_dataset(spec: str, *, tiny_num_problems: int = 4000, limit: int | None = None) -> list[dict]:
    """Rows for a dataset spec: "tiny:train" / "tiny:heldout" (generated; "tiny-hard:..." the harder
    level, tinyworld.HARD), a benchmark, or a file."""
    name, _, split = spec.partition(":")
    # The generators are prefix-stable (the first k of n problems are the first k of any larger n), so
    # a limit generates only what it keeps: level-0 word problems have ~1,200 distinct held-out texts.
    tiny_num_problems = min(tiny_num_problems, limit) if limit else tiny_num_problems
    if name in ("tiny", "tiny-hard"):  # tinyworld.LEVELS (not imported here: tinyworld loads lazily)
        from igrpo_core import tinyworld
        rows = tinyworld.make_split(split or "train", tiny_num_problems, difficulty=tinyworld.LEVELS[name], name=name)
        rows = rows[:limit] if limit else rows
    elif name.startswith("words"):  # "words:train", "words1:heldout": generated word problems (wordproblems)
        from igrpo_core import wordproblems
        rows = wordproblems.load_spec(spec, tiny_num_problems)
        rows = rows[:limit] if limit else rows
    else:
        rows = load_any(spec, limit=limit or None).rows
    if not rows:
        raise DatasetError(f"dataset {spec!r} has no rows")
    return rows


# ---------------------------------------------------------------------------------------------
# helpers


def _check_columns(columns: dict) -> dict:
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise DatasetError(f"columns: unknown field(s) {unknown}; fields are {list(FIELDS)}")
    return dict(columns)


def _read_records(path: Path, columns: dict) -> tuple[list, str]:
    """[(line or row number, record or None, error or None)] and the word for the number."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path), "line"
    if suffix == ".json":
        return _read_json_list(path), "row"
    if suffix in (".parquet", ".csv"):
        return _read_table(path, suffix, columns), "row"
    raise DatasetError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                       f"use one of {', '.join(SUFFIXES)}")


def _read_jsonl(path: Path) -> list:
    records = []
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                records.append((line_no, None, f"not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})"))
                continue
            if not line.strip():
                continue  # blank lines (a trailing newline) hold no record
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                records.append((line_no, None, f"malformed JSON ({e.msg}, column {e.colno})"))
                continue
            records.append(_object_record(line_no, record))
    return records


def _read_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: line {e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    return [_object_record(i, record) for i, record in enumerate(data, start=1)]


def _object_record(number: int, record) -> tuple[int, dict | None, str | None]:
    if isinstance(record, dict):
        return number, record, None
    return number, None, f"expected a JSON object, got {type(record).__name__}"


def _read_table(path: Path, suffix: str, columns: dict) -> list:
    import polars as pl  # only tabular files need it

    try:
        if suffix == ".csv":  # all text: "007" must stay "007", not become 7
            frame = pl.read_csv(path, infer_schema=False)
        else:
            frame = pl.read_parquet(path)
    except Exception as e:  # polars raises several types for a corrupt file; re-raise with the path
        raise DatasetError(f"{path}: cannot read {suffix[1:]}: {e}") from e
    for our in ("problem", "answer"):
        theirs = columns.get(our, our)
        if theirs not in frame.columns:
            raise DatasetError(f"{path}: no column {theirs!r} for field {our!r}; "
                               f"columns are {frame.columns}")
    return [(i, record, None) for i, record in enumerate(frame.to_dicts(), start=1)]


def _normalise_row(record: dict, index: int, stem: str, columns: dict, source: str | None) -> dict:
    """One validated row in our schema; DatasetError (without location) says what is wrong."""
    def get(our: str):
        return record.get(columns.get(our, our))

    def where(our: str) -> str:
        return f"field {our!r}" + (f" (column {columns[our]!r})" if our in columns else "")

    for our in ("problem", "answer"):
        if columns.get(our, our) not in record:
            raise DatasetError(f"missing {where(our)}")
    problem = get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise DatasetError(f"empty problem in {where('problem')}" if _blank(problem) else
                           f"{where('problem')} is {type(problem).__name__}, not text")
    answer = _answer_text(get("answer"))
    if not answer:
        raise DatasetError(f"empty gold answer in {where('answer')}")
    try:
        parse_gold(answer)
    except AnswerParseError as e:
        raise DatasetError(f"gold answer {answer!r} cannot be parsed: {e}") from None
    mapped = set(columns.values())
    row = {k: v for k, v in record.items() if k not in mapped and k not in FIELDS}
    row.update(problem=problem.strip(), answer=answer)
    row["id"] = str(get("id")) if not _blank(get("id")) else f"{stem}/{index:05d}"
    row["source"] = str(get("source")) if not _blank(get("source")) else (source or stem)
    for our in ("solution", "level", "subject"):
        if not _blank(get(our)):
            row[our] = get(our)
    return row


def _answer_text(value) -> str:
    """Gold as text: 27.0 -> "27" (AMC-style floats), other numbers as written, blanks -> ""."""
    if _blank(value):
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DatasetError(f"gold answer is {type(value).__name__}, not text or a number")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _blank(value) -> bool:
    return (value is None or (isinstance(value, str) and not value.strip())
            or (isinstance(value, float) and math.isnan(value)))
