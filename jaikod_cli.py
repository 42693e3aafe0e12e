"""The one CLI: ``jaikod …`` (typer + rich). Every command has --help, rich progress on long work,
and exits != 0 with one clear line on error."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=False)
err_console = Console(stderr=True)

app = typer.Typer(help="JaiKod Intelligence Layer: ranking + MLOps for a second-hand marketplace.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
world_app = typer.Typer(help="Synthetic marketplace world.", no_args_is_help=True)
batch_app = typer.Typer(help="Batch jobs (Dask): ETL, embeddings, training, materialisation.", no_args_is_help=True)
model_app = typer.Typer(help="Model registry: status, promote, rollback.", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(batch_app, name="batch")
app.add_typer(model_app, name="model")

LakeOpt = Annotated[Path | None, typer.Option("--lake", help="Parquet data lake (default $JAIKOD_HOME/lake)")]
SchedulerOpt = Annotated[str | None, typer.Option("--scheduler", help="dask.distributed scheduler address")]


def _apply_common(lake: Path | None = None, scheduler: str | None = None) -> None:
    from gpu_core.settings import reset_settings

    if lake is not None:
        os.environ["JAIKOD_LAKE"] = str(lake)
    if scheduler is not None:
        os.environ["JAIKOD_SCHEDULER"] = scheduler
    reset_settings()


def cli_errors(fn):
    """Turn expected failures into one clear line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        from gpu_core.errors import JaikodError

        try:
            return fn(*args, **kwargs)
        except JaikodError as exc:
            err_console.print(f"[bold red]error:[/] {exc.message}")
            raise typer.Exit(2) from None
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None

    return wrapper


class RichProgress:
    """``progress(stage, done, total)`` callback backed by a rich progress bar per stage."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=err_console, transient=False)
        self.tasks: dict[str, Any] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def print_table(title: str, rows: dict[str, Any] | list[dict[str, Any]]) -> None:
    table = Table(title=title)
    if isinstance(rows, dict):
        table.add_column("what")
        table.add_column("value", justify="right")
        for k, v in rows.items():
            table.add_row(str(k), f"{v:,.4g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))
    else:
        cols = list(rows[0]) if rows else []
        for c in cols:
            table.add_column(c)
        for r in rows:
            table.add_row(*(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    console.print(table)


# ------------------------------------------------------------------------------------------------
@world_app.command("build")
@cli_errors
def world_build(
    size: Annotated[str, typer.Option(help="tiny | demo | large")] = "demo",
    seed: Annotated[int, typer.Option(help="random seed (same seed, same world)")] = 0,
    out: Annotated[Path, typer.Option(help="output lake directory")] = Path("var/lake"),
    drift_category: Annotated[str | None, typer.Option(help="category that surges (drift injection)")] = None,
    drift_from_day: Annotated[int | None, typer.Option(help="day index the surge starts")] = None,
    images: Annotated[bool, typer.Option(help="draw product images")] = True,
) -> None:
    """Build the synthetic marketplace world as a Parquet lake partitioned by date."""
    from batch.world.generate import SIZES, build_world
    from gpu_core.errors import ConfigError

    if size not in SIZES:
        raise ConfigError(f"--size must be one of {', '.join(SIZES)}, got {size!r}", field="size")
    with RichProgress() as progress:
        summary = build_world(size, seed, out, drift_category=drift_category, drift_from_day=drift_from_day,
                              images=images, progress=progress)
    print_table(f"world {size} seed={seed} -> {out}", summary.as_rows() if hasattr(summary, "as_rows")
                else vars(summary))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
