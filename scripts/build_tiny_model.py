"""Build the shipped tiny model (data/models/tiny-arith) by a deterministic supervised warm start.

    python scripts/build_tiny_model.py                       # the shipped build (~10 min, 2 CPU cores)
    python scripts/build_tiny_model.py --out /tmp/m --quick  # seconds: smoke test of the whole path

A ~0.9M-parameter Llama with a character tokenizer (igrpo_core.tinyworld) learns the tiny arithmetic
task from worked solutions. Loss is on completion tokens only, EOS included; prompt tokens are masked.
About 30% of examples are draft-conditioned: the prompt carries a draft (the correct solution or a
corrupted one, half each) in the iGRPO stage-2 template and the target is always the correct
solution, so the model learns that a draft is guidance it may fix. Training stops early once greedy
accuracy on a validation set (held-out pool, disjoint from the reported eval set) reaches
--target-acc, so that RL starts from a success rate clearly between 0 and 1.

Deliberately left out: anything RL. Evaluation here uses an exact integer match of the boxed value.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from igrpo_core import tinyworld as tw  # noqa: E402
from igrpo_core.engine import SamplingParams, TransformersEngine  # noqa: E402
from igrpo_core.prompts import TINY_DRAFT_TEMPLATE, attach_draft, render_prompt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(REPO / "data/models/tiny-arith"), help="output model folder")
    p.add_argument("--steps", type=int, default=900, help="maximum optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="seed of init, data order and sampling")
    p.add_argument("--batch-size", type=int, default=64, help="examples per step")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate")
    p.add_argument("--warmup", type=int, default=30, help="linear warmup steps, then constant")
    p.add_argument("--draft-frac", type=float, default=0.3, help="share of draft-conditioned examples")
    p.add_argument("--target-acc", type=float, default=0.4, help="stop once validation greedy acc >= this")
    p.add_argument("--eval-every", type=int, default=25, help="validation period in steps")
    p.add_argument("--val-n", type=int, default=200, help="validation problems (early stopping)")
    p.add_argument("--eval-n", type=int, default=200, help="held-out problems for the reported accuracy")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation budget in evals")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    p.add_argument("--quick", action="store_true", help="smoke test: few steps, few eval problems")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.eval_every, args.val_n, args.eval_n = min(args.steps, 3), 10**9, 4, 4
        args.max_new_tokens = 8
    return args


# --------------------------------------------------------------------------- data


def make_training_example(rng: random.Random, tok, draft_frac: float) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids) for one train-pool problem; target = correct solution + EOS."""
    while True:
        ex = tw.make_example(rng)
        if not tw.is_heldout(ex["expression"]):
            break
    text = ex["problem"]
    if rng.random() < draft_frac:
        draft = ex["solution"] if rng.random() < 0.5 else tw.corrupt_solution(rng, ex["solution"])
        text = attach_draft(ex["problem"], draft, TINY_DRAFT_TEMPLATE)
    prompt = render_prompt(tok, text, None)
    target = tok.encode(ex["solution"], add_special_tokens=False) + [tok.eos_token_id]
    return prompt, target


def collate(pairs, pad_id: int):
    """Right-padded batch; labels are -100 on prompt and pad, so loss covers completion + EOS only."""
    width = max(len(p) + len(t) for p, t in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)  # (B, T)
    for i, (p, t) in enumerate(pairs):
        n = len(p) + len(t)
        ids[i, :n] = torch.tensor(p + t)
        labels[i, len(p):n] = torch.tensor(t)
        mask[i, :n] = 1
    return ids, mask, labels


# --------------------------------------------------------------------------- evaluation


def generate(model, tok, prompts: list[list[int]], *, do_sample: bool, temperature: float = 1.0,
             max_new_tokens: int = 64, seed: int = 0, batch_size: int = 100) -> list[str]:
    """Completions (special tokens stripped) through the project's rollout engine; sampling is plain
    temperature sampling with top_k off (0) and top_p 1.0."""
    params = SamplingParams(n=1, greedy=not do_sample, temperature=temperature, top_p=1.0, top_k=0,
                            max_new_tokens=max_new_tokens, seed=seed)
    return [c.text for c in TransformersEngine(model, tok, batch_size=batch_size).generate(prompts, params)]


def _corrupt_draft(example) -> str:
    return tw.corrupt_solution(random.Random(f"eval/{example['id']}"), example["solution"])


def eval_prompts(tok, examples, mode: str) -> list[list[int]]:
    """Prompt ids per example: mode "direct", "draft_correct" or "draft_corrupt"."""
    if mode == "direct":
        return [render_prompt(tok, e["problem"], None) for e in examples]
    drafts = [e["solution"] if mode == "draft_correct" else _corrupt_draft(e) for e in examples]
    return [render_prompt(tok, attach_draft(e["problem"], d, TINY_DRAFT_TEMPLATE), None)
            for e, d in zip(examples, drafts)]


def full_eval(model, tok, examples, seed: int, max_new_tokens: int) -> dict[str, float]:
    """Accuracy per (prompt mode, decoding); for corrupted drafts also how often the draft's wrong
    answer is copied (low = the model re-derives rather than trusting the draft)."""
    model.eval()
    res = {}
    for mode in ("direct", "draft_correct", "draft_corrupt"):
        prompts = eval_prompts(tok, examples, mode)
        for name, sample in (("greedy", False), ("sampled_t1", True)):
            texts = generate(model, tok, prompts, do_sample=sample, seed=seed, max_new_tokens=max_new_tokens)
            res[f"{mode}/{name}"] = _mean(tw.is_correct(t, e["answer"]) for t, e in zip(texts, examples))
            if mode == "draft_corrupt":
                wrong = [tw.boxed_answer(_corrupt_draft(e)) for e in examples]
                res[f"copied wrong draft answer/{name}"] = _mean(
                    tw.boxed_answer(t) == w for t, w in zip(texts, wrong))
    return res


def accuracy(model, tok, examples, *, max_new_tokens: int = 64) -> float:
    """Greedy direct-prompt accuracy (the early-stopping signal)."""
    texts = generate(model, tok, eval_prompts(tok, examples, "direct"), do_sample=False,
                     max_new_tokens=max_new_tokens)
    return _mean(tw.is_correct(t, e["answer"]) for t, e in zip(texts, examples))


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / max(len(xs), 1)


# --------------------------------------------------------------------------- training


def train(args, tok, model, val):
    """Warm start; returns (steps run, list of (step, loss, val greedy acc) log rows)."""
    rng = random.Random(f"build_tiny_model/{args.seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup))
    log, t0 = [], time.time()
    for step in range(1, args.steps + 1):
        model.train()
        pairs = [make_training_example(rng, tok, args.draft_frac) for _ in range(args.batch_size)]
        ids, mask, labels = collate(pairs, tok.pad_token_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            acc = accuracy(model, tok, val, max_new_tokens=args.max_new_tokens)
            log.append((step, loss.item(), acc))
            print(f"step {step:4d}  loss {loss.item():.4f}  val greedy {acc:.3f}  {time.time() - t0:6.0f}s",
                  flush=True)
            if acc >= args.target_acc:
                return step, log
        elif step % 5 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}  {time.time() - t0:6.0f}s", flush=True)
    return args.steps, log


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def write_build_md(out: Path, args, argv, steps, wall, n_params, res, log, size_bytes):
    rows = "\n".join(f"| {k.split('/')[0]} | {k.split('/')[1]} | {v:.3f} |" for k, v in res.items())
    curve = "\n".join(f"| {s} | {l:.4f} | {a:.3f} |" for s, l, a in log)
    text = f"""# tiny-arith: how this model was built

Command: `{' '.join(['python', 'scripts/build_tiny_model.py', *argv])}`

| field | value |
|---|---|
| seed | {args.seed} |
| steps run | {steps} (max {args.steps}; early stop at validation greedy acc >= {args.target_acc}) |
| batch size / lr / warmup | {args.batch_size} / {args.lr} AdamW (0.9, 0.95), wd 0.01, constant after warmup / {args.warmup} |
| draft-conditioned share | {args.draft_frac} (half correct drafts, half corrupted; target always the correct solution) |
| wall time | {wall:.0f} s (training + evals) |
| machine | {_cpu_name()}, {os.cpu_count()} CPUs visible, torch threads {args.threads}, torch {torch.__version__}, python {platform.python_version()} |
| parameters | {n_params:,} (float32, tied embeddings) |
| size on disk | {size_bytes / 1e6:.2f} MB |
| task | igrpo_core.tinyworld.DEFAULT = {tw.DEFAULT} |

Held-out accuracy over {args.eval_n} problems (`make_split("heldout", {args.eval_n}, seed=0)`),
exact integer match of the last \\boxed{{}}; sampled = temperature 1.0, top_k 0, top_p 1.0,
max_new_tokens {args.max_new_tokens}. Draft-conditioned prompts use `TINY_DRAFT_TEMPLATE` with the
reference solution (draft_correct) or `corrupt_solution` of it (draft_corrupt; wrong final answer).

| prompt | decoding | rate |
|---|---|---|
{rows}

Validation curve (greedy, {args.val_n} held-out-pool problems disjoint from the eval set):

| step | train loss | val greedy acc |
|---|---|---|
{curve}
"""
    (out / "BUILD.md").write_text(text)
    return text


def _portable_tokenizer_class(path: Path) -> None:
    """transformers 5 writes "TokenizersBackend", a name 4.x cannot resolve; both know this alias."""
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    from transformers import LlamaForCausalLM

    tok = tw.build_tokenizer()
    model = LlamaForCausalLM(tw.model_config(tok))
    model.generation_config = tw.generation_config(tok)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params:,}  vocab {len(tok)}", flush=True)

    test = tw.make_split("heldout", args.eval_n, seed=0)
    test_exprs = {e["expression"] for e in test}
    val = [e for e in tw.make_split("heldout", args.val_n + args.eval_n, seed=1)
           if e["expression"] not in test_exprs][:args.val_n]

    steps, log = train(args, tok, model, val)
    res = full_eval(model, tok, test, args.seed, args.max_new_tokens)
    wall = time.time() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # transformers 5 writes safetensors only
    tok.save_pretrained(out, save_jinja_files=False)  # chat template stays inside tokenizer_config.json
    _portable_tokenizer_class(out / "tokenizer_config.json")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(write_build_md(out, args, argv, steps, wall, n_params, res, log, size))
    return res


if __name__ == "__main__":
    main()
