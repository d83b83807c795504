"""Paper presets, the memory estimator and `igrpo train --dry_run` (which must never load weights)."""
import pytest
import torch

from igrpo_core import cli, config as C, dryrun, memory
from igrpo_core.data import load_dataset
from igrpo_core.memory import arch_from_hf_config, estimate, param_count
from igrpo_core.paper_models import PAPER_EVAL_SETS, PAPER_MODELS, paper_arch
from igrpo_core.prompts import attach_draft, render_prompt

# A made-up Llama shape small enough to do the arithmetic by hand (see the test below).
HAND = dict(model_type="llama", hidden_size=8, intermediate_size=16, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, vocab_size=10, tie_word_embeddings=False)


@pytest.fixture
def no_weights(monkeypatch):
    """Any attempt to load model weights fails the test."""
    import transformers

    from igrpo_core import models

    def boom(*a, **k):
        raise AssertionError("the dry run tried to load model weights")
    monkeypatch.setattr(models, "load_model", boom)
    monkeypatch.setattr(models, "load_transformers_engine", boom)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", boom)


def test_estimator_hand_computed():
    a = arch_from_hf_config(HAND)
    # head_dim 4: q 8, kv 4. attention 8*(8+4+4) + 8*8 = 192; SwiGLU 3*8*16 = 384; 2 norms 16.
    # 2 blocks * 592 + embeddings 80 + untied head 80 + final norm 8 = 1352.
    assert param_count(a) == 1352
    est = estimate(a, micro_batch=2, prompt_len=3, completion_len=5, generation_batch=4)
    assert (est["params"], est["grads"], est["optimizer"]) == (4 * 1352, 4 * 1352, 8 * 1352)
    assert est["gathered_params"] == 2 * 1352                     # bf16 casts of every weight
    # per token per block: attention fp32 2*8*4 + bf16 (8 + 2*8 + 2*4)*2 = 128; SwiGLU 64 + (8 + 4*16)*2 = 208
    # 16 tokens (2 x (3 + 5)) x 2 blocks x 336
    assert est["activations"] == 16 * 2 * 336
    assert est["logits"] == 2 * 6 * 10 * 6                         # B x (T + 1) x V x (2 + 4) bytes
    assert est["train_peak"] == 5408 + 5408 + 10816 + 2704 + 10752 + 720
    chunk = estimate(a, micro_batch=2, prompt_len=3, completion_len=5, generation_batch=4, chunked_logits=True)
    assert chunk["logits"] == 2 * 6 * 10 * (2 + 4 + 4) + 2 * 6 * 4  # 120 logits: bf16 + two fp32 buffers, + lse
    assert chunk["train_peak"] == est["train_peak"] - est["logits"] + chunk["logits"]
    assert est["kv_cache"] == 4 * 8 * (2 * 2 * 1 * 4 * 4)          # 4 seqs x 8 tokens x K,V x 2 layers x 4 dims x fp32
    assert est["rollout_peak"] == 5408 + 10816 + 2048
    ck = estimate(a, micro_batch=2, prompt_len=3, completion_len=5, generation_batch=4, checkpointing=True)
    assert ck["activations"] == 16 * (2 * 4 * 8 + 336)              # block inputs (fp32) + one block recomputed
    assert ck["gathered_params"] == 2 * 592                         # one block's bf16 casts
    fs = estimate(a, micro_batch=2, prompt_len=3, completion_len=5, generation_batch=4, n_devices=4,
                  strategy="fsdp")
    assert (fs["params"], fs["grads"], fs["optimizer"]) == (1352, 1352, 2704)
    assert fs["gathered_params"] == 2 * 4 * 592 + 2 * 592
    assert fs["activations"] == est["activations"] and fs["rollout_peak"] == 1352 + 2704 + 4 * 1352 + 2048
    dp = estimate(a, micro_batch=2, prompt_len=3, completion_len=5, generation_batch=4, n_devices=4,
                  strategy="ddp")
    assert dp == est
    assert estimate(a, micro_batch=2, prompt_len=3, completion_len=5, generation_batch=4,
                    reference_model=True)["reference"] == 4 * 1352


@pytest.mark.parametrize("cfg_dict", [
    HAND,
    dict(HAND, model_type="qwen2"),                                 # q/k/v biases
    dict(HAND, tie_word_embeddings=True),
    dict(model_type="nemotron_h", hidden_size=64, intermediate_size=96, num_hidden_layers=5,
         hybrid_override_pattern="M-*M-", mamba_num_heads=8, mamba_head_dim=16, n_groups=2, ssm_state_size=16,
         num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=100, conv_kernel=4,
         tie_word_embeddings=False),
])
def test_param_count_matches_a_real_model(cfg_dict):
    from transformers import AutoConfig, AutoModelForCausalLM
    torch.manual_seed(0)
    hf_cfg = AutoConfig.for_model(**cfg_dict)
    model = AutoModelForCausalLM.from_config(hf_cfg)
    assert param_count(arch_from_hf_config(cfg_dict)) == sum(p.numel() for p in model.parameters())


def test_paper_architectures_match_published_parameter_counts():
    for name, (hf_id, _, published, _) in PAPER_MODELS.items():
        assert param_count(paper_arch(hf_id)) == published, name
    assert paper_arch("nvidia/Nemotron-H-8B-Base-8K").layer_kinds == {"mamba": 24, "attention": 4, "mlp": 24}


def test_paper_presets_are_the_paper_recipe_per_model():
    assert len(PAPER_MODELS) == 6
    for name, (hf_id, *_) in PAPER_MODELS.items():
        cfg = C.load(preset=name)
        assert cfg.model_name_or_path == hf_id and cfg.dataset == "math:train"
        assert (cfg.learning_rate, cfg.lr_scheduler_type, cfg.min_lr_rate, cfg.warmup_ratio, cfg.beta) == \
            (1e-6, "cosine", 0.1, 0.1, 0.0)
        assert (cfg.max_prompt_length, cfg.max_completion_length, cfg.temperature) == (1024, 4096, 0.7)
        assert (cfg.algo, cfg.num_generations, cfg.num_drafts, cfg.dtype) == ("igrpo", 8, 4, "bfloat16")
        assert cfg.reward_funcs == ["accuracy", "format"] and cfg.reward_weights == [1.0, 1.0]
        assert (cfg.eval_temperature, cfg.eval_top_p, cfg.eval_num_samples) == (0.6, 0.95, 0)
        assert cfg.eval_dataset == PAPER_EVAL_SETS and cfg.eval_limit is None
        assert cfg.max_steps * cfg.prompts_per_step <= 7500 < (cfg.max_steps + 1) * cfg.prompts_per_step  # 1 epoch
    assert C.load(preset="paper-r1-distill-qwen-7b", overrides={"algo": "grpo"}).num_refinements == 8


def test_dry_run_tiny_end_to_end(no_weights, capsys):
    rc = cli.main(["train", "--preset", "tiny", "--dry_run", "--tiny_num_problems", "300"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "no model weights are loaded" in out and "the model's tokenizer" in out and "exact" in out
    assert "Draft: <think>" in out                                  # stage 2 rendered with a real solution
    assert "0 of 300 truncated" in out and "over max_prompt_length=192: 0 of 300" in out
    assert "899,200 parameters" in out and "MiB per device" in out
    assert "accelerate launch --num_processes 8 -m igrpo_core train --preset tiny --tiny_num_problems 300" in out
    assert "runs data-parallel DDP; for FSDP2 add --config_file configs/accelerate/fsdp_8gpu.yaml" in out


def test_dry_run_counts_truncations_like_the_prompt_builder(no_weights, tiny_tokenizer):
    cfg = C.load(preset="tiny", overrides={"tiny_num_problems": 200, "max_prompt_length": 62})
    report = dryrun.dry_run(cfg, print_fn=lambda s: None)
    rows = load_dataset("tiny:train", tiny_num_problems=200)
    # independent count: the stage-2 prompt with the whole solution is longer than the budget
    expect = sum(len(render_prompt(tiny_tokenizer, attach_draft(r["problem"], r["solution"], cfg.draft_template),
                                   None)) > 62 for r in rows)
    b = report["budgets"]
    assert report["exact_tokens"] and 0 < expect < 200
    assert b["drafts_truncated"] == expect and b["truncation_rate"] == pytest.approx(expect / 200)


def test_dry_run_paper_preset_offline_uses_labelled_approximation(no_weights, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = C.load(preset="paper-openmath-nemotron-14b")
    lines = []
    report = dryrun.dry_run(cfg, preset="paper-openmath-nemotron-14b", budget_rows=300, print_fn=lines.append)
    text = lines[0]
    assert not report["exact_tokens"] and "APPROXIMATION (chars/3.6 tokens)" in text
    assert report["rows"] == 7500 and report["budgets"]["rows"] == 300
    assert "<draft>" in text and "A prior draft solution follows" in text
    assert "14,770,033,664 parameters" in text and "3.0 chars/token" in text
    mem = report["memory"]
    assert mem["1 GPU, no ckpt"]["params"] == 4 * 14_770_033_664
    assert mem["8x FSDP, ckpt"]["optimizer"] == 8 * 14_770_033_664 // 8
    assert mem["8x FSDP, ckpt"]["activations"] < mem["8x FSDP, no ckpt"]["activations"]
    # The trainer chunks a plain head's log-probs: one 2^23-logit chunk, not 8 x 4,097 x 152,064 logits.
    assert mem["1 GPU, ckpt"]["logits"] < 2 ** 30 and "full logits would add 27.9 GiB" in text
    assert "accelerate launch --num_processes 8 -m igrpo_core train --preset paper-openmath-nemotron-14b" in text


def test_approx_tokenizer_drives_the_real_truncation():
    from igrpo_core.prompts import build_refine_prompt
    tok = dryrun.ApproxTokenizer(4.0)
    assert len(render_prompt(tok, "x" * 40, None)) == -(-len("<|user|>\n" + "x" * 40 + "\n<|assistant|>\n") // 4)
    rp = build_refine_prompt(tok, "What is 2+2?", "blah " * 400 + "\\boxed{4}", template=C.PAPER_DRAFT_TEMPLATE,
                             system_prompt=None, max_prompt_length=120)
    assert rp.draft_truncated and len(rp.ids) <= 120 and rp.text.rstrip().endswith("solution.")
    assert "\\boxed{4}" in rp.text


def test_memory_gib_helper_and_bad_strategy():
    assert memory.gib(memory.GIB).strip() == "1.0 GiB"
    with pytest.raises(ValueError, match="strategy"):
        estimate(arch_from_hf_config(HAND), micro_batch=1, prompt_len=1, completion_len=1, generation_batch=1,
                 strategy="zero3")


def test_no_weights_guard_catches_a_real_load(no_weights, tmp_path):
    """The guard used above is not vacuous: a real training start trips it."""
    with pytest.raises(AssertionError, match="tried to load model weights"):
        cli.main(["train", "--preset", "tiny", "--tiny_num_problems", "50", "--output_dir", str(tmp_path)])
