"""Bad data and bad configs (issue 12 item 8): each malformed input is a clear error that names
the place (file and line/row, or config key), raised before any model loads."""
import json

import pytest

from igrpo_core.config import Config, load
from igrpo_core.data import DatasetError, load_file

GOOD = {"problem": "1+1?", "answer": "2"}

# (file name, bytes, expected message pieces)
BAD_FILES = [
    ("broken.jsonl", b'{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answer": \n', ["line 2", "malformed JSON"]),
    ("list.jsonl", b'[1, 2]\n', ["line 1", "expected a JSON object"]),
    ("types.jsonl", b'{"problem": 5, "answer": "2"}\n', ["line 1", "not text"]),
    ("answer_type.jsonl", b'{"problem": "x?", "answer": [1, 2]}\n', ["line 1", "gold answer is list"]),
    ("missing.jsonl", b'{"question": "x?", "answer": "2"}\n', ["line 1", "missing field 'problem'"]),
    ("noanswer.jsonl", b'{"problem": "x?"}\n', ["line 1", "missing field 'answer'"]),
    ("dup.jsonl", b'{"id": "a", "problem": "x?", "answer": "1"}\n{"id": "a", "problem": "y?", "answer": "2"}\n',
     ["line 2", "duplicate id 'a'", "line 1"]),
    ("latin1.jsonl", b'{"problem": "caf\xe9?", "answer": "2"}\n', ["line 1", "UTF-8"]),
    ("empty.jsonl", b"", ["no usable rows"]),
    ("blank.jsonl", b"\n\n  \n", ["no usable rows"]),
    ("empty.json", b"", ["malformed JSON"]),
    ("obj.json", b'{"problem": "x", "answer": "1"}', ["expected a JSON list"]),
    ("quote.csv", b'problem,answer\n"unterminated,2\n', ["quote.csv"]),
    ("nocol.csv", b'question,answer\nx?,2\n', ["no column 'problem'"]),
    ("emptyans.csv", b'problem,answer\nx?,\n', ["row 1", "empty gold answer"]),
    ("bad.parquet", b"PAR1 not really parquet", ["cannot read parquet"]),
    ("latin1.csv", b'problem,answer\ncaf\xe9?,2\n', ["latin1.csv"]),
]


@pytest.mark.parametrize("name, content, pieces", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_malformed_file_is_an_error_naming_file_and_place(tmp_path, name, content, pieces):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        load_file(path)
    msg = str(err.value)
    assert name in msg, msg
    for piece in pieces:
        assert piece in msg, msg


BAD_CONFIGS = [
    ({"num_generations": 8, "num_drafts": 8}, "num_drafts"),                      # no refinements left
    ({"num_generations": 4, "num_drafts": 3}, "at least 2 refinements"),
    ({"algo": "grpo", "num_generations": 1}, "num_generations must be >= 2"),
    ({"max_completion_length": 0}, "max_completion_length"),
    ({"max_prompt_length": -5}, "max_prompt_length"),
    ({"temperature": 0.0}, "temperatures must be > 0"),
    ({"top_p": 1.5}, "top_p"),
    ({"loss_type": "ppo"}, "loss_type='ppo'"),
    ({"reward_funcs": ["accuracy"], "reward_weights": [1.0, 1.0]}, "reward_weights"),
    ({"reward_funcs": ["judge"], "reward_weights": [1.0]}, "judge_model"),
    ({"warmup_ratio": 1.0}, "warmup_ratio"),
    ({"draft_template": "{question} only"}, "{draft}"),
    ({"prompts_per_step": 2.5}, "prompts_per_step"),
]


@pytest.mark.parametrize("overrides, piece", BAD_CONFIGS, ids=[str(c[0]) for c in BAD_CONFIGS])
def test_impossible_config_is_an_error_naming_the_key(overrides, piece):
    with pytest.raises(ValueError) as err:
        Config(**overrides)
    assert piece in str(err.value)


def test_unknown_keys_name_the_file_and_suggest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lerning_rate: 1e-5\n")
    with pytest.raises(ValueError, match=r"unknown config key 'lerning_rate' in .*c\.yaml; did you mean learning_rate"):
        load(path)
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load(path)
    path.write_text("beta: [unclosed\n")
    with pytest.raises(ValueError, match=r"c\.yaml: line 2: malformed YAML"):
        load(path)
    bad_json = tmp_path / "c.json"
    bad_json.write_text('{"beta": 0.1,}')
    with pytest.raises(ValueError, match=r"c\.json: line 1: malformed JSON"):
        load(bad_json)


@pytest.mark.parametrize("overrides, piece", [
    ({"dataset": "BAD_FILE"}, "line 2: malformed JSON"),
    ({"max_prompt_length": 400, "max_completion_length": 200}, "exceed the model's 512 positions"),
    ({"max_prompt_length": 8}, "more than max_prompt_length=8"),
])
def test_trainer_rejects_bad_data_and_lengths_before_any_weights_load(tmp_path, monkeypatch, overrides, piece):
    from igrpo_core import trainer
    from tests.conftest import small_config
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(GOOD) + "\n{oops\n")
    overrides = {k: str(bad) if v == "BAD_FILE" else v for k, v in overrides.items()}

    def no_weights(*a, **k):
        raise AssertionError("model weights were loaded before the input was checked")
    monkeypatch.setattr(trainer, "load_model", no_weights)
    with pytest.raises(ValueError, match=piece):
        trainer.Trainer(small_config(tmp_path, **overrides))
