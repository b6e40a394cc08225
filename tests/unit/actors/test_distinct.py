"""Sampling steps without replacement (search.distinct_children): the exclusion trie's masses, the exact
factorisation of p(step | step not known) they give, and the sampler's reweighting."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from arbor.actors.search.distinct import ExclusionTrie
from arbor.actors.search.hf_backend import sample_tokens


def test_trie_masses_and_biases_by_hand():
    a, b, c = ([1, 2], [-0.5, -1.0]), ([1, 3], [-0.5, -2.0]), ([4], [-1.5])
    trie = ExclusionTrie([a, b, c])
    root_mass = math.exp(-1.5) + math.exp(-2.5) + math.exp(-1.5)
    assert trie.residual() == pytest.approx(1 - root_mass)
    root = trie.bias(trie.root)
    # after token 1 the known continuations carry e^-1 + e^-2; token 4 is itself a whole known step
    assert root[1] == pytest.approx(math.log(1 - math.exp(-1.0) - math.exp(-2.0)))
    assert root[4] == -math.inf and set(root) == {1, 4}
    assert trie.bias(trie.root.children[1]) == {2: -math.inf, 3: -math.inf}


def test_trie_refuses_a_step_whose_logprobs_do_not_match_its_tokens():
    with pytest.raises(ValueError, match="2 tokens but 1 log-probs"):
        ExclusionTrie([([1, 2], [-0.1])])


def test_reweighted_tokens_factorise_the_distribution_conditioned_on_not_known():
    """A toy two-token step model: q(t1) q(t2 | t1) built from the trie's biases equals
    p(s) / (1 - p(known)) for every unknown step s and 0 for every known one."""
    vocab = 3
    gen = torch.Generator().manual_seed(0)
    first = torch.softmax(torch.randn(vocab, generator=gen), -1)
    second = torch.softmax(torch.randn(vocab, vocab, generator=gen), -1)  # [t1, t2]

    def p(s):
        return float(first[s[0]] * second[s[0], s[1]])

    known = [(0, 1), (0, 2), (2, 2)]
    trie = ExclusionTrie([(s, [math.log(first[s[0]]), math.log(second[s[0], s[1]])]) for s in known])
    z = 1 - sum(p(s) for s in known)
    assert trie.residual() == pytest.approx(z)

    def reweighted(probs, node):
        w = probs.clone().double()
        for tok, bias in (trie.bias(node) if node is not None else {}).items():
            w[tok] *= math.exp(bias)
        return w / w.sum()

    q1 = reweighted(first, trie.root)
    for s in itertools.product(range(vocab), repeat=2):
        node = trie.root.children.get(s[0])
        q = float(q1[s[0]] * reweighted(second[s[0]], node)[s[1]])
        assert q == pytest.approx(0.0 if s in known else p(s) / z, rel=1e-6, abs=1e-9), s  # float32 inputs


def test_bias_changes_what_is_drawn_not_the_logprob_reported():
    logits = torch.tensor([[3.0, 0.0, -1.0, 1.0]]).repeat(2000, 1)
    bias = torch.zeros_like(logits)
    bias[:, 0] = -math.inf  # the mode is a known step's token
    bias[:, 3] = math.log(0.5)
    bias[-1] = -math.inf  # a row left with no mass is drawn without the bias
    tokens, logp = sample_tokens(logits, torch.ones(2000), torch.Generator().manual_seed(0), bias=bias)
    assert not bool((tokens[:-1] == 0).any())
    assert torch.allclose(logp, torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1))
    probs = torch.softmax(logits[0], -1) * bias[0].exp()
    expected = probs / probs.sum()
    counts = torch.bincount(tokens[:-1], minlength=4).double() / 1999
    assert bool(((counts - expected).abs() <= 4 * (expected * (1 - expected) / 1999).sqrt() + 1e-12).all())
    greedy, _ = sample_tokens(logits[:1], torch.zeros(1), None, bias=bias[:1])
    assert int(greedy) == 3  # a greedy row takes the best token it is allowed
