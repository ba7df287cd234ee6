"""`gpufleet demo`: the architecture sketch's example jobs, run as real processes, shown live.

The sketch's `submit_test_jobs` asks for "Text Generation" (model_type text, at least 8 GB on an
NVIDIA A100); a few more configurations show whole, multi-GPU and shared (fractional) GPUs. Each
job is a small Python program that prints progress. The dashboard follows the organization's
change feed (`GET /v1/events`, a long poll): it redraws when something happens, not in a loop.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import typer
from rich.live import Live
from rich.table import Table

from gpufleet.cli.common import console
from gpufleet.cli.remote import JsonOpt, client, dump
from gpufleet.schemas.jobs import GpuRequirements, JobCreate, JobRead

_PROGRAM = """
import os, sys, time
steps = int(sys.argv[1])
gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
share = os.environ.get("GPUFLEET_GPU_SHARE", "1")
print(f"{os.environ['GPUFLEET_JOB_ID']}: {sys.argv[2]} on CUDA_VISIBLE_DEVICES={gpus!r} share={share}", flush=True)
for i in range(steps):
    time.sleep(0.5)
    print(f"step {i + 1}/{steps}", flush=True)
print("done", flush=True)
"""


def demo_jobs() -> list[JobCreate]:
    """The sketch's configuration, as written, plus a few that show how GPUs are shared and packed."""

    def job(name: str, model_type: str, steps: int, **req: Any) -> JobCreate:
        return JobCreate.model_validate(
            {
                "name": name,
                "model_type": model_type,
                "command": ["python3", "-c", _PROGRAM, str(steps), name],
                "labels": {"demo": "true"},
                **req,
            }
        )

    return [
        job(
            "Text Generation",
            "text",
            10,
            gpu_requirements=GpuRequirements(min_memory=8, gpu_type="NVIDIA A100").model_dump(),
        ),
        job("Image Classification", "vision", 8, gpu_count=1, min_memory_gb=16),
        job("Fine-tuning", "text", 12, gpu_count=2),
        job("Embeddings", "embedding", 6, gpu_count=1, gpu_milli=250),
        job("Speech to Text", "audio", 6, gpu_count=1, gpu_milli=500),
    ]


_STYLE = {
    "pending": "yellow",
    "allocated": "blue",
    "running": "bold cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "timed_out": "red",
    "allocation_failed": "red",
}


def _runtime(job: JobRead) -> str:
    if job.started_at is None:
        return "-"
    end = job.finished_at or datetime.now(UTC)
    return f"{(end - job.started_at).total_seconds():.1f}s"


def _cost(job: JobRead) -> str:
    """Cost so far (docs/costs.md); four decimals, since demo jobs cost fractions of a cent."""
    return "-" if job.cost is None else f"{job.cost:.4f}"


def render(jobs: dict[UUID, JobRead], gpu_names: dict[UUID, str], held: dict[UUID, str]) -> Table:
    table = Table(title="Job Status Dashboard")
    table.add_column("Job ID", style="cyan")
    table.add_column("Name", style="magenta")
    table.add_column("Status", style="green")
    table.add_column("GPU")
    table.add_column("Runtime", justify="right")
    table.add_column("Cost", justify="right")
    for job in jobs.values():
        gpus = ", ".join(
            gpu_names.get(g.gpu_id, str(g.gpu_id)[:8]) + ("" if g.milli == 1000 else f" ({g.milli / 1000:g} GPU)")
            for g in job.gpus
        )
        # A finished job has released its GPUs: show the ones it ran on.
        if gpus:
            held[job.id] = gpus
        gpus = gpus or held.get(job.id, "")
        detail = job.pending_reason if job.status == "pending" else job.status_reason
        status = f"[{_STYLE.get(job.status, 'white')}]{job.status}[/]" + (f"\n[dim]{detail}[/dim]" if detail else "")
        table.add_row(str(job.id)[:8], job.name, status, gpus or "-", _runtime(job), _cost(job))
    return table


def demo(
    timeout: float = typer.Option(300.0, help="Give up after this many seconds."),
    predictions: bool = typer.Option(
        False, "--predictions", help="Push the example Cog models and run one prediction on each instead."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Submit the sketch's example jobs and watch them run live (needs `gpufleet up` with an agent);
    with --predictions, the example models (text generation among them) as predictions."""
    if predictions:
        from gpufleet.cli.demo_predictions import demo_predictions

        demo_predictions(timeout, as_json)
        return
    with client() as c:
        position = c.events(after_seq=-1).last_seq
        submitted = [c.submit_job(spec) for spec in demo_jobs()]
        jobs = {j.id: j for j in submitted}
        gpu_names: dict[UUID, str] = {}
        held: dict[UUID, str] = {}

        def refresh_names() -> None:
            for gpu in c.list_gpus():
                gpu_names[gpu.id] = f"{gpu.model} #{gpu.index}" + (" (sim)" if gpu.simulated else "")

        refresh_names()
        deadline = time.monotonic() + timeout
        with Live(
            get_renderable=lambda: render(jobs, gpu_names, held),
            console=console,
            refresh_per_second=4,
            transient=as_json,
        ):
            while not all(j.finished for j in jobs.values()) and time.monotonic() < deadline:
                page = c.events(after_seq=position, wait_s=10, entity_type="job")
                position = page.last_seq
                for changed in {e.entity_id for e in page.events} & jobs.keys():
                    jobs[changed] = c.get_job(changed)
                    if any(g.gpu_id not in gpu_names for g in jobs[changed].gpus):
                        refresh_names()
        if as_json:
            from gpufleet.cli.common import emit_json

            emit_json([dump(j) for j in jobs.values()])
        failed = [j for j in jobs.values() if j.status != "succeeded"]
        if not as_json:
            console.print()
            console.print(
                f"{len(jobs) - len(failed)} of {len(jobs)} jobs succeeded"
                + (" (timed out waiting)" if not all(j.finished for j in jobs.values()) else "")
            )
        if failed:
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
