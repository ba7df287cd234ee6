"""`gpufleet predict`, `gpufleet predictions ...` and `gpufleet deployments ...`: run models,
follow and cancel predictions, and manage the deployments that serve them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import typer

from gpufleet.cli.common import EXIT_TIMEOUT, EXIT_UNSUCCESSFUL, console, emit_json, err_console, fail, usage
from gpufleet.cli.remote import JsonOpt, WideOpt, client, id_arg, resolve_local, show, show_lines, show_list
from gpufleet.domain.models import DIGEST_RE, split_ref
from gpufleet.errors import InvalidInput
from gpufleet.inference.validate import input_properties
from gpufleet.limits import MAX_PAGE
from gpufleet.schemas.predictions import DeploymentRead, PredictionRead
from gpufleet.sdk import Client
from gpufleet.sdk.base import present
from gpufleet.sdk.predictions import TERMINAL, item_of

predictions = typer.Typer(
    help="Predictions: list, show, cancel (run one with `gpufleet predict`).", no_args_is_help=True
)
deployments = typer.Typer(
    help="Deployments: a model version with scaling bounds, served by replicas.", no_args_is_help=True
)
PREDICTION_COLUMNS = ["id", "model", "status", "created_at", "predict_time", "source"]
DEPLOYMENT_COLUMNS = ["deployment", "release", "version", "hardware", "scale", "replicas", "queued"]
KINDS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "JSON",
    "object": "JSON",
}
RefArg = typer.Argument(..., metavar="ORG/NAME", help="The deployment: the organization's slug, a slash, its name.")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.add_typer(predictions, name="predictions")
    app.add_typer(deployments, name="deployments")


# ------------------------------------------------------------------------------ inputs


def _schema(c: Client, ref: str, deployment: bool) -> dict[str, Any]:
    """The openapi schema of what ``ref`` runs: a model's latest version, a version, a deployment's."""
    if deployment:
        d = c.get_deployment(ref)
        release = d.current_release
        return c.get_model_version(release.model, release.version).openapi_schema
    model, _, version = ref.partition(":")
    if version:
        return c.get_model_version(model, version).openapi_schema
    m = c.get_model(model)
    if m.latest_version is None:
        fail(f"model {model} has no version yet: `gpufleet models push DIR {model}`")
    return m.latest_version.openapi_schema


def typed_value(name: str, text: str, prop: dict[str, Any]) -> Any:
    """``text`` as the input's schema types it; a wrong one is a usage error naming the input."""
    kind = prop.get("type")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
        if kind == "boolean":
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes")
        if kind in ("array", "object"):
            return json.loads(text)
    except ValueError:
        usage(f"-i {name}={text}: {name} must be {KINDS.get(str(kind), kind)}")
    return text


def parse_inputs(pairs: list[str], schema: dict[str, Any], upload: Any) -> dict[str, Any]:
    """``key=value`` pairs typed by the schema; ``key=@path`` uploads the file and passes its URL."""
    props, _ = input_properties(schema)
    out: dict[str, Any] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            usage(f"-i {pair}: expected key=value")
        prop = props.get(name, {})
        if value.startswith("@"):
            path = Path(value[1:])
            if not path.is_file():
                usage(f"-i {name}={value}: {path} is not a file")
            out[name] = upload(path)
            continue
        out[name] = typed_value(name, value, prop)
    return out


# ------------------------------------------------------------------------------ predict


def predict(
    ref: str = typer.Argument(
        ...,
        metavar="ORG/NAME[:VERSION]",
        help="The model (its latest version), one of its versions, or with --deployment a deployment.",
    ),
    inputs: list[str] = typer.Option(
        [], "-i", "--input", help="key=value, typed by the model's schema; key=@path uploads a file. Repeat."
    ),
    deployment: bool = typer.Option(False, "--deployment", "-d", help="ORG/NAME names a deployment."),
    stream: bool = typer.Option(False, "--stream", help="Print output (and logs, on stderr) as it comes."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the end (default), or print the id at once."),
    timeout: float = typer.Option(600.0, "--timeout", min=1, help="With --wait: give up after this many seconds."),
    as_json: bool = JsonOpt,
) -> None:
    """Run a model on inputs and print its output (exit 3 when it fails, 4 on --timeout)."""
    target = ref.partition(":")[0]
    try:
        split_ref(target)
    except InvalidInput as exc:
        usage(exc.message)
    with client() as c:
        schema = _schema(c, ref, deployment)
        body = parse_inputs(inputs, schema, lambda p: c.upload_file(p).urls["get"])
        version = ref.partition(":")[2]
        kw: dict[str, Any] = {"deployment": ref} if deployment else {}
        run = None if deployment else (ref if version and DIGEST_RE.match(version) else target)
        p = c.create_prediction(run, body, stream=stream, wait=(wait and not stream) or None, source="cli", **kw)
        if not wait and not stream:
            _print_created(p, as_json)
            return
        if stream:
            _stream(c, p, as_json)
            p = c.get_prediction(p)
        elif p.status not in TERMINAL:
            p = c.wait_prediction(p, timeout_s=timeout)
    if as_json:
        show(p, True)
    elif not stream:
        _print_output(p)
    _exit_for(p)


def _print_created(p: PredictionRead, as_json: bool) -> None:
    show_lines(p, as_json, f"prediction {p.id} {p.status}; follow it with `gpufleet predictions show {p.id}`")


def _stream(c: Client, p: PredictionRead, as_json: bool) -> None:
    """Text items are written as they come, joined as the model made them (tokens); any other
    item is one JSON line. The output ends with a newline."""
    last = "\n"
    for event in c.stream_prediction(p):
        if as_json:
            continue
        if event.event == "output":
            item = item_of(event)
            text = item if isinstance(item, str) else ("" if last == "\n" else "\n") + json.dumps(item) + "\n"
            if text:
                sys.stdout.write(text)
                sys.stdout.flush()
                last = text[-1]
        elif event.event == "logs":
            err_console.print(event.data, highlight=False, markup=False, style="dim")
    if last != "\n":
        sys.stdout.write("\n")


def _print_output(p: PredictionRead) -> None:
    out = p.output
    if p.status == "succeeded":
        if isinstance(out, str):
            sys.stdout.write(out + ("" if out.endswith("\n") else "\n"))
        elif isinstance(out, list) and all(isinstance(x, str) for x in out):
            sys.stdout.write("".join(out) + "\n")  # a generator's tokens, as they were produced
        else:
            sys.stdout.write(json.dumps(out, indent=2) + "\n")


def _exit_for(p: PredictionRead) -> None:
    if p.status == "succeeded":
        return
    if p.status not in TERMINAL:
        fail(f"prediction {p.id} is still {p.status}; `gpufleet predictions show {p.id}`", EXIT_TIMEOUT)
    fail(f"prediction {p.id} {p.status}" + (f": {p.error}" if p.error else ""), EXIT_UNSUCCESSFUL)


# ------------------------------------------------------------------------------ predictions ...


def _row(p: PredictionRead) -> dict[str, Any]:
    t = p.metrics.get("predict_time")
    return {
        "id": p.id,
        "model": p.model + (f" ({p.deployment})" if p.deployment else ""),
        "status": p.status,
        "created_at": f"{p.created_at:%Y-%m-%d %H:%M:%S}",
        "predict_time": f"{t:.3f} s" if isinstance(t, int | float) else "-",
        "source": p.source,
    }


def _resolve(c: Client, text: str) -> UUID:
    return resolve_local(
        text, "prediction", lambda: ((UUID(p.id), p.model) for p in c.list_predictions(limit=MAX_PAGE).results)
    )


@predictions.command("list")
def list_predictions(
    limit: int = typer.Option(50, "--limit", min=1, max=MAX_PAGE, help="How many, newest first."),
    as_json: bool = JsonOpt,
    wide: bool = WideOpt,
) -> None:
    """The organization's predictions, newest first."""
    empty = "no predictions yet: `gpufleet predict ORG/NAME -i key=value`"
    show_list(
        lambda c: c.list_predictions(limit=limit).results, as_json, _row, PREDICTION_COLUMNS, empty=empty, wide=wide
    )


@predictions.command("show")
def show_prediction(prediction_id: str = id_arg("prediction"), as_json: bool = JsonOpt) -> None:
    """One prediction: status, input, output, error, logs and timings."""
    with client() as c:
        p = c.get_prediction(_resolve(c, prediction_id))
    if as_json:
        show(p, True)
        return
    console.print(f"[bold]{p.id}[/bold]  {p.model}  {p.status}", highlight=False)
    console.print(f"version: {p.version}; created {p.created_at:%Y-%m-%d %H:%M:%S}", highlight=False)
    console.print(f"input: {json.dumps(p.input)}", highlight=False, markup=False)
    metrics = ", ".join(f"{k} {v:.3f} s" if isinstance(v, float) else f"{k} {v}" for k, v in p.metrics.items())
    if metrics:
        console.print(f"metrics: {metrics}", highlight=False)
    if p.error:
        console.print(f"[red]error:[/red] {p.error}", highlight=False)
    if p.output is not None:
        console.print("output:", highlight=False)
        _print_output(p.model_copy(update={"status": "succeeded"}))
    if p.logs:
        console.print("logs:", highlight=False)
        console.print(p.logs.rstrip("\n"), highlight=False, markup=False)


@predictions.command("cancel")
def cancel_prediction(prediction_id: str = id_arg("prediction"), as_json: bool = JsonOpt) -> None:
    """Cancel: at once while queued; a running one is stopped by its worker."""
    with client() as c:
        p = c.cancel_prediction(_resolve(c, prediction_id))
    requested = p.status == "processing"
    show_lines(
        p,
        as_json,
        f"prediction {p.id}: cancel requested; its worker stops it" if requested else f"prediction {p.id} {p.status}",
    )


# ------------------------------------------------------------------------------ deployments ...


def _deployment_row(d: DeploymentRead) -> dict[str, Any]:
    r = d.current_release
    cfg = r.configuration
    ready = sum(1 for x in d.replicas if x.status == "ready")
    return {
        "deployment": f"{d.owner}/{d.name}",
        "release": r.number,
        "version": r.version[:12],
        "hardware": cfg.hardware,
        "scale": f"{cfg.min_instances}-{cfg.max_instances}",
        "replicas": f"{ready} ready / {len(d.replicas)}",
        "queued": d.queued,
    }


def _scaling(
    version: str | None, hardware: str | None, min_instances: int | None, max_instances: int | None, idle: int | None
) -> dict[str, Any]:
    fields = {"version": version, "hardware": hardware, "min_instances": min_instances,
              "max_instances": max_instances, "idle_timeout_s": idle}  # fmt: skip
    return present(fields)


VersionOpt = typer.Option(None, "--version", help="The version id (default: the model's latest).")
HardwareOpt = typer.Option(None, "--hardware", help="'1x GPU', '0.5 GPU', '2x A100 >=40 GiB', 'CPU'...")
MinOpt = typer.Option(None, "--min", min=0, max=100, help="Replicas kept running (0: scale to zero).")
MaxOpt = typer.Option(None, "--max", min=1, max=100, help="Most replicas at once.")
IdleOpt = typer.Option(None, "--idle-timeout", min=1, max=86400, help="Seconds idle before a replica is drained.")


@deployments.command("create")
def create_deployment(
    ref: str = RefArg,
    model: str = typer.Option(..., "--model", "-m", metavar="ORG/MODEL", help="The model it serves."),
    version: str = VersionOpt,
    hardware: str = HardwareOpt,
    min_instances: int = MinOpt,
    max_instances: int = MaxOpt,
    idle_timeout: int = IdleOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a deployment of a model version (admins)."""
    owner, name = _split(ref)
    with client() as c:
        fields = _scaling(version, hardware, min_instances, max_instances, idle_timeout)
        d = c.create_deployment(name, model, owner=owner, **fields)
    _done(d, as_json, "created")


@deployments.command("update")
def update_deployment(
    ref: str = RefArg,
    version: str = VersionOpt,
    hardware: str = HardwareOpt,
    min_instances: int = MinOpt,
    max_instances: int = MaxOpt,
    idle_timeout: int = IdleOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Change a deployment; a new version or hardware rolls its replicas one by one (admins)."""
    _split(ref)
    fields = _scaling(version, hardware, min_instances, max_instances, idle_timeout)
    if not fields:
        usage("nothing to change: give --version, --hardware, --min, --max or --idle-timeout")
    with client() as c:
        d = c.update_deployment(ref, **fields)
    _done(d, as_json, "updated")


def _split(ref: str) -> tuple[str, str]:
    try:
        return split_ref(ref)
    except InvalidInput as exc:
        usage(exc.message)


def _done(d: DeploymentRead, as_json: bool, what: str) -> None:
    r = d.current_release
    show_lines(
        d,
        as_json,
        f"deployment {d.owner}/{d.name}{' ' + what if what else ''}: release {r.number}, {r.model} {r.version[:12]}, "
        f"{r.configuration.hardware}, {r.configuration.min_instances}-{r.configuration.max_instances} replicas",
    )


@deployments.command("list")
def list_deployments(as_json: bool = JsonOpt) -> None:
    """The organization's deployments (models' own ones too), newest first."""
    empty = "no deployments yet: `gpufleet deployments create ORG/NAME --model ORG/MODEL`"
    show_list(Client.list_deployments, as_json, _deployment_row, DEPLOYMENT_COLUMNS, empty=empty)


@deployments.command("show")
def show_deployment(ref: str = RefArg, as_json: bool = JsonOpt, wide: bool = WideOpt) -> None:
    """One deployment: its release, its replicas and its queue."""
    _split(ref)
    with client() as c:
        d = c.get_deployment(ref)
    if as_json:
        emit_json(d.model_dump(mode="json"))
        return
    _done(d, False, "(implicit: the model's own)" if d.implicit else "")
    console.print(f"queued: {d.queued}; crashes in a row: {d.failures}", highlight=False)
    if d.replicas:
        rows = [
            {"id": str(r.id), "status": r.status, "release": r.release, "host_id": str(r.host_id or "-"),
             "in_flight": f"{r.in_flight}/{r.slots}", "setup": f"{r.setup_s:.1f} s" if r.setup_s is not None else "-"}
            for r in d.replicas
        ]  # fmt: skip
        show(rows, False, ["id", "status", "release", "host_id", "in_flight", "setup"], wide=wide)


@deployments.command("delete")
def delete_deployment(ref: str = RefArg, yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask.")) -> None:
    """Delete a deployment: its replicas stop; its queued and running predictions fail (admins)."""
    _split(ref)
    if not yes and not typer.confirm(f"delete deployment {ref}?"):
        raise typer.Abort()
    with client() as c:
        c.delete_deployment(ref)
    console.print(f"deployment {ref} deleted", highlight=False)
