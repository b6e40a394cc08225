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
| ``gold_searched`` | gold traces of every problem whose tree the run's buffer took (its tree ledger) |
| ``gold_all`` | gold traces of the problems RL's actors search, in their order (the ``sft_oracle`` row) |

Every row, the init and the run's own final checkpoint are scored greedy on the run's held-out problems;
prints a table and, as its last line, JSON (``init_accuracy``, ``rl_accuracy``, ``<row>_accuracy``,
``<row>_reads`` and ``<row>_contents`` (problems the row trained on, and their distinct contents),
``archived_problems``, ``archived_relabelled``, ``archived_verified``, ``searched_problems``,
``standard_error``), also written to
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
from arbor.actors.ledger import TreeLedger
from arbor.core.config import ModelConfig, load_config
from arbor.core.errors import ConfigError
from arbor.core.model import build_policy
from arbor.core.samples import StepSample
from arbor.core.tasks import build_task
from arbor.core.tasks.split import problems_to_skip, rollout_index
from arbor.launch.checkpoints import REPLAY_FILE, latest_name
from arbor.reward import verify

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning import oracle_run, oracle_stream, parse_rows  # noqa: E402

ROWS = ("self_archived", "gold_archived", "gold_searched_sample", "gold_searched", "gold_all")


def latest_replay(run: Path) -> tuple[Path, dict]:
    """``run``'s latest checkpoint's replay snapshot: (its path, its contents)."""
    name = latest_name(run)
    if name is None:
        raise ConfigError(f"{run}: no checkpoints/latest; run arbor train with a final checkpoint first")
    replay = run / "checkpoints" / name / REPLAY_FILE
    return replay, json.loads(replay.read_text())


def archived_responses(replay: Path, snapshot: dict, task, tokenizer) -> tuple[list[tuple[object, str]], int]:
    """(training problem, archived response text) for every archived problem of a replay ``snapshot`` (read
    from ``replay``, by ``latest_replay``), and how many archived problems were passed over (relabelled ones,
    ``train.hindsight``: no training index, so no gold trace to compare with). The response is the archived
    path's tokens after the prompt, its eos dropped; an archive whose path does not chain from its problem's
    prompt is refused, not misread."""
    solutions = snapshot.get("extra", {}).get("solutions")
    if not solutions:
        raise ConfigError(f"{replay}: no self-imitation archive (the run needs buffer.solution_replay > 0)")
    out, relabelled = [], 0
    for raw in solutions:
        steps = [StepSample.from_json(r) for r in raw]
        uid = steps[0].problem_uid
        prefix, _, index = uid.rpartition("/")
        if prefix != f"{task.name}/train":
            relabelled += 1
            continue
        problem = task.train_problem(int(index))
        prompt_ids = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
        ids = list(steps[0].state_tokens)
        for step in steps:
            if step.state_tokens != ids:
                raise ValueError(f"{replay}: archived steps of {uid} do not chain (a state is not the path so far)")
            ids += step.action_tokens
        if ids[: len(prompt_ids)] != prompt_ids or not steps[-1].terminal:
            raise ValueError(
                f"{replay}: archived response of {uid} does not start with its problem's prompt and end its response"
            )
        body = ids[len(prompt_ids) :]
        if body and body[-1] == tokenizer.eos_token_id:
            body = body[:-1]
        out.append((problem, tokenizer.decode(body)))
    return out, relabelled


def reshuffled(problems: list, seed: int):
    rng = random.Random(seed)
    while True:
        yield from rng.sample(problems, len(problems))


def searched_problems(replay: Path, snapshot: dict, cfg, task) -> list:
    """The problems whose trees the run's buffer took (the replay ``snapshot``'s tree ledger: actor and shard
    cursor), in cursor order, actor by actor."""
    ledger = TreeLedger.from_json(snapshot.get("extra", {}).get("trees", {}))
    if not ledger.inserted:
        raise ConfigError(f"{replay}: its tree ledger holds no inserted tree")
    out, actors = [], cfg.resources.rollout_actors
    for actor, cursors in sorted(ledger.inserted.items()):
        index = int(actor.rpartition("-")[2])
        out += [task.train_problem(rollout_index(cfg.train.seed, c, actors, index)) for c in sorted(cursors)]
    return out


class Counted:
    """A problem stream that counts what SFT trains on from it: problems not in ``skip`` with a solution
    (``learner.sft.sft_batches`` passes over the rest), each read and each distinct content."""

    def __init__(self, stream, skip: set[str]):
        self.stream, self.skip = stream, skip
        self.trained, self.contents = 0, set()

    def __iter__(self):
        return self

    def __next__(self):
        problem = next(self.stream)
        if problem.key not in self.skip and problem.solution is not None:
            self.trained += 1
            self.contents.add(problem.key)
        return problem


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="an arbor train run directory (its archive and config)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="continued-SFT seconds per row")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to train, of {', '.join(ROWS)}")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the run's config, for every row")
    a = ap.parse_args(argv)
    rows = parse_rows(a.rows, ROWS)
    run = Path(a.run)
    cfg = load_config(str(run / "config.yaml"), a.overrides)
    torch.set_num_threads(cfg.threads or 2)
    init = cfg.model.path
    _, tokenizer = build_policy(ModelConfig(path=init))
    task = build_task(cfg.task, tokenizer)  # the policy's chat template, as the run's actors had it
    held = task.eval_problems()
    replay, snapshot = latest_replay(run)
    archive, relabelled = archived_responses(replay, snapshot, task, tokenizer)
    verified = sum(verify(p.task, text, p.reference) for p, text in archive)
    print(f"{run}: {len(archive)} archived problems ({relabelled} relabelled left out), {verified} verify")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(cfg.run.root) / f"bench-archive-sft-{stamp}"
    out.mkdir(parents=True)
    skip = problems_to_skip(cfg, task)
    searched = searched_problems(replay, snapshot, cfg, task)
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
    scores["rl"] = score(str(replay.parent))
    read: dict[str, tuple[int, int]] = {}  # row -> (problems trained on, distinct contents)
    for row in rows:
        stream = Counted(streams[row](), skip)
        points = oracle_run(init, cfg, a.budget_s, a.budget_s, out, stream=stream, name=row)
        scores[row], read[row] = score(str(points[-1][1])), (stream.trained, len(stream.contents))
        print(
            f"{row}: {scores[row]:.3f} after {points[-1][0]:.0f} s; trained on {read[row][0]} problems, "
            f"{read[row][1]} distinct contents"
        )
    p = scores["init"]
    result = {
        "init_accuracy": scores["init"],
        "rl_accuracy": scores["rl"],
        **{f"{row}_accuracy": scores[row] for row in rows},
        **{f"{row}_reads": read[row][0] for row in rows},
        **{f"{row}_contents": read[row][1] for row in rows},
        "archived_problems": len(archive),
        "archived_relabelled": relabelled,
        "searched_problems": len(searched),
        "archived_verified": verified,
        "standard_error": math.sqrt(max(p * (1 - p), 1e-12) / len(held)),
        "budget_s": a.budget_s,
        "run": str(run),
        "held_out": len(held),
        "out": str(out),
    }
    lines = ["| row | greedy | problems trained on | distinct contents |", "|---|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {read.get(k, ('', ''))[0]} | {read.get(k, ('', ''))[1]} |" for k, v in scores.items()]
    print("\n".join(lines))
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
