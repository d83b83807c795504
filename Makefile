# The two commands of the README:
#   make demo   set up .venv and run the main job (GRPO vs iGRPO on the tiny world, ~10 min on 2 cores)
#   make test   set up .venv and run the test suite (what .ci/run calls)
.PHONY: setup demo test
setup:
	bash scripts/setup.sh
demo: setup
	.venv/bin/igrpo compare --tag demo --seeds 0
test: setup
	bash scripts/setup_browser.sh
	.venv/bin/python -m pytest -q
