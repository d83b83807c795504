"""Hostile judge endpoints (issue 12 item 6): a loopback server that answers slowly, never answers,
drips bytes, returns 50 MB, malformed JSON, wrong content types, redirects (to another loopback port
and outside), HTTP 4xx/5xx and garbage status lines. Every judge call must end within its bound and be
recorded as a failure with its reason; a training run pointed at such an endpoint goes on, its judge
rewards recorded as failures on the rollout rows, not silent zeros."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import small_config

from igrpo_core import judge as J
from igrpo_core import records, rewards

TIMEOUT_S, RETRIES, BACKOFF_S = 0.5, 1, 0.05
# (retries + 1) attempts of at most TIMEOUT_S, the backoff, and 0.5 s of scheduling slack on 2 busy cores
BOUND_S = (RETRIES + 1) * TIMEOUT_S + BACKOFF_S + 0.5
MAX_SERVE_S = 10.0  # no handler loop runs longer than this, whatever the client does
GOOD = json.dumps({"choices": [{"message": {"content": "Score: 1"}}]}).encode()


class Hostile(BaseHTTPRequestHandler):
    """Behaviour by the first path segment: /MODE/v1/chat/completions."""
    protocol_version = "HTTP/1.1"
    other_port = 0  # the redirect target (a second loopback server that counts hits)

    def log_message(self, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except OSError:
            pass  # the client hung up mid-reply: what a bounded client does

    def _reply(self, status=200, body=GOOD, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, chunk: bytes, pause_s: float, total: int) -> None:
        """Write chunks until `total` bytes, MAX_SERVE_S or the client hangs up."""
        deadline, sent = time.monotonic() + MAX_SERVE_S, 0
        try:
            while sent < total and time.monotonic() < deadline:
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                time.sleep(pause_s)
        except OSError:
            pass  # the client closed: what it should do

    def do_GET(self):
        self.do_POST()

    def do_POST(self):  # noqa: C901 - one branch per hostile behaviour, kept in one table-like place
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        mode = self.path.strip("/").split("/")[0]
        self.server.hits.append(mode)
        if mode == "ok":
            self._reply()
        elif mode == "slow":  # answers, but after the client's limit
            time.sleep(TIMEOUT_S * 3)
            self._reply()
        elif mode == "silent":  # never answers (until the server stops)
            self.server.stop.wait(MAX_SERVE_S)
        elif mode == "drip":  # headers, then one byte of a valid body every 0.1 s: no recv ever times out
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self._stream(b" ", 0.1, 10_000)
        elif mode == "drip_headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._stream(b"X-a: b\r\n", 0.1, 10_000)
        elif mode in ("huge", "huge_unsized"):  # 50 MB; with or without a Content-Length
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if mode == "huge":
                self.send_header("Content-Length", str(50 * 2**20))
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            self._stream(b"[" * 2**16, 0, 50 * 2**20)
        elif mode == "malformed":
            self._reply(body=b'{"choices": [{"message": ')
        elif mode == "deep_json":
            self._reply(body=b"[" * 200_000 + b"]" * 200_000)
        elif mode == "bad_utf8":
            self._reply(body=b'{"choices": "\xff\xfe"}')
        elif mode == "not_object":
            self._reply(body=b"[1, 2, 3]")
        elif mode == "no_choices":
            self._reply(body=b'{"object": "chat.completion"}')
        elif mode == "content_not_text":
            self._reply(body=json.dumps({"choices": [{"message": {"content": {"score": 1}}}]}).encode())
        elif mode == "huge_verdict":  # under the byte cap, but no verdict is 900 kB long
            body = json.dumps({"choices": [{"message": {"content": "Score: 1 " * 100_000}}]}).encode()
            self._reply(body=body)
        elif mode == "html":
            self._reply(body=b"<html><script>alert(1)</script></html>", ctype="text/html")
        elif mode == "json_as_text":
            self._reply(ctype="text/plain")
        elif mode in ("redirect_local", "redirect_outside"):
            to = (f"http://127.0.0.1:{self.other_port}/ok/v1/chat/completions" if mode == "redirect_local"
                  else "http://example.com/v1/chat/completions")
            self._reply(status=302, body=b"", extra=[("Location", to)])
        elif mode.startswith("http"):  # http400, http500 ...
            self._reply(status=int(mode[4:]), body=b'{"error": "no"}')
        elif mode == "garbage_status":
            self.wfile.write(b"HELLO THERE\r\n\r\n")
            self.close_connection = True
        elif mode == "hangup":  # closes without a byte
            self.close_connection = True
        elif mode == "many_headers":
            self.send_response(200)
            for i in range(1000):
                self.send_header(f"X-{i}", "y")
            self.end_headers()
        else:
            self._reply(status=404, body=b"{}")


def _serve():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    server.hits, server.stop = [], threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def hostile():
    """(hostile server, redirect-target server); both loopback only."""
    target, t2 = _serve()
    Hostile.other_port = target.server_address[1]
    server, t1 = _serve()
    yield server, target
    for s, t in ((server, t1), (target, t2)):
        s.stop.set()
        s.shutdown()
        s.server_close()
        t.join(timeout=MAX_SERVE_S)


def _backend(server, mode: str) -> J.HTTPJudgeBackend:
    url = f"http://127.0.0.1:{server.server_address[1]}/{mode}/v1"
    return J.HTTPJudgeBackend(url, "m", timeout_s=TIMEOUT_S, retries=RETRIES, backoff_s=BACKOFF_S)


# mode -> (expected attempts, the reason the failure must name)
CASES = {
    "slow": (2, "TimeoutError"),
    "silent": (2, "TimeoutError"),
    "drip": (2, "no complete response within 0.5s"),
    "drip_headers": (2, "no complete response within 0.5s"),
    "huge": (1, "response of 52428800 bytes refused"),
    "huge_unsized": (1, "response over 1000000 bytes refused"),
    "malformed": (2, "malformed JSON"),
    "deep_json": (2, "malformed JSON"),
    "bad_utf8": (2, "malformed JSON"),
    "not_object": (1, "is a list, not an object"),
    "no_choices": (1, "malformed chat completion"),
    "content_not_text": (1, "content is a dict, not text"),
    "html": (1, "wrong content type 'text/html'"),
    "json_as_text": (1, "wrong content type 'text/plain'"),
    "redirect_local": (1, "redirect HTTP 302"),
    "redirect_outside": (1, "redirect HTTP 302 to 'http://example.com"),
    "http400": (1, "HTTP 400"),
    "http404": (1, "HTTP 404"),
    "http413": (1, "HTTP 413"),
    "http429": (2, "HTTP 429"),
    "http500": (2, "HTTP 500"),
    "http503": (2, "HTTP 503"),
    "garbage_status": (2, "BadStatusLine"),
    "hangup": (2, "RemoteDisconnected"),
    "many_headers": (2, "got more than 100 headers"),
}


@pytest.mark.parametrize("mode", list(CASES))
def test_every_hostile_endpoint_is_a_bounded_recorded_failure(hostile, mode):
    server, target = hostile
    attempts, reason = CASES[mode]
    before, target_before = len(server.hits), len(target.hits)
    t0 = time.monotonic()
    with pytest.raises(J.JudgeRequestError) as err:
        _backend(server, mode).complete_one("s", "u")
    elapsed = time.monotonic() - t0
    print(f"\n{mode}: {elapsed:.2f}s  {str(err.value)[:110]}")
    assert elapsed < BOUND_S
    msg = str(err.value)
    assert reason in msg
    assert "attempt(s)" not in msg or f"after {attempts} attempt(s)" in msg  # body-shape errors name no attempts
    assert server.hits[before:] == [mode] * attempts  # retried only what may get better
    assert len(target.hits) == target_before  # no redirect was followed


def test_the_control_mode_scores(hostile):
    server, _ = hostile
    assert J.Judge(_backend(server, "ok"))("x", {"problem": "p", "answer": "1"}) == 1.0


def test_a_huge_verdict_is_a_parse_error_not_a_scan(hostile):
    server, _ = hostile
    judge = J.Judge(_backend(server, "huge_verdict"))
    t0 = time.monotonic()
    with pytest.raises(J.JudgeParseError, match=r"verdict of \d{6} characters"):
        judge("x", {"problem": "p", "answer": "1"})
    assert time.monotonic() - t0 < BOUND_S


def test_concurrent_batch_against_every_mode_is_bounded_and_each_failure_is_a_recorded_reward_status(hostile):
    """All hostile modes at once through Judge.prefetch and rewards.score_batch: one row per completion,
    each a recorded failure naming its reason; the 'ok' control scores."""
    server, _ = hostile
    modes = ["ok", *CASES]

    class Routing(J.HTTPJudgeBackend):  # one mode per solution: the first line of the fenced solution
        def complete_one(self, system, user):
            return _backend(server, user.split("<solution>\n", 1)[1].split("\n", 1)[0]).complete_one(system, user)

    fns = {"judge": rewards.WeightedReward(J.Judge(Routing("http://127.0.0.1:9/v1", "m", concurrency=8)), 1.0)}
    t0 = time.monotonic()
    scores = rewards.score_batch(modes, [{"id": m, "problem": "p", "answer": "1"} for m in modes], fns)
    elapsed = time.monotonic() - t0
    assert elapsed < BOUND_S * (len(modes) / 8 + 1) + 2  # 8 at a time
    assert scores[0].status == "ok" and scores[0].total == 1.0
    for mode, s in zip(modes[1:], scores[1:]):
        assert rewards.is_failure(s.status) and s.status.startswith("error: judge: JudgeRequestError"), (mode, s)
        assert CASES[mode][1] in s.status, (mode, s.status)


@pytest.mark.parametrize("mode", ["http500", "silent"])
def test_training_against_a_hostile_judge_continues_and_records_failures(tmp_path, hostile, monkeypatch, mode):
    """reward_funcs ["accuracy", "judge"] with judge_model pointing at the hostile server: the run finishes,
    every row's judge part is a recorded failure (not a silent zero), accuracy still scores."""
    from igrpo_core import trainer as T
    server, _ = hostile
    monkeypatch.setattr(J, "DEFAULT_TIMEOUT_S", 0.3)
    monkeypatch.setattr(J, "DEFAULT_RETRIES", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}/{mode}/v1"
    cfg = small_config(tmp_path, max_steps=1, prompts_per_step=2, reward_funcs=["accuracy", "judge"],
                       reward_weights=[1.0, 1.0], judge_model=url, judge_model_name="m")
    before = len(server.hits)
    t0 = time.monotonic()
    run_dir = T.Trainer(cfg).train()
    elapsed = time.monotonic() - t0
    r = records.read_rollouts(run_dir)
    m = records.read_metrics(run_dir)
    print(f"\ntraining against {mode}: {r.height} rows, {elapsed:.1f}s")
    assert r.height == 2 * 4 and set(r["stage"]) == {"draft", "refine"}
    assert r["reward_status"].str.contains("error: judge: JudgeRequestError").all()
    reason = "HTTP 500" if mode == "http500" else "TimeoutError"
    assert r["reward_status"].str.contains(reason).all()
    assert m["reward_failures"][0] == r.height
    assert r["reward_accuracy"].null_count() == 0
    assert len(server.hits) - before == r.height  # one request per row, none retried (retries=0)

