"""Console output shared by the commands: progress bars and result tables (rich)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from arbor.actors.evaluate import EvalResult
from arbor.actors.search.scaling import ScalingPoint
from arbor.core.tree import SearchTree

console = Console()


def progress_bar() -> Progress:
    """A bar with step counter, timing and a free-text field for live metrics."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    )


def advance(bar: Progress, job, step: int, total: int, label: str, info: str) -> None:
    """One step of a long job: the live bar, plus a plain line every tenth of the way when the output is
    not a terminal (logs and CI see progress too, where rich shows only the final bar)."""
    bar.update(job, advance=1, info=info)
    if not console.is_terminal and step % max(1, total // 10) == 0:
        console.print(f"{label} step {step}/{total} {info}")


def results_table(title: str, results: dict[str, EvalResult]) -> Table:
    """One column per evaluated model (e.g. init vs SFT), one row per metric."""
    table = Table(title=title)
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    first = next(iter(results.values()))
    rows = [("problems", lambda r: str(r.num_problems)), ("greedy accuracy", lambda r: f"{r.greedy_accuracy:.1%}")]
    rows += [(f"pass@{k}", lambda r, k=k: f"{r.pass_at.get(k, float('nan')):.1%}") for k in first.pass_at]
    rows += [(f"maj@{k}", lambda r, k=k: f"{r.maj_at.get(k, float('nan')):.1%}") for k in first.maj_at]
    rows += [
        (f"greedy, level {lv}", lambda r, lv=lv: f"{r.level_accuracy.get(lv, float('nan')):.1%}")
        for lv in first.level_accuracy
    ]
    for label, fmt in rows:
        table.add_row(label, *(fmt(r) for r in results.values()))
    return table


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def value_table(report: dict) -> Table:
    """Calibration and ranking of the fitted value head, on the fitted and the held-out problems."""
    table = Table(title=f"value head: step prefixes vs outcome ({report['samples']} samples)")
    table.add_column("metric")
    for name in ("fit", "held_out"):
        table.add_column(name.replace("_", "-"), justify="right")
    rows = [
        ("prefixes", "d"),
        ("base_rate", ".3f"),
        ("mean_value", ".3f"),
        ("auc", ".3f"),
        ("final_auc", ".3f"),
        ("ece", ".4f"),
        ("brier", ".4f"),
    ]
    for key, spec in rows:
        table.add_row(key.replace("_", " "), *(_fmt(report[side][key], spec) for side in ("fit", "held_out")))
    return table


def plot_scaling(points: Sequence[ScalingPoint], path: Path, title: str) -> Path:
    """Held-out accuracy against generated tokens per problem, one line per search kind; written as PNG."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for kind in dict.fromkeys(p.kind for p in points):  # first-seen order
        mine = sorted((p for p in points if p.kind == kind), key=lambda p: p.generated_tokens)
        xs, ys = [p.generated_tokens for p in mine], [p.accuracy for p in mine]
        ax.plot(xs, ys, marker="o", label=kind)
        for p in mine:
            ax.annotate(str(p.budget), (p.generated_tokens, p.accuracy), textcoords="offset points", xytext=(3, 3))
    ax.set_ylim(0.0, max(0.1, 1.15 * max(p.accuracy for p in points)))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 100, not 10^2; no crowded minor labels
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("generated tokens per problem (log scale; labels: budget)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def render_tree(tree: SearchTree, max_nodes: int = 200) -> str:
    """A search tree as indented text: each step with visits, Q, MC value, outcome and policy version."""
    lines = [f"problem {tree.problem_uid} ({tree.kind}, {len(tree.nodes)} nodes, {tree.tokens_generated} tokens)"]
    lines += [f"  {line}" for line in tree.prompt.rstrip("\n").splitlines()]

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    stack = [(c, 1) for c in reversed(tree.root.children)]
    shown = 0
    while stack and shown < max_nodes:
        node_id, depth = stack.pop()
        n = tree.nodes[node_id]
        mark = " <- answer" if node_id == tree.answer_node else ""
        outcome = f" outcome={fmt(n.outcome)}" if n.terminal else ""
        lines.append(
            f"{'  ' * depth}{n.text.rstrip()!s:<24} N={n.visits} Q={fmt(n.q)} V={fmt(n.mc_value)} "
            f"v{n.policy_version}{outcome}{mark}"
        )
        shown += 1
        stack += [(c, depth + 1) for c in reversed(n.children)]
    if stack:
        lines.append(f"... {len(tree.nodes) - 1 - shown} more nodes")
    return "\n".join(lines)


def train_table(title: str, before: dict | None, after: dict, result: dict, init_label: str = "SFT init") -> Table:
    """Before/after table of ``arbor train``: the init (``init_label``: "SFT init" after a warm start, "init"
    for a given model) against the trained policy, greedy and with search."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column(init_label, justify="right")
    table.add_column("trained", justify="right")
    before = before or {}
    rows = [
        ("greedy accuracy", "greedy_accuracy", ".1%"),
        ("MCTS + value head accuracy", "search_accuracy", ".1%"),
        ("MCTS generated tokens / problem", "search_generated_tokens", ".0f"),
    ]
    for label, key, spec in rows:
        if key in after:
            table.add_row(label, _fmt(before.get(key), spec), _fmt(after.get(key), spec))
    segment = result.get("segment_samples", result["samples_trained"])
    trained = f"{segment} samples trained in {result['rl_seconds']:.0f} s"
    if segment != result["samples_trained"]:  # a resumed run: this segment's figures, then the run's
        trained += f" this segment, {result['samples_trained']} in {result.get('total_rl_seconds', 0):.0f} s in all"
    table.caption = (
        f"{result['steps']} learner steps, policy version {result['version']}, {trained}; "
        f"max trained lag {result['max_trained_lag']}, dropped {result.get('buffer_dropped', 0)}"
    )
    return table
