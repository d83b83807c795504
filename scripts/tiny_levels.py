"""The shipped tiny model's accuracy at each tiny-world level (README, "Tiny-world levels").

For "tiny:heldout" and "tiny-hard:heldout" (200 problems each): greedy (k=1) and sampled at the
training temperature 1.0 (k=4, so avg@4 is a single draft's accuracy and pass@4 the chance that a
group of 4 drafts holds a right one), through igrpo_core.evaluate.evaluate_model. Also the share of
near misses: wrong boxed integers within max(3, 10% of the gold value).

    PYTHONPATH=. python scripts/tiny_levels.py [out_dir]     # about 10 minutes on 2 CPU cores
"""
import sys
import time
from pathlib import Path

import polars as pl

from igrpo_core.config import Config
from igrpo_core.evaluate import evaluate_model
from igrpo_core.tinyworld import boxed_answer


def near_miss_share(samples: pl.DataFrame) -> float:
    near = 0
    for got, gold, ok in zip(samples["completion"], samples["gold"], samples["correct"]):
        try:
            v, g = int(boxed_answer(got) or ""), int(gold)
        except ValueError:
            continue
        near += (not ok) and abs(v - g) <= max(3, 0.1 * abs(g))
    return near / samples.height


def main(out: Path) -> None:
    rows = []
    for level in ("tiny:heldout", "tiny-hard:heldout"):
        for mode, over in (("greedy", dict(eval_greedy=True, eval_num_samples=1)),
                           ("sampled T=1.0", dict(eval_num_samples=4, eval_temperature=1.0, eval_top_p=1.0))):
            cfg = Config(eval_dataset=level, eval_limit=200, max_completion_length=64, **over)
            t0 = time.time()
            d = out / f"{level.split(':')[0]}-{mode.split()[0]}"
            summary = evaluate_model(cfg, cfg.model_name_or_path, d, workers=1, progress=False)
            m = summary["metrics"][level]
            samples = pl.read_parquet(d / "samples.parquet")
            k = m["samples_per_problem"]
            rows.append({"level": level, "decoding": mode, "k": k, "avg@k": m["avg@k"],
                         "pass@k": m[f"pass@{k}"], "maj@k": m["maj@k"], "near_miss_share": near_miss_share(samples),
                         "mean_tokens": samples["completion_tokens"].mean(), "seconds": round(time.time() - t0)})
            print(rows[-1], flush=True)
    print(pl.DataFrame(rows))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny_levels"))
