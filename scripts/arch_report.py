"""Print the package's shape: modules in pipeline order with line counts, the longest functions
(by AST line span), and any import that runs against the layering in tests/test_layering.py.

Usage: python scripts/arch_report.py [--top 15]
Run it at any commit (git stash / git checkout) to compare layouts before and after a change.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def functions(path: Path) -> list[tuple[int, str]]:
    """(line span, qualified name) of every function and method in a file."""
    tree = ast.parse(path.read_text())
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((child.end_lineno - child.lineno + 1, f"{prefix}{child.name}"))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
    visit(tree, "")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=15)
    ns = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_layering import LAYERS, upward_imports
    except ImportError:  # an older commit without the layering test
        LAYERS, upward_imports = None, None
    files = sorted((ROOT / "igrpo_core").glob("*.py"))
    order = {m: i for i, m in enumerate(LAYERS)} if LAYERS else {}
    files.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
    total = 0
    print(f"{'module':<22} {'lines':>6}")
    for p in files:
        n = len(p.read_text().splitlines())
        total += n
        print(f"{p.stem:<22} {n:>6}")
    print(f"{'total':<22} {total:>6}  ({len(files)} files)")
    funcs = sorted(((n, f"{p.stem}.{name}") for p in files for n, name in functions(p)), reverse=True)
    print("\nlongest functions (lines, by AST span):")
    for n, name in funcs[: ns.top]:
        print(f"  {n:>4}  {name}")
    over = [f for f in funcs if f[0] > 60]
    print(f"functions over 60 lines: {len(over)}")
    if upward_imports:
        bad = upward_imports()
        print(f"\nupward imports: {len(bad)}")
        for b in bad:
            print("  " + b)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
