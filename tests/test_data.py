"""Bundled benchmarks (counts, ids, checksums, gold extraction) and the user-file loader."""
from __future__ import annotations

import hashlib
import os
import importlib.util
import json
from pathlib import Path

import polars as pl
import pytest

from igrpo_core import data
from igrpo_core.answers import parse_gold
from igrpo_core.data import DatasetError, load_any, load_benchmark, load_file

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "data" / "benchmarks"
RAW = Path(os.environ.get("IGRPO_RAW_DATA", REPO.parent / "shared" / "data"))

EXPECTED_ROWS = {
    ("gsm8k", "train"): 7473, ("gsm8k", "test"): 1319,
    ("math", "train"): 7500, ("math", "test"): 5000,
    ("math500", "test"): 500, ("aime24", "test"): 30, ("aime25", "test"): 30,
    ("amc23", "test"): 40, ("minerva", "test"): 272, ("olympiadbench", "test"): 675,
}


def _build_script():
    spec = importlib.util.spec_from_file_location("build_data", REPO / "scripts" / "build_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _build_script()


# ---------------------------------------------------------------------------------------------
# bundled benchmarks


@pytest.mark.parametrize(("name", "split"), sorted(EXPECTED_ROWS))
def test_benchmark_rows_and_schema(name, split):
    rows = load_benchmark(name, split)
    assert len(rows) == EXPECTED_ROWS[name, split]
    for row in rows:
        assert row["source"] == name
        assert isinstance(row["problem"], str) and row["problem"].strip()
        assert isinstance(row["answer"], str) and row["answer"].strip()
        assert set(row) <= {"id", "problem", "answer", "source", "solution", "level", "subject"}


def test_benchmark_ids_unique_across_all_sets():
    ids = [r["id"] for name, split in EXPECTED_ROWS for r in load_benchmark(name, split)]
    assert len(ids) == len(set(ids)) == sum(EXPECTED_ROWS.values())


def test_sha256sums_match_files():
    lines = (BENCH / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split("  ", 1)
        listed[name] = digest
    on_disk = sorted(p.relative_to(BENCH).as_posix() for p in BENCH.rglob("*.jsonl"))
    assert sorted(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((BENCH / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.skipif(not RAW.is_dir(), reason=(
    f"rebuild check skipped: the raw benchmark files are not at {RAW} (they sit beside the repository "
    "in ../shared/data on the project's machines and in CI, not in a user's clone); set "
    "IGRPO_RAW_DATA=<dir with the raw files> to run it"))
def test_build_is_deterministic(tmp_path):
    build.build(RAW, tmp_path)
    assert (tmp_path / "SHA256SUMS").read_text() == (BENCH / "SHA256SUMS").read_text()
    assert (tmp_path / "README.md").read_text() == (BENCH / "README.md").read_text()


def test_benchmark_gold_sample_parses():
    """Every 97th gold of every set goes through math-verify (all 23k take ~30 s)."""
    for name, split in EXPECTED_ROWS:
        for row in load_benchmark(name, split)[::97]:
            parse_gold(row["answer"])


def test_known_benchmark_rows():
    first = load_benchmark("gsm8k", "train", limit=1)[0]
    assert first["id"] == "gsm8k/train/00000" and first["answer"] == "72"
    amc = {r["id"]: r["answer"] for r in load_benchmark("amc23")}
    assert amc["amc23/test/0"] == "27"
    aime = {r["id"]: r["answer"] for r in load_benchmark("aime24")}
    assert aime["aime24/test/67"] == "25"  # raw "025"
    olymp = {r["id"]: r["answer"] for r in load_benchmark("olympiadbench")}
    assert olymp["olympiadbench/test/1664"] == "69, 84"  # raw ["$69$,$84$"]
    m500 = {r["problem"]: r["answer"] for r in load_benchmark("math500")}
    math_test = {r["problem"]: r["answer"] for r in load_benchmark("math")}
    assert all(math_test[p] == a for p, a in m500.items())  # our \boxed extractor == MATH-500's


def test_load_benchmark_errors_and_limit():
    with pytest.raises(DatasetError, match="known: gsm8k, math"):
        load_benchmark("gsm9k")
    with pytest.raises(DatasetError, match="splits: test"):
        load_benchmark("aime24", "train")
    assert len(load_benchmark("math500", limit=3)) == 3
    assert data.list_benchmarks() == list(data.BENCHMARKS)


def test_load_any_names_and_paths(tmp_path):
    assert len(load_any("gsm8k:train", limit=2).rows) == 2
    assert load_any("aime25").rows[0]["source"] == "aime25"
    path = _write_jsonl(tmp_path / "mine.jsonl", [{"problem": "1+1?", "answer": "2"}] * 1)
    assert load_any(str(path)).rows[0]["id"] == "mine/00000"


# ---------------------------------------------------------------------------------------------
# gold extraction (scripts/build_data.py)


@pytest.mark.parametrize(("text", "gold"), [
    (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"x = \boxed{\left\{1, 2\right\}}", r"\left\{1, 2\right\}"),  # escaped braces inside
    (r"\boxed{1} first, then \boxed{\sqrt{x^{2}}}", r"\sqrt{x^{2}}"),  # last box, nested
    (r"answer is $\boxed 9$.", "9"),  # brace-less form in two MATH train rows
    (r"\fbox{3}", "3"),
    (r"\boxed{1", None),  # never closes: no gold rather than a wrong one
    ("no box here", None),
])
def test_last_boxed(text, gold):
    assert build.last_boxed(text) == gold


def test_gsm8k_amc_aime_olympiad_answers():
    assert build.gsm8k_answer("She has 1,234 eggs.\n#### 1,234") == "1234"
    assert build.gsm8k_answer("no marker") is None
    assert build.number_answer(27.0) == "27"
    assert build.number_answer(2.5) == "2.5"
    assert build.integer_answer("025") == "25"
    assert build.olympiad_answer(["$69$,$84$"]) == "69, 84"
    assert build.olympiad_answer(["2", "$x^2$"]) == "2, x^2"
    assert build.olympiad_answer(["$(-\\infty, 0) \\cup\\{1\\}$."]) == "(-\\infty, 0) \\cup\\{1\\}"


def test_olympiad_context_joins_question():
    raw = {"id": 7, "context": "Let $x=1$.", "question": "Find $x$.", "final_answer": ["$1$"],
           "solution": ["Because."]}
    row = build.norm_olympiadbench(raw, 0, "test")
    assert row["problem"] == "Let $x=1$.\n\nFind $x$." and row["answer"] == "1"


# ---------------------------------------------------------------------------------------------
# user files


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return path


GOOD = {"problem": "What is 2+3?", "answer": "5"}


@pytest.mark.parametrize(("bad", "message"), [
    ('{"problem": "x", "answer": \n', "malformed JSON"),
    ({"answer": "5"}, "missing field 'problem'"),
    ({"problem": "What?"}, "missing field 'answer'"),
    ({"problem": "   ", "answer": "5"}, "empty problem"),
    ({"problem": "What?", "answer": ""}, "empty gold answer"),
    ({"problem": "What?", "answer": None}, "empty gold answer"),
    ({"problem": "What?", "answer": "$$"}, "cannot be parsed"),
    ({"problem": "What?", "answer": ["5"]}, "not text or a number"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_row_names_file_and_line(tmp_path, bad, message):
    bad = bad if isinstance(bad, str) else json.dumps(bad) + "\n"
    path = _write_jsonl(tmp_path / "mine.jsonl", [GOOD, GOOD | {"problem": "2?"}, bad])
    with pytest.raises(DatasetError, match=message) as err:
        load_file(path)
    assert str(path) in str(err.value) and "line 3" in str(err.value)


def test_duplicate_id_names_both_lines(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [GOOD | {"id": "a"}, "\n", GOOD | {"id": "a"}])
    with pytest.raises(DatasetError, match=r"line 3: duplicate id 'a' \(first at line 1\)"):
        load_file(path)


def test_skip_bad_rows_records_reasons(tmp_path):
    path = _write_jsonl(tmp_path / "s.jsonl",
                        [GOOD, "not json\n", {"problem": "", "answer": "1"}, GOOD | {"id": "x"}])
    result = load_file(path, skip_bad_rows=True)
    assert [r["id"] for r in result.rows] == ["s/00000", "x"]
    assert [line for line, _ in result.skipped] == [2, 3]
    assert "malformed JSON" in result.skipped[0][1] and "empty problem" in result.skipped[1][1]


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"problem": "x"}])
    with pytest.raises(DatasetError, match="no usable rows; 1 skipped"):
        load_file(path, skip_bad_rows=True)


def test_column_mapping_ids_and_source(tmp_path):
    rows = [{"question": "What is 2+3?", "final": 5, "topic": "arith"},
            {"question": "What is 1/2 of 3?", "final": 1.5, "id": 17, "source": "theirs"}]
    path = _write_jsonl(tmp_path / "qa.jsonl", rows)
    result = load_file(path, columns={"problem": "question", "answer": "final"}, source="mine")
    first, second = result.rows
    assert first == {"id": "qa/00000", "problem": "What is 2+3?", "answer": "5", "source": "mine",
                     "topic": "arith"}  # extra columns pass through; mapped ones do not repeat
    assert (second["id"], second["answer"], second["source"]) == ("17", "1.5", "theirs")
    with pytest.raises(DatasetError, match="missing field 'problem' \\(column 'q'\\)"):
        load_file(path, columns={"problem": "q"})
    with pytest.raises(DatasetError, match="unknown field"):
        load_file(path, columns={"question": "problem"})


ROWS = [{"id": "a", "problem": "What is 2+3?", "answer": "5", "level": 1},
        {"id": "b", "problem": "Leading zeros?", "answer": "007", "level": 2}]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_round_trip_each_format(tmp_path, suffix):
    path = tmp_path / f"set{suffix}"
    frame = pl.DataFrame(ROWS)
    {".jsonl": lambda: frame.write_ndjson(path), ".json": lambda: path.write_text(json.dumps(ROWS)),
     ".csv": lambda: frame.write_csv(path), ".parquet": lambda: frame.write_parquet(path)}[suffix]()
    result = load_file(path)
    assert [(r["id"], r["problem"], r["answer"], r["source"]) for r in result.rows] == [
        ("a", "What is 2+3?", "5", "set"), ("b", "Leading zeros?", "007", "set")]
    assert result.skipped == [] and result.path == str(path)


def test_table_errors_name_file_and_row(tmp_path):
    path = tmp_path / "t.csv"
    pl.DataFrame({"problem": ["1+1?", "2+2?"], "answer": ["2", None]}).write_csv(path)
    with pytest.raises(DatasetError, match=r"t\.csv: row 2: empty gold answer"):
        load_file(path)
    pl.DataFrame({"question": ["1+1?"], "answer": ["2"]}).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(DatasetError, match="no column 'problem' for field 'problem'"):
        load_file(tmp_path / "t.parquet")


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetError, match="unsupported file type '.txt'"):
        load_file(tmp_path / "x.txt")
    with pytest.raises(DatasetError, match="no such file"):
        load_file(tmp_path / "nope.jsonl")


def test_a_limit_generates_only_the_rows_it_keeps():
    """The SmolLM2 recipe's eval (words0:heldout, 2,000 problems asked, limit 100) used to fail: level 0
    has about 1,200 distinct held-out texts. Generators are prefix-stable, so limiting first is exact."""
    from igrpo_core import tinyworld, wordproblems
    from igrpo_core.data import load_dataset
    assert load_dataset("words0:heldout", tiny_num_problems=2000, limit=100) == wordproblems.make_split("heldout", 100, 0)
    assert (load_dataset("tiny:heldout", tiny_num_problems=500, limit=30)
            == tinyworld.make_split("heldout", 500, difficulty=tinyworld.LEVELS["tiny"], name="tiny")[:30])
