"""Process reward models: label math on hand-built trees, dense rewards in the learner samples, the PRM
model's scoring, the pairwise fit, Math-Shepherd completion search, and `arbor prm` end to end."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from arbor.actors.search import Scorers, run_searches, training_scorers
from arbor.actors.search.process_reward import ProcessRewards
from arbor.core.config import ValueConfig, load_config
from arbor.core.errors import ConfigError
from arbor.core.model import ValueHead, build_tiny_model, hidden_size_of, save_checkpoint
from arbor.core.tasks.base import Problem
from arbor.core.tokenizer import build_char_tokenizer
from arbor.core.tree import SearchTree, load_trees
from arbor.launch.cli import main
from arbor.learner.advantages import tree_to_samples
from arbor.learner.prm_fit import fit_pairwise_head, label_trees, pair_accuracy, pairwise_loss
from arbor.learner.value_fit import PrefixFeatures
from arbor.reward.implicit_prm import (
    ImplicitPRM,
    ImplicitPRMTrainer,
    VerifiedResponse,
    implicit_prm_loss,
    implicit_q,
    response_mask,
    token_log_ratios,
)
from arbor.reward.prm import ProcessRewardModel, encode_segments, split_steps
from arbor.reward.prm_checkpoint import load_prm
from arbor.reward.prm_labels import dense_step_rewards, sibling_pairs, step_labels
from tests.conftest import DEFAULT_CONFIG, SMALL_SEARCH, TINY
from tests.search_toy import PROMPT, FixedLogitPolicy, outcome, search_cfg


def _tree() -> SearchTree:
    """root -> a -> {a1 (right), a2 (wrong)}; root -> b -> b1 (wrong); root -> c (never expanded)."""
    tree = SearchTree("p/0", "Q?\n", [9, 8])
    a = tree.add_child(tree.root, text="a\n", token_ids=[1, 0], logprobs=[-0.1, -0.2])
    b = tree.add_child(tree.root, text="b\n", token_ids=[2, 0], logprobs=[-0.3, -0.4])
    tree.add_child(a, text="Answer: 1\n", token_ids=[5], logprobs=[-0.5], terminal=True, outcome=1.0)
    tree.add_child(a, text="Answer: 2\n", token_ids=[6], logprobs=[-0.6], terminal=True, outcome=0.0)
    tree.add_child(b, text="Answer: 3\n", token_ids=[7], logprobs=[-0.7], terminal=True, outcome=0.0)
    tree.add_child(tree.root, text="c\n", token_ids=[3, 0], logprobs=[-0.8, -0.9])
    return tree  # ids: root 0, a 1, b 2, a1 3, a2 4, b1 5, c 6


# --- labels -----------------------------------------------------------------------------------------------


def test_math_shepherd_labels_are_the_share_of_correct_completions_below():
    labels = {s.node: (s.soft, s.hard, s.completions) for s in step_labels(_tree())}
    assert labels == {
        0: (1 / 3, 1.0, 3),  # the prompt: one of three completions is right
        1: (0.5, 1.0, 2),  # a: one of its two completions is right, so its hard label is 1
        2: (0.0, 0.0, 1),  # b: its only completion is wrong
        3: (1.0, 1.0, 1),
        4: (0.0, 0.0, 1),
        5: (0.0, 0.0, 1),
    }  # c has no completion below it: no label at all
    assert [s.node for s in step_labels(_tree(), min_completions=2)] == [0, 1]


def test_sibling_pairs_prefer_a_step_that_can_succeed_over_one_that_cannot():
    assert sibling_pairs(_tree()) == [(1, 2), (3, 4)]  # c is no rejected sibling: it was never scored
    assert sibling_pairs(_tree(), min_completions=2) == []  # b has only one completion


def test_dense_step_rewards_by_value_and_by_progress():
    scores = [0.4, 0.6, 0.2, 0.9, 0.1, 0.0, None]
    value = dense_step_rewards(_tree(), scores, 0.5, "value")
    assert value == pytest.approx([0.0, 0.3, 0.1, 0.45, 0.05, 0.0, 0.0])
    progress = dense_step_rewards(_tree(), scores, 0.5, "progress")
    assert progress == pytest.approx([0.0, 0.1, -0.1, 0.15, -0.25, -0.1, 0.0])
    # progress telescopes: along root -> a -> a1 the rewards sum to 0.5 x (score(a1) - score(root))
    assert progress[1] + progress[3] == pytest.approx(0.5 * (0.9 - 0.4))
    with pytest.raises(ValueError, match="progress"):
        dense_step_rewards(_tree(), scores, 0.5, "length")


def test_tree_samples_with_dense_rewards_match_hand_computation():
    r = [0.0, 0.1, -0.1, 0.15, -0.25, -0.1, 0.0]
    # returns per leaf from the root: a1 1 + .1 + .15 = 1.25, a2 0 + .1 - .25 = -.15, b1 0 - .1 - .1 = -.2
    # V(root) = .9 / 3 = .3; V(a) = mean(1.15, -.25) = .45; V(b) = -.1; leaves: their outcomes
    samples = {s.meta["node"]: s for s in tree_to_samples(_tree(), global_advantage=1.0, step_rewards=r)}
    assert set(samples) == {1, 2, 3, 4, 5}  # c: no completion below, no sample
    a, a1, b1 = samples[1], samples[3], samples[5]
    assert (a.state_value, a.value_target, a.reward) == pytest.approx((0.3, 0.45, 0.1))
    assert a.advantage == pytest.approx(0.1 + 0.45 - 0.3 + (0.1 + 0.45 - 0.3))  # local + global
    assert (a1.reward, a1.value_target) == pytest.approx((1.15, 1.0))
    assert a1.advantage == pytest.approx((0.15 + 1.0 - 0.45) + (1.25 - 0.3))  # global: the path's return - V(root)
    assert b1.advantage == pytest.approx((-0.1 + 0.0 + 0.1) + (-0.2 - 0.3))


@pytest.mark.parametrize(("weight", "global_advantage"), [(0.0, 0.0), (0.5, 1.0)])
def test_zero_step_rewards_change_nothing(weight: float, global_advantage: float):
    trees = run_searches(
        FixedLogitPolicy(seed=4),
        [Problem("arith", f"toy/{i}", f"toy/{i}", PROMPT, {"answer": 1}) for i in range(6)],
        search_cfg(simulations=12, children=3),
        lambda p: Scorers(terminal=outcome),
    )
    for tree in trees:
        plain = tree_to_samples(tree, weight, global_advantage)
        zeros = tree_to_samples(tree, weight, global_advantage, step_rewards=[0.0] * len(tree.nodes))
        assert plain and zeros == plain


# --- the PRM model ----------------------------------------------------------------------------------------


def _prm() -> ProcessRewardModel:
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(load_config(None, TINY).model, tokenizer)
    head = ValueHead(hidden_size_of(model))
    torch.nn.init.normal_(head.proj.weight, std=1.0)  # a random head, so scores differ between states
    return ProcessRewardModel(model, tokenizer, head, batch_size=2)


def test_prm_scores_a_whole_tree_as_it_scores_each_state():
    prm, tree = _prm(), _tree()
    scores = prm.score_tree(tree)
    alone = [prm.score(tree.prompt, tree.response(n)) for n in tree.nodes]
    assert scores == pytest.approx(alone, abs=1e-5)  # batched and right-padded paths, one state at a time
    assert len(set(round(s, 4) for s in scores)) > 3 and all(0 < s < 1 for s in scores)
    assert split_steps("a\nb\nAnswer: 3") == ["a\n", "b\n", "Answer: 3"]


def test_label_trees_gives_each_node_one_row_and_pairs_by_row():
    labelled = label_trees([_tree()], build_char_tokenizer(), "soft", 1)
    assert sorted(s.node for s in labelled.steps) == [0, 1, 2, 3, 4, 5]
    assert [(labelled.steps[i].node, labelled.steps[j].node) for i, j in labelled.pairs.tolist()] == [(1, 2), (3, 4)]
    soft = [v for seq in labelled.seqs for v in seq.labels]
    assert soft == [s.soft for s in labelled.steps]
    # a row's position is the last token of its node's step: "Q?\n" then "a\n" ends at token 4
    assert labelled.seqs[0].positions[:2] == [2, 4]


def test_pairwise_loss_and_fit():
    assert float(pairwise_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))) == pytest.approx(
        (math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2
    )
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(400, 8, generator=gen)
    truth = hidden @ torch.randn(8, generator=gen)  # a linear score the pairs are drawn from
    a, b = torch.randint(0, 400, (2, 2000), generator=gen)
    pairs = torch.stack([torch.where(truth[a] > truth[b], a, b), torch.where(truth[a] > truth[b], b, a)], 1)
    features = PrefixFeatures(hidden, (truth > 0).float(), torch.zeros(400, dtype=torch.bool))
    head = fit_pairwise_head(features, pairs[:1500], ValueConfig(steps=200, batch_size=128, lr=0.05))
    with torch.no_grad():
        scores = head(hidden)
    assert pair_accuracy(scores, pairs[1500:]) > 0.95
    assert pair_accuracy(scores, pairs[:0]) is None


# --- PRIME's implicit PRM -------------------------------------------------------------------------------


def test_implicit_rewards_match_hand_computation():
    ids = torch.tensor([[0, 1, 0]])
    prm_logits = torch.zeros(1, 3, 2)  # p = (1/2, 1/2) everywhere
    ref_logits = torch.tensor([[[0.0, math.log(3.0)]] * 3])  # p = (1/4, 3/4) everywhere
    ratios = token_log_ratios(prm_logits, ref_logits, ids)
    assert ratios.tolist()[0] == pytest.approx([0.0, math.log(0.5 / 0.75), math.log(0.5 / 0.25)])
    mask = response_mask(torch.ones(1, 3, dtype=torch.long), [2])  # the prompt is the first two tokens
    assert implicit_q(ratios, mask, beta=0.1).tolist()[0] == pytest.approx([0.0, 0.0, 0.1 * math.log(2.0)])
    assert float(implicit_prm_loss(torch.tensor([0.0]), torch.tensor([1.0]))) == pytest.approx(math.log(2.0))


def test_implicit_prm_equal_to_its_reference_scores_every_state_one_half():
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(load_config(None, TINY).model, tokenizer)
    prm = ImplicitPRM(copy.deepcopy(model), model, tokenizer, beta=0.05)
    assert prm.score_tree(_tree()) == pytest.approx([0.5] * 7)  # log-ratios are all 0, so Q is 0


def test_implicit_prm_learns_from_outcomes_alone():
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(load_config(None, TINY).model, tokenizer)
    prm = ImplicitPRM(copy.deepcopy(model), model, tokenizer, beta=1.0)
    good, bad = encode_segments(tokenizer, ["Q?\n", "Answer: 1"]), encode_segments(tokenizer, ["Q?\n", "Answer: 2"])
    batch = [VerifiedResponse(good[0], 3, 1.0), VerifiedResponse(bad[0], 3, 0.0)] * 4
    trainer = ImplicitPRMTrainer(prm, lr=1e-3)
    losses = [trainer.update(batch) for _ in range(40)]
    assert losses[0] == pytest.approx(math.log(2.0), abs=1e-4) and losses[-1] < 0.2  # starts at Q = 0
    assert prm.score("Q?\n", "Answer: 1") > 0.8 > 0.2 > prm.score("Q?\n", "Answer: 2")
    assert prm.score("Q?\n", "") == pytest.approx(0.5)  # the bare prompt has no response tokens


# --- search -----------------------------------------------------------------------------------------------


def test_shepherd_search_grows_completions_from_every_step():
    cfg = search_cfg(kind="shepherd", num_samples=3, children=2)
    problems = [Problem("arith", f"toy/{i}", f"toy/{i}", PROMPT, {"answer": 1}) for i in range(5)]
    for tree in run_searches(FixedLogitPolicy(seed=1), problems, cfg, lambda p: Scorers(terminal=outcome)):
        first = [tree.nodes[c] for c in tree.root.children]
        assert tree.kind == "shepherd" and len(first) == 3
        for step in first:  # the toy's first steps never end the response
            assert len(tree.terminals(step)) == 1 + 2  # its own chain and two more completions
        assert len(tree.terminals()) == 3 * 3


def test_process_rewards_wires_the_prm_into_search_and_step_rewards(tmp_path: Path):
    tree, tokenizer = _tree(), build_char_tokenizer()
    plain = ProcessRewards(load_config(None, TINY))  # no PRM in the config: nothing loaded, samples unchanged
    assert plain.prm is None and plain.step_rewards(tree) is None
    assert tree_to_samples(tree, 0.5, 1.0, plain.step_rewards(tree)) == tree_to_samples(tree, 0.5, 1.0)
    assert plain.scorers_for(training_scorers) is training_scorers

    prm = _prm()
    save_checkpoint(tmp_path / "prm", prm.model, tokenizer, prm.head)
    use = [f"prm.path={tmp_path / 'prm'}", "prm.reward_lambda=0.5", "prm.step_score=value", "search.leaf_value=prm"]
    process = ProcessRewards(load_config(None, [*TINY, *use]))
    scores = process.prm.score_tree(tree)
    assert scores == pytest.approx(prm.score_tree(tree), abs=1e-5)  # the saved PRM, reloaded
    expected = tree_to_samples(tree, step_rewards=dense_step_rewards(tree, scores, 0.5, "value"))
    got = tree_to_samples(tree, step_rewards=process.step_rewards(tree))
    assert got == expected and got != tree_to_samples(tree)
    a1 = next(s for s in got if s.meta["node"] == 3)
    assert a1.reward == pytest.approx(1.0 + 0.5 * scores[3])
    problem = Problem("arith", "toy/0", "toy/0", PROMPT, {"answer": 1})
    assert process.scorers_for(training_scorers)(problem).prm is not None

    with pytest.raises(ConfigError, match="prm.implicit.online"):  # online updates need an implicit PRM
        ProcessRewards(load_config(None, [*TINY, *use, "prm.implicit.online=true"]))


def test_online_implicit_prm_learns_from_every_finished_tree(tmp_path: Path):
    tokenizer = build_char_tokenizer()
    policy = build_tiny_model(load_config(None, TINY).model, tokenizer)
    save_checkpoint(tmp_path / "policy", policy, tokenizer)
    save_checkpoint(
        tmp_path / "prm",
        policy,
        tokenizer,
        meta={"kind": "implicit", "beta": 0.05, "reference": str(tmp_path / "policy")},
    )
    use = [f"prm.path={tmp_path / 'prm'}", "prm.reward_lambda=0.1", "prm.implicit.online=true", "prm.implicit.lr=1e-3"]
    process = ProcessRewards(load_config(None, [*TINY, *use]))
    assert isinstance(process.prm, ImplicitPRM)
    before = [p.detach().clone() for p in process.prm.model.parameters()]
    tree = _tree()
    samples = tree_to_samples(tree, step_rewards=process.step_rewards(tree))
    assert len(process.online_losses) == 1 and process.online_losses[0] == pytest.approx(math.log(2.0), abs=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(before, process.prm.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, process.prm.reference.parameters()))  # the reference stays
    assert any(s.reward != (1.0 if s.terminal and s.meta["node"] == 3 else 0.0) for s in samples)


# --- arbor prm, end to end --------------------------------------------------------------------------------


def test_arbor_prm_trains_reloads_and_guides_search(policy_checkpoints: dict[str, Path], tmp_path: Path):
    root = tmp_path / "runs"
    common = [*TINY, *SMALL_SEARCH, f"run.root={root}", "threads=1", "task.eval_size=4"]
    shepherd = ["search.kind=shepherd", "search.best_of_n.num_samples=3", "search.children=2", "prm.problems=12"]
    policy = f"model.path={policy_checkpoints['sft']}"
    assert main(["prm", str(DEFAULT_CONFIG), *common, *shepherd, policy, "prm.steps=30"]) == 0
    (run,) = root.glob("prm-*")
    report = json.loads((run / "prm_report.json").read_text())
    assert report["trees"] == 12 and report["fit"]["steps"] > 12 and report["held_out"]["steps"] > 0
    trees = load_trees(run / "trees.jsonl")
    assert len(trees) == 12 and {t.kind for t in trees} == {"shepherd"}

    prm = load_prm(run / "checkpoints" / "prm")
    assert 0 < prm.score(trees[0].prompt, trees[0].response(trees[0].terminals()[0])) < 1

    # the saved trees label again without searching; hard labels, on a separate model's trunk this time
    saved = f"prm.trees={run / 'trees.jsonl'}"
    base = f"prm.base={policy_checkpoints['value']}"
    assert main(["prm", str(DEFAULT_CONFIG), *common, policy, saved, "prm.label=hard", base, "run.name=base"]) == 0
    meta = json.loads((root / "base" / "checkpoints" / "prm" / "arbor.json").read_text())
    assert meta["base"] == str(policy_checkpoints["value"]) and meta["label"] == "hard"
    # and PRIME's implicit PRM, which reloads with the policy as its reference
    implicit = ["prm.kind=implicit", "prm.steps=3", "prm.batch_size=4", "run.name=implicit"]
    assert main(["prm", str(DEFAULT_CONFIG), *common, policy, saved, *implicit]) == 0
    assert isinstance(load_prm(root / "implicit" / "checkpoints" / "prm"), ImplicitPRM)
    assert json.loads((root / "implicit" / "prm_report.json").read_text())["held_out"]["steps"] > 0

    # the PRM as the only value source of evaluation-time search (the SFT checkpoint has no value head)
    budgets = ["search.budgets=[2]", "search.kinds=[best_of_n,beam]", "search.leaf_value=prm", "eval.num_samples=0"]
    prm_path = f"prm.path={run / 'checkpoints' / 'prm'}"
    assert main(["eval", str(DEFAULT_CONFIG), *common, policy, prm_path, *budgets]) == 0
    (eval_run,) = root.glob("eval-*")
    points = json.loads((eval_run / "scaling.json").read_text())["points"]
    assert {(p["kind"], p["budget"]) for p in points} == {("best_of_n", 2), ("beam", 2)}
