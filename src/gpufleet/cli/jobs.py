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

from gpufleet.cli.common import EXIT_OK, EXIT_TIMEOUT, EXIT_UNSUCCESSFUL, console, emit_json, fail, usage
from gpufleet.cli.remote import JsonOpt, WideOpt, client, dump, id_arg, resolve, short, show, show_lines, show_list
from gpufleet.domain.costs import cents
from gpufleet.domain.jobs import JobStatus
from gpufleet.schemas.jobs import JobRead, QuotaRead, RetryPolicy
from gpufleet.sdk import Client

jobs = typer.Typer(help="Submit, list, inspect, wait for and cancel jobs.", no_args_is_help=True)
quotas = typer.Typer(help="How many GPUs the organization may hold at once (admins set them).", no_args_is_help=True)

# `jobs wait` exit codes (docs/cli.md): 0 succeeded, 3 finished otherwise, 4 still not finished at --timeout;
# 1 and 2 stay what they are for every command (an error, a wrong command line).
EXIT_SUCCEEDED = EXIT_OK

LogStreamOpt = Literal["all", "stdout", "stderr"]
LIST_COLUMNS = ["id", "name", "status", "gpus", "priority", "created_at", "reason"]
QUOTA_COLUMNS = ["id", "gpu_model", "used"]


def register(app: typer.Typer) -> None:
    app.add_typer(jobs, name="jobs")
    app.add_typer(quotas, name="quotas")


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            usage(f"{what} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def gpu_amount(milli: int, count: int = 1) -> str:
    """GPUs as people say them: "0.25 GPU", "1 GPU", "2 GPUs"."""
    amount = count * milli / 1000
    return f"{amount:g} GPU" + ("s" if amount > 1 else "")


def _gb(mb: int) -> str:
    """Memory in the unit it is asked in (--min-memory-gb, --ram-gb; 1 GB = 1024 MiB here)."""
    return f"{mb / 1024:.4g} GB"


def _gpus(job: JobRead) -> str:
    r = job.requirements
    if r.gpu_count == 0:
        return "-"
    return gpu_amount(r.gpu_milli, r.gpu_count) + (f" ({' or '.join(r.gpu_models)})" if r.gpu_models else "")


def _attempt(job: JobRead) -> str | None:
    """ "attempt 2 of 3" only when retries on failure were asked for; a host-loss requeue says so."""
    if job.retry.on_failure:
        return f"{job.attempt} of {job.retry.max_attempts}"
    if job.attempt > 1:
        return f"{job.attempt} (queued again after its host was lost)"
    return None


def _row(job: JobRead, wide: bool = False) -> dict[str, Any]:
    return {
        "id": short(job.id, wide),
        "name": job.name,
        "status": job.status.value + (" (cancel requested)" if job.cancel_requested_at and not job.finished else ""),
        "gpus": _gpus(job),
        "priority": job.priority,
        "created_at": f"{job.created_at:%Y-%m-%d %H:%M:%S}",
        "reason": job.pending_reason or job.status_reason or "",
    }


def _cost(job: JobRead) -> str | None:
    """Cost so far to the cent (docs/costs.md), and the estimate when the job has one."""
    if job.cost is None:
        return None
    text = f"{cents(job.cost)}" + ("" if job.finished else " so far")
    return text + (f" (estimate {cents(job.cost_estimate)})" if job.cost_estimate is not None else "")


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
        ("gpu memory", f"{_gb(r.min_memory_mb)} per GPU" if r.min_memory_mb else None),
        ("cpu / ram", f"{r.cpu_milli / 1000:g} cores, {_gb(r.ram_mb)} RAM" if r.cpu_milli or r.ram_mb else None),
        ("priority", job.priority),
        ("labels", ", ".join(f"{k}={v}" for k, v in job.labels.items()) or None),
        ("model type", job.model_type),
        ("attempt", _attempt(job)),
        ("host", job.host_id),
        ("allocated", ", ".join(f"GPU {short(g.gpu_id)} ({gpu_amount(g.milli)})" for g in job.gpus) or None),
        ("exit code", job.exit_code),
        ("cost", _cost(job)),
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


def _wait(c: Client, job_id: UUID, timeout_s: float | None, as_json: bool, *, quiet: bool = False) -> None:
    if not as_json and not quiet:
        console.print(f"waiting for {job_id} ...", highlight=False)
    job = c.wait_job(job_id, timeout_s)
    if as_json:
        emit_json(dump(job))
    elif not quiet:
        console.print(f"{job.id} {job.status}" + (f": {job.status_reason}" if job.status_reason else ""))
    if not job.finished:
        raise typer.Exit(EXIT_TIMEOUT)
    raise typer.Exit(EXIT_SUCCEEDED if job.status is JobStatus.SUCCEEDED else EXIT_UNSUCCESSFUL)


@jobs.command("submit")
def jobs_submit(
    cmd: list[str] = typer.Argument(None, metavar="-- CMD ARGS", help="The command and its arguments, after `--`."),
    name: str = typer.Option(None, help="A name (default: the command)."),
    gpus: int = typer.Option(None, "--gpus", min=0, help="Whole GPUs on one host (default 1); 0 for CPU only."),
    gpu_fraction: float = typer.Option(None, help="A fraction of one GPU, e.g. 0.25 (instead of --gpus)."),
    min_memory_gb: float = typer.Option(None, help="GPU memory per GPU, GB (the sketch's min_memory)."),
    gpu_model: list[str] = typer.Option(
        None, "--gpu-model", "--gpu-type", help="Acceptable GPU model, e.g. 'NVIDIA A100' (repeatable)."
    ),
    model_type: str = typer.Option(None, "--model-type", help="What kind of model the job runs, e.g. text."),
    cpus: float = typer.Option(None, help="CPU cores."),
    ram_gb: float = typer.Option(None, help="RAM, GB."),
    priority: int = typer.Option(None, help="-1000..1000; higher runs first."),
    max_runtime: str = typer.Option(None, help="Stop it after this long: seconds, or like 2h, 30m, 1h30m."),
    env: list[str] = typer.Option(None, "--env", help="KEY=VALUE (repeatable)."),
    label: list[str] = typer.Option(None, "--label", help="KEY=VALUE (repeatable)."),
    workdir: str = typer.Option(None, help="Working directory on the host."),
    script: Path = typer.Option(None, help="Run this shell script file ('-' for stdin) instead of a command."),
    retries: int = typer.Option(None, min=0, max=99, help="Run again this many times if it fails."),
    max_attempts: int = typer.Option(
        None, min=1, max=100, help="Attempts in all, host-loss requeues included (default 3; with --retries: N+1)."
    ),
    host_loss_requeue: bool = typer.Option(
        True, "--requeue-on-host-loss/--no-requeue-on-host-loss", help="Queue it again if its host is lost."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait until it finishes; exit status as `jobs wait`."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the job id (for ID=$(...))."),
    as_json: bool = JsonOpt,
) -> None:
    """Queue a job: `gpufleet jobs submit --gpus 2 -- python train.py --epochs 3`."""
    _refuse_conflicts(cmd, script, gpus, gpu_fraction, min_memory_gb, gpu_model, retries, max_attempts, quiet, as_json)
    script_text = None
    if script is not None:
        script_text = sys.stdin.read() if str(script) == "-" else _read(script)
    gpu_count, gpu_milli = (1 if gpus is None else gpus), None
    if gpu_fraction is not None:
        gpu_count, gpu_milli = 1, max(1, round(gpu_fraction * 1000))
    retry = None
    if retries or max_attempts is not None or not host_loss_requeue:
        retry = RetryPolicy(
            on_failure=bool(retries),
            on_host_loss=host_loss_requeue,
            max_attempts=max_attempts if max_attempts is not None else (retries + 1 if retries else 3),
        )
    with client() as c:
        job = c.submit_job(
            name=name or (" ".join(cmd)[:200] if cmd else script.name if script else "job"),
            command=cmd or None,
            script=script_text,
            gpu_count=gpu_count,
            gpu_milli=gpu_milli,
            min_memory_gb=min_memory_gb,
            gpu_models=gpu_model or None,
            model_type=model_type,
            cpu_cores=cpus,
            ram_gb=ram_gb,
            priority=priority,
            max_runtime=max_runtime,
            env=_pairs(env, "--env") or None,
            labels=_pairs(label, "--label") or None,
            working_dir=workdir,
            retry=retry,
        )
        if quiet:
            typer.echo(str(job.id))
        if wait:
            if not as_json and not quiet:
                console.print(f"submitted {job.id}", highlight=False)
            _wait(c, job.id, None, as_json, quiet=quiet)
    if as_json:
        show(job, True)
    elif not quiet:
        console.print(f"submitted {job.id} ({job.status})", highlight=False)


def _refuse_conflicts(
    cmd: list[str] | None,
    script: Path | None,
    gpus: int | None,
    gpu_fraction: float | None,
    min_memory_gb: float | None,
    gpu_model: list[str] | None,
    retries: int | None,
    max_attempts: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Flags that cannot mean anything together: one line, exit 2, before anything is sent."""
    if cmd and script is not None:
        usage("give a command after `--` or --script, not both")
    if not cmd and script is None:
        usage("no command: put it after `--`, e.g. `gpufleet jobs submit -- python train.py`")
    if gpu_fraction is not None:
        if gpus is not None:
            usage(f"give --gpus or --gpu-fraction, not both (--gpu-fraction {gpu_fraction:g} is part of one GPU)")
        if not 0 < gpu_fraction < 1:
            usage("--gpu-fraction must be between 0 and 1 (use --gpus for whole GPUs)")
    if gpus == 0 and (min_memory_gb is not None or gpu_model):
        usage("--gpus 0 asks for no GPU: drop --min-memory-gb/--gpu-model, or ask for GPUs")
    if retries and max_attempts is not None and max_attempts != retries + 1:
        usage(f"--retries {retries} means {retries + 1} attempts; give --retries or --max-attempts, not both")
    if quiet and as_json:
        usage("give -q/--quiet (the id alone) or --json (the whole job), not both")


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
    wide: bool = WideOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Jobs, newest first, with why each waits or ended (ids shortened; --wide for whole ones)."""

    def newest(c: Client) -> list[JobRead]:
        return list(itertools.islice(c.list_jobs(status=status or None, labels=_pairs(label, "--label")), limit))

    show_list(newest, as_json, lambda j: _row(j, wide), LIST_COLUMNS, wide=wide)


@jobs.command("show")
def jobs_show(job_id: str = id_arg("job"), as_json: bool = JsonOpt) -> None:
    """One job in full; a pending job says why it waits."""
    with client() as c:
        job = c.get_job(resolve(c, "job", job_id))
    if as_json:
        show(job, True)
    else:
        _detail(job)


@jobs.command("events")
def jobs_events(
    job_id: str = id_arg("job"),
    after_seq: int = typer.Option(0, min=0, help="Only after this seq."),
    as_json: bool = JsonOpt,
) -> None:
    """The job's history, oldest first."""
    with client() as c:
        evs = c.job_events(resolve(c, "job", job_id), after_seq=after_seq)
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
def jobs_cancel(job_id: str = id_arg("job"), as_json: bool = JsonOpt) -> None:
    """Cancel a job (a running one is stopped by its agent)."""
    with client() as c:
        job = c.cancel_job(resolve(c, "job", job_id))
    cancelled = job.status is JobStatus.CANCELLED
    show_lines(
        job,
        as_json,
        f"cancelled {job.id}" if cancelled else f"cancel requested for {job.id} ({job.status}); its agent stops it",
    )


@jobs.command("wait")
def jobs_wait(
    job_id: str = id_arg("job"),
    timeout: float = typer.Option(None, min=0, help="Give up after this many seconds (default: never)."),
    as_json: bool = JsonOpt,
) -> None:
    """Wait for a job to finish. Exit status: 0 succeeded, 3 finished otherwise, 4 not finished at --timeout."""
    with client() as c:
        _wait(c, resolve(c, "job", job_id), timeout, as_json)


@jobs.command("logs")
def jobs_logs(
    job_id: str = id_arg("job"),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing output as it comes until the job ends."),
    attempt: int = typer.Option(None, min=1, help="This attempt (default: the current one; -f follows retries)."),
    stream: LogStreamOpt = typer.Option("all", "--stream", help="Only this stream (gpufleet's notices always)."),
) -> None:
    """A job's output, byte for byte: its stdout to stdout, its stderr and gpufleet's notices to stderr.

    With -f, a job that ends without succeeding adds one line on stderr and exits 3 (as `jobs wait`)."""
    with client() as c:
        full = resolve(c, "job", job_id)
        entries = c.follow_job_logs(full, attempt=attempt) if follow else c.iter_job_logs(full, attempt=attempt)
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
        if follow:
            _followed_to_the_end(c.get_job(full))


def _followed_to_the_end(job: JobRead) -> None:
    """After `logs -f`: a job that did not succeed says so on stderr and exits 3, as `jobs wait` does."""
    if not job.finished or job.status is JobStatus.SUCCEEDED:
        return
    reason = f": {job.status_reason}" if job.status_reason else ""
    _write(sys.stderr.buffer, f"[gpufleet] job {job.id} {job.status.value}{reason}\n".encode())
    raise typer.Exit(EXIT_UNSUCCESSFUL)


def _write(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.flush()


@quotas.command("list")
def quotas_list(wide: bool = WideOpt, as_json: bool = JsonOpt) -> None:
    """Quotas of the organization and how much of each is in use."""
    show_list(Client.list_quotas, as_json, _quota_row, QUOTA_COLUMNS, wide=wide)


def _quota_row(q: QuotaRead) -> dict[str, Any]:
    return {"id": str(q.id), "gpu_model": q.gpu_model or "(all)", "used": f"{q.used_gpus:g} of {q.max_gpus} GPUs"}


@quotas.command("set")
def quotas_set(
    max_gpus: int = typer.Argument(..., min=0, help="GPUs held at once (0.5-GPU jobs count 0.5)."),
    model: str = typer.Option(None, "--model", help="Only this GPU model (default: all GPUs together)."),
    as_json: bool = JsonOpt,
) -> None:
    """Create or replace a quota (admins)."""
    with client() as c:
        q = c.set_quota(max_gpus, model)
    line = f"quota {q.id}: {q.gpu_model or 'all GPUs'} at most {q.max_gpus} ({q.used_gpus:g} in use)"
    show_lines(q, as_json, line, highlight=True)


@quotas.command("delete")
def quotas_delete(quota_id: str = id_arg("quota")) -> None:
    """Delete a quota (admins)."""
    with client() as c:
        full = resolve(c, "quota", quota_id)
        c.delete_quota(full)
    console.print(f"deleted quota {full}", highlight=False)
