"""dashboards/textdiff.inline_diff, the dashboard's one HTML builder: escaping, unicode, empty and very
long inputs; and common.show_html, the one HTML sink, refusing anything but its output."""
from __future__ import annotations

import html
import re
import time

import pytest

from dashboards.textdiff import SafeHtml, inline_diff

TAG = re.compile(r"<(/?)(\w+)")


def _text_of(body: str, kind: str) -> list[str]:
    """The (unescaped) text inside each <ins> or <del> span."""
    return [html.unescape(m) for m in re.findall(rf"<{kind}[^>]*>(.*?)</{kind}>", body, flags=re.S)]


def _visible(body: str, drop: str) -> str:
    """The text a reader sees with the `drop` spans (ins or del) removed, tags stripped, entities decoded."""
    body = re.sub(rf"<{drop}[^>]*>.*?</{drop}>", "", body, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def test_marks_removed_and_added_words():
    body, stats = inline_diff("x = 3 + 4 = 8", "x = 3 + 4 = 7")
    assert isinstance(body, SafeHtml)
    assert _text_of(body, "del") == ["8"] and _text_of(body, "ins") == ["7"]
    assert stats["removed_words"] == 1 and stats["added_words"] == 1 and 0 < stats["ratio"] < 1
    assert not stats["clipped"]
    assert _visible(body, "del") == "x = 3 + 4 = 7" and _visible(body, "ins") == "x = 3 + 4 = 8"


def test_every_token_is_escaped_before_it_is_wrapped():
    payload = "<script>alert('x')</script> <img src=x onerror=alert(1)> \"q\" & <b>b</b>"
    body, _ = inline_diff("keep " + payload, "keep <iframe src=javascript:alert(2)> " + payload + " </del>x")
    tags = {name for _, name in TAG.findall(body)}
    assert tags <= {"div", "ins", "del", "em"}, tags          # no element from the text, only ours
    for bad in ("<script", "<img", "<iframe", "<b>", "</del>x"):
        assert bad not in body
    assert "&lt;script&gt;" in body and "&#x27;" in body and "&quot;q&quot;" in body and "&amp;" in body
    # the reader still sees every character of the texts, literally
    assert _visible(body, "del") == "keep <iframe src=javascript:alert(2)> " + payload + " </del>x"


def test_unicode_and_newlines_survive():
    left = "Ünïcode ✓ 3 + 4 = 8\nnext line 🙂"
    right = "Ünïcode ✓ 3 + 4 = 7\nnext line 🙂 — done"
    body, stats = inline_diff(left, right)
    assert _visible(body, "del") == right
    assert _visible(body, "ins").split() == left.split()  # the left's words; "🙂" kept as the right spaces it
    assert "🙂" in body and "\n" in body and stats["added_words"] == 3   # "7", "—", "done"


@pytest.mark.parametrize("left,right", [("", ""), (None, None), ("", "new"), ("old", None)])
def test_empty_inputs(left, right):
    body, stats = inline_diff(left, right)
    assert body.startswith("<div") and body.endswith("</div>")
    if not left and not right:
        assert "both texts are empty" in body and stats["ratio"] == 1.0
    else:
        assert _text_of(body, "ins" if right else "del") == [right or left]


def test_identical_texts_have_no_marks():
    body, stats = inline_diff("same text", "same text")
    assert "<ins" not in body and "<del" not in body and stats["ratio"] == 1.0


def test_very_long_inputs_are_bounded():
    big_a = ("alpha beta " * 200_000)          # 2.2 MB
    big_b = ("gamma <delta> " * 200_000)
    t0 = time.perf_counter()
    body, stats = inline_diff(big_a, big_b, limit=3_000)
    assert time.perf_counter() - t0 < 5
    assert stats["clipped"] and len(body) < 20 * 3_000     # output is O(limit), not O(input)
    assert "&lt;delta&gt;" in body and "<delta>" not in body
    _, short = inline_diff("a" * 10, "b" * 10, limit=3_000)
    assert not short["clipped"]


@pytest.mark.parametrize("left,right", [("x y " * 1250, "x z " * 1250), ("x " * 2500, "x z " * 1250),
                                        ("alpha beta " * 450, "gamma <delta> " * 350)])
def test_few_distinct_tokens_stay_fast_and_correct(left, right):
    """Cases on which exact difflib is cubic (90 s for 1,500 tokens each): bounded, and still a true diff."""
    t0 = time.perf_counter()
    body, stats = inline_diff(left, right)
    assert time.perf_counter() - t0 < 5 and not stats["exact"]
    assert _visible(body, "del") == right[:5_000] and _visible(body, "ins") == left[:5_000]


def test_common_prefix_and_suffix_stay_unmarked():
    draft = "step " * 3000 + "3 + 4 = 8 " + "end " * 3000
    body, stats = inline_diff(draft, draft.replace("= 8", "= 7"), limit=100_000)
    assert _text_of(body, "del") == ["8 "] and _text_of(body, "ins") == ["7 "] and stats["exact"]


def test_show_html_accepts_only_safe_html():
    from dashboards.common import show_html
    with pytest.raises(TypeError):
        show_html("<b>not built by inline_diff</b>")
