"""`igrpo train --dry_run`: everything a run checks and needs to know before it loads a model.

Without loading weights it resolves the config, loads the training data, renders both stages'
prompts (stage 1: the question; stage 2: question + a draft, using a real reference solution from
the data as a stand-in draft), checks the prompt budgets (every question fits max_prompt_length;
how often a draft gets truncated, through prompts.build_refine_prompt itself), estimates GPU memory
per device (memory.py) and prints the launch command for 8 GPUs.

Tokens are counted with the model's own tokenizer when it is available locally (a local model
directory or the Hugging Face cache; never downloaded). Otherwise an approximation is used and the
report says so: ceil(characters / 3.6) tokens over a generic chat rendering. Qwen-family tokenizers
average roughly 3.5-4 characters per token on English prose and fewer on LaTeX-heavy math, so the
approximation is also reported at 3.0 characters per token as a pessimistic bound.

Deliberately left out: loading the model, sampling, the judge model, and timing estimates.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from igrpo_core.config import Config
from igrpo_core.memory import FP32, GIB, Arch, arch_from_dir, estimate, logits_bytes, param_count
from igrpo_core.paper_models import paper_arch
from igrpo_core.prompts import attach_draft, build_refine_prompt, render_prompt

DEVICE_SIZES_GIB = (80, 141)  # H100 / H200


class ApproxTokenizer:
    """Stand-in tokenizer: a generic chat rendering counted as ceil(chars / chars_per_token).

    It only has what prompts.render_prompt and build_refine_prompt call, so those run unchanged.
    """

    chat_template = "approximate"   # render through apply_chat_template, as a chat model would

    def __init__(self, chars_per_token: float = 3.6):
        self.chars_per_token = chars_per_token

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
        text += "<|assistant|>\n" if add_generation_prompt else ""
        return [0] * math.ceil(len(text) / self.chars_per_token) if tokenize else text


@dataclass
class TokenizerChoice:
    tokenizer: object
    exact: bool
    label: str


def choose_tokenizer(cfg: Config) -> TokenizerChoice:
    """The model's tokenizer if it is on this machine, else ApproxTokenizer with the reason."""
    name = cfg.model_name_or_path
    try:
        if Path(name).expanduser().exists():
            from igrpo_core.models import load_tokenizer
            tok = load_tokenizer(name, cfg.gguf_file)
        else:  # a hub id: only the local cache, never the network
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:160]
        return TokenizerChoice(ApproxTokenizer(), False, f"APPROXIMATION (chars/3.6 tokens): tokenizer of "
                                                         f"{name} not available locally ({reason})")
    if tok.chat_template is None:
        return TokenizerChoice(ApproxTokenizer(), False, f"APPROXIMATION (chars/3.6 tokens): the tokenizer of "
                                                         f"{name} has no chat template")
    return TokenizerChoice(tok, True, f"the model's tokenizer ({name}), exact")


def render_text(tok, user_text: str, system_prompt: str | None) -> str:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user_text})
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _stats(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": round(statistics.fmean(values), 1), "median": statistics.median(values),
            "min": min(values), "max": max(values)}


def prompt_budgets(tok, rows: list[dict], cfg: Config) -> dict:
    """Question and stage-2 budgets over `rows`; draft truncation on their reference solutions."""
    budget = cfg.max_prompt_length
    q_len, bare_len, room, over_q, over_bare = [], [], [], [], []
    drafts = truncated = dropped_chars = 0
    for ex in rows:
        n_q = len(render_prompt(tok, ex["problem"], cfg.system_prompt))
        n_bare = len(render_prompt(tok, attach_draft(ex["problem"], "[...]", cfg.draft_template), cfg.system_prompt))
        q_len.append(n_q), bare_len.append(n_bare), room.append(budget - n_bare)
        if n_q > budget:
            over_q.append(ex["id"])
        if n_bare > budget:
            over_bare.append(ex["id"])
            continue
        if cfg.algo == "igrpo" and ex.get("solution"):
            rp = build_refine_prompt(tok, ex["problem"], ex["solution"], template=cfg.draft_template,
                                     system_prompt=cfg.system_prompt, max_prompt_length=budget)
            drafts += 1
            truncated += rp.draft_truncated
            dropped_chars += rp.draft_chars_dropped
    return {"rows": len(rows), "question_tokens": _stats(q_len), "stage2_bare_tokens": _stats(bare_len),
            "questions_over_budget": over_q, "stage2_over_budget": over_bare,
            "draft_room_tokens": _stats(room), "drafts_checked": drafts, "drafts_truncated": truncated,
            "truncation_rate": truncated / drafts if drafts else None,
            "mean_chars_dropped_when_truncated": round(dropped_chars / truncated, 1) if truncated else 0}


def find_arch(cfg: Config) -> Arch | None:
    """Stored facts for a paper model, else a local directory's config.json (no weights read)."""
    return paper_arch(cfg.model_name_or_path) or arch_from_dir(cfg.model_name_or_path)


def chunked_head(cfg: Config) -> bool:
    """Whether the trainer will compute log-probs in chunks (logprobs.sequence_logps): yes for a plain
    linear head, which every preset's model has, unless LoRA wraps the head."""
    return not (cfg.use_peft and any("lm_head" in m for m in cfg.lora_target_modules or []))


def micro_batch_rows(cfg: Config) -> int:
    """Sequences in the largest micro-batch at full length: per_device_train_batch_size, fewer when
    micro_batch_tokens caps the padded tokens (trainer.micro_batch_slices; a lone sequence always fits).
    "auto" caps at rows x (longest question + longest completion), which this worst case (every prompt
    max_prompt_length tokens) already assumes, so it keeps every row."""
    rows, seq = cfg.per_device_train_batch_size, cfg.max_prompt_length + cfg.max_completion_length
    cap = cfg.micro_batch_tokens
    return max(1, min(rows, cap // seq)) if cap and cap != "auto" else rows


def memory_table(arch: Arch, cfg: Config, n_devices: int = 8) -> dict[str, dict[str, int]]:
    """Estimates keyed by column: 1 GPU / FSDP / DDP, without and with gradient checkpointing."""
    common = dict(micro_batch=micro_batch_rows(cfg), prompt_len=cfg.max_prompt_length,
                  completion_len=cfg.max_completion_length, generation_batch=cfg.generation_batch_size,
                  reference_model=cfg.beta > 0, kv_elt=FP32, chunked_logits=chunked_head(cfg))
    cols = {}
    for ckpt in (False, True):
        tag = "ckpt" if ckpt else "no ckpt"
        cols[f"1 GPU, {tag}"] = estimate(arch, **common, checkpointing=ckpt)
        cols[f"{n_devices}x FSDP, {tag}"] = estimate(arch, **common, n_devices=n_devices, strategy="fsdp",
                                                     checkpointing=ckpt)
        cols[f"{n_devices}x DDP, {tag}"] = estimate(arch, **common, n_devices=n_devices, strategy="ddp",
                                                    checkpointing=ckpt)
    return cols


def launch_command(preset: str | None, config_path: str | None, overrides: list[str], n: int = 8) -> str:
    parts = ["accelerate launch --num_processes", str(n), "-m igrpo_core train"]
    parts += [f"--preset {preset}"] if preset else []
    parts += [f"--config {config_path}"] if config_path else []
    return " ".join(parts + list(overrides))


# --- report ------------------------------------------------------------------------------------

def _config_lines(cfg: Config, n_rows: int) -> list[str]:
    from igrpo_core.evaluate import resolve_num_samples
    prompts = cfg.max_steps * cfg.prompts_per_step * cfg.gradient_accumulation_steps
    algo = (f"igrpo: {cfg.num_drafts} drafts + {cfg.num_refinements} refinements per prompt "
            f"(matched budget {cfg.num_generations})" if cfg.algo == "igrpo"
            else f"grpo: {cfg.num_generations} completions per prompt")
    sets = [s.strip() for s in cfg.eval_dataset.split(",") if s.strip()]
    evals = ", ".join(f"{s} (k={resolve_num_samples(s, cfg.eval_num_samples, cfg.eval_greedy)})" for s in sets)
    rewards = " + ".join(f"{r} x{w}" for r, w in zip(cfg.reward_funcs, cfg.reward_weights))
    ckpt = cfg.gradient_checkpointing
    return [f"  model         {cfg.model_name_or_path}",
            f"  algorithm     {algo}; loss {cfg.loss_type}, epsilon {cfg.epsilon}, beta {cfg.beta}",
            f"  data          {cfg.dataset}: {n_rows} problems; {cfg.max_steps} steps x {cfg.prompts_per_step} "
            f"prompts x {cfg.gradient_accumulation_steps} accumulation = {prompts} prompts = "
            f"{prompts / n_rows:.2f} epochs",
            f"  optimiser     AdamW lr {cfg.learning_rate:g}, {cfg.lr_scheduler_type} to {cfg.min_lr_rate}x after "
            f"{cfg.warmup_ratio:.0%} warmup; micro-batch {cfg.per_device_train_batch_size} sequences",
            f"  sampling      T {cfg.temperature} top-p {cfg.top_p}; prompt <= {cfg.max_prompt_length}, "
            f"completion <= {cfg.max_completion_length} tokens; engine {cfg.rollout_engine}",
            f"  rewards       {rewards}",
            f"  evaluation    {evals}; T {cfg.eval_temperature} top-p {cfg.eval_top_p}; "
            f"limit {cfg.eval_limit or 'none (every problem)'}",
            f"  precision     dtype {cfg.dtype}; gradient_checkpointing: {ckpt}"]


def _clip(text: str, n: int = 2000) -> str:
    return text if len(text) <= n else text[:n] + f"\n... [{len(text) - n} more characters]"


def _prompt_lines(tok, cfg: Config, ex: dict) -> list[str]:
    q = render_text(tok, ex["problem"], cfg.system_prompt)
    out = [f"--- stage 1 prompt ({ex['id']}) ---", _clip(q)]
    if cfg.algo == "igrpo":
        draft = ex.get("solution") or "(no reference solution in this dataset; empty stand-in draft)"
        rp = build_refine_prompt(tok, ex["problem"], draft, template=cfg.draft_template,
                                 system_prompt=cfg.system_prompt, max_prompt_length=cfg.max_prompt_length)
        out += [f"--- stage 2 prompt (stand-in draft: the reference solution; {len(rp.ids)} tokens, "
                f"draft truncated: {rp.draft_truncated}) ---", _clip(render_text(tok, rp.text, cfg.system_prompt))]
    return out


def _full_draft_fate(room_max: float, room_median: float, completion: int) -> str:
    if room_max < completion:
        return "is always truncated (head + final answer kept)"
    if room_median < completion:
        return "is truncated for most questions (head + final answer kept)"
    return "fits for most questions"


def _budget_lines(b: dict, cfg: Config, pessimistic: dict | None) -> list[str]:
    q, bare, room = b["question_tokens"], b["stage2_bare_tokens"], b["draft_room_tokens"]
    lines = [f"  stage-1 prompt (question) tokens: mean {q['mean']}, median {q['median']}, max {q['max']}; "
             f"over max_prompt_length={cfg.max_prompt_length}: {len(b['questions_over_budget'])} of {b['rows']}"
             + (f" (first: {b['questions_over_budget'][:5]})" if b["questions_over_budget"] else "")]
    if cfg.algo == "igrpo":
        lines += [f"  stage-2 prompt with an empty draft: mean {bare['mean']}, max {bare['max']}; over budget: "
                  f"{len(b['stage2_over_budget'])} ("
                  + ("filter_overlong_prompts drops them" if cfg.filter_overlong_prompts
                     else "the trainer refuses to start if any; filter_overlong_prompts drops them") + ")",
                  f"  room left for the draft: median {room['median']} tokens (min {room['min']}, max {room['max']}); "
                  f"a draft of the full {cfg.max_completion_length}-token completion budget "
                  f"{_full_draft_fate(room['max'], room['median'], cfg.max_completion_length)}"]
        if b["drafts_checked"]:
            lines.append(f"  reference solutions as drafts: {b['drafts_truncated']} of {b['drafts_checked']} truncated "
                         f"({b['truncation_rate']:.2%}); mean {b['mean_chars_dropped_when_truncated']} characters "
                         f"dropped when truncated")
            if pessimistic:
                lines.append(f"  same at a pessimistic 3.0 chars/token: {pessimistic['drafts_truncated']} truncated "
                             f"({pessimistic['truncation_rate']:.2%}); questions over budget: "
                             f"{len(pessimistic['questions_over_budget'])}")
            lines.append("  note: reference solutions are far shorter than a model's own drafts (R1-style models "
                         "write thousands of tokens), so the rate during training will be much higher")
        else:
            lines.append("  no `solution` column: draft truncation not measured")
    return lines


_ROWS = [("params (fp32)", "params"), ("grads (fp32)", "grads"), ("AdamW m, v (fp32)", "optimizer"),
         ("reference model", "reference"), ("bf16 casts / gathered", "gathered_params"),
         ("activations", "activations"), ("logits", "logits"), ("= training peak", "train_peak"),
         ("rollout KV cache", "kv_cache"), ("= rollout peak", "rollout_peak")]


def _token_cap_note(cap: int | str) -> str:
    if cap == "auto":
        return " (micro_batch_tokens auto: longer iGRPO prompts cut to a GRPO micro-batch's padded tokens)"
    return f" (at most {cap} padded tokens: micro_batch_tokens)" if cap else ""


def _memory_lines(arch: Arch, cfg: Config) -> list[str]:
    cols = memory_table(arch, cfg)
    P = param_count(arch)
    lines = [f"  architecture: {arch.layer_kinds} blocks, hidden {arch.hidden}, intermediate {arch.intermediate}, "
             f"heads {arch.heads}/{arch.kv_heads} KV, vocab {arch.vocab}, tied {arch.tied}; {P:,} parameters "
             f"(published: {f'{arch.public_params:,}' if arch.public_params else 'n/a'}); source: {arch.note}",
             f"  micro-batch {micro_batch_rows(cfg)} x ({cfg.max_prompt_length} + "
             f"{cfg.max_completion_length}) tokens"
             f"{_token_cap_note(cfg.micro_batch_tokens)}"
             f"; rollouts: {cfg.generation_batch_size} sequences per generate()",
             "  precision: params, grads and AdamW moments fp32 (16 B/param; params are the master copy), "
             "compute bf16 autocast"]
    names = list(cols)
    big = max(c["train_peak"] for c in cols.values()) >= GIB
    unit, scale = ("GiB", GIB) if big else ("MiB", 2 ** 20)
    for half in (names[:3], names[3:]):
        lines.append(f"  {unit + ' per device':24s}" + "".join(f"{n:>22s}" for n in half))
        for label, key in _ROWS:
            lines.append(f"  {label:24s}" + "".join(f"{cols[n][key] / scale:22.1f}" for n in half))
        for size in DEVICE_SIZES_GIB:
            fits = ["/".join("yes" if cols[n][k] < size * GIB else "no" for k in ("train_peak", "rollout_peak"))
                    for n in half]
            lines.append(f"  {f'fits {size} GiB? train/roll':24s}" + "".join(f"{f:>22s}" for f in fits))
    lines += ["  notes: activations are estimates (+-30%) with SDPA attention; FSDP 'gathered' = two unsharded "
              "units in flight; the transformers engine keeps its KV cache in the weights' dtype (fp32 here) and "
              "under FSDP needs the full weights gathered to generate; the vLLM engine instead reserves "
              f"vllm_gpu_memory_utilization={cfg.vllm_gpu_memory_utilization} of the device; CUDA context, NCCL "
              "buffers and fragmentation are not counted."]
    full = logits_bytes(arch, micro_batch_rows(cfg), cfg.max_completion_length)
    lines.append("  logits: chunked log-probs (chunked.chunked_token_logps: one chunk of logits at a time, recomputed "
                 f"in backward); full logits would add {full / GIB:.1f} GiB" if chunked_head(cfg) else
                 "  logits: full (LoRA wraps the output layer, so log-probs are not chunked)")
    if arch.pattern:
        lines.append("  APPROXIMATE: hybrid Mamba-2 model; Mamba scan activations are modelled roughly.")
    return lines


def dry_run(cfg: Config, *, preset: str | None = None, config_path: str | None = None,
            overrides: list[str] | None = None, budget_rows: int | None = None, print_fn=print) -> dict:
    """Check and describe a run without loading weights; returns the report as a dict."""
    from igrpo_core.data import load_dataset
    rows = load_dataset(cfg.dataset, tiny_num_problems=cfg.tiny_num_problems, limit=cfg.dataset_limit)
    choice = choose_tokenizer(cfg)
    checked = rows[:budget_rows] if budget_rows else rows
    budgets = prompt_budgets(choice.tokenizer, checked, cfg)
    pessimistic = None if choice.exact else prompt_budgets(ApproxTokenizer(3.0), checked, cfg)
    arch = find_arch(cfg)
    example = next((ex for ex in rows if ex.get("solution")), rows[0])
    cmd = launch_command(preset, config_path, overrides or [])
    lines = [f"== igrpo dry run: preset {preset or '(none)'}; no model weights are loaded ==", "[config]"]
    lines += _config_lines(cfg, len(rows))
    lines += [f"[tokens] counted with {choice.label}", "[prompts]"] + _prompt_lines(choice.tokenizer, cfg, example)
    lines += [f"[prompt budget] over {budgets['rows']} training problems"] + _budget_lines(budgets, cfg, pessimistic)
    lines.append("[memory estimate per device]")
    lines += _memory_lines(arch, cfg) if arch else ["  no architecture facts (not a paper model, no local "
                                                    "config.json): skipped"]
    status = ("this runs data-parallel DDP; for FSDP2 add --config_file configs/accelerate/fsdp_8gpu.yaml "
              "(weights gathered to generate; LoRA and vLLM refused under FSDP); each is equal to one process on the same global batch "
              "in 2-process CPU tests (tests/test_distributed.py, tests/test_fsdp.py); not yet run on GPUs")
    lines += ["[launch on 8 GPUs]", f"  {cmd}", f"  status: {status}"]
    print_fn("\n".join(lines))
    return {"config": cfg.to_dict(), "rows": len(rows), "tokenizer": choice.label, "exact_tokens": choice.exact,
            "budgets": budgets, "pessimistic_budgets": pessimistic,
            "memory": memory_table(arch, cfg) if arch else None, "launch": cmd, "text": "\n".join(lines)}
