"""Plain-text diffs of two completions (difflib), for display with st.code: never HTML.

`word_diff` marks removed words in the left text as [-word-] and added words in the right text as
{+word+} (git's --word-diff notation), so the two can be shown side by side. `line_table` aligns
lines for long, multi-line completions.
"""
from __future__ import annotations

import difflib
import re

_TOKEN = re.compile(r"\s+|[^\s]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text or "")


def word_diff(left: str, right: str) -> tuple[str, str, float]:
    """(left marked with [-removed-], right marked with {+added+}, similarity ratio in [0, 1])."""
    a, b = _tokens(left), _tokens(right)
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    out_a, out_b = [], []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            out_a += a[i1:i2]
            out_b += b[j1:j2]
            continue
        if i2 > i1:
            out_a.append("[-" + "".join(a[i1:i2]) + "-]")
        if j2 > j1:
            out_b.append("{+" + "".join(b[j1:j2]) + "+}")
    return "".join(out_a), "".join(out_b), sm.ratio()


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
