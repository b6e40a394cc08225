"""Replay buffer: Reverb-style rate limiting by hand, backpressure without loss, lag eviction, FIFO and
prioritized sampling, and exact snapshot/restore. Pure Python, runs in well under a second."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from arbor.actors.replay import RateLimiter, ReplayBuffer
from arbor.core.errors import DataError
from arbor.core.samples import StepSample


def step(i: int, version: int = 0, advantage: float = 0.5) -> StepSample:
    return StepSample(
        state_tokens=[1, 2],
        action_tokens=[i],
        behaviour_logprobs=[-0.1],
        policy_version=version,
        advantage=advantage,
        value_target=0.0,
        state_value=0.0,
        problem_uid=f"p{i}",
    )


def assert_nothing_dropped(buf: ReplayBuffer) -> None:
    s = buf.stats()
    assert s["inserted"] == s["size"] + s["released"] + s["evicted_stale"] + s["evicted_capacity"]


def test_rate_limiter_arithmetic_by_hand() -> None:
    # offset = spi * min_size = 4, window [4 - 3, 4 + 3] = [1, 7] on diff = 2 * inserts - samples.
    lim = RateLimiter(min_size_to_sample=2, samples_per_insert=2.0, error_buffer=3.0)
    assert (lim.min_diff, lim.max_diff) == (1.0, 7.0)
    assert lim.can_insert(2)  # size 0 + 2 <= min size: free
    lim.inserts = 1
    assert not lim.can_sample(1)  # below min size
    lim.inserts = 2
    assert lim.can_insert(1)  # 3 * 2 - 0 = 6 <= 7
    lim.inserts = 3
    assert not lim.can_insert(1)  # 4 * 2 - 0 = 8 > 7: learner behind, insert blocks
    assert lim.can_sample(5)  # 6 - 0 - 5 = 1 >= 1
    assert not lim.can_sample(6)  # 6 - 6 = 0 < 1: data short, sample blocks
    lim.samples = 2
    assert lim.can_insert(1)  # 8 - 2 = 6 <= 7
    lim.deletes = 3  # everything evicted: size 0, inserts are free again (no deadlock)
    lim.samples = 0
    assert lim.can_insert(2)
    with pytest.raises(ValueError, match="error_buffer"):
        RateLimiter(min_size_to_sample=1, samples_per_insert=4.0, error_buffer=1.0)


def test_inserts_block_when_learner_behind_and_samples_block_when_short() -> None:
    # window [0, 4] on diff = inserts - samples, free inserts up to 2 items.
    buf = ReplayBuffer(100, "fifo", max_policy_lag=10, rate_limiter=RateLimiter(2, 1.0, 2.0))
    assert buf.try_sample(1, current_version=0) is None
    assert buf.stats()["blocked_samples"] == 1
    for i in range(4):
        assert buf.try_insert([step(i)])
    assert not buf.try_insert([step(4)])  # 5 - 0 > 4
    assert buf.stats()["blocked_inserts"] == 1 and len(buf) == 4
    assert [s.problem_uid for s in buf.try_sample(1, 0)] == ["p0"]
    assert buf.try_insert([step(4)])
    assert_nothing_dropped(buf)


def test_streaming_actor_and_slow_learner_lose_nothing_and_keep_fifo_order() -> None:
    buf = ReplayBuffer(8, "fifo", max_policy_lag=10, rate_limiter=RateLimiter(2, 1.0, 3.0))
    pending = [step(i) for i in range(60)]
    received: list[str] = []
    tick = 0
    while pending or len(buf) >= 2:  # below min_size_to_sample the learner waits for more data
        tick += 1
        if pending and buf.try_insert(pending[:2]):  # an actor streams trees of 2 steps; retries when blocked
            pending = pending[2:]
        if tick % 3 == 0 or not pending:  # the learner is slower than the actor
            got = buf.try_sample(1, current_version=0)
            received += [s.problem_uid for s in got or []]
        assert_nothing_dropped(buf)
        assert tick < 1000
    assert received == [f"p{i}" for i in range(59)]  # every item once, oldest first
    stats = buf.stats()
    assert stats["blocked_inserts"] > 0  # the actor waited for the learner
    assert stats["size"] == 1 and stats["inserted"] == 60 and stats["sampled"] == stats["released"] == 59


def test_stale_items_are_evicted_counted_and_never_returned() -> None:
    buf = ReplayBuffer(10, "fifo", max_policy_lag=1, rate_limiter=RateLimiter(1, 1.0, 10.0))
    assert buf.try_insert([step(i, version=i) for i in range(4)])
    got = buf.try_sample(2, current_version=3)  # versions 0 and 1 are more than 1 behind
    assert [s.policy_version for s in got] == [2, 3]
    stats = buf.stats()
    assert stats["evicted_stale"] == 2 and stats["size"] == 0
    assert stats["lag_histogram"] == {1: 1, 0: 1}
    assert_nothing_dropped(buf)


@pytest.mark.parametrize("sheds", [False, True], ids=["ratio1", "ratio0.5"])
@pytest.mark.parametrize("sampler", ["fifo", "newest", "prioritized"])
def test_random_out_of_order_versions_match_a_full_scan_reference(tmp_path: Path, sampler: str, sheds: bool) -> None:
    """Async actors insert trees of older versions after newer ones, and demonstrations mix in. Whatever the
    order, sampling evicts exactly what a scan of every item would call stale (the buffer skips that scan
    when its oldest version is recent enough), returns nothing stale, and a restore keeps it so. Below one
    sample per insert a small buffer fills and sheds unseen items, with the same bookkeeping."""
    import random

    rng = random.Random(7)
    limiter = RateLimiter(1, 0.5, 4.0) if sheds else RateLimiter(1, 1.0, 1e6)
    buf = ReplayBuffer(12 if sheds else 64, sampler, max_policy_lag=2, rate_limiter=limiter, seed=3)
    version, uid = 0, 0
    for round_ in range(300):
        if rng.random() < 0.6:
            tree = []
            for _ in range(rng.randint(1, 6)):
                tree.append(step(uid, version=max(0, version - rng.randint(0, 4))))
                uid += 1
            inserted = buf.insert_demonstrations(tree) if rng.random() < 0.1 else buf.try_insert(tree)
            if not inserted:
                continue
        else:
            version += rng.randint(0, 1)
            oldest_ok = version - 2
            expect_stale = sum(
                1 for it in buf._items.values() if not it.is_demo and it.sample.policy_version < oldest_ok
            )
            before = buf.stats()["evicted_stale"]
            got = buf.try_sample(rng.randint(1, 4), current_version=version)
            assert buf.stats()["evicted_stale"] - before == expect_stale
            if got:
                assert all(s.meta.get("demonstration") or s.policy_version >= oldest_ok for s in got)
        if round_ % 100 == 99:
            buf.snapshot(tmp_path / "replay.json")
            buf = ReplayBuffer.restore(tmp_path / "replay.json")
        assert_nothing_dropped(buf)
        # a full buffer decides from this count whether capacity eviction can make room (no scan)
        assert buf._sampled_present == sum(it.times_sampled > 0 for it in buf._items.values())
    assert buf.stats()["evicted_stale"] > 0  # the run did exercise eviction
    if sampler == "prioritized":  # sampled items stay, so the buffer filled and capacity made room
        assert buf.stats()["evicted_capacity"] > 0
    assert (buf.stats()["evicted_unseen"] > 0) == sheds


def test_demonstrations_are_flagged_and_exempt_from_lag() -> None:
    buf = ReplayBuffer(10, "fifo", max_policy_lag=0, rate_limiter=RateLimiter(1, 1.0, 10.0))
    assert buf.insert_demonstrations([step(0, version=0)])
    assert buf.try_insert([step(1, version=0)])
    got = buf.try_sample(1, current_version=5)
    assert got[0].meta["demonstration"] is True and got[0].problem_uid == "p0"
    assert buf.stats()["evicted_stale"] == 1 and buf.stats()["demonstrations"] == 1
    assert buf.stats()["lag_histogram"] == {}


def test_full_buffer_evicts_only_already_sampled_items() -> None:
    buf = ReplayBuffer(3, "prioritized", max_policy_lag=10, rate_limiter=RateLimiter(1, 1.0, 10.0), seed=1)
    assert buf.try_insert([step(i) for i in range(3)])
    assert not buf.try_insert([step(3)])  # full of unsampled data: block, do not evict
    (key, _), *_ = buf.try_sample_keyed(1, current_version=0)
    assert buf.try_insert([step(3)])
    assert key not in buf._items and len(buf) == 3
    assert buf.stats()["evicted_capacity"] == 1 and buf.stats()["blocked_inserts"] == 1
    assert_nothing_dropped(buf)
    with pytest.raises(ValueError, match="capacity 3"):
        buf.try_insert([step(i) for i in range(4)])


def test_full_buffer_below_one_sample_per_insert_evicts_its_oldest_unseen_items() -> None:
    """Below one sample per insert most items are meant to age out untrained: a full buffer drops its oldest
    rather than make the actor wait for the learner to free room."""
    buf = ReplayBuffer(4, "fifo", max_policy_lag=10, rate_limiter=RateLimiter(1, 0.5, 8.0))
    assert all(buf.try_insert([step(i)]) for i in range(6))
    s = buf.stats()
    assert (len(buf), s["evicted_capacity"], s["evicted_unseen"], s["blocked_inserts"]) == (4, 2, 2, 0)
    assert [x.problem_uid for x in buf.try_sample(2, 0)] == ["p2", "p3"]
    assert_nothing_dropped(buf)


def test_a_shedding_prioritized_buffer_evicts_its_sampled_items_before_unseen_ones() -> None:
    buf = ReplayBuffer(3, "prioritized", rate_limiter=RateLimiter(1, 0.5, 8.0), seed=0, priority_eps=1e-9)
    assert buf.try_insert([step(0, advantage=0.0), step(1, advantage=0.0), step(2, advantage=1.0)])
    assert [s.problem_uid for s in buf.try_sample(1, 0)] == ["p2"]  # the newest, and the only one sampled
    assert buf.try_insert([step(3), step(4)])
    s = buf.stats()
    assert (s["evicted_capacity"], s["evicted_unseen"]) == (2, 1)
    assert sorted(it.sample.problem_uid for it in buf._items.values()) == ["p1", "p3", "p4"]
    assert buf._sampled_present == 0
    assert_nothing_dropped(buf)


def test_full_buffer_whose_learner_waits_on_the_ratio_evicts_its_oldest_unseen_items(tmp_path: Path) -> None:
    """At one sample per insert or more a full buffer keeps its unseen items and the insert waits, unless the
    learner waits on the ratio for inserts that capacity refuses: neither side could move. The oldest go then."""
    # offset = 1 * 2 = 2, window [1, 3] on diff = inserts - samples; a capacity of 2 is below what a sample
    # of 2 needs held (diff 3), a misconfiguration that must not stall the run
    buf = ReplayBuffer(2, "fifo", max_policy_lag=10, rate_limiter=RateLimiter(2, 1.0, 1.0))
    assert buf.try_insert([step(0)]) and buf.try_insert([step(1)])  # full, diff 2
    assert not buf.try_insert([step(2)]) and buf.stats()["evicted_capacity"] == 0  # nothing unseen lost
    assert buf.try_sample(2, 0) is None  # diff 2 - 2 < 1: the learner waits for inserts
    buf.snapshot(tmp_path / "replay.json")
    buf = ReplayBuffer.restore(tmp_path / "replay.json")  # the waiting learner is part of the state
    assert buf.try_insert([step(2)])  # the oldest, unseen, makes room
    s = buf.stats()
    assert (s["evicted_capacity"], s["evicted_unseen"], len(buf)) == (1, 1, 2)
    assert [x.problem_uid for x in buf.try_sample(2, 0)] == ["p1", "p2"]
    assert_nothing_dropped(buf)


def test_newest_sampler_hands_out_the_newest_items_once_and_the_rest_age_out() -> None:
    buf = ReplayBuffer(10, "newest", max_policy_lag=1, rate_limiter=RateLimiter(1, 1.0, 10.0))
    assert buf.try_insert([step(i, version=0) for i in range(3)])
    assert buf.try_insert([step(i, version=1) for i in range(3, 6)])
    assert [s.problem_uid for s in buf.try_sample(2, current_version=1)] == ["p5", "p4"]
    assert [s.problem_uid for s in buf.try_sample(1, current_version=2)] == ["p3"]  # p0-p2 now stale
    s = buf.stats()
    assert (s["released"], s["evicted_stale"], len(buf)) == (3, 3, 0)
    assert_nothing_dropped(buf)


def test_prioritized_frequencies_follow_priorities() -> None:
    lim = RateLimiter(1, 1000.0, 1e6)  # sampling never rate-limited here
    buf = ReplayBuffer(10, "prioritized", max_policy_lag=10, rate_limiter=lim, seed=0, priority_eps=1e-9)
    assert buf.try_insert([step(i, advantage=-(i + 1.0) if i % 2 else i + 1.0) for i in range(4)])
    draws = Counter(s.problem_uid for _ in range(40) for s in buf.try_sample(100, current_version=0))
    for i in range(4):
        assert abs(draws[f"p{i}"] / 4000 - (i + 1) / 10) < 0.03
    assert len(buf) == 4  # with replacement: nothing released
    keys = {s.problem_uid: k for k, s in buf.try_sample_keyed(100, 0)}
    buf.update_priorities({keys["p0"]: 1000.0})
    assert Counter(s.problem_uid for s in buf.try_sample(200, 0))["p0"] > 180
    with pytest.raises(ValueError, match="priority"):
        buf.update_priorities({keys["p1"]: float("nan")})


@pytest.mark.parametrize("sampler", ["fifo", "prioritized"])
def test_snapshot_restore_is_exact(tmp_path: Path, sampler: str) -> None:
    buf = ReplayBuffer(50, sampler, max_policy_lag=2, rate_limiter=RateLimiter(2, 1.0, 40.0), seed=7)
    assert buf.try_insert([step(i, version=i % 3, advantage=0.1 * i) for i in range(20)])
    assert buf.insert_demonstrations([step(99)])
    buf.try_sample(3, current_version=2)  # advance the RNG and counters first
    path = tmp_path / "replay.json"
    buf.snapshot(path)
    assert [p.name for p in tmp_path.iterdir()] == ["replay.json"]  # no temp file left behind
    restored = ReplayBuffer.restore(path)
    assert restored.stats() == buf.stats()
    for version in (2, 3, 3, 4):
        assert restored.try_sample(2, version) == buf.try_sample(2, version)
        assert restored.stats() == buf.stats()
    assert restored.try_insert([step(100)]) == buf.try_insert([step(100)])


def test_corrupt_snapshot_names_the_file_and_the_problem(tmp_path: Path) -> None:
    buf = ReplayBuffer(10, "prioritized", rate_limiter=RateLimiter(1, 1.0, 10.0))
    buf.try_insert([step(i) for i in range(3)])
    good = tmp_path / "good.json"
    buf.snapshot(good)
    text = good.read_text()

    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match="truncated.json.*not valid JSON"):
        ReplayBuffer.restore(truncated)

    state = json.loads(text)
    del state["items"][1]["sample"]["action_tokens"]
    bad_item = tmp_path / "bad_item.json"
    bad_item.write_text(json.dumps(state))
    with pytest.raises(DataError, match=r"bad_item.json.*items\[1\]"):
        ReplayBuffer.restore(bad_item)

    state = json.loads(text)
    state["items"][2]["sample"]["state_tokens"][0] = 10**6  # past any vocabulary
    bad_token = tmp_path / "bad_token.json"
    bad_token.write_text(json.dumps(state))
    ReplayBuffer.restore(bad_token)  # a snapshot alone does not know the vocabulary
    with pytest.raises(DataError, match=r"bad_token.json.*items\[2\].*token id 1000000 is outside"):
        ReplayBuffer.restore(bad_token, vocab_size=64)

    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    with pytest.raises(DataError, match="other.json: not a replay snapshot"):
        ReplayBuffer.restore(other)

    with pytest.raises(DataError, match="missing.json"):
        ReplayBuffer.restore(tmp_path / "missing.json")


def tree_of(tree: str, n: int) -> list[StepSample]:
    from dataclasses import replace

    return [replace(step(i), meta={"tree": tree, "tree_size": n}) for i in range(n)]


def test_the_tree_ledger_accounts_for_every_tree_once_and_survives_a_snapshot(tmp_path: Path) -> None:
    """begun == inserted + discarded; a second insert of a tree is refused (a duplicate), part of a tree is
    refused (partial), a tree without samples closes its entry (empty); all of it comes back from a snapshot."""
    buf = ReplayBuffer(capacity=32, rate_limiter=RateLimiter(min_size_to_sample=8, error_buffer=8))
    buf.begin_trees(["rollout-0/0", "rollout-0/1", "rollout-0/2", "rollout-1/0"])
    assert buf.try_insert(tree_of("rollout-0/0", 3), ("rollout-0", 1), tree="rollout-0/0")
    assert buf.try_insert([], ("rollout-0", 2), tree="rollout-0/1")  # no response got a verdict
    assert buf.try_insert(tree_of("rollout-0/0", 3), ("rollout-0", 1), tree="rollout-0/0")  # again: not taken
    with pytest.raises(ValueError, match="only whole trees"):
        buf.try_insert(tree_of("rollout-1/0", 3)[:2], ("rollout-1", 1), tree="rollout-1/0")
    s = buf.stats()
    assert len(buf) == 3 and s["inserted"] == 3 and s["max_size"] == 3
    assert (s["trees_begun"], s["trees_inserted"], s["trees_discarded"]) == (4, 2, 2)  # 0/2 and 1/0 in flight
    assert (s["duplicate_trees"], s["partial_trees"], s["empty_trees"]) == (1, 1, 1)
    buf.snapshot(tmp_path / "replay.json")
    again = ReplayBuffer.restore(tmp_path / "replay.json")
    assert {k: v for k, v in again.stats().items() if k != "lag_histogram"} == {
        k: v for k, v in s.items() if k != "lag_histogram"
    }
    assert again.try_insert(tree_of("rollout-0/2", 2), ("rollout-0", 3), tree="rollout-0/2")  # it finishes later
    assert again.stats()["trees_discarded"] == 1
    with pytest.raises(ValueError, match="ACTOR/CURSOR"):
        again.begin_trees(["no-cursor"])


def test_a_tree_wider_than_the_rate_limiter_window_goes_in_once_the_learner_waits() -> None:
    """A search tree's size is the search's: one wider than the window (here 12 samples against a window of 8)
    could never pass the ratio check. It is let in when the learner is starving, and only then; inserts of
    ordinary size stay rate-limited; the run goes on instead of waiting forever (the SmolLM2 recipe did)."""
    buf = ReplayBuffer(100, "fifo", max_policy_lag=10, rate_limiter=RateLimiter(4, 1.0, 4.0))  # window [0, 8]
    assert buf.try_insert(tree_of("rollout-0/0", 6))
    assert buf.try_sample(4, 0) is not None  # diff 6 - 4 = 2
    wide = tree_of("rollout-0/1", 12)
    assert not buf.try_insert(wide)  # 18 - 4 = 14 > 8 and the learner is not waiting: blocked
    assert buf.try_sample(4, 0) is None  # size 2 < min size 4: the learner waits for data
    assert buf.try_insert(wide)  # ... and the wide tree goes in
    assert not buf.try_insert(tree_of("rollout-0/2", 2))  # 20 - 4 = 16 > 8: ordinary inserts still wait
    assert buf.try_sample(8, 0) is not None and buf.try_sample(4, 0) is not None  # the learner catches up
    assert buf.try_insert(tree_of("rollout-0/2", 2))
    assert_nothing_dropped(buf)


def solution(uid: str, version: int, steps: int = 2) -> list[StepSample]:
    """An imitated response of ``steps`` step samples (as actors.journey makes them) for problem ``uid``."""
    return [
        StepSample(
            state_tokens=[1, 2, *range(10, 10 + k)],
            action_tokens=[20 + k],
            behaviour_logprobs=[0.0],
            policy_version=version,
            advantage=1.0,
            value_target=1.0,
            state_value=1.0,
            problem_uid=uid,
            source="shortcut",
        )
        for k in range(steps)
    ]


def test_solution_replay_keeps_each_problems_newest_response_and_draws_its_share(tmp_path: Path) -> None:
    buf = ReplayBuffer(
        capacity=64,
        max_policy_lag=1,
        rate_limiter=RateLimiter(1, 1.0, 1000.0),
        solution_replay=0.5,
        solution_capacity=2,
    )
    assert buf.try_insert([step(0), *solution("a", 0)])
    assert buf.try_insert([step(1), *solution("a", 1)])  # a newer response of the same problem replaces it
    assert buf.try_insert([step(2), *solution("b", 1)])
    assert buf.stats()["solutions"] == 2
    assert buf.try_insert([step(3), *solution("c", 1, steps=3)])  # the archive's cap drops "a", archived first
    assert buf._solutions.problems() == ["b", "c"]
    out = buf.try_sample(4, current_version=9)  # far past the lag: every FIFO item is stale
    assert out is None  # the archive never stands in for fresh data
    for i in range(4, 8):
        assert buf.try_insert([step(i, version=9)])
    out = buf.try_sample(4, current_version=9)
    fresh, replayed = out[:2], out[2:]
    assert [s.action_tokens for s in fresh] == [[4], [5]]  # half the batch is FIFO, oldest first
    assert all(s.meta["replayed_solution"] and s.problem_uid in {"b", "c"} for s in replayed)
    assert buf.stats()["solutions_replayed"] == 2
    buf.snapshot(tmp_path / "replay.json")
    again = ReplayBuffer.restore(tmp_path / "replay.json")
    assert again._solutions.to_json() == buf._solutions.to_json()
    assert [s.action_tokens for s in again.try_sample(4, 9)] == [s.action_tokens for s in buf.try_sample(4, 9)]


def test_solution_replay_share_is_refused_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="solution_replay must be in"):
        ReplayBuffer(capacity=8, solution_replay=1.0)


def test_the_buffer_service_wakes_a_waiting_insert_when_the_learner_starts_waiting_on_the_ratio() -> None:
    """The Ray service turns refusals into waits. An insert refused by a full buffer sleeps until something
    changes; the learner's refused sample is such a change (it lets the full buffer make room), so it must
    wake the insert, or each side waits on the other for the rest of the run."""
    import asyncio

    from arbor.launch.distributed.replay_service import ReplayService

    async def scenario() -> tuple[bool, list[str]]:
        service = ReplayService(ReplayBuffer(2, "fifo", max_policy_lag=10, rate_limiter=RateLimiter(2, 1.0, 1.0)))
        assert await service.insert([step(0)]) and await service.insert([step(1)])  # full
        waiting = asyncio.ensure_future(service.insert([step(2)]))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # the full buffer keeps its unseen items
        # the learner's sample is refused (diff 2 - 2 < 1), which wakes the insert; that insert evicts p0 and
        # its success wakes the sample, all within the sample's own wait
        got = await service.sample(2, 0, timeout_s=2.0)
        return await asyncio.wait_for(waiting, 2.0), [s.problem_uid for s in got or []]

    inserted, got = asyncio.run(scenario())
    assert inserted and got == ["p1", "p2"]  # p0 went unseen
