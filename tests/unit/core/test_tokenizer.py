"""The character tokenizer: lossless on every character the tasks emit; saves and reloads in transformers."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from arbor.core.config import ArithConfig, CountdownConfig
from arbor.core.tasks.arith import Arith
from arbor.core.tasks.countdown import Countdown
from arbor.core.tokenizer import CHARACTERS, build_char_tokenizer


def _task_texts() -> list[str]:
    texts = []
    for task in (
        Countdown(CountdownConfig(min_numbers=3, max_numbers=5, max_operand=99, max_target=999)),
        Arith(ArithConfig(min_ops=1, max_ops=6, max_operand=99)),
    ):
        for i in range(300):
            p = task.train_problem(i)
            texts += [p.prompt + p.solution, task.corrupt(p.solution, __import__("random").Random(i))]
    return texts


def test_round_trip_every_character_tasks_emit():
    tok = build_char_tokenizer()
    texts = _task_texts() + [CHARACTERS]
    emitted = set("".join(texts))
    assert emitted <= set(CHARACTERS), f"characters outside the vocabulary: {emitted - set(CHARACTERS)}"
    unk = tok.unk_token_id
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text)  # one token per character
        assert unk not in ids
        assert tok.decode(ids) == text


def test_unknown_characters_map_to_unk_and_specials_are_distinct():
    tok = build_char_tokenizer()
    ids = tok("a€b", add_special_tokens=False)["input_ids"]
    assert ids[1] == tok.unk_token_id and len(ids) == 3
    specials = {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}
    assert len(specials) == 4 and None not in specials


def test_save_pretrained_reloads_with_auto_tokenizer(tmp_path: Path):
    tok = build_char_tokenizer()
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "Use 3 5 7 to make 22.\n5*3=15\n15+7=22\nAnswer: 22"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.decode(again(text)["input_ids"]) == text
    assert again.padding_side == "left" and again.eos_token == "<eos>"
