"""Diffs of two completions (difflib): plain text for st.code, and one escaped-HTML inline view.

`word_diff` marks removed words in the left text as [-word-] and added words in the right text as
{+word+} (git's --word-diff notation), so the two can be shown side by side. `line_table` aligns
lines for long, multi-line completions. `inline_diff` is the one function here that builds HTML:
the refinement with the draft's removed words struck through and its added words highlighted; it
HTML-escapes every token before wrapping it, and returns a `SafeHtml` that common.show_html is the
only caller of st.html to accept. Pure and torch-free (tests/test_textdiff.py).
"""
from __future__ import annotations

import difflib
import html
import re

# A word with the whitespace after it (leading whitespace alone): fewer and less repetitive tokens
# than words and spaces apart, whose many equal " " tokens made difflib take 95 s on 5,000 chars.
_TOKEN = re.compile(r"\S+\s*|\s+")
# Token pairs (len(a) * len(b)) of the differing middle that difflib compares exactly. difflib is
# cubic on texts of few distinct tokens ("x y x y ..." vs "x z x z ...": 1,500 tokens each, 90 s), so
# past this its autojunk heuristic is on: tokens in over 1% of the positions then anchor no match
# (the diff is coarser: such a token may show as removed and added), and it stays fast.
EXACT_BUDGET = 90_000


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text or "")


def _keys(tokens: list[str]) -> list[str]:
    """What tokens are compared by: the word without its trailing whitespace, so "8" at the end of
    a text equals "8 " before more words (a whitespace-only change is not a word change)."""
    return [t.rstrip() or t for t in tokens]


def opcodes(a: list[str], b: list[str]) -> tuple[list[tuple], float, bool]:
    """(difflib opcodes of token lists a -> b, similarity ratio, exact). The common prefix and suffix
    are matched first (a refinement usually copies most of its draft), then the middle is diffed,
    exactly when it is small (EXACT_BUDGET), else with autojunk (exact False)."""
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    q = 0
    while q < min(len(a), len(b)) - p and a[-1 - q] == b[-1 - q]:
        q += 1
    ma, mb = a[p:len(a) - q], b[p:len(b) - q]
    exact = len(ma) * len(mb) <= EXACT_BUDGET
    sm = difflib.SequenceMatcher(a=ma, b=mb, autojunk=not exact)
    ops = [("equal", 0, p, 0, p)] if p else []
    ops += [(op, i1 + p, i2 + p, j1 + p, j2 + p) for op, i1, i2, j1, j2 in sm.get_opcodes()
            if (op, i1, i2, j1, j2) != ("equal", 0, 0, 0, 0)]
    if q:
        ops.append(("equal", len(a) - q, len(a), len(b) - q, len(b)))
    same = p + q + sum(i2 - i1 for op, i1, i2, _, _ in sm.get_opcodes() if op == "equal")
    ratio = 2.0 * same / (len(a) + len(b)) if a or b else 1.0
    return ops, ratio, exact


def word_diff(left: str, right: str) -> tuple[str, str, float]:
    """(left marked with [-removed-], right marked with {+added+}, similarity ratio in [0, 1])."""
    a, b = _tokens(left), _tokens(right)
    ops, ratio, _ = opcodes(_keys(a), _keys(b))
    out_a, out_b = [], []
    for op, i1, i2, j1, j2 in ops:
        if op == "equal":
            out_a += a[i1:i2]
            out_b += b[j1:j2]
            continue
        if i2 > i1:
            out_a.append("[-" + "".join(a[i1:i2]) + "-]")
        if j2 > j1:
            out_b.append("{+" + "".join(b[j1:j2]) + "+}")
    return "".join(out_a), "".join(out_b), ratio


def unified(left: str, right: str, left_name: str = "draft", right_name: str = "refinement") -> str:
    diff = difflib.unified_diff((left or "").splitlines(), (right or "").splitlines(),
                                fromfile=left_name, tofile=right_name, lineterm="", n=2)
    return "\n".join(diff) or "(identical)"


def line_table(left: str, right: str) -> list[dict]:
    """Aligned rows {op, left, right} over lines (op: equal | replace | delete | insert)."""
    a, b = (left or "").splitlines(), (right or "").splitlines()
    rows = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        for k in range(max(i2 - i1, j2 - j1)):
            rows.append({"op": op, "left": a[i1 + k] if i1 + k < i2 else "",
                         "right": b[j1 + k] if j1 + k < j2 else ""})
    return rows


# --- the inline diff (HTML) -----------------------------------------------------------------------

class SafeHtml(str):
    """HTML built by `inline_diff` from escaped text; the one kind of string common.show_html renders."""


INLINE_LIMIT = 5_000  # characters of each text compared (difflib is quadratic; see views_rollouts.DIFF_LIMIT)
_DEL = '<del style="background:#ffd7d5;color:#82071e;text-decoration:line-through">'
_INS = '<ins style="background:#ccffd8;color:#055d20;text-decoration:none">'
_BOX = ('<div class="igrpo-diff" style="white-space:pre-wrap;word-break:break-word;font-family:monospace;'
        'font-size:0.85rem;line-height:1.5;padding:0.6rem 0.8rem;border:1px solid #ddd;border-radius:0.4rem;'
        'max-height:32rem;overflow:auto">')


def inline_diff(left: str | None, right: str | None, limit: int = INLINE_LIMIT) -> tuple[SafeHtml, dict]:
    """One HTML block of `right` with `left`'s removed words struck through and added words highlighted
    (words compared without their trailing whitespace: `_keys`).

    Every token is HTML-escaped (html.escape, quotes too) BEFORE it is wrapped in <del>/<ins>, so
    model text stays text: "<script>" arrives as "&lt;script&gt;". Texts longer than `limit` characters
    are compared on their first `limit` (output stays O(limit)); stats says so ("clipped"), and whether
    the diff is exact (`opcodes`), with the counts of removed and added words and the similarity ratio.
    """
    a_text, b_text = (left or ""), (right or "")
    clipped = max(len(a_text), len(b_text)) > limit
    a, b = _tokens(a_text[:limit]), _tokens(b_text[:limit])
    ops, ratio, exact = opcodes(_keys(a), _keys(b))
    out, removed, added = [_BOX], 0, 0
    for op, i1, i2, j1, j2 in ops:
        if op == "equal":  # shown as the right text has it (whitespace may differ from the left)
            out.append(html.escape("".join(b[j1:j2])))
            continue
        if i2 > i1:
            out.append(_DEL + html.escape("".join(a[i1:i2])) + "</del>")
            removed += sum(not t.isspace() for t in a[i1:i2])  # words, not whitespace
        if j2 > j1:
            out.append(_INS + html.escape("".join(b[j1:j2])) + "</ins>")
            added += sum(not t.isspace() for t in b[j1:j2])
    if not a and not b:
        out.append("<em>(both texts are empty)</em>")
    out.append("</div>")
    stats = {"removed_words": removed, "added_words": added, "ratio": ratio, "clipped": clipped, "exact": exact}
    return SafeHtml("".join(out)), stats
