"""Tree search over reasoning steps: MCTS (PUCT), value-guided beam search, best-of-N, Math-Shepherd completions.

Every search fills the same ``arbor.core.tree.SearchTree`` record; ``run_searches`` batches many trees
into one model call per round through a :class:`StepBackend` ("continue these prefixes by one step"), whose
HF implementation reuses each node's prefix KV. ``ProcessRewards`` adds a process reward model to the
search and gives a tree's dense step rewards; the learner turns trees into samples
(``arbor.learner.advantages``).
"""

from arbor.actors.search.answer import choose_answer
from arbor.actors.search.backend import StepBackend, StepOutput, StepRequest, StepResult
from arbor.actors.search.driver import evaluation_scorers, make_search, run_searches, training_scorers
from arbor.actors.search.expand import Scorers
from arbor.actors.search.hf_backend import HFStepBackend
from arbor.actors.search.process_reward import ProcessRewards
from arbor.actors.search.scaling import ScalingPoint, scaling_curve, scaling_table

__all__ = [
    "HFStepBackend",
    "ProcessRewards",
    "ScalingPoint",
    "Scorers",
    "StepBackend",
    "StepOutput",
    "StepRequest",
    "StepResult",
    "choose_answer",
    "evaluation_scorers",
    "make_search",
    "run_searches",
    "scaling_curve",
    "scaling_table",
    "training_scorers",
]
