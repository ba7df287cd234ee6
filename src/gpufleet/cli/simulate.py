"""`gpufleet simulate`: capacity planning, running the allocation protocol on a workload trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpufleet.scheduler.allocator import DEFAULT_MAX_CANDIDATES, DEFAULT_SCAN_LIMIT
from gpufleet.scheduler.policies import POLICIES
from gpufleet.simulation import PolicyBounds, TraceError, load_hosts, load_jobs, parse_seeds, report, run
from gpufleet.simulation.protocol import SeedResult


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to ``app``."""
    app.command("simulate")(simulate)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def simulate(
    nodes: Annotated[Path, typer.Option("--nodes", help="Hosts: an openb node CSV or a YAML file with 'hosts:'.")],
    pods: Annotated[Path, typer.Option("--pods", help="Jobs: an openb pod CSV or a YAML file with 'jobs:'.")],
    inflation: Annotated[
        float, typer.Option("--inflation", help="Stop arrivals at this multiple of GPU capacity.")
    ] = 1.3,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds: a range (42-51), a list (1,3,5-7).")] = "42-51",
    policy: Annotated[str, typer.Option("--policy", help=f"One of: {', '.join(POLICIES)}.")] = "default",
    max_candidates: Annotated[
        int,
        typer.Option("--max-candidates", min=0, help="Hosts scored per decision (0: all). Production's default."),
    ] = DEFAULT_MAX_CANDIDATES,
    scan_limit: Annotated[
        int,
        typer.Option("--scan-limit", min=0, help="Tightest hosts looked at first (0: none). Production's default."),
    ] = DEFAULT_SCAN_LIMIT,
    with_memory: Annotated[
        bool, typer.Option("--with-memory", help="Also count host RAM (memory_mib) of openb files.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Place a trace's jobs on its hosts the way the ATC'23 FGD paper measures allocation quality.

    All jobs arrive, then jobs resampled from the list until the requested GPU reaches
    INFLATION x capacity, shuffled by each seed; nothing departs. Reports the share of GPU
    allocated at 100% and at the end, fragmentation at 90%, failed jobs and decision times.
    The policy is bounded exactly as the scheduler runs it (GPUFLEET_SCHEDULER_MAX_CANDIDATES and
    GPUFLEET_SCHEDULER_SCAN_LIMIT default to the same values); the report names the bounds used.
    """
    bounds = PolicyBounds(max_candidates or None, scan_limit or None)
    try:
        seed_list = parse_seeds(seeds)
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
        if not 0 < inflation <= 10:
            raise ValueError(f"--inflation must be in (0, 10], got {inflation}")
        hosts = load_hosts(nodes, with_memory=with_memory)
        jobs = load_jobs(pods, with_memory=with_memory)
    except (TraceError, ValueError) as exc:
        raise _fail(str(exc)) from None

    results: list[SeedResult] = []
    console = Console(stderr=True)
    try:
        if as_json:
            results = [run(hosts, jobs, policy, s, inflation, bounds=bounds) for s in seed_list]
        else:
            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                for s in seed_list:
                    task = progress.add_task(f"seed {s}", total=None)

                    def tick(done: int, total: int, task: TaskID = task) -> None:
                        progress.update(task, completed=done, total=total)

                    results.append(run(hosts, jobs, policy, s, inflation, on_progress=tick, bounds=bounds))
                    progress.remove_task(task)
    except ValueError as exc:
        raise _fail(str(exc)) from None

    out = report(policy, inflation, results, bounds)
    out["nodes"] = str(nodes)
    out["pods"] = str(pods)
    out["hosts"] = len(hosts)
    out["gpus"] = sum(len(h.gpus) for h in hosts)
    out["jobs_in_list"] = len(jobs)
    if as_json:
        typer.echo(json.dumps(out))
        return
    _table(out, inflation)


def _table(out: dict[str, object], inflation: float) -> None:
    end = f"{inflation * 100:g}%"
    table = Table(
        title=(
            f"policy {out['policy']} (max candidates {out['max_candidates'] or 'all'}, "
            f"scan limit {out['scan_limit'] or 'none'}): "
            f"{out['hosts']} hosts, {out['gpus']} GPUs, {out['jobs_in_list']} jobs in list"
        ),
        caption="GPU allocated and fragmented, % of GPU capacity, at that share of demand arrived",
    )
    table.add_column("seed", justify="right")
    table.add_column("alloc@100%", justify="right")
    table.add_column(f"alloc@{end}", justify="right")
    table.add_column("frag@90%", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("p50 µs", justify="right")
    table.add_column("p99 µs", justify="right")
    rows = out["seeds"]
    assert isinstance(rows, list)
    for row in rows:
        table.add_row(*_cells(str(row["seed"]), row))
    mean = out["mean"]
    assert isinstance(mean, dict)
    table.add_section()
    table.add_row(*_cells("mean", mean), style="bold")
    Console().print(table)


def _cells(label: str, row: dict[str, float]) -> list[str]:
    return [
        label,
        f"{row['alloc_pct_at_100']:.2f}",
        f"{row['alloc_pct_at_end']:.2f}",
        f"{row['frag_pct_at_90']:.2f}",
        f"{row['failed']:g}",
        f"{row['decision_us_p50']:.0f}",
        f"{row['decision_us_p99']:.0f}",
    ]
