"""The HF step backend with a real tiny model: KV reuse is exact, versioned, and counted.

The 2-layer, 64-wide Llama is first fitted for a few seconds on gold Countdown traces, so that it ends
steps with newlines and trees grow several levels deep (a random init almost never emits one).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from arbor.actors.search.backend import StepRequest
from arbor.actors.search.driver import run_searches, training_scorers
from arbor.actors.search.hf_backend import HFStepBackend
from arbor.actors.search.kv_cache import CacheEntry, PrefixCache
from arbor.core.config import ModelConfig, TaskConfig
from arbor.core.model import ValueHead, build_policy, hidden_size_of
from arbor.core.tasks import build_task
from arbor.core.tasks.base import Problem
from tests.reference import recompute, worst_gap_to_recomputation
from tests.search_toy import search_cfg

TINY = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_seq_len=128)
SEARCH = search_cfg(simulations=6, children=3, leaves_per_round=2, max_step_tokens=12, max_response_tokens=40)


def _fit_briefly(model, tokenizer, problems: list[Problem], steps: int = 60) -> None:
    """A few plain next-token steps on gold traces: enough to learn the line structure."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    texts = [p.prompt + p.solution + tokenizer.eos_token for p in problems]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False, padding_side="right")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(texts), (32,))
        batch = {"input_ids": enc["input_ids"][idx], "attention_mask": enc["attention_mask"][idx]}
        loss = model(**batch, labels=labels[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def policy():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread avoids oversubscribing a shared 2-core machine
    task = build_task(TaskConfig(eval_size=8))
    model, tokenizer = build_policy(TINY)
    _fit_briefly(model, tokenizer, [task.train_problem(i) for i in range(256)])
    head = ValueHead(hidden_size_of(model))
    with torch.no_grad():  # a random head, so value estimates differ between states
        head.proj.weight.normal_(0, 0.3)
    yield model, tokenizer, head, task.eval_problems()
    torch.set_num_threads(threads)


def test_kv_reusing_search_matches_no_cache_recomputation(policy):
    model, tokenizer, head, problems = policy
    backend = HFStepBackend(model, tokenizer, head, seed=0)
    trees = run_searches(backend, problems[:3], SEARCH, training_scorers)
    assert max(n.depth for t in trees for n in t.nodes) >= 2  # children were forwarded on top of cached parents
    for tree in trees:
        assert worst_gap_to_recomputation(tree, model, head) < 1e-4
        # every token is forwarded once: the prompt, then each generated token (the step's last one included)
        assert tree.tokens_forwarded == len(tree.prompt_tokens) + tree.tokens_generated
        assert tree.tokens_generated >= sum(len(n.token_ids) for n in tree.nodes[1:])  # merged duplicates count too
    assert backend.tokens_forwarded == sum(t.tokens_forwarded for t in trees)


def test_reuse_changes_cost_not_results(policy):
    model, tokenizer, head, problems = policy
    runs = {}
    for reuse in (True, False):
        backend = HFStepBackend(model, tokenizer, head, seed=1, reuse_prefixes=reuse)
        runs[reuse] = run_searches(backend, problems[3:5], SEARCH, training_scorers)
    for a, b in zip(runs[True], runs[False]):
        assert [n.token_ids for n in a.nodes] == [n.token_ids for n in b.nodes]
        flat_a, flat_b = ([lp for n in t.nodes for lp in n.logprobs] for t in (a, b))
        assert flat_a == pytest.approx(flat_b, abs=1e-4)
        assert a.tokens_generated == b.tokens_generated
        assert b.tokens_forwarded > a.tokens_forwarded  # without reuse every expansion re-reads its prefix


def test_greedy_search_reproduces_hf_generate(policy):
    model, tokenizer, head, problems = policy
    backend = HFStepBackend(model, tokenizer, head)
    cfg = dataclasses.replace(SEARCH, kind="greedy", max_step_tokens=40)
    for tree in run_searches(backend, problems[:4], cfg, training_scorers):
        ours = [t for n in tree.path(tree.nodes[-1])[1:] for t in n.token_ids]
        ids = torch.tensor([tree.prompt_tokens])
        pad = tokenizer.pad_token_id
        ref = model.generate(input_ids=ids, max_new_tokens=len(ours), do_sample=False, pad_token_id=pad)
        assert ours == ref[0, ids.shape[1] :].tolist()


def test_cache_is_never_reused_across_policy_versions(policy):
    model, tokenizer, head, problems = policy
    model = copy.deepcopy(model)  # this test changes the weights
    backend = HFStepBackend(model, tokenizer, head, seed=2)
    root = (tuple(backend.encode(problems[0].prompt)),)
    first = backend.continue_steps([StepRequest(root, 2, 12)])[0]
    child = root + (tuple(first.steps[0].token_ids),)
    backend.continue_steps([StepRequest(child, 2, 12)])
    stale_logits = backend.cache.lookup(child)[-1].next_logits.clone()
    assert backend.cache.num_entries >= 4

    torch.manual_seed(3)
    new_weights = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    backend.load_weights(1, new_weights)
    assert backend.policy_version == 1 and backend.cache.num_entries == 0 and backend.cache.dropped_entries >= 4

    again = backend.continue_steps([StepRequest(child, 2, 12)])[0]
    assert again.policy_version == 1
    assert again.tokens_forwarded == sum(map(len, child)) + again.tokens_generated  # the prefix was re-read
    for step in again.steps:  # every log-prob and value comes from the new weights
        logps, values = recompute(model, head, child + (tuple(step.token_ids),))
        assert logps[-1] == pytest.approx(step.logprobs, abs=1e-4)
        assert values[-1] == pytest.approx(step.value, abs=1e-4)
    assert recompute(model, head, child)[1][-1] == pytest.approx(again.prefix_value, abs=1e-4)
    fresh = backend.cache.lookup(child)[-1].next_logits
    assert (fresh - stale_logits).abs().max() > 1e-3  # reusing the old entry would have been visibly wrong
    assert all(e.version == 1 for e in backend.cache.lookup(child))


def test_weights_arriving_mid_search_are_used_from_then_on(policy):
    old, tokenizer, head, problems = policy
    model = copy.deepcopy(old)
    backend = HFStepBackend(model, tokenizer, head, seed=4)
    torch.manual_seed(5)
    new_weights = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    rounds: list[int] = []

    def pull_weights() -> None:  # what a rollout actor does between rounds
        rounds.append(backend.policy_version)
        if len(rounds) == 3:
            backend.load_weights(1, new_weights)

    trees = run_searches(backend, problems[5:7], SEARCH, training_scorers, between_rounds=pull_weights)
    assert {n.policy_version for t in trees for n in t.nodes[1:]} == {0, 1}
    for tree in trees:  # each step matches a no-cache recomputation under the weights that produced it
        for node in tree.nodes[1:]:
            logps, values = recompute(old if node.policy_version == 0 else model, head, tree.segments(node))
            assert logps[-1] == pytest.approx(node.logprobs, abs=1e-4)
            assert values[-1] == pytest.approx(node.value_estimate, abs=1e-4)


def test_prefix_cache_refuses_entries_from_another_version():
    cache = PrefixCache(version=5)
    kv = [torch.zeros(1, 2, 4)]
    entry = CacheEntry(kv, kv, torch.zeros(3), None, version=5)
    cache.insert(((1, 2),), entry)
    assert cache.lookup(((1, 2), (3,))) == [entry] and cache.num_tokens == 2
    with pytest.raises(ValueError, match="version 4"):
        cache.insert(((1, 2), (3,)), CacheEntry(kv, kv, torch.zeros(3), None, version=4))
    with pytest.raises(KeyError):
        cache.insert(((9,), (3,)), CacheEntry(kv, kv, torch.zeros(3), None, version=5))
    cache.set_version(6)
    assert cache.lookup(((1, 2),)) == [] and cache.dropped_entries == 1


def test_prefix_only_request_longer_than_the_sampled_ones_decodes(policy):
    """A 0-sample request (value only) with the longest prefix must not break the batch's KV padding."""
    model, tokenizer, head, problems = policy
    backend = HFStepBackend(model, tokenizer, head, policy_version=0, seed=0)
    long = (
        tuple(backend.encode(problems[0].prompt)),
        tuple(backend.encode("1+1=2\n")),
        tuple(backend.encode("2+2=4\n")),
    )
    short = (tuple(backend.encode(problems[1].prompt)),)
    results = backend.continue_steps([StepRequest(long, 0, 8), StepRequest(short, 2, 8)])
    assert results[0].steps == [] and results[0].prefix_value is not None
    assert len(results[1].steps) == 2
    assert all(len(s.token_ids) == len(s.logprobs) > 0 for s in results[1].steps)


def test_padded_output_rows_beyond_the_tokenizer_are_never_sampled():
    from arbor.actors.search.hf_backend import sample_tokens

    logits = torch.zeros(64, 12)
    logits[:, 10:] = 50.0  # padded rows would win every draw if they were allowed
    gen = torch.Generator().manual_seed(0)
    tokens, logp = sample_tokens(logits, torch.ones(64), gen, vocab_size=10)
    assert int(tokens.max()) < 10
    assert torch.allclose(logp, torch.full((64,), -torch.log(torch.tensor(10.0))))  # uniform over the real 10


def test_sampled_tokens_follow_the_tempered_softmax_and_skip_impossible_ones():
    """The inverse-CDF sampler draws each token as often as softmax(logits / T) says (within 4 standard
    errors over 40k draws), never a token of probability 0, and T = 0 rows take the argmax."""
    from arbor.actors.search.hf_backend import sample_tokens

    base = torch.tensor([2.0, 0.0, -1.0, float("-inf"), 1.0, -3.0])
    rows, temperature = 40_000, 0.7
    logits = base.repeat(rows, 1)
    temps = torch.full((rows,), temperature)
    temps[:100] = 0.0
    tokens, logp = sample_tokens(logits, temps, torch.Generator().manual_seed(1))
    assert bool((tokens[:100] == 0).all())
    expected = torch.softmax(base / temperature, -1)
    counts = torch.bincount(tokens[100:], minlength=6).double() / (rows - 100)
    se = (expected * (1 - expected) / (rows - 100)).sqrt()
    assert counts[3] == 0
    assert bool(((counts - expected).abs() <= 4 * se + 1e-12).all()), (counts, expected)
    assert torch.allclose(logp[100:], torch.log(expected)[tokens[100:]].float(), atol=1e-5)


def test_rollout_rounds_draw_from_a_stream_their_cursor_names(policy):
    """A round's token draws depend on (seed, actor, the round's first cursor, restarted) only: a resumed
    actor reseeded at the checkpointed cursor draws what the uninterrupted one would have, whatever its
    generator did before; another cursor, actor or a Ray restart draws differently."""
    from arbor.actors.rollout import round_seed

    model, tokenizer, head, problems = policy

    def draws(backend_seed: int, **key) -> list[tuple[int, ...]]:
        backend = HFStepBackend(model, tokenizer, head, seed=backend_seed)
        backend.continue_steps([StepRequest((tuple(backend.encode(problems[1].prompt)),), 3, 12)])  # used before
        backend.reseed(round_seed(**({"train_seed": 0, "actor_index": 0, "cursor": 40, "restarted": False} | key)))
        root = (tuple(backend.encode(problems[0].prompt)),)
        return [tuple(s.token_ids) for s in backend.continue_steps([StepRequest(root, 6, 12)])[0].steps]

    same = draws(1)
    assert draws(2) == same
    for key in ({"cursor": 41}, {"actor_index": 1}, {"train_seed": 1}, {"restarted": True}):
        assert draws(1, **key) != same, key


@pytest.mark.parametrize("batched", [False, True])
def test_distinct_requests_never_repeat_a_step_and_report_the_policys_logprobs(policy, batched):
    """A distinct request's samples differ from each other and from the steps it excludes; their log-probs
    are the model's own, not the conditioned distribution's. A plain request at the same prefix repeats.
    Batched, the samples come in fewer model calls than one draw a round takes."""
    model, tokenizer, head, problems = policy
    backend = HFStepBackend(model, tokenizer, head, seed=3)
    prefix = (tuple(backend.encode(problems[0].prompt)),)
    # drawn with replacement, 256 steps at the recipe's MCTS temperature repeat themselves (how peaked the brief
    # fit comes out varies with the CPU's float path: 64 such draws were all different on one VM, 56-62 on others)
    plain = backend.continue_steps([StepRequest(prefix, 256, 12, 0.5)])[0].steps
    assert len({tuple(s.token_ids) for s in plain}) < 256
    known = backend.continue_steps([StepRequest(prefix, 1, 12)])[0].steps[0]  # at temperature 1, as below
    exclude = ((tuple(known.token_ids), tuple(known.logprobs)),)
    request = StepRequest(prefix, 6, 12, distinct=True, exclude=exclude, distinct_batched=batched)
    result = backend.continue_steps([request])[0]
    drawn = [tuple(s.token_ids) for s in result.steps]
    assert len(drawn) == 6 and len(set(drawn)) == 6 and tuple(known.token_ids) not in drawn
    for s in result.steps:
        logps, _ = recompute(model, head, (*prefix, tuple(s.token_ids)))
        assert max(abs(a - b) for a, b in zip(logps[-1], s.logprobs)) < 1e-4
    if batched:  # the same request, one draw a round
        one_by_one = backend.continue_steps([dataclasses.replace(request, distinct_batched=False)])[0]
        assert result.model_calls < one_by_one.model_calls
        assert result.tokens_generated >= sum(len(s) for s in drawn)  # a dropped twin's tokens are counted


@pytest.mark.parametrize("batched", [False, True])
def test_mcts_with_distinct_children_has_no_twin_siblings(policy, batched):
    model, tokenizer, head, problems = policy
    cfg = dataclasses.replace(SEARCH, distinct_children=True, distinct_batched=batched)
    backend = HFStepBackend(model, tokenizer, head, seed=4)
    trees = run_searches(backend, problems[:3], cfg, training_scorers)
    for tree in trees:
        for node in tree.nodes:
            kids = [tuple(tree.nodes[c].token_ids) for c in node.children]
            assert len(kids) == len(set(kids))
        assert worst_gap_to_recomputation(tree, model, head) < 1e-4
        in_tree = sum(len(n.token_ids) for n in tree.nodes[1:])
        if batched:
            assert tree.tokens_generated >= in_tree  # twins drawn beside each other are dropped, their tokens counted
        else:
            assert tree.tokens_generated == in_tree  # no token is wasted
