"""``arbor prm CONFIG``: train a process reward model from search trees (explicit, or PRIME's implicit one).

1. Trees: read from ``prm.trees`` (JSONL, one ``SearchTree`` JSON per line, e.g. the ``trees.jsonl`` an
   earlier ``arbor prm`` wrote), or searched now: the policy (``model.path``) runs ``search.kind`` on
   ``prm.problems`` training problems with verifier-scored leaves, and the trees are saved to the run.
2. Labels (``reward.prm_labels``): Math-Shepherd soft or hard labels for every node with enough scored
   completions below it, and sibling preference pairs. Whole problems are held out (``prm.holdout_fraction``).
3. Fit: a head on the frozen trunk (the policy's, or ``prm.base``) reading each state's last token, by
   regression on the labels or Bradley-Terry on the pairs (``prm.loss``).
   ``prm.kind=implicit`` instead trains a copy of the policy on the trees' verified responses with PRIME's
   loss (``reward.implicit_prm``), the policy as its reference; the labels only score the report.
4. Report on the held-out trees (step AUC against the hard label, Brier score against the soft label,
   pair accuracy) and save ``checkpoints/prm``: trunk, tokenizer and head, loadable by
   ``reward.prm_checkpoint.load_prm`` (``prm.path=...`` for PRM-guided search and dense rewards).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.table import Table

from arbor.actors.search import HFStepBackend, run_searches, training_scorers
from arbor.core.config import ArborConfig, ValueConfig
from arbor.core.errors import ConfigError, DataError
from arbor.core.model import (
    load_pretrained,
    save_checkpoint,
    value_head_for,
)
from arbor.core.tasks import step_separator
from arbor.core.tasks.split import PRM_SEEDS, distinct_problems, problems_to_skip, stretch_start
from arbor.core.tree import SearchTree, load_trees, save_trees
from arbor.launch.commands import prepare
from arbor.launch.report import advance, console, progress_bar
from arbor.learner.prm_fit import LabelledTrees, fit_pairwise_head, label_trees, prm_report, split_trees, tree_scores
from arbor.learner.value_fit import fit_value_head, prefix_features
from arbor.reward.implicit_prm import ImplicitPRM, ImplicitPRMTrainer, verified_responses

log = logging.getLogger("arbor.prm")


def _table(report: dict) -> Table:
    how = "implicit (PRIME)" if report["kind"] == "implicit" else f"{report['label']} labels, {report['loss']} loss"
    table = Table(title=f"PRM: {report['trees']} trees, {how}")
    table.add_column("metric")
    table.add_column("fit", justify="right")
    table.add_column("held-out", justify="right")
    for key, spec in [
        ("steps", "d"),
        ("pairs", "d"),
        ("hard_rate", ".3f"),
        ("soft_mean", ".3f"),
        ("multi_completion_share", ".3f"),
        ("mean_score", ".3f"),
        ("step_auc", ".3f"),
        ("soft_brier", ".4f"),
        ("pair_accuracy", ".3f"),
    ]:
        cells = [report[side][key] for side in ("fit", "held_out")]
        table.add_row(key.replace("_", " "), *("n/a" if c is None else format(c, spec) for c in cells))
    return table


def search_label_trees(cfg: ArborConfig, task, skip_keys: set[str], model, tokenizer) -> list[SearchTree]:
    """``prm.problems`` training problems searched by the policy with ``search.kind``, leaves verified; none of
    ``skip_keys`` (the held-out set and the SFT demonstrations, as rollouts skip them)."""
    problems = distinct_problems(task, cfg.prm.problems, stretch_start(PRM_SEEDS, cfg.prm.seed), None, skip_keys)
    backend = HFStepBackend.configured(
        model,
        tokenizer,
        value_head_for(model, cfg.model.path),  # without a fitted head, every leaf starts at 0.5
        cfg,
        seed=cfg.prm.seed,
    )
    search = dataclasses.replace(cfg.search, terminal_value="verifier", seed=cfg.prm.seed)
    trees: list[SearchTree] = []
    with progress_bar() as bar:
        job = bar.add_task("search", total=len(problems), info="")
        chunk = max(1, search.trees_in_flight * 2)
        for start in range(0, len(problems), chunk):
            trees += run_searches(backend, problems[start : start + chunk], search, training_scorers)
            leaves = [n.outcome for t in trees for n in t.terminals() if n.outcome is not None]
            bar.update(job, advance=min(chunk, len(problems) - start), info=f"{sum(leaves) / max(len(leaves), 1):.1%}")
    return trees


def fit_explicit(cfg: ArborConfig, trunk, tokenizer, fit: LabelledTrees, held: LabelledTrees, on_step):
    """A head on the frozen trunk (regression or pairwise); returns it and its scores of the fit and held rows."""
    p = cfg.prm
    if p.loss == "pairwise" and not len(fit.pairs):
        raise DataError("prm.loss=pairwise: no sibling preference pairs (siblings with different outcomes)")
    with console.status("reading the frozen trunk's hidden states"):
        pad = tokenizer.pad_token_id or 0
        fit_x = prefix_features(trunk, fit.seqs, p.forward_batch_size, pad)
        held_x = prefix_features(trunk, held.seqs, p.forward_batch_size, pad)
    optim = ValueConfig(steps=p.steps, batch_size=p.batch_size, lr=p.lr, weight_decay=p.weight_decay, seed=p.seed)
    with console.status(f"fitting the PRM head ({p.loss}, {len(fit.steps)} steps, {len(fit.pairs)} pairs)"):
        if p.loss == "pairwise":
            head = fit_pairwise_head(fit_x, fit.pairs, optim, on_step)
        else:
            head = fit_value_head(fit_x, optim, on_step)
    with torch.no_grad():
        return head, head(fit_x.hidden).tolist(), head(held_x.hidden).tolist()


def fit_implicit(cfg: ArborConfig, policy, tokenizer, trees: Sequence[SearchTree], on_step) -> ImplicitPRM:
    """PRIME's implicit PRM: a copy of the policy trained on the trees' verified responses against the policy."""
    p = cfg.prm
    chains = verified_responses(trees, tokenizer)
    if not chains:
        raise DataError("prm.kind=implicit: the trees hold no verified response")
    prm = ImplicitPRM(copy.deepcopy(policy), policy, tokenizer, p.implicit.beta, step_sep=step_separator(cfg.task))
    trainer = ImplicitPRMTrainer(prm, p.implicit.lr, p.weight_decay)
    gen = torch.Generator().manual_seed(p.seed)
    with progress_bar() as bar:
        job = bar.add_task("implicit PRM", total=p.steps, info="")
        for step in range(1, p.steps + 1):
            idx = torch.randint(0, len(chains), (min(p.batch_size, len(chains)),), generator=gen).tolist()
            loss = trainer.update([chains[i] for i in idx])
            advance(bar, job, step, p.steps, "implicit PRM", f"loss {loss:.4f}")
            on_step(step, {"prm/loss": loss})
    return prm


def run_prm(cfg: ArborConfig) -> dict:
    """Train a PRM on labels from search trees; report on held-out trees; save ``checkpoints/prm``."""
    p = cfg.prm
    if p.kind == "implicit" and not cfg.model.path:
        raise ConfigError("prm.kind=implicit needs config key 'model.path': the policy is its reference model")
    task, held_out, model, tokenizer, run_dir, logger = prepare(cfg, "prm")
    console.print(f"[bold]arbor prm[/] kind={p.kind} policy={cfg.model.path or 'untrained default'} run={run_dir}")
    try:
        t0 = time.time()
        if p.trees:
            trees = load_trees(p.trees)
        else:
            trees = search_label_trees(cfg, task, problems_to_skip(cfg, task), model, tokenizer)
            save_trees(run_dir / "trees.jsonl", trees)
        search_s = time.time() - t0
        trunk, trunk_tokenizer = load_pretrained(p.base) if p.base else (model, tokenizer)
        fit_trees, held_trees = split_trees(trees, p.holdout_fraction, p.seed)
        fit = label_trees(fit_trees, trunk_tokenizer, p.label, p.min_completions)
        held = label_trees(held_trees, trunk_tokenizer, p.label, p.min_completions)
        if not fit.seqs:
            raise DataError("no labelled steps: no tree has a scored completion (prm.min_completions)")

        def on_step(step: int, metrics: dict[str, float]) -> None:
            if step % 10 == 0 or step == p.steps:
                logger.log({k.replace("value/", "prm/"): v for k, v in metrics.items()}, step=step)

        meta = {"command": "prm", "kind": p.kind, "policy": cfg.model.path, "label": p.label, "loss": p.loss}
        if p.kind == "implicit":
            prm = fit_implicit(cfg, model, tokenizer, fit_trees, on_step)
            fit_scores, held_scores = tree_scores(prm, fit_trees, fit), tree_scores(prm, held_trees, held)
            trunk, head = prm.model, None
            meta |= {"beta": p.implicit.beta, "reference": str(Path(cfg.model.path).resolve())}  # type: ignore[arg-type]
        else:
            head, fit_scores, held_scores = fit_explicit(cfg, trunk, trunk_tokenizer, fit, held, on_step)
            meta |= {"base": p.base}
        report = {
            "trees": len(trees),
            "kind": p.kind,
            "label": p.label,
            "loss": p.loss,
            "search_seconds": search_s,
            "fit": prm_report(fit_scores, fit),
            "held_out": prm_report(held_scores, held),
        }
        (run_dir / "prm_report.json").write_text(json.dumps(report, indent=2))
        ckpt = save_checkpoint(run_dir / "checkpoints" / "prm", trunk, trunk_tokenizer, head, meta | report)
        report["checkpoint"] = str(ckpt)
        summary = {"checkpoint": str(ckpt)} | {
            f"prm_held_out/{k}": v for k, v in report["held_out"].items() if isinstance(v, (int, float))
        }
        logger.log({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))}, step=p.steps)
        logger.summary(summary)
    finally:
        logger.close()
    console.print(_table(report))
    console.print(f"checkpoint: {ckpt}\nrun directory: {run_dir}")
    return report
