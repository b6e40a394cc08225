"""What a rollout actor takes from the ``prm`` section: the PRM as leaf evaluator and as dense step reward.

    process = ProcessRewards(cfg)                                     # once, where the actor is built
    run_searches(backend, problems, cfg.search, process.scorers_for(training_scorers), ...)
    samples = process.samples(tree, cfg.train.value_head_weight, cfg.train.global_advantage)

``search.leaf_value=prm`` adds the PRM (``prm.path``) to every problem's scorers; ``prm.reward_lambda`` > 0
adds lambda x each step's score to the tree's samples (``reward.prm_labels.dense_step_rewards``,
``tree_to_samples``); with an implicit PRM and ``prm.online``, every finished tree first updates the PRM on
its verified responses (PRIME's online update). With none of them set, no PRM is loaded and ``samples`` is
``tree_to_samples(tree, value_head_weight, global_advantage)`` exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from arbor.actors.search.expand import Scorers
from arbor.actors.search.tree import SearchTree, tree_to_samples
from arbor.core.config import ArborConfig
from arbor.core.errors import ConfigError
from arbor.core.samples import StepSample
from arbor.core.tasks import Problem, step_separator
from arbor.reward.implicit_prm import ImplicitPRM, ImplicitPRMTrainer, verified_responses
from arbor.reward.prm import load_prm
from arbor.reward.prm_labels import dense_step_rewards


class ProcessRewards:
    """The PRM of ``cfg.prm`` (loaded only when the config uses one) and the two places it plugs in."""

    def __init__(self, cfg: ArborConfig) -> None:
        p = cfg.prm
        self.leaf_values = cfg.search.leaf_value == "prm"
        self.coef, self.step_score = p.reward_lambda, p.step_score
        self.prm = load_prm(p.path, step_separator(cfg.task)) if p.path and (self.leaf_values or self.coef) else None
        self.trainer = None
        if p.online:
            if not isinstance(self.prm, ImplicitPRM):
                raise ConfigError(
                    f"prm.online=true updates an implicit PRM (arbor prm prm.kind=implicit); prm.path ({p.path}) "
                    "is not one, or no PRM is in use (search.leaf_value=prm or prm.reward_lambda > 0 loads it)"
                )
            self.trainer = ImplicitPRMTrainer(self.prm, p.implicit_lr, p.weight_decay)
        self.online_losses: list[float] = []  # one per tree the online update learned from

    def scorers_for(self, base: Callable[[Problem], Scorers]) -> Callable[[Problem], Scorers]:
        """``base`` (e.g. ``training_scorers``) with the PRM as the leaf evaluator when the search asks for it."""
        if not self.leaf_values or self.prm is None:
            return base
        prm = self.prm.scorer()
        return lambda problem: dataclasses.replace(base(problem), prm=prm)

    def samples(self, tree: SearchTree, value_head_weight: float, global_advantage: float) -> list[StepSample]:
        """The tree's learner samples, with each step's process reward when ``prm.reward_lambda`` > 0."""
        if self.trainer is not None:
            batch = verified_responses([tree], self.trainer.prm.tokenizer)
            if batch:
                self.online_losses.append(self.trainer.update(batch))
        if not self.coef or self.prm is None:
            return tree_to_samples(tree, value_head_weight, global_advantage)
        rewards = dense_step_rewards(tree, self.prm.score_tree(tree), self.coef, self.step_score)
        return tree_to_samples(tree, value_head_weight, global_advantage, step_rewards=rewards)
