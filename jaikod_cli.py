"""The one CLI: ``jaikod …`` (typer + rich). Every command has --help, rich progress on long work,
and exits != 0 with one clear line on error."""

from __future__ import annotations

import contextlib
import functools
import json
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

def _parse_lake(value: str) -> Any:
    from gpu_core.lake import lake_path

    return lake_path(value)


# a folder or s3://bucket/prefix (a pathlib.Path or a gpu_core.lake.LakePath)
LakeOpt = Annotated[Any, typer.Option("--lake", parser=_parse_lake, metavar="DIR|S3_URL",
                                      help="Parquet data lake: a folder or s3://bucket/prefix "
                                           "(default $JAIKOD_HOME/lake)")]
SchedulerOpt = Annotated[str | None, typer.Option("--scheduler", help="dask.distributed scheduler address")]


def _apply_common(lake: Path | None = None, scheduler: str | None = None) -> None:
    """The common options become this process's settings (never through ``os.environ``), on top of the
    ones :func:`main` resolved (the state's home)."""
    from gpu_core.settings import configure, get_settings

    configure(get_settings(), lake=str(lake) if lake is not None else None, scheduler=scheduler)


@contextlib.contextmanager
def _cluster():
    """A Dask client of the configured scheduler (``--scheduler`` / JAIKOD_SCHEDULER), else ``None``: the
    job computes in this process, as before there was a cluster, without starting a local one."""
    from gpu_core.settings import get_settings

    if not get_settings().scheduler:
        yield None
        return
    from batch.cluster import dask_client

    with dask_client() as client:
        yield client


def default_home() -> Path | None:
    """Where the CLI's state lives when ``JAIKOD_HOME`` is not set: ``var/`` of the checkout this CLI runs
    from (found from this file, not from the working directory), so every command finds the same state
    from any directory. ``None`` (the settings' default) for an installed, non-editable copy."""
    import os

    if os.environ.get("JAIKOD_HOME"):
        return None
    root = Path(__file__).resolve().parent
    return root / "var" if (root / "pyproject.toml").is_file() and (root / "gpu_core").is_dir() else None


def cli_errors(fn):
    """Turn expected failures into one clear line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        from gpu_core.errors import JaikodError

        try:
            return fn(*args, **kwargs)
        except JaikodError as exc:
            err_console.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
            raise typer.Exit(2) from None
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
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
            text = (str(v) if isinstance(v, bool) else f"{v:,.4g}" if isinstance(v, float)
                    else f"{v:,}" if isinstance(v, int) else str(v))
            table.add_row(str(k), text)
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
    out: Annotated[Any, typer.Option(parser=_parse_lake, metavar="DIR|S3_URL",
                                     help="output lake: a folder or s3://bucket/prefix")] = "var/lake",
    drift_category: Annotated[str | None, typer.Option(help="category that surges (drift injection)")] = None,
    drift_from_day: Annotated[int | None, typer.Option(help="day index the surge starts")] = None,
    images: Annotated[bool, typer.Option(help="draw product images")] = True,
    start_date: Annotated[str, typer.Option(help="first day of events (YYYY-MM-DD)")] = "2026-10-01",
    days: Annotated[int, typer.Option(help="days of events")] = 30,
) -> None:
    """Build the synthetic marketplace world as a Parquet lake partitioned by date."""
    from batch.world.generate import SIZES, build_world
    from gpu_core.errors import ConfigError

    if size not in SIZES:
        raise ConfigError(f"--size must be one of {', '.join(SIZES)}, got {size!r}", field="size")
    with RichProgress() as progress:
        summary = build_world(size, seed, out, start_date=start_date, days=days, drift_category=drift_category,
                              drift_from_day=drift_from_day, images=images, progress=progress)
    print_table(f"world {size} seed={seed} -> {out}", summary.as_rows() if hasattr(summary, "as_rows")
                else vars(summary))


def _lake(lake: Path | None) -> Path:
    from gpu_core.settings import get_settings

    return lake if lake is not None else get_settings().lake_dir


AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="last day of data used (YYYY-MM-DD; default: last)")]


@batch_app.command("etl")
@cli_errors
def batch_etl(lake: LakeOpt = None, as_of: AsOfOpt = None, scheduler: SchedulerOpt = None) -> None:
    """Lake -> offline feature tables (point-in-time correct), through Dask."""
    from batch.cluster import dashboard, dask_client
    from batch.etl import check_lake, run_etl

    _apply_common(lake, scheduler)
    check_lake(_lake(lake), as_of)  # a bad lake fails with one line, before a cluster starts
    with dask_client() as client, RichProgress() as progress:
        err_console.print(f"Dask dashboard: {dashboard(client)}")
        summary = run_etl(_lake(lake), as_of, progress=progress, client=client)
    print_table("ETL", summary.as_rows())


@batch_app.command("embed")
@cli_errors
def batch_embed(lake: LakeOpt = None, as_of: AsOfOpt = None, scheduler: SchedulerOpt = None) -> None:
    """Product vectors from interactions (+ text for cold start); user vectors."""
    from batch.cluster import run_on_cluster
    from batch.embeddings import run_embeddings
    from batch.etl import etl_as_of
    from batch.lake import parse_date

    _apply_common(lake, scheduler)
    day = parse_date(as_of) or etl_as_of(_lake(lake))
    print_table("embeddings", run_on_cluster(run_embeddings, _lake(lake), day).as_rows())


@batch_app.command("train")
@cli_errors
def batch_train(lake: LakeOpt = None, as_of: AsOfOpt = None,
                monotone_text: Annotated[bool, typer.Option(
                    help="monotone constraints (+1) on the text-relevance features (issue 11's variant; "
                         "serve it without tiers with JAIKOD_SEARCH_TIER_GAP=0)")] = False,
                scheduler: SchedulerOpt = None) -> None:
    """Train pCTR/pCVR, evaluate NDCG@20 on the holdout, log to MLflow, register as staging if better."""
    from batch.lake import parse_date
    from batch.train import TrainConfig, run_train

    _apply_common(lake, scheduler)
    cfg = TrainConfig(monotone_text=monotone_text)
    with _cluster() as client:  # the two fits as tasks on the cluster; in process without a scheduler
        print_table("train", run_train(_lake(lake), parse_date(as_of), cfg, client=client).as_rows())


@batch_app.command("evaluate")
@cli_errors
def batch_evaluate(lake: LakeOpt = None, as_of: AsOfOpt = None,
                   alias: Annotated[str, typer.Option(help="registry alias to evaluate")] = "production",
                   scheduler: SchedulerOpt = None) -> None:
    """NDCG@20 of a registered model vs popularity on the holdout day."""
    from batch.cluster import run_on_cluster
    from batch.lake import parse_date
    from batch.train import run_evaluate

    _apply_common(lake, scheduler)
    print_table("evaluate", run_on_cluster(run_evaluate, _lake(lake), parse_date(as_of), alias))


@batch_app.command("materialize")
@cli_errors
def batch_materialize(lake: LakeOpt = None, as_of: AsOfOpt = None, scheduler: SchedulerOpt = None) -> None:
    """Online features into Redis (versioned snapshot, atomic switch) + retrieval indexes + lists."""
    from batch.cluster import run_on_cluster
    from batch.lake import parse_date
    from batch.materialize import run_materialize

    _apply_common(lake, scheduler)
    print_table("materialize", run_on_cluster(run_materialize, _lake(lake), parse_date(as_of)).as_rows())


@batch_app.command("review")
@cli_errors
def batch_review(lake: LakeOpt = None, scheduler: SchedulerOpt = None) -> None:
    """Post-hoc review of listings taken in without text analysis; unsafe ones go to moderation. Also
    exports moderation labels to the lake's labels table."""
    from batch.cluster import run_on_cluster
    from batch.review import run_review

    _apply_common(lake, scheduler)
    print_table("review", run_on_cluster(run_review, lake=_lake(lake)).as_rows())


@batch_app.command("nightly")
@cli_errors
def batch_nightly(lake: LakeOpt = None, as_of: AsOfOpt = None, scheduler: SchedulerOpt = None) -> None:
    """etl -> embeddings -> train -> evaluate -> register -> materialize."""
    from batch.etl import check_lake
    from batch.nightly import run_nightly

    _apply_common(lake, scheduler)
    check_lake(_lake(lake), as_of)
    with RichProgress() as progress:
        results = run_nightly(_lake(lake), as_of, scheduler=scheduler, progress=progress,
                              announce=err_console.print)
    for step, rows in results.items():
        print_table(step, rows)


@batch_app.command("ltr-check")
@cli_errors
def batch_ltr_check(
    data: Annotated[Path, typer.Option(help="folder with rank.train/rank.test (+ .query)")] = Path(
        __file__).resolve().parent.parent / "shared" / "data" / "ltr-yahoo-sample",
) -> None:
    """Our ranker configuration on a real learning-to-rank sample: NDCG@1/3/5/10 vs XGBoost defaults."""
    from batch.ltr_check import run_ltr_check

    result = run_ltr_check(data, show=True, console=console)
    if not result.get("meets_goal", False):
        err_console.print("[yellow]below the NDCG@10 goal[/]")


@batch_app.command("text-heads")
@cli_errors
def batch_text_heads(scheduler: SchedulerOpt = None) -> None:
    """Train the language-safety heads on USE embeddings (shipped labelled set), register in MLflow."""
    from batch.cluster import run_on_cluster
    from batch.text_train import train_heads

    _apply_common(scheduler=scheduler)
    res = run_on_cluster(train_heads, register=True)
    rows = [{"class": c, **{k: round(float(v), 3) for k, v in m.items() if isinstance(v, int | float)}}
            for c, m in res.metrics.get("held_out", {}).get("per_class", {}).items()]
    print_table(f"text heads {res.version} (held-out split)", rows or {"version": res.version})


@batch_app.command("vision-heads")
@cli_errors
def batch_vision_heads(
    lake: LakeOpt = None,
    n_images: Annotated[int, typer.Option(help="product images used (train + held out)")] = 600,
    scheduler: SchedulerOpt = None,
) -> None:
    """Train the category and condition heads on the frozen MobileNetV2 backbone, export ONNX, register."""
    from batch.cluster import run_on_cluster
    from batch.vision_heads import run

    _apply_common(lake, scheduler)
    path = _lake(lake)
    report = run_on_cluster(run, path if (path / "images").is_dir() else None, n_images=n_images)
    print_table("vision heads (held-out accuracy)", [{"head": k, **{m: v for m, v in r.items() if m != "onnx"}}
                                                   for k, r in report.items()])


@app.command("vision-purge")
@cli_errors
def vision_purge(older_than_days: Annotated[int, typer.Option(help="retention in days")] = 30) -> None:
    """Delete encrypted eKYC originals older than the retention period from cold storage."""
    from engines.vision.vault import purge_cold_storage

    console.print(f"purged {purge_cold_storage(older_than_days=older_than_days)} file(s)")


@batch_app.command("skew")
@cli_errors
def batch_skew(lake: LakeOpt = None,
               limit: Annotated[int, typer.Option(help="logged requests to compare at most")] = 200,
               scheduler: SchedulerOpt = None) -> None:
    """Training/serving skew on real traffic: served feature matrices (replay log) vs offline features."""
    from batch.cluster import run_on_cluster
    from batch.skew import skew_report

    _apply_common(lake, scheduler)
    report = run_on_cluster(skew_report, _lake(lake), limit=limit)
    console.print(f"{report.requests} request(s), {report.rows} candidate rows compared; skipped: "
                  f"{report.skipped or 'none'}")
    print_table("served vs offline features", report.as_rows())
    if report.skewed:
        err_console.print(f"[yellow]skew in: {', '.join(report.skewed)}[/]")
        raise typer.Exit(1)


@model_app.command("status")
@cli_errors
def model_status() -> None:
    """Registered ranker versions, their NDCG@20 and aliases."""
    from gpu_core.errors import RegistryError
    from gpu_core.registry import RANKER, Registry
    from gpu_core.settings import get_settings

    s = get_settings()
    if not s.mlflow_uri and not (s.home / "mlflow" / "mlflow.db").exists():
        raise RegistryError(f"no model registry under {s.home.resolve()} (set JAIKOD_HOME, or run "
                            "`jaikod batch nightly` first)")
    reg = Registry()
    aliases = reg.aliases(RANKER)
    by_version: dict[str, list[str]] = {}
    for a, v in aliases.items():
        by_version.setdefault(str(v), []).append(a)
    rows = [{"version": r.version, "aliases": ",".join(sorted(by_version.get(r.version, []))) or "-",
             "ndcg20": r.metrics.get("ndcg20", float("nan")),
             "ndcg20_popularity": r.metrics.get("ndcg20_popularity", float("nan"))} for r in reg.versions(RANKER)]
    if not rows:
        err_console.print("no ranker registered yet (run `jaikod batch nightly`)")
        raise typer.Exit(1)
    print_table(f"{RANKER} ({reg.tracking_uri})", rows)
    _print_canary(reg)


def _print_canary(reg: Any) -> None:
    """The canary: share, per-arm requests/errors/CTR/p99 (from Redis), the last decision."""
    import redis

    from gpu_core.redis_client import connect
    from gpu_core.settings import get_settings
    from online.canary import canary_status

    try:
        r = connect(get_settings().redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        st = canary_status(r, reg)
    except redis.RedisError as exc:
        err_console.print(f"canary: redis unreachable ({type(exc).__name__})")
        return
    if st["arms"]:
        print_table(f"canary ({st['share']:.0%} of feed users -> staging; decision after "
                    f"{st['min_requests']:,} staging requests)", st["arms"])
    last = st["last"]
    if last:
        console.print(f"canary: last check {last.get('action')} ({last.get('staging')} vs "
                      f"{last.get('production')}): {last.get('reason')}")
    for d in st["log"][:3]:
        console.print(f"  {d['action']}: {d['staging']} vs {d['production']} - {d['reason']}")


@model_app.command("promote")
@cli_errors
def model_promote(version: Annotated[str | None, typer.Argument(help="version (default: staging)")] = None) -> None:
    """Promote staging (or VERSION) to production; nothing to promote changes nothing."""
    from gpu_core.registry import Registry, promote

    new, old = promote(Registry(), version)
    console.print(f"production -> version {new}" + (f" (previous: {old})" if old else ""))


@model_app.command("canary-check")
@cli_errors
def model_canary_check(
    stdin: Annotated[bool, typer.Option("--stdin", help="stay up and run one check per line read from stdin, "
                                                         "each answered by its output and a line "
                                                         "'@@end <code>' (the scheduler's resident job)")] = False,
) -> None:
    """One canary decision now (the scheduler runs this every ``schedule_canary_s``)."""
    from gpu_core.ops import resident_loop
    from gpu_core.registry import Registry
    from gpu_core.settings import get_settings
    from online.canary import check_once

    registry = Registry()  # mlflow's import and its store are the cost of a check: paid once with --stdin

    def one() -> None:
        d = check_once(get_settings(), registry)
        console.print("canary: nothing to decide (no staging model)" if d is None
                      else f"canary: {d.action} - {d.reason}")

    if stdin:
        resident_loop(one, print_line=lambda line: print(line, flush=True), errors=_one_line_error)
    else:
        one()


def _one_line_error(exc: BaseException) -> str | None:
    """The one line :func:`cli_errors` would print for an expected failure (None: not an expected one)."""
    from gpu_core.errors import JaikodError

    if isinstance(exc, JaikodError):
        return f"error: {exc.message}"
    if isinstance(exc, (FileNotFoundError, PermissionError, NotADirectoryError)):
        return f"error: {exc}"
    return None


@model_app.command("rollback")
@cli_errors
def model_rollback() -> None:
    """Point production back at the previous production version."""
    from gpu_core.registry import Registry, rollback

    console.print(f"production -> version {rollback(Registry())}")


boost_app = typer.Typer(help="Auto-boost autopilot (Thompson-sampling bandit over trending slots).",
                        no_args_is_help=True)
app.add_typer(boost_app, name="boost")
search_app = typer.Typer(help="Listing search: evaluation on judged queries.", no_args_is_help=True)
app.add_typer(search_app, name="search")


@search_app.command("eval")
@cli_errors
def search_eval_cmd(
    lake: LakeOpt = None,
    size: Annotated[str, typer.Option(help="world size whose catalogue is judged when the lake has none")] = "demo",
    seed: Annotated[int, typer.Option(help="its seed (make run builds seed 7)")] = 7,
    out: Annotated[Path, typer.Option(help="folder for search.json + search.png")] = Path("bench/results"),
    opensearch_url: Annotated[str | None, typer.Option(
        help="also judge the OpenSearch backend on this node, beside the embedded index "
             "(writes search_backends.json + .png)")] = None,
) -> None:
    """Judged queries (176, seven groups) against the index before issue 11 and today's: P@20, NDCG@10,
    zero-result and false-fill rate per group, p50/p99 latency, cold vs warm first search. With
    --opensearch-url: the embedded and the OpenSearch keyword backends side by side instead."""
    from batch import search_eval as se

    _apply_common(lake)
    if opensearch_url:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as prog:
            task = prog.add_task("judged queries, both backends", total=None)
            res = se.compare_backends(opensearch_url, lake, size, seed,
                                      progress=lambda _s, d, t: prog.update(task, completed=d, total=t))
        print_table(f"keyword backends on {res['catalogue']} ({res['listings']} listings)", se.backend_rows(res))
        for b, v in res["latency_ms"].items():
            console.print(f"{b}: p50 {v['p50']:.2f} ms p99 {v['p99']:.2f} ms")
        same = res["same_top20_and_steps"]
        console.print(f"same top 20 and fallback steps: {same['queries']}/{res['queries']}")
        out.mkdir(parents=True, exist_ok=True)
        (out / "search_backends.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))
        se.plot_backends(res, out / "search_backends.png")
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as prog:
        task = prog.add_task("judged queries", total=None)
        res = se.evaluate(lake, size, seed, progress=lambda _s, d, t: prog.update(task, completed=d, total=t))
    print_table(f"search on {res['catalogue']} ({res['listings']} listings)", se.table_rows(res))
    lat = res["latency_ms"]
    console.print(f"latency in process: baseline p50 {lat['baseline']['p50']:.2f} ms p99 {lat['baseline']['p99']:.2f} ms;"
                  f" search p50 {lat['search']['p50']:.2f} ms p99 {lat['search']['p99']:.2f} ms")
    if "cold_start" in res:
        for mode, v in res["cold_start"].items():
            console.print(f"cold start ({mode}): first {v['first_ms']:.1f} ms vs a warm process's first-time "
                          f"queries {v['warm_first_time_ms']:.1f} ms (x{v['ratio']}; x{v['ratio_vs_repeat']} vs the "
                          f"query repeated, {v['warm_repeat_ms']:.1f} ms), load {v['load_s']:.2f} s")
    for goal, ok in res["goals"].items():
        console.print(f"{'[green]met[/]' if ok else '[red]missed[/]'}  {goal}")
    j, png = se.write_results(res, out)
    console.print(f"wrote {j} and {png}")


@boost_app.command("run")
@cli_errors
def boost_run(rounds_per_day: Annotated[int, typer.Option(help="rounds (runs) per day")] = 24,
              budget: Annotated[float | None, typer.Option(help="daily budget THB (default setting)")] = None,
              seed: Annotated[int | None, typer.Option(help="random seed")] = None) -> None:
    """One round: feedback of the last boosts, then boost the listings the bandit picks."""
    from batch.boost import run_boost

    _apply_common()
    out = run_boost(rounds_per_day=rounds_per_day, daily_budget=budget, seed=seed)
    print_table("boost run", out.as_rows())
    if out.listing_ids:
        console.print("boosted: " + ", ".join(f"{pid} ({bid:.2f} THB)" for pid, bid in
                                              zip(out.listing_ids, out.bids, strict=True)))


@boost_app.command("simulate")
@cli_errors
def boost_simulate(lake: LakeOpt = None, days: Annotated[int, typer.Option(help="simulated days")] = 7,
                   seed: Annotated[int, typer.Option(help="random seed")] = 0) -> None:
    """Clicks per budget of the bandit vs uniform vs random allocation on the synthetic world."""
    from batch.boost import simulate

    _apply_common(lake)
    res = simulate(_lake(lake), days=days, seed=seed)
    print_table("boost simulation", [{"policy": k, **res[k]} for k in ("bandit", "uniform", "random")])


@app.command("serve")
@cli_errors
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="bind address (default setting, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default setting, 8000)")] = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn worker processes")] = None,
) -> None:
    """Serve the ranking API (uvicorn): /v1/feed, /v1/search, /healthz, /readyz, /metrics, /docs."""
    from gpu_core.settings import configure, get_settings
    from online.app import serve

    s = configure(get_settings(), host=host, port=port, workers=workers)
    from engines.text.settings import get_text_settings

    if get_text_settings().train_missing_heads:  # never serve rules-only silently because a step was skipped
        from batch.text_train import ensure_heads

        ts = get_text_settings()
        trained = ensure_heads(ts.model_dir or s.artifacts_dir / "text")
        if trained is not None:
            console.print(f"trained text heads {trained.version} (they were missing or stale)")
    if not s.admin_token:
        import secrets

        token_file = s.home / "admin_token"
        s.home.mkdir(parents=True, exist_ok=True)
        if not token_file.exists():
            token_file.write_text(secrets.token_urlsafe(24))
            token_file.chmod(0o600)
        s = configure(s, admin_token=token_file.read_text().strip())
        err_console.print(f"admin token: see {token_file}")
    err_console.print(f"serving on http://{s.host}:{s.port} (docs at /docs, workers={s.workers})")
    serve(s)


stream_app = typer.Typer(help="Stream processor (and its dead-letter stream: `jaikod stream dead-letter ...`).")
app.add_typer(stream_app, name="stream")


@stream_app.callback(invoke_without_command=True)
@cli_errors
def stream_cmd(
    ctx: typer.Context,
    lake: LakeOpt = None,
    consumer: Annotated[str | None, typer.Option(help="consumer name in the group (default host-pid; "
                                                      "reuse it on restart)")] = None,
    max_idle_s: Annotated[float | None, typer.Option(help="exit after this long without events")] = None,
    engine: Annotated[str | None, typer.Option(help="ours | flink: the PyFlink job over Kafka (JAIKOD_KAFKA_BOOTSTRAP; "
                                                    "its venv comes from scripts/flink_venv.sh); default: "
                                                    "JAIKOD_STREAM_ENGINE (flink on JAIKOD_STACK=full)")] = None,
    parallelism: Annotated[int, typer.Option(help="Flink job parallelism (--engine flink)")] = 1,
    bounded: Annotated[bool, typer.Option(help="Flink: stop at the topic's end offsets at start")] = False,
) -> None:
    """Stream processor: event bus -> real-time features (< 1 s) + Parquet archive (consumer group)."""
    if ctx.invoked_subcommand is not None:
        return
    _apply_common(lake)
    from gpu_core.settings import get_settings

    engine = engine or get_settings().stream_engine
    if engine == "flink":
        raise typer.Exit(_stream_flink(consumer, parallelism, bounded))
    if engine != "ours":
        from gpu_core.errors import ConfigError

        raise ConfigError(f"--engine must be ours or flink, got {engine!r}", field="engine")
    from online.stream import run_stream

    out = run_stream(consumer, lake, max_idle_s,
                     on_start=lambda p: err_console.print(f"stream processor {p.consumer} consuming "
                                                          f"{p.s.event_stream} (group {p.s.event_group})"))
    print_table("stream", out)


def _stream_flink(consumer: str | None, parallelism: int, bounded: bool) -> int:
    """Run the Flink job (online/flink_job.py) in the Flink venv with this process's settings; its exit code."""
    import subprocess

    from gpu_core.errors import ConfigError
    from gpu_core.settings import get_settings
    from gpu_core.streams import event_topic
    from online.flink_job import ensure_flink_python, job_command, job_env

    s = get_settings()
    if not s.kafka_bootstrap:
        raise ConfigError("--engine flink reads the events topic from Kafka: set JAIKOD_KAFKA_BOOTSTRAP",
                          field="kafka_bootstrap")
    cmd = job_command(ensure_flink_python(), s.kafka_bootstrap, event_topic(s.event_stream), s.event_group, s.lake_dir,
                      bounded=bounded, parallelism=parallelism, consumer=consumer)
    err_console.print(f"flink job consuming {event_topic(s.event_stream)} on {s.kafka_bootstrap} (group {s.event_group})")
    return subprocess.run(cmd, env=job_env(JAIKOD_HOME=str(s.home), JAIKOD_REDIS_URL=s.redis_url)).returncode


dead_letter_app = typer.Typer(help="Poison events the stream processor set aside: list, replay, drop.",
                               no_args_is_help=True)
stream_app.add_typer(dead_letter_app, name="dead-letter")


def _dead_letters():
    from gpu_core.redis_client import connect
    from gpu_core.settings import get_settings
    from online.stream import DeadLetters

    s = get_settings()
    return DeadLetters(connect(s.redis_url, socket_timeout=10.0), s)


@dead_letter_app.command("list")
@cli_errors
def dead_letter_list(count: Annotated[int, typer.Option(min=1, max=100_000)] = 100) -> None:
    """Dead-lettered events, oldest first, one JSON object a line: id, bus position (source_id), reason,
    time, payload size (never the payload itself)."""
    import orjson

    rows = _dead_letters().list(count)
    for row in rows:
        typer.echo(orjson.dumps(row).decode())
    err_console.print(f"{len(rows)} dead-lettered event(s) listed")


@dead_letter_app.command("replay")
@cli_errors
def dead_letter_replay(ids: Annotated[list[str] | None, typer.Argument(help="entry ids (default: all)")] = None,
                       ) -> None:
    """Re-send dead-lettered events to the event bus (still-poison ones come back). Their payloads rest
    sealed under the deployment's PII key; one that does not open is left in place (exit code 1)."""
    done = _dead_letters().replay(ids)
    err_console.print(f"{done.resent} event(s) re-sent to the event bus")
    if done.unopened:
        err_console.print(f"[bold red]error:[/] {len(done.unopened)} dead-lettered event(s) could not be opened "
                          f"(damaged, or sealed under another PII key), left in place: "
                          f"{' '.join(done.unopened[:20])}", soft_wrap=True)
        raise typer.Exit(1)


@dead_letter_app.command("drop")
@cli_errors
def dead_letter_drop(ids: Annotated[list[str] | None, typer.Argument(help="entry ids (default: all)")] = None,
                     ) -> None:
    """Delete dead-lettered events."""
    err_console.print(f"{_dead_letters().drop(ids)} event(s) dropped")


@batch_app.command("continuous")
@cli_errors
def batch_continuous(
    lake: LakeOpt = None,
    force: Annotated[bool, typer.Option(help="train even if the trigger does not fire")] = False,
    dry_run: Annotated[bool, typer.Option(help="only report the trigger decision")] = False,
    scheduler: SchedulerOpt = None,
) -> None:
    """Continuous training: retrain on 100k new interactions or PSI > 0.2 (-> staging if better)."""
    from batch.continuous import run_continuous

    _apply_common(lake, scheduler)
    with _cluster() as client:  # ETL and fits on the cluster; in process without a scheduler
        print_table("continuous training", run_continuous(_lake(lake) if lake else None, force=force,
                                                          dry_run=dry_run, client=client).as_rows())


@app.command("replay")
@cli_errors
def replay_cmd(request_id: Annotated[str, typer.Argument(help="request id of a logged response")]) -> None:
    """Re-score a logged request: the same ranking, or exactly which input changed since."""
    from gpu_core.device import backend
    from gpu_core.registry import Registry
    from gpu_core.settings import get_settings
    from online.replay import replay_request
    from online.state import ServiceState

    state = ServiceState(get_settings(), backend(), Registry())
    out = replay_request(state, request_id)
    verdict = "[green]same ranking[/]" if out["same_ranking"] else "[red]ranking differs[/]"
    console.print(f"{request_id}: {verdict}")
    rows = {k: v for k, v in out.items() if k not in ("served", "rescored", "changed_features")}
    rows["changed features"] = ", ".join(f"{k} ({n} rows)" for k, n in out["changed_features"].items()) or "none"
    print_table("replay", rows)


stack_app = typer.Typer(help="The engines of JAIKOD_STACK=full (Kafka, OpenSearch, Milvus): wait for them, publish the "
                             "current snapshot into them.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
EngineOpt = Annotated[list[str] | None, typer.Option("--for", help="only these engines (kafka, opensearch, milvus)")]


def _wait_stack(only: list[str] | None, timeout_s: float):
    from deploy.stack import needed, wait
    from gpu_core.errors import ConfigError
    from gpu_core.settings import get_settings

    s = get_settings()
    engines = needed(s)
    if only:
        unknown = sorted(set(only) - {"kafka", "opensearch", "milvus"})
        if unknown:
            raise ConfigError(f"--for: unknown engine(s) {', '.join(unknown)}", field="for")
        engines = [e for e in engines if e.name in only]
    if not engines:
        err_console.print(f"stack {s.stack}: no engine to wait for (every backend is embedded)")
        return s, {}
    return s, wait(engines, timeout_s, on_ready=lambda e, t: err_console.print(f"{e.name} answers at {e.address} "
                                                                                 f"({t:.1f} s)"))


@stack_app.command("wait")
@cli_errors
def stack_wait(only: EngineOpt = None,
               timeout: Annotated[float, typer.Option(help="seconds before giving up")] = 240.0) -> None:
    """Block until the engines the settings use answer (the processes of `make run STACK=full` start with it)."""
    _wait_stack(only, timeout)


@stack_app.command("prepare")
@cli_errors
def stack_prepare(lake: LakeOpt = None,
                  timeout: Annotated[float, typer.Option(help="seconds to wait for the engines")] = 240.0) -> None:
    """Wait for the engines, then make sure the current snapshot is served from them: its OpenSearch index and
    Milvus collection exist, else materialise again on this stack (a world built on the embedded stack, or
    engines whose data was wiped). Idempotent: a second run changes nothing."""
    _apply_common(lake)
    s, _ = _wait_stack(None, timeout)
    missing = _unpublished(s)
    if not missing:
        err_console.print("the current snapshot is served by this stack's engines")
        return
    from batch.materialize import run_materialize

    err_console.print(f"materialising for this stack ({'; '.join(missing)})")
    print_table("materialize", run_materialize(_lake(lake), None).as_rows())


def _unpublished(s) -> list[str]:
    """Why the current snapshot is not served by the settings' engines ([] when it is)."""
    current = s.index_store / "CURRENT"
    if not current.exists():
        return ["no snapshot yet"]
    version = current.read_text().strip()
    out = []
    if s.keyword_backend == "opensearch":
        import httpx

        from engines.search.opensearch import index_name

        if httpx.head(f"{s.opensearch_url.rstrip('/')}/{index_name(version)}", timeout=10).status_code != 200:
            out.append(f"no OpenSearch index {index_name(version)}")
    if s.vector_backend == "milvus":
        from engines.vector_milvus import client_for, collection_name

        client = client_for(s.milvus_uri, 10.0)
        try:
            if not client.has_collection(collection_name(version)):
                out.append(f"no Milvus collection {collection_name(version)}")
        finally:
            client.close()
    return out


@app.command("scheduler")
@cli_errors
def scheduler_cmd(
    run_now: Annotated[list[str] | None, typer.Option("--run-now", help="job(s) to run once at start "
                                                                        "(e.g. continuous)")] = None,
) -> None:
    """The periodic jobs of a deployment (APScheduler): nightly, continuous training, canary, boost,
    review backlog, retention purge; each run recorded for /readyz and /v1/admin/status."""
    from deploy.scheduler import Scheduler, job_specs
    from gpu_core.errors import ConfigError
    from gpu_core.settings import get_settings

    names = {j.name for j in job_specs(get_settings())}
    unknown = sorted(set(run_now or ()) - names)
    if unknown:
        raise ConfigError(f"--run-now: unknown job(s) {', '.join(unknown)}; jobs: {', '.join(sorted(names))}",
                          field="run_now")
    Scheduler(run_now=run_now or ()).run()


@app.command("simulate")
@cli_errors
def simulate_cmd(
    users: Annotated[int, typer.Option(help="simulated users (drawn from the world by activity)")] = 200,
    minutes: Annotated[float, typer.Option(help="how long to play")] = 10.0,
    url: Annotated[str | None, typer.Option(help="API base URL (default http://<host>:<port>)")] = None,
    rps: Annotated[float, typer.Option(help="feed/search requests per second, all users together")] = 10.0,
    search_share: Annotated[float, typer.Option(help="share of requests that are searches")] = 0.2,
    drift_category: Annotated[str | None, typer.Option(help="category whose appeal surges (drift)")] = None,
    drift_after_minutes: Annotated[float, typer.Option(help="when the surge starts")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    lake: LakeOpt = None,
) -> None:
    """Traffic driver: the world's hidden preference model plays users against the running API (feed and
    search, then impressions, clicks, carts and orders echoing request_id and model_version)."""
    from batch.simulate import SimConfig, run_simulation
    from gpu_core.settings import get_settings

    _apply_common(lake)
    s = get_settings()
    cfg = SimConfig(users=users, minutes=minutes, url=url or f"http://{s.host}:{s.port}", rps=rps,
                    search_share=search_share, drift_category=drift_category,
                    drift_after_s=drift_after_minutes * 60.0, seed=seed)
    report = run_simulation(_lake(lake), cfg, announce=err_console.print)
    print_table("simulation", report.as_rows())
    if report.by_version:
        print_table("CTR per model version (this run)", report.by_version)


def main() -> None:
    from gpu_core.settings import configure

    home = default_home()
    if home is not None:
        configure(home=home)
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
