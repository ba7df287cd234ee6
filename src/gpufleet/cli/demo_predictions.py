"""`gpufleet demo --predictions`: the example Cog models pushed, each run once, shown live.

The models are the ones in `examples/models` (shipped inside the wheel as
`gpufleet/examples/models`). Each is pushed (the model created on its first push, with the
hardware its cog.yaml implies), then one prediction per model is queued at once: the first of
each is a cold start (a replica is placed by the scheduler, its environment materialized, its
setup() run). The table follows them until all have ended; exit 0 when all succeeded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.live import Live
from rich.table import Table

from gpufleet.cli.common import console, emit_json, fail
from gpufleet.cli.remote import client
from gpufleet.schemas.predictions import PredictionRead
from gpufleet.sdk.errors import NotFound

# (model, input): small inputs, so the demo takes seconds; matmul reports the device it ran on.
DEMO_MODELS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"text": "hello from gpufleet", "repeat": 2}),
    ("text-generation", {"prompt": "the scheduler", "max_tokens": 12, "seed": 1}),
    ("stream-text", {"text": "tokens stream as they are made", "delay": 0.05}),
    ("matmul", {"size": 128, "iterations": 2}),
]
_STYLE = {"succeeded": "green", "failed": "red", "canceled": "yellow", "processing": "cyan", "starting": "white"}


def examples_dir() -> Path:
    """The example models: inside the installed package, else beside the source tree (a checkout)."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "examples" / "models", here.parents[3] / "examples" / "models"):
        if (candidate / "echo" / "cog.yaml").is_file():
            return candidate
    fail("the example models are not installed with this gpufleet (examples/models)")


@dataclass
class Row:
    model: str
    version: str = ""
    prediction: PredictionRead | None = None
    note: str = ""


def _output(p: PredictionRead) -> str:
    out = p.output
    if isinstance(out, list) and all(isinstance(x, str) for x in out):
        text = "".join(out)
    elif isinstance(out, dict) and "device" in out:
        text = f"device={out['device']} " + ", ".join(f"{k}={v}" for k, v in out.items() if k != "device")
    else:
        text = "" if out is None else str(out)
    text = text.strip().replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def render(rows: list[Row]) -> Table:
    table = Table(title="Predictions (example models)", expand=False)
    for col in ("Model", "Status", "Output", "Cold start", "Predict time"):
        table.add_column(col)
    for row in rows:
        p = row.prediction
        if p is None:
            table.add_row(row.model, row.note or "pushing", "", "", "")
            continue
        m = p.metrics or {}
        cold = "yes" if m.get("cold_start") else ("no" if p.status == "succeeded" else "")
        predict = f"{m['predict_time']:.3f} s" if isinstance(m.get("predict_time"), int | float) else ""
        status = f"[{_STYLE.get(p.status, 'white')}]{p.status}[/]"
        if p.error:
            status += f"\n[dim]{p.error[:60]}[/dim]"
        table.add_row(row.model, status, _output(p), cold, predict)
    return table


def demo_predictions(timeout: float, as_json: bool) -> None:
    models = examples_dir()
    with client() as c:
        me = c.me()
        owner = next(m.organization_slug for m in me.memberships if m.organization_id == me.organization_id)
        rows = [Row(name) for name, _ in DEMO_MODELS]
        with Live(get_renderable=lambda: render(rows), console=console, refresh_per_second=4, transient=as_json):
            for row, (name, inputs) in zip(rows, DEMO_MODELS, strict=True):
                ref = f"{owner}/{name}"
                try:
                    c.get_model(ref)
                except NotFound:
                    gpu = "gpu: true" in (models / name / "cog.yaml").read_text()
                    c.create_model(name, owner=owner, gpus=1 if gpu else 0)
                version, _ = c.push_model(models / name, ref)
                row.version = version.id
                row.prediction = c.create_prediction(ref, inputs, source="cli")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for row in rows:
                    if row.prediction is not None and row.prediction.completed_at is None:
                        row.prediction = c.get_prediction(row.prediction)
                if all(r.prediction is not None and r.prediction.completed_at is not None for r in rows):
                    break
                time.sleep(0.25)
        done = [r.prediction for r in rows if r.prediction is not None]
        if as_json:
            emit_json([p.model_dump(mode="json") for p in done])
        ok = [p for p in done if p.status == "succeeded"]
        if not as_json:
            console.print()
            finished = all(p.completed_at is not None for p in done)
            console.print(
                f"{len(ok)} of {len(rows)} predictions succeeded" + ("" if finished else " (timed out waiting)")
            )
            console.print("the dashboard shows them too: open the server's address in a browser")
        if len(ok) != len(rows):
            raise SystemExit(1)
