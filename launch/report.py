"""Console output shared by the commands: progress bars and result tables (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from actors.evaluate import EvalResult

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
