"""What a rollout actor takes from the ``prm`` section: the PRM as leaf evaluator and as dense step reward.

    process = ProcessRewards(cfg)                                     # once, where the actor is built
    run_searches(backend, problems, cfg.search, process.scorers_for(training_scorers), ...)
    rewards = process.step_rewards(tree)                              # per node, or None

``search.leaf_value=prm`` adds the PRM (``prm.path``) to every problem's scorers; ``prm.reward_lambda`` > 0
gives every step lambda x its score (``reward.prm_labels.dense_step_rewards``), which the learner's
advantages add to the outcome (``arbor.learner.advantages.tree_samples``); with an implicit PRM and
``prm.implicit.online``, every finished tree first updates the PRM on its verified responses (PRIME's online update).
With none of them set, no PRM is loaded and ``step_rewards`` is None: the samples are exactly the outcome's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from arbor.actors.search.expand import Scorers
from arbor.core.config import ArborConfig
from arbor.core.errors import ConfigError
from arbor.core.tasks import Problem, step_separator
from arbor.core.tree import SearchTree
from arbor.reward.implicit_prm import ImplicitPRM, ImplicitPRMTrainer, verified_responses
from arbor.reward.prm_checkpoint import load_prm
from arbor.reward.prm_labels import dense_step_rewards


class ProcessRewards:
    """The PRM of ``cfg.prm`` (loaded only when the config uses one) and the two places it plugs in."""

    def __init__(self, cfg: ArborConfig) -> None:
        p = cfg.prm
        self.leaf_values = cfg.search.leaf_value == "prm"
        self.coef, self.step_score = p.reward_lambda, p.step_score
        self.prm = load_prm(p.path, step_separator(cfg.task)) if p.path and (self.leaf_values or self.coef) else None
        self.trainer = None
        if p.implicit.online:
            if not isinstance(self.prm, ImplicitPRM):
                raise ConfigError(
                    f"prm.implicit.online=true updates an implicit PRM (arbor prm prm.kind=implicit); prm.path "
                    f"({p.path}) is not one, or no PRM is in use (search.leaf_value=prm or prm.reward_lambda > 0 "
                    "loads it)"
                )
            self.trainer = ImplicitPRMTrainer(self.prm, p.implicit.lr, p.weight_decay)
        self.online_losses: list[float] = []  # one per tree the online update learned from

    def scorers_for(self, base: Callable[[Problem], Scorers]) -> Callable[[Problem], Scorers]:
        """``base`` (e.g. ``training_scorers``) with the PRM as the leaf evaluator when the search asks for it."""
        if not self.leaf_values or self.prm is None:
            return base
        prm = self.prm.scorer()
        return lambda problem: dataclasses.replace(base(problem), prm=prm)

    def step_rewards(self, tree: SearchTree) -> list[float] | None:
        """Each node's process reward (``prm.reward_lambda`` x its step score), or None without dense rewards;
        with ``prm.implicit.online`` the implicit PRM first learns from the tree's verified responses."""
        if self.trainer is not None:
            batch = verified_responses([tree], self.trainer.prm.tokenizer)
            if batch:
                self.online_losses.append(self.trainer.update(batch))
        if not self.coef or self.prm is None:
            return None
        return dense_step_rewards(tree, self.prm.score_tree(tree), self.coef, self.step_score)
