"""Held-out evaluation: greedy accuracy, and sampled pass@k / maj@k, per difficulty level too."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from arbor.actors.sampling import generate_responses
from arbor.core.config import EvalConfig
from arbor.core.tasks import Problem
from arbor.reward import extract_answer, majority_vote, verify


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(kind: str, responses: list[str], correct: list[bool]) -> bool:
    """maj@k: vote over extracted answers (ties: earliest); submit the first response with the winning answer.

    Responses without an answer do not vote; with no votes at all the problem counts as wrong.
    """
    chosen = majority_vote([extract_answer(kind, r) for r in responses])
    return chosen is not None and correct[chosen]


@dataclass
class EvalResult:
    num_problems: int
    greedy_accuracy: float
    pass_at: dict[int, float] = field(default_factory=dict)  # k -> pass@k
    maj_at: dict[int, float] = field(default_factory=dict)  # k -> maj@k
    level_accuracy: dict[int, float] = field(default_factory=dict)  # difficulty level -> greedy accuracy
    samples: list[dict] = field(default_factory=list)  # a few (prompt, greedy response, verdict) for inspection
    missing: int = 0  # scoring given responses (eval.responses): held-out problems that had none (counted wrong)

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
    result = _single_response_result(problems, greedy, greedy_ok, num_shown)
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


def given_responses(
    path: str, problems: list[Problem], response_key: str, question_field: str | None
) -> dict[str, str]:
    """Responses from a JSONL file, by problem uid: a row names its problem by ``uid``, by its question
    (``question_field``, for data tasks; the data file itself works) or by its ``prompt``. Rows that match
    no problem are ignored; unusable rows are skipped and logged with file and line."""
    from arbor.core.tasks.jsonl import Skips, problem_key, read_jsonl

    by_uid = {p.uid: p for p in problems}
    by_key = {p.key: p for p in problems}
    by_prompt = {p.prompt: p for p in problems}
    skips = Skips()
    out: dict[str, str] = {}
    for number, row in read_jsonl(path, skips):
        if not isinstance(row.get(response_key), str):
            skips.add(f"{path}:{number}: row has no text field '{response_key}'")
            continue
        problem = by_uid.get(str(row.get("uid")))
        if problem is None and question_field and isinstance(row.get(question_field), str):
            problem = by_key.get(problem_key(problems[0].task, row[question_field]))
        if problem is None:
            problem = by_prompt.get(str(row.get("prompt")))
        if problem is not None:
            out.setdefault(problem.uid, row[response_key])
    return out


def score_responses(problems: list[Problem], responses: dict[str, str], num_shown: int = 5) -> EvalResult:
    """Accuracy of given responses (by problem uid) on ``problems``; a problem without one counts as wrong."""
    if not problems:
        raise ValueError("evaluation needs at least one held-out problem (task.eval_size)")
    given = [responses.get(p.uid) for p in problems]
    correct = [r is not None and verify(p.task, r, p.reference) for r, p in zip(given, problems)]
    result = _single_response_result(problems, given, correct, num_shown)
    result.missing = sum(r is None for r in given)
    return result


def _single_response_result(
    problems: list[Problem], responses: list[str | None], correct: list[bool], num_shown: int
) -> EvalResult:
    """Accuracy of one response per problem, overall and per difficulty level, with a few shown."""
    by_level: dict[int, list[bool]] = {}
    for ok, p in zip(correct, problems):
        by_level.setdefault(p.level, []).append(ok)
    return EvalResult(
        num_problems=len(problems),
        greedy_accuracy=sum(correct) / len(problems),
        level_accuracy={lv: sum(v) / len(v) for lv, v in sorted(by_level.items())},
        samples=[
            {"prompt": p.prompt, "response": r, "correct": ok}
            for p, r, ok in list(zip(problems, responses, correct))[:num_shown]
        ],
    )
