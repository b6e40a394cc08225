"""Tree search over reasoning steps: MCTS (PUCT), value-guided beam search, best-of-N, Math-Shepherd completions.

Every search fills the same :class:`SearchTree` record; ``run_searches`` batches many trees into one
model call per round through a :class:`StepBackend` ("continue these prefixes by one step"), whose HF
implementation reuses each node's prefix KV. ``tree_to_samples`` turns a tree into learner samples;
``ProcessRewards`` adds a process reward model to the search and to the samples.
"""

from arbor.actors.search.answer import choose_answer
from arbor.actors.search.backend import StepBackend, StepOutput, StepRequest, StepResult
from arbor.actors.search.driver import evaluation_scorers, make_search, run_searches, training_scorers
from arbor.actors.search.expand import Scorers
from arbor.actors.search.hf_backend import HFStepBackend
from arbor.actors.search.process_reward import ProcessRewards
from arbor.actors.search.scaling import ScalingPoint, scaling_curve, scaling_table
from arbor.actors.search.tree import (
    Node,
    SearchTree,
    compute_mc_values,
    scale_advantages,
    search_stats,
    tree_to_samples,
)

__all__ = [
    "HFStepBackend",
    "Node",
    "ProcessRewards",
    "ScalingPoint",
    "Scorers",
    "SearchTree",
    "StepBackend",
    "StepOutput",
    "StepRequest",
    "StepResult",
    "choose_answer",
    "compute_mc_values",
    "evaluation_scorers",
    "make_search",
    "run_searches",
    "scale_advantages",
    "scaling_curve",
    "scaling_table",
    "search_stats",
    "training_scorers",
    "tree_to_samples",
]
