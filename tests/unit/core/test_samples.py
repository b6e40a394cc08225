"""Demonstration traces (``train.demonstrations``) as step samples, and what a bad file says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arbor.core.errors import DataError
from arbor.core.samples import demonstration_samples
from arbor.core.tokenizer import build_char_tokenizer


def test_demonstrations_become_one_sample_per_step_with_probability_one(tmp_path: Path):
    tok = build_char_tokenizer()
    path = tmp_path / "demo.jsonl"
    path.write_text(json.dumps({"prompt": "Use 1 2 to make 3.\n", "response": "1+2=3\nAnswer: 3"}) + "\n")
    samples = demonstration_samples(str(path), tok, 0)
    assert len(samples) == 2 and samples[1].terminal and samples[1].action_tokens[-1] == tok.eos_token_id
    assert all(lp == 0.0 for s in samples for lp in s.behaviour_logprobs) and all(s.advantage > 0 for s in samples)
    assert samples[1].state_tokens == samples[0].state_tokens + samples[0].action_tokens


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"prompt": "a", "response": "b"}\n\x89PNG\r\n\x1a\n\x00\xff\xfe', r"demo.jsonl:2: not UTF-8 text"),
        (b'{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n', r"demo.jsonl:2: demonstration needs JSON"),
    ],
)
def test_a_bad_demonstrations_file_names_the_file_and_line(tmp_path, content: bytes, message: str):
    path = tmp_path / "demo.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        demonstration_samples(str(path), build_char_tokenizer(), 0)
