"""What each way of learning from one SFT init reaches in the same training seconds, and whether the search
finds more than sampling at the same tokens: one invocation, the same 2 cores, 1000 held-out problems.

    python bench/learning.py [--config configs/countdown_tiny.yaml] [--sft DIR] [--budget-s 600]
                             [--rows arbor,arbor_shortcut,trl,sft_oracle] [key=value ...]

The ``trl`` row needs TRL: ``pip install -e ".[bench]"``.

Rows (each trains from the same init for ``--budget-s`` seconds of training, setup excluded):

| row | what |
|---|---|
| ``init`` | the SFT init (``--sft DIR``, else ``arbor sft`` on the config first) |
| ``arbor`` | ``arbor train`` with the config's recipe (``train.init=model`` from the init) |
| ``arbor_shortcut`` | the same with ``train.journey.mode=shortcut``: each tree's best path instead of its journey |
| ``trl`` | TRL's ``GRPOTrainer`` as ``bench/vs_trl.py`` runs it, its response cap set to the search's |
| ``sft_oracle`` | continued SFT on the solver's gold traces of the problems RL searches (an oracle real tasks lack) |

Every row's snapshots are scored afterwards with the same greedy decoding on the same held-out problems,
none of which any side trained on (the init's SFT pool is checked against them); each final policy also gets
pass@1 of ``eval.num_samples`` samples (8 by default here). The search row compares the config's search
(from the init, verifier-scored as in training) with plain best-of-N at the same generated tokens per
problem: best-of-N is run at the two sample counts that bracket the search's tokens and interpolated.

It writes ``table.md``, ``curves.png`` (accuracy against training seconds, every row), ``<row>.jsonl``
(every held-out greedy response: uid, prompt, reference, response, correct) and ``result.json`` under
``RUN_ROOT/bench-learning-*/`` (``run.root``, ``runs`` by default), and prints as its last line JSON with
``init_accuracy``, ``arbor_accuracy``, ``arbor_shortcut_accuracy``, ``trl_accuracy``,
``sft_oracle_accuracy``, ``standard_error``, ``search_coverage``, ``best_of_n_coverage``,
``search_tokens_per_problem``, ``best_of_n_tokens_per_problem``, ``init_checkpoint``, ``arbor_checkpoint``,
``trl_checkpoint`` and ``init_responses``, ``arbor_responses``, ``trl_responses`` (a row not run is null).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from arbor.actors.evaluate import evaluate
from arbor.core.config import ModelConfig, behaviour_temperature, load_config
from arbor.core.errors import ConfigError
from arbor.core.model import build_policy, value_head_for
from arbor.core.tasks import build_task
from arbor.core.tasks.split import demonstration_pool, problems_to_skip, rollout_index
from arbor.launch.commands import run_sft
from arbor.learner.sft import train_sft

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headroom import search_row  # noqa: E402
from vs_trl import SnapshotClock, arbor_run, trl_run  # noqa: E402

CONFIG = "configs/countdown_tiny.yaml"
ROWS = ("arbor", "arbor_shortcut", "trl", "sft_oracle")
# 1000 held-out problems, pass@1 of 8 samples beside greedy, for every row alike (the init included)
COMMON = ["task.eval_size=1000", "eval.num_samples=8", "eval.ks=[1]"]


def check_init(init: str, cfg) -> None:
    """Refuse an init whose SFT pool holds held-out problems of this benchmark (read from its run's config)."""
    for parent in Path(init).resolve().parents[:3]:
        saved = parent / "config.yaml"
        if saved.is_file():
            sft_cfg = load_config(str(saved), [])
            if not sft_cfg.sft.num_problems:
                return
            pool = demonstration_pool(build_task(sft_cfg.task), sft_cfg.sft.num_problems, sft_cfg.sft.difficulty_mix)
            held = {p.key for p in build_task(cfg.task).eval_problems()}
            shared = sum(p.key in held for p in pool)
            if shared:
                raise ConfigError(
                    f"--sft {init}: its SFT pool ({saved}) holds {shared} of the {len(held)} held-out problems; "
                    f"train the init with task.eval_size={cfg.task.eval_size} (or let this benchmark run arbor sft)"
                )
            return
    print(f"warning: no config.yaml above {init}; cannot check its SFT pool against the held-out problems")


def oracle_stream(cfg, task):
    """The training problems RL's actors search, in the order they search them (every actor's shard in turn;
    held-out and SFT-pool keys are left for the reader to pass over)."""
    actors = cfg.resources.rollout_actors
    cursor = 0
    while True:
        for a in range(actors):
            yield task.train_problem(rollout_index(cfg.train.seed, cursor, actors, a))
        cursor += 1


def oracle_run(
    init: str, cfg, budget_s: float, every_s: float, out: Path, stream=None, name: str = "sft_oracle"
) -> list[tuple[float, Path]]:
    """Continued SFT (``learner.sft.train_sft``) on the gold traces of the problems RL's actors search, in the
    order they search them, for ``budget_s`` seconds; at the rate the SFT recipe ended with, no corruption.
    ``stream`` replaces those problems (their ``solution`` is what is trained on); snapshots go to ``out/name``."""
    sft = dataclasses.replace(
        cfg.sft, lr=cfg.sft.lr * cfg.sft.min_lr_ratio, warmup_steps=0, steps=10**7, corrupt_fraction=0.0
    )
    cfg = dataclasses.replace(cfg, sft=sft)
    model, tokenizer = build_policy(ModelConfig(path=init))
    task = build_task(cfg.task)
    skip = problems_to_skip(cfg, task)
    points: list[tuple[float, Path]] = []
    clock = SnapshotClock(budget_s, every_s, out / name)
    clock.start()

    stream = oracle_stream(cfg, task) if stream is None else stream
    train_sft(model, tokenizer, task, cfg, skip, stream=stream, on_step=lambda *_: clock.tick(model, tokenizer, points))
    return points


def final_scores(path: Path, held, eval_cfg, out: Path, name: str) -> dict:
    """Greedy accuracy with every response written to ``<name>.jsonl``, and pass@1 of the config's samples."""
    model, tok = build_policy(ModelConfig(path=str(path)))
    result = evaluate(model, tok, held, eval_cfg, num_shown=len(held))
    responses = out / f"{name}.jsonl"
    with responses.open("w") as f:
        for p, shown in zip(held, result.samples):
            row = {"uid": p.uid, "prompt": p.prompt, "reference": p.reference}
            f.write(json.dumps(row | {"response": shown["response"], "correct": bool(shown["correct"])}) + "\n")
    return {"greedy": result.greedy_accuracy, "pass@1": result.pass_at.get(1), "responses": str(responses)}


def search_against_sampling(init: str, config: str, overrides: list[str], held) -> dict:
    """The config's search and best-of-N at the same generated tokens per problem, on the held-out set.

    Best-of-N samples at the policy's own temperature (1) and, when the search samples at another, at that
    one too; the better of the two is the baseline, so a search temperature never weakens sampling's side."""
    common = [*overrides, f"model.path={init}"]
    cfg = load_config(config, common)
    model, tok = build_policy(cfg.model)
    head = value_head_for(model, init)
    search = search_row(model, tok, head, held, cfg.search)
    baselines = {
        t: best_of_n_at(search["tokens_per_problem"], model, tok, head, held, config, common, t)
        for t in sorted({1.0, behaviour_temperature(cfg.search)})
    }
    best = max(baselines.values(), key=lambda b: b["best_of_n_coverage"])
    return {"search": search, **best, "best_of_n_by_temperature": baselines}


def best_of_n_at(tokens: float, model, tok, head, held, config: str, common: list[str], temperature: float) -> dict:
    """Best-of-N's coverage at ``tokens`` generated tokens per problem, sampled at ``temperature``:
    interpolated between the two sample counts that bracket those tokens."""

    def best_of(n: int) -> dict:
        extra = ["search.kind=best_of_n", f"search.best_of_n.num_samples={n}", f"search.temperature={temperature}"]
        return search_row(model, tok, head, held, load_config(config, [*common, *extra]).search)

    eight = best_of(8)
    per_sample = eight["tokens_per_problem"] / 8
    n_low = max(1, math.floor(tokens / max(per_sample, 1e-9)))
    low, high = (eight if n_low == 8 else best_of(n_low)), best_of(n_low + 1)
    t0, t1 = low["tokens_per_problem"], high["tokens_per_problem"]
    share = min(max((tokens - t0) / max(t1 - t0, 1e-9), 0.0), 1.0)
    return {
        "temperature": temperature,
        "best_of_n": {n_low: low, n_low + 1: high},
        "best_of_n_coverage": low["any_correct"] + share * (high["any_correct"] - low["any_correct"]),
        "best_of_n_tokens_per_problem": t0 + share * (t1 - t0),
    }


def plot(curves: dict[str, list[tuple[float, float]]], path: Path, title: str, held: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, curve in curves.items():
        ax.plot([s for s, _ in curve], [acc for _, acc in curve], marker="o", label=name)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel(f"held-out greedy accuracy ({held} problems)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_rows(text: str, known: tuple[str, ...]) -> list[str]:
    """``--rows``: comma-separated names, each one of ``known``."""
    rows = [r for r in text.split(",") if r]
    unknown = sorted(set(rows) - set(known))
    if unknown:
        raise SystemExit(f"--rows: unknown rows {unknown}; expected some of {', '.join(known)}")
    return rows


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=CONFIG)
    ap.add_argument("--sft", help="SFT checkpoint directory (default: run arbor sft on the config first)")
    ap.add_argument("--budget-s", type=float, default=600.0, help="training seconds per row")
    ap.add_argument("--points", type=int, default=4, help="evaluation points per curve, the end included")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to train, of {', '.join(ROWS)}")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the config, for every row")
    a = ap.parse_args(argv)
    rows = parse_rows(a.rows, ROWS)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    overrides = [*COMMON, *a.overrides]
    cfg = load_config(a.config, overrides)
    out = Path(cfg.run.root) / f"bench-learning-{stamp}"
    out.mkdir(parents=True)
    torch.set_num_threads(cfg.threads or 2)
    t_start = time.time()
    init = a.sft or run_sft(load_config(a.config, [*overrides, f"run.name=bench-learning-{stamp}-sft"]))["checkpoint"]
    check_init(init, cfg)
    held = build_task(cfg.task).eval_problems()
    greedy_cfg = dataclasses.replace(cfg.eval, num_samples=0)
    every = a.budget_s / a.points
    arbor_overrides = [*overrides, "eval.num_samples=0"]  # its own before/after evaluation: greedy only

    points: dict[str, list[tuple[float, Path]]] = {}
    walls: dict[str, float] = {}
    extra: dict[str, dict] = {}
    for row in rows:
        t0 = time.time()
        if row == "trl":
            points[row] = trl_run(init, cfg, a.budget_s, every, out, cfg.search.max_response_tokens)
            torch.set_num_threads(cfg.threads or 2)  # TRL/accelerate may change it
        elif row == "sft_oracle":
            points[row] = oracle_run(init, cfg, a.budget_s, every, out)
        else:
            more = ["train.journey.mode=shortcut"] if row == "arbor_shortcut" else []
            name = f"bench-learning-{stamp}-{row}"
            points[row], result = arbor_run(init, a.config, [*arbor_overrides, *more], a.budget_s, every, stamp, name)
            extra[row] = {"steps": result["steps"], "samples_trained": result["samples_trained"]}
        walls[row] = time.time() - t0
        print(f"{row}: {len(points[row])} snapshots in {walls[row]:.0f} s")

    finals = {"init": final_scores(Path(init), held, cfg.eval, out, "init")}
    for row in rows:
        if points[row]:
            finals[row] = final_scores(points[row][-1][1], held, cfg.eval, out, row)
    curves = {"init": [(0.0, finals["init"]["greedy"])]}
    for row in rows:  # the last point is the final score; the earlier snapshots are scored greedy here
        curves[row] = list(curves["init"])
        for seconds, path in points[row][:-1]:
            model, tok = build_policy(ModelConfig(path=str(path)))
            curves[row].append((seconds, evaluate(model, tok, held, greedy_cfg).greedy_accuracy))
        curves[row] += [(points[row][-1][0], finals[row]["greedy"])] if points[row] else []
    compare = search_against_sampling(init, a.config, overrides, held)

    lines = ["| row | greedy | pass@1 | trained s | curve (s: greedy) |", "|---|---|---|---|---|"]
    for row, f in finals.items():
        curve = " ".join(f"{s:.0f}:{acc:.3f}" for s, acc in curves[row])
        trained = f"{points[row][-1][0]:.0f}" if row in points and points[row] else "0"
        lines.append(f"| {row} | {f['greedy']:.3f} | {f['pass@1'] or 0:.3f} | {trained} | {curve} |")
    s, b = compare["search"], compare["best_of_n_coverage"]
    lines.append(
        f"\nsearch ({cfg.search.kind}) coverage {s['any_correct']:.3f} at {s['tokens_per_problem']:.0f} tokens per "
        f"problem; best-of-N {b:.3f} at {compare['best_of_n_tokens_per_problem']:.0f} "
        f"(temperature {compare['temperature']:g}, the better of "
        + ", ".join(f"{t:g}: {v['best_of_n_coverage']:.3f}" for t, v in compare["best_of_n_by_temperature"].items())
        + ")"
    )
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)
    plot(curves, out / "curves.png", f"{cfg.task.name}: one SFT init, {cfg.threads or 2} cores", len(held))

    def acc(row: str) -> float | None:
        return finals[row]["greedy"] if row in finals else None

    def checkpoint(row: str) -> str | None:
        return str(points[row][-1][1]) if points.get(row) else None

    p = acc("init") or 0.0
    result = {
        "init_accuracy": acc("init"),
        "arbor_accuracy": acc("arbor"),
        "arbor_shortcut_accuracy": acc("arbor_shortcut"),
        "trl_accuracy": acc("trl"),
        "sft_oracle_accuracy": acc("sft_oracle"),
        "standard_error": math.sqrt(max(p * (1 - p), 1e-12) / len(held)),
        "search_coverage": s["any_correct"],
        "best_of_n_coverage": b,
        "search_tokens_per_problem": s["tokens_per_problem"],
        "best_of_n_tokens_per_problem": compare["best_of_n_tokens_per_problem"],
        "init_checkpoint": init,
        "arbor_checkpoint": checkpoint("arbor"),
        "trl_checkpoint": checkpoint("trl"),
        "init_responses": finals["init"]["responses"],
        "arbor_responses": finals.get("arbor", {}).get("responses"),
        "trl_responses": finals.get("trl", {}).get("responses"),
        "pass_at_1": {row: f["pass@1"] for row, f in finals.items()},
        "curves": curves,
        "search": compare,
        "rows": extra,
        "budget_s": a.budget_s,
        "row_wall_s": walls,
        "total_s": time.time() - t_start,
        "held_out": len(held),
        "config": a.config,
        "overrides": overrides,
        "out": str(out),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, default=str))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
