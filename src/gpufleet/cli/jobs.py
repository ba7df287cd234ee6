"""`gpufleet jobs ...` and `gpufleet quotas ...`: submit and follow work, set limits, through the SDK."""

from __future__ import annotations

import base64
import itertools
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal
from uuid import UUID

import typer
from rich.table import Table

from gpufleet.cli.common import console, emit_json, fail
from gpufleet.cli.remote import JsonOpt, client, dump, show
from gpufleet.client import Client
from gpufleet.domain import JobStatus
from gpufleet.schemas.jobs import JobRead, RetryPolicy

jobs = typer.Typer(help="Submit, list, inspect, wait for and cancel jobs.", no_args_is_help=True)
quotas = typer.Typer(help="How many GPUs the organization may hold at once (admins set them).", no_args_is_help=True)

# `jobs wait` exit codes: 0 succeeded, 1 finished otherwise, 2 still not finished at --timeout.
EXIT_SUCCEEDED, EXIT_UNSUCCESSFUL, EXIT_TIMEOUT = 0, 1, 2

LogStreamOpt = Literal["all", "stdout", "stderr"]
LIST_COLUMNS = ["id", "name", "status", "gpus", "priority", "created_at", "reason"]


def register(app: typer.Typer) -> None:
    app.add_typer(jobs, name="jobs")
    app.add_typer(quotas, name="quotas")


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            fail(f"{what} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def _gpus(job: JobRead) -> str:
    r = job.requirements
    if r.gpu_count == 0:
        return "-"
    size = f"{r.gpu_milli / 1000:g}" if r.gpu_milli < 1000 else str(r.gpu_count)
    return size + (f" x {'/'.join(r.gpu_models)}" if r.gpu_models else "")


def _row(job: JobRead) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "name": job.name,
        "status": job.status.value + (" (cancel requested)" if job.cancel_requested_at and not job.finished else ""),
        "gpus": _gpus(job),
        "priority": job.priority,
        "created_at": f"{job.created_at:%Y-%m-%d %H:%M:%S}",
        "reason": job.pending_reason or job.status_reason or "",
    }


def _detail(job: JobRead) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    r = job.requirements
    rows: list[tuple[str, Any]] = [
        ("id", job.id),
        ("name", job.name),
        ("status", job.status.value),
        ("waiting because", job.pending_reason),
        ("reason", job.status_reason),
        ("command", " ".join(job.command) if job.command else None),
        ("script", (job.script or "").splitlines()[0] + " ..." if job.script else None),
        ("gpus", _gpus(job)),
        ("gpu memory", f"{r.min_memory_mb} MiB per GPU" if r.min_memory_mb else None),
        ("cpu / ram", f"{r.cpu_milli / 1000:g} cores, {r.ram_mb} MiB" if r.cpu_milli or r.ram_mb else None),
        ("priority", job.priority),
        ("labels", ", ".join(f"{k}={v}" for k, v in job.labels.items()) or None),
        ("attempt", f"{job.attempt} of {job.retry.max_attempts}"),
        ("host", job.host_id),
        ("allocated", ", ".join(f"{g.gpu_id} ({g.milli / 1000:g})" for g in job.gpus) or None),
        ("exit code", job.exit_code),
        ("cancel requested", job.cancel_requested_at),
        ("created", job.created_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
    ]
    for label, value in rows:
        if isinstance(value, datetime):
            value = f"{value:%Y-%m-%d %H:%M:%S %Z}"
        if value is not None:
            table.add_row(label, str(value))
    console.print(table)


def _wait(c: Client, job_id: UUID, timeout_s: float | None, as_json: bool) -> None:
    if not as_json:
        console.print(f"waiting for {job_id} ...", highlight=False)
    job = c.wait_job(job_id, timeout_s)
    if as_json:
        emit_json(dump(job))
    else:
        console.print(f"{job.id} {job.status}" + (f": {job.status_reason}" if job.status_reason else ""))
    if not job.finished:
        raise typer.Exit(EXIT_TIMEOUT)
    raise typer.Exit(EXIT_SUCCEEDED if job.status is JobStatus.SUCCEEDED else EXIT_UNSUCCESSFUL)


@jobs.command("submit")
def jobs_submit(
    cmd: list[str] = typer.Argument(None, metavar="-- CMD ARGS", help="The command and its arguments, after `--`."),
    name: str = typer.Option(None, help="A name (default: the command)."),
    gpus: int = typer.Option(1, "--gpus", min=0, help="Whole GPUs on one host; 0 for CPU only."),
    gpu_fraction: float = typer.Option(None, help="A fraction of one GPU, e.g. 0.25 (instead of --gpus)."),
    min_memory_gb: float = typer.Option(None, help="GPU memory per GPU, GB."),
    gpu_model: list[str] = typer.Option(None, "--gpu-model", help="Acceptable GPU model (repeatable)."),
    cpus: float = typer.Option(None, help="CPU cores."),
    ram_gb: float = typer.Option(None, help="RAM, GB."),
    priority: int = typer.Option(None, help="-1000..1000; higher runs first."),
    max_runtime: str = typer.Option(None, help="Stop it after this long: seconds, or like 2h, 30m, 1h30m."),
    env: list[str] = typer.Option(None, "--env", help="KEY=VALUE (repeatable)."),
    label: list[str] = typer.Option(None, "--label", help="KEY=VALUE (repeatable)."),
    workdir: str = typer.Option(None, help="Working directory on the host."),
    script: Path = typer.Option(None, help="Run this shell script file ('-' for stdin) instead of a command."),
    retries: int = typer.Option(None, min=0, max=99, help="Run again this many times if it fails."),
    wait: bool = typer.Option(False, "--wait", help="Wait until it finishes; exit status as `jobs wait`."),
    as_json: bool = JsonOpt,
) -> None:
    """Queue a job: `gpufleet jobs submit --gpus 2 -- python train.py --epochs 3`."""
    if cmd and script is not None:
        fail("give a command after `--` or --script, not both")
    if not cmd and script is None:
        fail("no command: put it after `--`, e.g. `gpufleet jobs submit -- python train.py`")
    script_text = None
    if script is not None:
        script_text = sys.stdin.read() if str(script) == "-" else _read(script)
    gpu_count, gpu_milli = gpus, None
    if gpu_fraction is not None:
        if not 0 < gpu_fraction < 1:
            fail("--gpu-fraction must be between 0 and 1 (use --gpus for whole GPUs)")
        gpu_count, gpu_milli = 1, max(1, round(gpu_fraction * 1000))
    retry = RetryPolicy(on_failure=True, max_attempts=retries + 1) if retries else None
    with client() as c:
        job = c.submit_job(
            name=name or (" ".join(cmd)[:200] if cmd else script.name if script else "job"),
            command=cmd or None,
            script=script_text,
            gpu_count=gpu_count,
            gpu_milli=gpu_milli,
            min_memory_gb=min_memory_gb,
            gpu_models=gpu_model or None,
            cpu_cores=cpus,
            ram_gb=ram_gb,
            priority=priority,
            max_runtime=max_runtime,
            env=_pairs(env, "--env") or None,
            labels=_pairs(label, "--label") or None,
            working_dir=workdir,
            retry=retry,
        )
        if wait:
            if not as_json:
                console.print(f"submitted {job.id}", highlight=False)
            _wait(c, job.id, None, as_json)
    if as_json:
        show(job, True)
    else:
        console.print(f"submitted {job.id} ({job.status})", highlight=False)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")


@jobs.command("list")
def jobs_list(
    status: list[JobStatus] = typer.Option(None, "--status", help="Only these states (repeatable)."),
    label: list[str] = typer.Option(None, "--label", help="KEY=VALUE; jobs with every such label (repeatable)."),
    limit: int = typer.Option(50, min=1, help="At most this many, newest first."),
    as_json: bool = JsonOpt,
) -> None:
    with client() as c:
        found = list(itertools.islice(c.list_jobs(status=status or None, labels=_pairs(label, "--label")), limit))
    if as_json:
        show(found, True)
    else:
        show([_row(j) for j in found], False, LIST_COLUMNS)


@jobs.command("show")
def jobs_show(job_id: UUID, as_json: bool = JsonOpt) -> None:
    """One job in full; a pending job says why it waits."""
    with client() as c:
        job = c.get_job(job_id)
    if as_json:
        show(job, True)
    else:
        _detail(job)


@jobs.command("events")
def jobs_events(
    job_id: UUID, after_seq: int = typer.Option(0, min=0, help="Only after this seq."), as_json: bool = JsonOpt
) -> None:
    """The job's history, oldest first."""
    with client() as c:
        evs = c.job_events(job_id, after_seq=after_seq)
    if as_json:
        show(evs, True)
        return
    rows = [
        {
            "seq": e.seq,
            "at": f"{e.created_at:%Y-%m-%d %H:%M:%S}",
            "type": e.type,
            "actor": e.actor or "",
            "data": json.dumps(e.data, separators=(",", ":")),
        }
        for e in evs
    ]
    show(rows, False, ["seq", "at", "type", "actor", "data"])


@jobs.command("cancel")
def jobs_cancel(job_id: UUID, as_json: bool = JsonOpt) -> None:
    """Cancel a job (a running one is stopped by its agent)."""
    with client() as c:
        job = c.cancel_job(job_id)
    if as_json:
        show(job, True)
    elif job.status is JobStatus.CANCELLED:
        console.print(f"cancelled {job.id}", highlight=False)
    else:
        console.print(f"cancel requested for {job.id} ({job.status}); its agent stops it", highlight=False)


@jobs.command("wait")
def jobs_wait(
    job_id: UUID,
    timeout: float = typer.Option(None, min=0, help="Give up after this many seconds (default: never)."),
    as_json: bool = JsonOpt,
) -> None:
    """Wait for a job to finish. Exit status: 0 succeeded, 1 finished otherwise, 2 timed out waiting."""
    with client() as c:
        _wait(c, job_id, timeout, as_json)


@jobs.command("logs")
def jobs_logs(
    job_id: UUID,
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing output as it comes until the job ends."),
    attempt: int = typer.Option(None, min=1, help="This attempt (default: the current one; -f follows retries)."),
    stream: LogStreamOpt = typer.Option("all", "--stream", help="Only this stream (gpufleet's notices always)."),
) -> None:
    """A job's output, byte for byte: its stdout to stdout, its stderr and gpufleet's notices to stderr."""
    with client() as c:
        entries = c.follow_job_logs(job_id, attempt=attempt) if follow else c.iter_job_logs(job_id, attempt=attempt)
        shown: int | None = None
        try:
            for e in entries:
                if shown is not None and e.attempt != shown:
                    _write(sys.stderr.buffer, f"[gpufleet] attempt {e.attempt}\n".encode())
                shown = e.attempt
                if e.stream != "system" and stream != "all" and e.stream != stream:
                    continue
                out = sys.stdout.buffer if e.stream == "stdout" else sys.stderr.buffer
                _write(out, base64.b64decode(e.data_b64))
        except BrokenPipeError:  # `gpufleet jobs logs ID | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            raise typer.Exit(0) from None


def _write(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.flush()


@quotas.command("list")
def quotas_list(as_json: bool = JsonOpt) -> None:
    with client() as c:
        found = c.list_quotas()
    if as_json:
        show(found, True)
        return
    rows = [
        {"id": str(q.id), "gpu_model": q.gpu_model or "(all)", "used": f"{q.used_gpus:g} of {q.max_gpus}"}
        for q in found
    ]
    show(rows, False, ["id", "gpu_model", "used"])


@quotas.command("set")
def quotas_set(
    max_gpus: int = typer.Argument(..., min=0, help="GPUs held at once (0.5-GPU jobs count 0.5)."),
    model: str = typer.Option(None, "--model", help="Only this GPU model (default: all GPUs together)."),
    as_json: bool = JsonOpt,
) -> None:
    """Create or replace a quota (admins)."""
    with client() as c:
        q = c.set_quota(max_gpus, model)
    if as_json:
        show(q, True)
    else:
        console.print(f"quota {q.id}: {q.gpu_model or 'all GPUs'} at most {q.max_gpus} ({q.used_gpus:g} in use)")


@quotas.command("delete")
def quotas_delete(quota_id: UUID) -> None:
    with client() as c:
        c.delete_quota(quota_id)
    console.print(f"deleted quota {quota_id}", highlight=False)
