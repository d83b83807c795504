"""Hostile run folders (issue 12 item 5): every dashboard page over tests/hostile_runs.py renders, names every
bad file in a warning, never reads through a symlink out of the runs folder, keeps payloads out of markdown
(except as inline code), and clips a 10 MB completion for display. Plus the read-side units behind it.
"""
from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from hostile_runs import BIG, PAYLOAD, PAYLOAD_RUN, SECRET, SECRET_VALUE, build_hostile_runs
from igrpo_core import analysis, records

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboards" / "app.py"
PAGES = ["Runs", "Arms", "Curves", "Rollouts", "Near misses", "Evaluation"]
MARKERS = ["<script", "<img", "javascript:", "{{7*7}}", "<b>", "<iframe"]  # what must never reach markdown raw


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return build_hostile_runs(tmp_path_factory.mktemp("hostile"))


def _app(root: Path, monkeypatch, page: str) -> AppTest:
    monkeypatch.setenv("IGRPO_RUNS", str(root))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, (page, [e.value for e in at.exception])
    return at


def _markdown_texts(at: AppTest) -> list[str]:
    """Everything Streamlit renders as markdown: markdown, captions, alerts, expander labels."""
    out = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success") for e in at.get(kind)]
    return out + [e.label for e in at.get("expander")]


def _all_text(at: AppTest) -> str:
    parts = _markdown_texts(at) + [c.value for c in at.code] + [t.value for t in at.text]
    parts += [d.value.to_csv() for d in at.dataframe] + [c.proto.spec for c in at.get("plotly_chart")]
    parts += [str(o) for w in (*at.selectbox, *at.multiselect) for o in w.options]
    return "\n".join(parts)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_names_every_bad_file(hostile, monkeypatch, page):
    at = _app(hostile.root, monkeypatch, page)
    warning = next(w.value for w in at.warning if "could not be read" in w.value)
    named = dict(re.findall(r"^- `([^`]*)`: `([^`]*)`$", warning, flags=re.M))
    md_name = {rel: rel.replace("`", "'") for rel in hostile.bad}
    assert set(named) == set(md_name.values()), warning   # every bad file, and nothing else
    for rel, word in hostile.bad.items():
        assert word in named[md_name[rel]], (rel, named[md_name[rel]])


@pytest.mark.parametrize("page", PAGES)
def test_nothing_is_read_through_a_link_out_of_the_runs_folder(hostile, monkeypatch, page):
    at = _app(hostile.root, monkeypatch, page)
    names = at.sidebar.multiselect(key="selected_runs").options
    assert "linked-run" not in names and "linked-metrics" in names
    at.sidebar.multiselect(key="selected_runs").set_value(names).run()  # every run, linked-metrics included
    text = _all_text(at)
    assert SECRET not in text and str(SECRET_VALUE) not in text and "0.32337" not in text


@pytest.mark.parametrize("page", PAGES)
def test_payloads_reach_markdown_only_as_inline_code(hostile, monkeypatch, page):
    at = _app(hostile.root, monkeypatch, page)
    if page == "Rollouts":
        at.selectbox(key="rb_run").set_value(PAYLOAD_RUN).run()
    texts = _markdown_texts(at)
    assert any("<img" in t for t in texts)  # payloads are there (run names, paths), but only as inline code:
    for t in texts:
        outside_code = re.sub(r"`[^`\n]*`", "", t)
        assert not [m for m in MARKERS if m in outside_code], t
    if page in ("Rollouts", "Near misses", "Evaluation"):
        assert any(PAYLOAD in c.value for c in at.code)  # model text is shown, literally, in st.code
    if page in ("Rollouts", "Near misses"):  # the inline diff, the one HTML view: the payload escaped, no tag of it
        bodies = [h.proto.body for h in at.get("html")]
        assert bodies and any(html.escape(PAYLOAD) in b for b in bodies)
        for b in bodies:
            tags = set(re.findall(r"<\s*/?\s*([A-Za-z][\w-]*)", b))
            assert tags <= {"div", "ins", "del", "em"}, b[:400]


def test_huge_completion_is_clipped_for_display(hostile, monkeypatch):
    from dashboards.common import CELL_LIMIT, TEXT_LIMIT
    t0 = time.perf_counter()
    at = _app(hostile.root, monkeypatch, "Near misses")  # first near miss: the fix whose text is 10 MB
    seconds = time.perf_counter() - t0
    full = records.read_rollouts(hostile.root / PAYLOAD_RUN, steps=[1])["completion"].str.len_chars().max()
    assert full > BIG
    huge = [c.value for c in at.code if c.value.startswith("A" * 64)]
    assert huge and all(v.endswith(f"[{full - TEXT_LIMIT} more chars]") for v in huge if len(v) > TEXT_LIMIT)
    assert max(len(c.value) for c in at.code) < TEXT_LIMIT + 100
    assert any("Texts over" in c.value for c in at.caption)  # the diff says it compared the first characters
    assert any(f"Showing the first {TEXT_LIMIT} of {full} characters" in c.value for c in at.caption)
    assert seconds < 60, seconds
    at.sidebar.radio(key="page").set_value("Rollouts").run()
    at.selectbox(key="rb_run").set_value(PAYLOAD_RUN).run()   # the refinements table holds the 10 MB cell
    cells = [v for d in at.dataframe for c in d.value.columns for v in d.value[c] if isinstance(v, str)]
    assert any(v.endswith(f"[{full - CELL_LIMIT} more chars]") for v in cells)
    assert max(map(len, cells)) < CELL_LIMIT + 50
    assert (hostile.root / PAYLOAD_RUN / "rollouts" / "step_000001.parquet").stat().st_size > 0  # untouched


def test_a_bad_file_does_not_hide_the_good_ones(hostile, monkeypatch):
    at = _app(hostile.root, monkeypatch, "Runs")
    table = at.dataframe[0].value
    assert set(table["run"]) == {PAYLOAD_RUN, "grpo-[x](javascript:document.title='PWNED')", "bad-config-text",
                                 "bad-config-list", "no-config", "linked-metrics"}
    assert table.set_index("run").loc["bad-config-text", "reward_mean"] > 0  # its metrics still count
    at.sidebar.radio(key="page").set_value("Rollouts").run()
    at.selectbox(key="rb_run").set_value(PAYLOAD_RUN).run()
    assert not at.get("select_slider")  # truncated step 2 is not offered: step 1 is the only one, no slider
    assert any(PAYLOAD in c.value for c in at.code)


# --- read-side units ----------------------------------------------------------------------------------

def test_load_json_cases(tmp_path):
    sink: list = []
    for name, body in [("bad.json", "{nope"), ("list.json", "[1]"), ("bytes.json", None)]:
        p = tmp_path / name
        p.write_bytes(b"\xff\xfe") if body is None else p.write_text(body)
        assert records.load_json(p, sink, root=tmp_path) == {}
    assert records.load_json(tmp_path / "none.json", sink, root=tmp_path) == {}          # missing is fine...
    assert records.load_json(tmp_path / "cfg.json", sink, root=tmp_path, missing_ok=False) == {}  # ...unless needed
    (tmp_path / "ok.json").write_text(json.dumps({"a": 1}))
    assert records.load_json(tmp_path / "ok.json", sink, root=tmp_path) == {"a": 1}
    assert [(Path(p.path).name, p.reason.split(" (")[0]) for p in sink] == [
        ("bad.json", "unreadable"), ("list.json", "not a JSON object"), ("bytes.json", "unreadable"),
        ("cfg.json", "missing")]


def test_symlink_policy_inside_followed_outside_not(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "out"
    (root / "r").mkdir(parents=True)
    out.mkdir()
    pl.DataFrame({"step": [1]}).write_parquet(out / "m.parquet")
    pl.DataFrame({"step": [2]}).write_parquet(root / "r" / "real.parquet")
    (root / "r" / "out.parquet").symlink_to(out / "m.parquet")
    (root / "r" / "in.parquet").symlink_to(root / "r" / "real.parquet")
    (root / "r" / "loop.parquet").symlink_to(root / "r" / "loop.parquet")
    sink: list = []
    assert records.load_parquet(root / "r" / "in.parquet", sink, root=root)["step"].to_list() == [2]
    assert records.load_parquet(root / "r" / "out.parquet", sink, root=root) is None
    assert records.load_parquet(root / "r" / "loop.parquet", sink, root=root) is None
    assert [Path(p.path).name for p in sink] == ["out.parquet", "loop.parquet"]
    assert "outside the runs folder" in sink[0].reason and "loop" in sink[1].reason


def test_parquet_paths_are_not_globs(tmp_path):
    d = tmp_path / "run-[x]*?"
    d.mkdir()
    pl.DataFrame({"step": [1]}).write_parquet(d / "metrics.parquet")
    assert records.read_metrics(d)["step"].to_list() == [1]  # polars' default would glob "[x]" and find nothing
    assert list(records.parquet_schema(d / "metrics.parquet")) == ["step"]


def test_find_runs_reports_links_out_and_runs_without_config(hostile):
    sink: list = []
    names = [p.name for p in records.find_runs(hostile.root, sink)]
    assert "linked-run" not in names and "no-config" in names and "eval-broken" not in names
    assert {Path(p.path).relative_to(hostile.root).as_posix() for p in sink} == {"linked-run", "no-config/config.json"}


def test_multi_run_helpers_warn_and_go_on(hostile, capsys):
    runs = analysis.pick_runs([], hostile.root, newest=50)
    assert len(runs) == 6
    summaries = [analysis.run_summary(r) for r in runs]
    m = analysis.metrics_long(runs)
    nm = analysis.near_misses_long(runs)
    err = capsys.readouterr().err
    for rel in hostile.bad:
        if not rel.startswith("eval-broken"):  # root-level evaluations are the dashboard's, not these helpers'
            assert f"warning: skipped {hostile.root / rel}: " in err, rel
    assert SECRET_VALUE not in m.select(pl.col(pl.Float64)).to_numpy().round(5)
    assert {s["run"] for s in summaries} == {r.name for r in runs} and nm.height >= 1
    assert "more chars]" in analysis.format_near_misses(nm)


def test_md_keeps_names_on_one_line_of_inline_code():
    from dashboards.common import clip, clip_frame, md, plot_text
    assert md("a`b\n\n[x](javascript:y)") == "`a'b\\n\\n[x](javascript:y)`"
    assert md("x" * 1000).endswith("[800 more chars]`")
    assert clip("abcdef", 2) == "ab … [4 more chars]"
    assert clip_frame(pl.DataFrame({"t": ["abcdef", "ab"], "n": [1, 2]}), 3)["t"].to_list() == [
        "abc … [3 more chars]", "ab"]
    assert plot_text("<b>x</b> & y") == "&lt;b&gt;x&lt;/b&gt; &amp; y"
