"""igrpo_core.serve: the OpenAI-compatible loopback server over the shipped tiny model (fixture
`tiny_served` in conftest), spoken to over real sockets by the judge's HTTP client and by urllib."""
import json
import urllib.error
import urllib.request

import pytest

from igrpo_core import judge as J


def _post(url: str, payload: bytes):
    req = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=30)


def test_server_speaks_the_openai_chat_api(tiny_served):
    server, _ = tiny_served
    backend = J.HTTPJudgeBackend(server.url, timeout_s=30, retries=0)
    assert backend.model_name == "tiny-arith"  # discovered through GET /v1/models
    text = backend.complete_one("", "Compute 2+3.")
    assert isinstance(text, str) and text
    body = backend._request("/chat/completions", {"messages": [{"role": "user", "content": "Compute 1+1."}],
                                                  "max_tokens": 5, "temperature": 0})
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 5
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


def test_n_samples_come_back_as_n_choices(tiny_served):
    server, _ = tiny_served
    payload = {"messages": [{"role": "user", "content": "Compute 2+3."}], "max_tokens": 6, "temperature": 1.0,
               "n": 3, "seed": 1}
    with _post(server.url + "/chat/completions", json.dumps(payload).encode()) as resp:
        body = json.loads(resp.read())
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]


@pytest.mark.parametrize("payload, fragment", [
    (b"not json", "not JSON"), (b'{"messages": []}', "non-empty"),
    (b'{"messages": [{"role": "robot", "content": "x"}]}', "role"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "' + b"Compute 2+2. " * 60 + b'"}]}', "exceeds the model context"),
])
def test_server_answers_bad_requests_with_400_and_stays_up(tiny_served, payload, fragment):
    server, _ = tiny_served
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(server.url + "/chat/completions", payload)
    assert err.value.code == 400 and fragment in json.loads(err.value.read())["error"]["message"]
    assert J.HTTPJudgeBackend(server.url, timeout_s=10, retries=0).list_models() == ["tiny-arith"]


def test_unknown_route_is_404(tiny_served):
    server, _ = tiny_served
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "/embeddings", timeout=10)
    assert err.value.code == 404
