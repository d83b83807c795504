"""Build tests/data/hostile_completions.jsonl: completions made to break the answer extractor and checker.

Deterministic (no randomness, no clock): rerunning rewrites the same bytes, and
tests/test_hostile_completions.py checks that the committed file equals this script's output.
Each line is {"id", "category", "parts": [...]}; a part is [piece, repeat] (piece * repeat) or
{"fmt", "sep", "n"} (fmt.format(i=i) for i in 1..n, joined by sep); the completion is the parts
joined (`expand`), so megabyte cases are a few bytes here.
"{CANARY}" in a piece is replaced, at test time, by a path in a temporary directory that any
payload that ran would create (tests check that none exists afterwards).

    python scripts/build_hostile_completions.py [--check]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "hostile_completions.jsonl"
CANARY = "{CANARY}"
MB = 1_000_000


def boxed(s: str) -> list:
    return [["The answer is $\\boxed{" + s + "}$.", 1]]


def _towers() -> list:
    return [boxed(s) for s in [
        "9^{9^{9^{9}}}", "9^{9^{9}}", "2^{2^{2^{2^{2^{2}}}}}", "10^{10^{10}}", "(10^{10})^{10^{10}}",
        "2^{3^{4^{5}}}", "e^{e^{e^{e^{10}}}}", "1.0000001^{10^{12}}", "10^{-10^{10}}", "x^{x^{x^{x}}}",
        "7^{7^{7^{7^{7}}}}", "{10^{100}}^{10^{100}}", "9^{9^{9}} \\bmod 7", "\\sqrt[10^{10}]{2}",
        "2^{2^{64}} - 1", "(-1)^{10^{100}}", "3^{3^{3^{3^{3}}}} + 1",
    ]]


def _factorials() -> list:
    return [boxed(s) for s in [
        "100000!", "(10^{6})!", "9!!!!!!!!", "((10!)!)!", "3!!!!", "\\Gamma(10^{10})",
        "\\binom{10^{10}}{5\\cdot 10^{9}}", "(10^{100})!", "1000!!", "(9^{9^{9}})!", "\\frac{(10^6)!}{(10^6-1)!}",
    ]]


def _huge_numbers() -> list:
    return [
        [["\\boxed{", 1], ["9", MB], ["}", 1]],
        [["\\boxed{1.", 1], ["3", MB], ["}", 1]],
        [["\\boxed{0.", 1], ["0", 100_000], ["1}", 1]],
        [["\\boxed{", 1], ["7", 3_999], ["}", 1]],                      # just under MAX_ANSWER_CHARS: parsed
        [["\\boxed{-", 1], ["1", 3_990], [".5}", 1]],
        [["\\boxed{", 1], ["1\\,000", 600], ["}", 1]],                  # thousands separators
        [["\\boxed{", 1], ["8", 4_001], ["}", 1]],                      # just over: not parsed
        boxed("1e100000"), boxed("1.5e999999999"), boxed("1e-400"), boxed("10^{10^{8}}"),
        [["Final answer: ", 1], ["1", MB]],
        [["<answer>", 1], ["5", 200_000], ["</answer>", 1]],
    ]


def _sums() -> list:
    return [boxed(s) for s in [
        "\\sum_{k=1}^{10^{100}} k", "\\prod_{k=1}^{10^{100}} k", "\\sum_{k=1}^{\\infty} \\frac{1}{k}",
        "\\int_0^{10^{10}} x^{x}\\,dx", "\\lim_{n\\to\\infty} (1+1/n)^{n^{n}}",
        "\\sum_{i=1}^{10^{6}}\\sum_{j=1}^{10^{6}} ij", "\\prod_{k=1}^{10^{6}} (1+\\frac{1}{k})",
        "\\sum_{k=0}^{10^{100}} \\binom{10^{100}}{k}", "\\int_{-\\infty}^{\\infty} e^{-x^{10^{10}}} dx",
        "\\sum_{n=1}^{10^{100}} n^{n}",
    ]]


def _nesting() -> list:
    return [
        [["\\boxed{", 1], ["{", 10_000], ["1", 1], ["}", 10_000], ["}", 1]],
        [["\\boxed{", 1], ["{", 100_000], ["1", 1], ["}", 100_000], ["}", 1]],
        [["\\boxed{", 1], ["{", 10_000], ["1}", 1]],
        [["\\boxed{1", 1], ["}", 10_000]],
        [["\\boxed{", 10_000], ["3", 1], ["}", 10_000]],
        [["\\boxed{", 1], ["\\frac{1}{", 1_000], ["2", 1], ["}", 1_000], ["}", 1]],
        [["\\boxed{", 1], ["(", 10_000], ["1", 1], [")", 10_000], ["}", 1]],
        [["\\boxed{", 1], ["[", 1_000], ["1", 1], ["]", 1_000], ["}", 1]],
        [["\\boxed{", 1], ["1+(", 2_000], ["1", 1], [")", 2_000], ["}", 1]],
        [["\\boxed{", 1], ["\\{", 5_000], ["1", 1], ["\\}", 5_000], ["}", 1]],
    ]


def _left_sqrt() -> list:
    return [
        [["\\boxed{", 1], ["\\left(", 10_000], ["1}", 1]],
        [["\\boxed{", 1], ["\\left(", 1_000], ["1", 1], ["\\right)", 1_000], ["}", 1]],
        [["\\boxed{", 1], ["\\sqrt{", 10_000], ["2", 1], ["}", 10_000], ["}", 1]],
        [["\\boxed{", 1], ["\\sqrt{", 100], ["2", 1], ["}", 100], ["}", 1]],
        [["\\boxed{", 1], ["\\sqrt{", 10_000], ["2}", 1]],
        [["\\boxed{", 1], ["\\sqrt[3]{", 500], ["8", 1], ["}", 500], ["}", 1]],
        [["\\boxed{", 1], ["\\left\\{", 3_000], ["1", 1], ["\\right\\}", 3_000], ["}", 1]],
        [["\\boxed{", 1], ["\\right)", 10_000], ["}", 1]],
    ]


def _runaway_boxes() -> list:
    return [
        [["\\boxed{", 100_000]],
        [["\\boxed{1", 1], [" x", 100_000]],
        [["\\boxed{", 1], ["a", MB]],
        [["\\boxed", 1]], [["\\boxed", 100_000]], [["\\boxed{}", 100_000]],
        [["\\boxed{1}", 1], ["}", 1_000]], [["}", 1_000], ["\\boxed{3}", 1]],
        [["\\boxed {3", 1]], [["\\fbox{\\boxed{", 50_000]],
        [["\\boxed{1}, ", 100_000]],                                   # one joined group, repeats collapse
        [["\\boxed{1} and \\boxed{2} and ", 50_000]],
        [["\\boxed{3} ", 1], ["no wait, \\boxed{", 50_000]],
        [["\\boxed ", 1], ["5", 100_000]],                             # brace-less MATH form
        [["\\boxed{", 1], ["\\", 100_000], ["}", 1]],
        [["\\boxed{3}", 1], ["\\", 1]],
    ]


def _megabyte() -> list:
    return [
        [["a", MB]], [["The answer is ", 70_000]], [["Final answer: ", 1], [" ", MB], ["3", 1]],
        [["\n", MB]], [["<answer>", 100_000]], [["$", MB]], [["\\", MB]], [["{", MB]], [["}", MB]],
        [["Answer: a", 1], [" ", MB], ["b I hope it is correct.", 1]],
        [["final", 1], [" ", MB]], [["#### ", 100_000]],
        [["<answer>", 1], ["x ", 500_000], ["</answer>", 1]],
        [["\\boxed{1}", 1], [" ", 100], ["x" * 1000 + "\n", 1_000], ["Final answer: 3", 1]],
    ]


def _big_sets() -> list:
    """50,000-element answers, stored as {"fmt", "sep", "n"} parts (fmt.format(i=1..n) joined by sep)."""
    def many(fmt, sep=", ", n=50_000):
        return {"fmt": fmt, "sep": sep, "n": n}
    return [
        [["\\boxed{\\{", 1], many("{i}"), ["\\}}", 1]], [["\\boxed{(", 1], many("{i}"), [")}", 1]],
        [["Final answer: ", 1], many("{i}")], [["\\boxed{\\{", 1], many("x_{{{i}}}"), ["\\}}", 1]],
        [["\\boxed{", 1], many("[{i},{i}.5]", "\\cup", 10_000), ["}", 1]],
        [many("$\\boxed{{{i}}}$", ", ")], [many("\\boxed{{{i}}}", " and ")],
    ]


def _matrices() -> list:
    def mat(n, cell):
        return "\\begin{pmatrix}" + "\\\\".join("&".join(cell(i, j) for j in range(n)) for i in range(n)) + "\\end{pmatrix}"
    return [boxed(s) for s in [
        "\\begin{pmatrix}1&1\\\\1&0\\end{pmatrix}^{10^{10}}",
        mat(50, lambda i, j: str(i * 50 + j)) + "^{100}",
        "\\det" + mat(12, lambda i, j: f"a_{{{i}{j}}}"),
        "\\det" + mat(30, lambda i, j: f"x_{{{i},{j}}}"),
        mat(20, lambda i, j: f"y_{{{i},{j}}}") + "^{-1}",
        "\\begin{pmatrix}1&2\\\\2&4\\end{pmatrix}^{-1}",
        mat(100, lambda i, j: str((i + j) % 7)),
        "\\det" + mat(8, lambda i, j: f"(x+{i})^{{{j + 1}}}") + "^{10}",
    ]]


def _payloads() -> list:
    c = CANARY
    code = [
        f"__import__('os').system('touch {c}')", f'__import__("os").system("touch {c}")',
        f"eval(\"__import__('os').system('touch {c}')\")", f"exec(\"open('{c}','w').write('x')\")",
        f"(lambda: open('{c}', 'w').write('pwned'))()", f"(lambda f=open: f('{c}','w'))()",
        f"getattr(__builtins__, 'eval')(\"open('{c}','w')\")",
        f"compile(\"open('{c}','w')\", 'x', 'exec')", f"import os; os.system('touch {c}')",
        f"__import__('subprocess').run(['touch', '{c}'])", f"__import__('pathlib').Path('{c}').touch()",
        f"().__class__.__base__.__subclasses__()[0]('{c}')", f"Symbol('x').__class__.__init__.__globals__['os'].system('touch {c}')",
        f"\\text{{__import__('os').system('touch {c}')}}", f"\\mathrm{{eval}}(open('{c}','w'))",
        f"\\write18{{touch {c}}}", f"\\immediate\\write18{{touch {c}}}", f"\\input{{{c}}}",
        f"$(touch {c})", f"`touch {c}`", "{{''.__class__.__mro__[1].__subclasses__()}}",
        f"__import__('os').system('touch {c}') + 3", f"3 if open('{c}','w') else 3",
        f"lambda: __import__('os').remove('{c}')", f"exec(compile('import os\\nos.system(\"touch {c}\")','s','exec'))",
    ]
    out = [boxed(s) for s in code]
    out += [[[f"<answer>{s}</answer>", 1]] for s in code[:6]]
    out += [[[f"Final answer: {s}", 1]] for s in code[:4]]
    return out


def _unicode() -> list:
    return [boxed(s) for s in [
        "\x00", "3\x00", "\x1b[2J3", "\x07\x08\x7f", "3\r", "\x0b\x0c3", "\ud8003", "3\u2028", "\ufeff3",
        "\u200d3\u200c",                                                   # control / format chars
        "\u200f3", "\u202e21", "\u20673\u2069", "\u0663", "\u05d03",      # right-to-left marks, Arabic 3
        "\uff13", "\uff11/\uff12", "\\frac{\uff11}{\uff12}", "\U0001d7d1", "\u00b3",  # fullwidth, bold, ³
        "1\u043e", "\u039f", "\u01c0", "\u2162", "x\u0445", "\u0417",     # confusables: Cyrillic о, Greek Ο, ǀ, Ⅲ
    ]] + [
        [["\\b\u03bfxed{3}", 1]], [["\uff3cboxed{3}", 1]], [["\\boxed\uff5b3\uff5d", 1]],  # look-alike \boxed
        [["\\boxed{3}\u202e}1{dexob\\", 1]],
    ]


def _empty() -> list:
    return [[[s, 1]] for s in [
        "", " ", "\n\t ", "\\boxed{}", "\\boxed{ }", "\\boxed{\t\n}", "<answer></answer>", "<answer>   </answer>",
        "Final answer:", "\\boxed{\u00a0}", "\\boxed{\u200b}", "$\\boxed{}$, $\\boxed{}$", "####", "The answer is .",
    ]]


def _controls() -> list:
    """Well-formed answers: the same run must still mark these correct against their gold."""
    return [boxed(s) for s in ["3", "\\frac{1}{2}", "\\{2,1\\}", "1267650600228229401496703205376"]]


CATEGORIES = {
    "tower": _towers, "factorial": _factorials, "huge_number": _huge_numbers, "sum_product": _sums,
    "nesting": _nesting, "left_sqrt": _left_sqrt, "runaway_box": _runaway_boxes, "megabyte": _megabyte,
    "big_set": _big_sets, "matrix": _matrices, "code_payload": _payloads, "unicode": _unicode,
    "empty": _empty, "control": _controls,
}


def build() -> list[dict]:
    rows = []
    for cat, make in CATEGORIES.items():
        for i, parts in enumerate(make()):
            rows.append({"id": f"{cat}-{i:02d}", "category": cat, "parts": parts})
    return rows


def expand(row: dict, canary: str = CANARY) -> str:
    """The completion a row describes, with {CANARY} replaced by `canary`."""
    def one(part):
        if isinstance(part, dict):
            return part["sep"].join(part["fmt"].format(i=i) for i in range(1, part["n"] + 1))
        return part[0] * part[1]
    return "".join(one(p) for p in row["parts"]).replace(CANARY, canary)


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    args = ap.parse_args()
    text = render(build())
    if args.check:
        same = OUT.exists() and OUT.read_text() == text
        print(f"{OUT}: {'up to date' if same else 'DIFFERS'}")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {len(text.splitlines())} completions, {len(text)} bytes, to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
