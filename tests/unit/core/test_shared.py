"""The small shared pieces: padding, the value head a component starts from, seed stretches, channels."""

from __future__ import annotations

import pytest
import torch

from arbor.core.batching import right_pad
from arbor.core.channels import ActorBoard, InProcessWeights, published_state, split_published
from arbor.core.config import ModelConfig
from arbor.core.model import ValueHead, build_policy, save_checkpoint, value_head_for
from arbor.core.tasks import split

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


def test_right_pad_by_hand():
    ids, mask = right_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError):
        right_pad([], pad_id=0)


def test_value_head_for_loads_the_saved_head_else_a_fresh_one(tmp_path):
    model, tokenizer = build_policy(TINY)
    fresh = value_head_for(model, None)
    assert float(fresh(torch.zeros(1, 1, 32))) == pytest.approx(0.5)  # no preference
    head = ValueHead(32)
    torch.nn.init.constant_(head.proj.bias, 2.0)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, head)
    assert torch.equal(value_head_for(model, tmp_path / "ckpt").proj.bias, head.proj.bias)
    save_checkpoint(tmp_path / "bare", model, tokenizer)
    assert float(value_head_for(model, tmp_path / "bare").proj.bias) == 0.0


def test_seed_stretches_are_disjoint_and_ordered():
    starts = [split.SFT_SEEDS, split.VALUE_SEEDS, split.PRM_SEEDS, split.ROLLOUT_SEEDS, split.TRL_SEEDS]
    assert starts == sorted(set(starts)) and starts[-1] < split.EVAL_SEED_OFFSET
    assert split.stretch_start(split.VALUE_SEEDS, 2) == (1 << 30) + 2 * split.SEED_STRIDE
    # actors interleave one stream: actor a's cursor c is index start + c * n + a
    picks = {split.rollout_index(0, c, 3, a) for c in range(10) for a in range(3)}
    assert picks == set(range(split.ROLLOUT_SEEDS, split.ROLLOUT_SEEDS + 30))
    with pytest.raises(ValueError):
        split.check_train_index(split.EVAL_SEED_OFFSET)


def test_in_process_weights_pull_with_version():
    channel = InProcessWeights()
    assert channel.poll(-1).state is None and channel.poll(-1).version == -1
    state = published_state({"w": torch.ones(2)}, {"proj.bias": torch.zeros(1)})
    channel.publish(0, state)
    got = channel.poll(-1)
    assert got.version == 0 and split_published(got.state) == (
        {"w": state["w"]},
        {"proj.bias": state["value_head.proj.bias"]},
    )
    assert channel.poll(0).state is None  # up to date: nothing moves
    with pytest.raises(ValueError, match="not newer"):
        channel.publish(0, state)


def test_actor_board_keeps_latest_totals_events_and_a_few_trees():
    board = ActorBoard()
    for i in range(6):
        board.report("rollout-0", {"trees": i}, {"id": i})
    board.event("actor_restarted", actor="rollout-0")
    assert board.stats == {"rollout-0": {"trees": 5}} and [t["id"] for t in board.trees] == [2, 3, 4, 5]
    assert board.latest_tree() == {"id": 5} and board.events[0]["kind"] == "actor_restarted"
