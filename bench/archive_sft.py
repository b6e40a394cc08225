"""What a finished ``arbor train`` run's self-imitation archive is worth as SFT data, against gold traces of
the same problems and of every problem RL searches: which of the problems, the solutions or the learner
limits the RL gain. One invocation, the same init and cores, the same seconds of continued SFT per row.

    python bench/archive_sft.py RUN_DIR [--budget-s 300] [--rows self_archived,gold_archived,gold_all]
                                [key=value ...]

``RUN_DIR`` is an ``arbor train`` run with ``buffer.solution_replay`` > 0 (its latest checkpoint's
``replay.json`` holds the archive); its ``config.yaml`` gives the task, the init (``model.path``) and the
held-out set. Rows, each continued SFT (``bench/learning.py``'s ``sft_oracle``: ``learner.sft.train_sft`` at
the rate the SFT recipe ended with) from the run's init for ``--budget-s`` seconds:

| row | trains on |
|---|---|
| ``self_archived`` | the archive's own responses (what RL's search found), reshuffled every pass |
| ``gold_archived`` | the solver's gold traces of the same problems |
| ``gold_searched_sample`` | gold traces of as many problems as archived, drawn at random from those searched |
| ``gold_searched`` | gold traces of every problem the run searched (its trees' count, in the actors' order) |
| ``gold_all`` | gold traces of the problems RL's actors search, in their order (the ``sft_oracle`` row) |

Every row, the init and the run's own final checkpoint are scored greedy on the run's held-out problems;
prints a table and, as its last line, JSON (``init_accuracy``, ``rl_accuracy``, ``<row>_accuracy``,
``<row>_problems`` (distinct problems the row read), ``archived_problems``, ``archived_verified``,
``searched_problems``, ``standard_error``), also written to
``RUN_ROOT/bench-archive-sft-*/result.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from arbor.actors.evaluate import evaluate
from arbor.core.config import ModelConfig, load_config
from arbor.core.errors import ConfigError
from arbor.core.model import build_policy
from arbor.core.samples import StepSample
from arbor.core.tasks import build_task
from arbor.core.tasks.split import problems_to_skip
from arbor.reward import verify

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning import oracle_run, oracle_stream  # noqa: E402

ROWS = ("self_archived", "gold_archived", "gold_searched_sample", "gold_searched", "gold_all")


def archived_responses(run: Path, task, tokenizer) -> list[tuple[object, str]]:
    """(training problem, archived response text) for every archived problem of ``run``'s latest checkpoint;
    the response is the archived steps' tokens after the prompt, its eos dropped."""
    latest = run / "checkpoints" / "latest"
    if not latest.is_file():
        raise ConfigError(f"{run}: no checkpoints/latest; run arbor train with a final checkpoint first")
    replay = run / "checkpoints" / latest.read_text().strip() / "replay.json"
    solutions = json.loads(replay.read_text()).get("extra", {}).get("solutions")
    if not solutions:
        raise ConfigError(f"{replay}: no self-imitation archive (the run needs buffer.solution_replay > 0)")
    out = []
    for raw in solutions:
        steps = [StepSample.from_json(r) for r in raw]
        uid = steps[0].problem_uid
        prefix, _, index = uid.rpartition("/")
        if prefix != f"{task.name}/train":
            continue  # a relabelled problem (train.hindsight) has no gold trace to compare with
        problem = task.train_problem(int(index))
        last = steps[-1]
        ids = [*last.state_tokens, *last.action_tokens]
        prompt_ids = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
        if ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError(f"{replay}: archived response of {uid} does not start with its problem's prompt")
        body = ids[len(prompt_ids) :]
        if body and body[-1] == tokenizer.eos_token_id:
            body = body[:-1]
        out.append((problem, tokenizer.decode(body)))
    return out


def reshuffled(problems: list, seed: int):
    rng = random.Random(seed)
    while True:
        yield from rng.sample(problems, len(problems))


def searched_problems(run: Path, cfg, task, skip: set[str]) -> list:
    """The problems ``run``'s actors searched: as many as its trees, in the order the actors draw them, the
    keys no learning side reads passed over (as the actors and the oracle pass them)."""
    result = json.loads((run / "result.json").read_text())
    trees = sum(a["trees"] for a in result["actors"].values())
    stream = oracle_stream(cfg, task)
    out: list = []
    while len(out) < trees:
        problem = next(stream)
        if problem.key not in skip and problem.solution is not None:
            out.append(problem)
    return out


class Counted:
    """A problem stream that remembers the distinct problems read from it."""

    def __init__(self, stream):
        self.stream, self.seen = stream, set()

    def __iter__(self):
        return self

    def __next__(self):
        problem = next(self.stream)
        self.seen.add(problem.uid)
        return problem


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="an arbor train run directory (its archive and config)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="continued-SFT seconds per row")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to train, of {', '.join(ROWS)}")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the run's config, for every row")
    a = ap.parse_args(argv)
    rows = [r for r in a.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"--rows: unknown rows {unknown}; expected some of {', '.join(ROWS)}")
    run = Path(a.run)
    cfg = load_config(str(run / "config.yaml"), a.overrides)
    torch.set_num_threads(cfg.threads or 2)
    init = cfg.model.path
    task = build_task(cfg.task)
    held = task.eval_problems()
    _, tokenizer = build_policy(ModelConfig(path=init))
    archive = archived_responses(run, task, tokenizer)
    verified = sum(verify(p.task, text, p.reference) for p, text in archive)
    print(f"{run}: {len(archive)} archived problems, {verified} of their responses verify")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(cfg.run.root) / f"bench-archive-sft-{stamp}"
    out.mkdir(parents=True)
    searched = searched_problems(run, cfg, task, problems_to_skip(cfg, task))
    found = {p.uid for p in searched}
    print(f"{len(searched)} problems searched; {sum(p.uid in found for p, _ in archive)} of the archived among them")
    sample = random.Random(cfg.sft.seed).sample(searched, min(len(archive), len(searched)))
    streams = {
        "self_archived": lambda: reshuffled([dataclasses.replace(p, solution=t) for p, t in archive], cfg.sft.seed),
        "gold_archived": lambda: reshuffled([p for p, _ in archive], cfg.sft.seed),
        "gold_searched_sample": lambda: reshuffled(sample, cfg.sft.seed),
        "gold_searched": lambda: reshuffled(searched, cfg.sft.seed),
        "gold_all": lambda: oracle_stream(cfg, task),
    }
    greedy = dataclasses.replace(cfg.eval, num_samples=0)

    def score(path: str) -> float:
        model, tok = build_policy(ModelConfig(path=path))
        return evaluate(model, tok, held, greedy).greedy_accuracy

    scores = {"init": score(init)}
    rl = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    scores["rl"] = score(str(rl))
    read: dict[str, int] = {}
    for row in rows:
        stream = Counted(streams[row]())
        points = oracle_run(init, cfg, a.budget_s, a.budget_s, out, stream=stream, name=row)
        scores[row], read[row] = score(str(points[-1][1])), len(stream.seen)
        print(f"{row}: {scores[row]:.3f} after {points[-1][0]:.0f} s, {read[row]} distinct problems read")
    p = scores["init"]
    result = {
        "init_accuracy": scores["init"],
        "rl_accuracy": scores["rl"],
        **{f"{row}_accuracy": scores[row] for row in rows},
        **{f"{row}_problems": read[row] for row in rows},
        "archived_problems": len(archive),
        "searched_problems": len(searched),
        "archived_verified": verified,
        "standard_error": math.sqrt(max(p * (1 - p), 1e-12) / len(held)),
        "budget_s": a.budget_s,
        "run": str(run),
        "held_out": len(held),
        "out": str(out),
    }
    lines = ["| row | greedy | problems read |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {read.get(k, '')} |" for k, v in scores.items()]
    print("\n".join(lines))
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
