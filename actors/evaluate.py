"""Held-out evaluation: greedy accuracy, and sampled pass@k / maj@k, per difficulty level too."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from actors.sampling import generate_responses
from core.config import EvalConfig
from core.tasks import Problem
from reward import extract_answer, verify


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(kind: str, responses: list[str], correct: list[bool]) -> bool:
    """maj@k: vote over extracted answers (ties: earliest); submit the first response with the winning answer.

    Responses without an answer do not vote; with no votes at all the problem counts as wrong.
    """
    answers = [extract_answer(kind, r) for r in responses]
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return correct[answers.index(winner)]


@dataclass
class EvalResult:
    num_problems: int
    greedy_accuracy: float
    pass_at: dict[int, float] = field(default_factory=dict)  # k -> pass@k
    maj_at: dict[int, float] = field(default_factory=dict)  # k -> maj@k
    level_accuracy: dict[int, float] = field(default_factory=dict)  # difficulty level -> greedy accuracy
    samples: list[dict] = field(default_factory=list)  # a few (prompt, greedy response, verdict) for inspection

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat scalars for the logger."""
        out = {f"{prefix}/greedy_accuracy": self.greedy_accuracy}
        out |= {f"{prefix}/pass@{k}": v for k, v in self.pass_at.items()}
        out |= {f"{prefix}/maj@{k}": v for k, v in self.maj_at.items()}
        out |= {f"{prefix}/level{lv}_accuracy": v for lv, v in self.level_accuracy.items()}
        return out

    def to_json(self) -> dict:
        return asdict(self)


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: list[Problem],
    cfg: EvalConfig,
    num_shown: int = 5,
) -> EvalResult:
    """Score ``model`` on ``problems``: greedy decoding, then ``cfg.num_samples`` samples each."""
    if not problems:
        raise ValueError("evaluation needs at least one held-out problem (task.eval_size)")
    kind = problems[0].task
    prompts = [p.prompt for p in problems]
    common = dict(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    greedy = [r[0] for r in generate_responses(model, tokenizer, prompts, greedy=True, **common)]
    greedy_ok = [verify(kind, r, p.reference) for r, p in zip(greedy, problems)]
    by_level: dict[int, list[bool]] = {}
    for ok, p in zip(greedy_ok, problems):
        by_level.setdefault(p.level, []).append(ok)
    result = EvalResult(
        num_problems=len(problems),
        greedy_accuracy=sum(greedy_ok) / len(problems),
        level_accuracy={lv: sum(v) / len(v) for lv, v in sorted(by_level.items())},
        samples=[
            {"prompt": p.prompt, "response": r, "correct": ok}
            for p, r, ok in list(zip(problems, greedy, greedy_ok))[:num_shown]
        ],
    )
    n = cfg.num_samples
    if n > 0:
        sampled = generate_responses(
            model,
            tokenizer,
            prompts,
            greedy=False,
            num_samples=n,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=cfg.seed,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=max(1, cfg.batch_size // n),
        )
        verdicts = [[verify(kind, r, p.reference) for r in rs] for rs, p in zip(sampled, problems)]
        for k in cfg.ks:
            if k > n:
                continue
            result.pass_at[k] = sum(pass_at_k(n, sum(v), k) for v in verdicts) / len(problems)
            result.maj_at[k] = sum(majority_correct(kind, rs[:k], v[:k]) for rs, v in zip(sampled, verdicts)) / len(
                problems
            )
    return result
