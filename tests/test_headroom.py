"""bench/headroom.py on the tiny SFT checkpoint: every search's counts are consistent with its trees."""

from __future__ import annotations

from bench.headroom import SETTINGS, main
from tests.conftest import SMALL_SEARCH, TINY


def test_headroom_counts_every_chain_and_bounds_solved_by_correct_answers(policy_checkpoints):
    result = main([str(policy_checkpoints["sft"]), *TINY, *SMALL_SEARCH, "task.eval_size=4", "threads=1"])
    assert result["problems"] == 4 and 0.0 <= result["greedy_accuracy"] <= 1.0
    rows = result["searches"]
    assert list(rows) == list(SETTINGS)
    # every best-of-N chain ends in a scored answer (the countdown verifier always gives a verdict)
    assert rows["best_of_n, 8"]["answers_per_tree"] == 8.0
    assert rows["best_of_n, 16"]["answers_per_tree"] == 16.0
    for name, row in rows.items():
        assert 0.0 <= row["any_correct"] <= 1.0, name
        assert row["answers_per_tree"] >= 1.0, name  # every tree answers at least once
        # a tree solved at least once holds at least one correct answer: solved <= correct answers per tree
        assert row["any_correct"] <= row["answers_per_tree"] * row["answer_accuracy"] + 1e-9, name
