"""`gpufleet models ...` and `gpufleet files ...`: Cog models, their versions, and uploaded files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import typer

from gpufleet.cli.common import console, fail, usage
from gpufleet.cli.remote import JsonOpt, WideOpt, client, id_arg, resolve_local, show, show_lines, show_list
from gpufleet.domain.models import split_ref
from gpufleet.errors import InvalidInput
from gpufleet.inference.validate import input_properties
from gpufleet.schemas.models import FileRead, ModelRead, VersionRead
from gpufleet.sdk import Client
from gpufleet.sdk.base import present
from gpufleet.sdk.errors import NotFound
from gpufleet.sdk.models import pack_model

models = typer.Typer(help="Cog models and their versions (push a directory, read its schema).", no_args_is_help=True)
files = typer.Typer(help="Uploaded files: prediction inputs, and outputs kept until they expire.", no_args_is_help=True)
MODEL_COLUMNS = ["model", "latest_version", "hardware", "runs", "updated_at"]
VERSION_COLUMNS = ["version", "created_at", "size", "packages", "generator"]
FILE_COLUMNS = ["id", "name", "content_type", "size", "expires_at"]

RefArg = typer.Argument(..., metavar="ORG/NAME", help="The model: the organization's slug, a slash, its name.")


def register(app: typer.Typer) -> None:
    app.add_typer(models, name="models")
    app.add_typer(files, name="files")


def _ref(text: str) -> str:
    try:
        split_ref(text)
    except InvalidInput as exc:
        usage(exc.message)
    return text


def _model_row(m: ModelRead) -> dict[str, Any]:
    return {
        "model": f"{m.owner}/{m.name}",
        "latest_version": m.latest_version.id[:12] if m.latest_version else "-",
        "hardware": m.hardware.label,
        "runs": m.run_count,
        "updated_at": f"{m.updated_at:%Y-%m-%d %H:%M}",
    }


def _version_row(v: VersionRead, wide: bool = False) -> dict[str, Any]:
    return {
        "version": v.id if wide else v.id[:12],
        "created_at": f"{v.created_at:%Y-%m-%d %H:%M:%S}",
        "size": _size(v.archive_size),
        "packages": ", ".join(v.python_packages) or "-",
        "generator": "yes" if v.is_generator else "no",
    }


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _hardware(gpus: int | None, gpu_fraction: float | None, min_memory_gb: float | None,
              gpu_model: list[str] | None, cpu: float | None, ram_gb: float | None) -> dict[str, Any]:  # fmt: skip
    if gpus is not None and gpu_fraction is not None:
        usage("--gpus and --gpu-fraction exclude each other")
    if gpus == 0 and (gpu_model or min_memory_gb):
        usage("--gpus 0 takes no --gpu-model or --min-memory-gb")
    fields = {"gpus": gpus, "gpu_fraction": gpu_fraction, "min_memory_gb": min_memory_gb,
              "gpu_model": gpu_model or None, "cpu": cpu, "ram_gb": ram_gb}  # fmt: skip
    return present(fields)


GpusOpt = typer.Option(None, "--gpus", min=0, max=64, help="Whole GPUs per replica (0: CPU only; default 1).")
FractionOpt = typer.Option(None, "--gpu-fraction", min=0.001, max=1.0, help="A share of one GPU per replica.")
MemoryOpt = typer.Option(None, "--min-memory-gb", min=0, help="Least GPU memory, GiB.")
GpuModelOpt = typer.Option(None, "--gpu-model", help="An acceptable GPU model (part of its name); repeat.")
CpuOpt = typer.Option(None, "--cpus", min=0, help="CPU cores per replica.")
RamOpt = typer.Option(None, "--ram-gb", min=0, help="Memory per replica, GiB.")


@models.command("create")
def create(
    ref: str = RefArg,
    gpus: int = GpusOpt,
    gpu_fraction: float = FractionOpt,
    min_memory_gb: float = MemoryOpt,
    gpu_model: list[str] = GpuModelOpt,
    cpus: float = CpuOpt,
    ram_gb: float = RamOpt,
    description: str = typer.Option("", "--description", help="What the model does."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a model; its hardware is what each replica of it asks for (admins)."""
    owner, name = split_ref(_ref(ref))
    hardware = _hardware(gpus, gpu_fraction, min_memory_gb, gpu_model, cpus, ram_gb)
    with client() as c:
        m = c.create_model(name, owner=owner, description=description, **hardware)
    show_lines(
        m,
        as_json,
        f"model {m.owner}/{m.name} created ({m.hardware.label}); push a version with:",
        f"  gpufleet models push DIR {m.owner}/{m.name}",
    )


@models.command("push")
def push(
    directory: Path = typer.Argument(..., help="The model directory: cog.yaml, predict.py and what they need."),
    ref: str = RefArg,
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print the version id alone."),
    as_json: bool = JsonOpt,
) -> None:
    """Upload the directory as a new version (the same content again gives the same version); the
    first push of a name creates the model."""
    ref = _ref(ref)
    if not directory.is_dir():
        fail(f"{directory}: not a directory")
    try:
        data, info = pack_model(directory)
    except InvalidInput as exc:
        fail(f"{directory}: {exc.message}")
    except OSError as exc:
        fail(f"{directory}: {exc.strerror or exc}")
    with client() as c:
        try:
            c.get_model(ref)
        except NotFound:
            # First push of a name: the model is created with the hardware cog.yaml implies (one GPU
            # when build.gpu is true, else none); `gpufleet models update` changes it later.
            c.create_model(ref.split("/", 1)[1], owner=ref.split("/", 1)[0], gpus=1 if info.gpu else 0)
            if not quiet and not as_json:
                console.print(
                    f"created model {ref} ({'1 GPU' if info.gpu else 'CPU only'} per replica)", highlight=False
                )
        version, created = c.push_model_archive(ref, data)
    if as_json:
        show(version, True)
        return
    if quiet:
        sys.stdout.write(version.id + "\n")
        return
    state = "new" if created else "unchanged: pushed before, now the latest again"
    inputs = ", ".join(input_properties(info.openapi_schema)[0]) or "none"
    console.print(f"{ref} version {version.id} ({state}; {_size(len(data))})", highlight=False)
    console.print(f"inputs: {inputs}; output: {_output(version)}", highlight=False)


def _output(v: VersionRead) -> str:
    out = v.openapi_schema.get("components", {}).get("schemas", {}).get("Output", {})
    if out.get("x-cog-array-type") == "iterator":
        return f"a stream of {_type(out.get('items', {}))}"
    return _type(out)


def _type(schema: dict[str, Any]) -> str:
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if schema.get("format") == "uri":
        return "file"
    return str(schema.get("type", "any"))


@models.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """The organization's models, newest first."""
    empty = "no models yet: `gpufleet models create ORG/NAME`, then `gpufleet models push DIR ORG/NAME`"
    show_list(Client.list_models, as_json, _model_row, MODEL_COLUMNS, empty=empty)


@models.command("show")
def show_model(ref: str = RefArg, as_json: bool = JsonOpt) -> None:
    """One model: its hardware, its latest version and that version's inputs and output."""
    with client() as c:
        m = c.get_model(_ref(ref))
    if as_json:
        show(m, True)
        return
    console.print(f"[bold]{m.owner}/{m.name}[/bold]  {m.description}".rstrip(), highlight=False)
    console.print(f"hardware: {m.hardware.label}; runs: {m.run_count}", highlight=False)
    v = m.latest_version
    if v is None:
        console.print(f"no version yet: `gpufleet models push DIR {m.owner}/{m.name}`", highlight=False)
        return
    console.print(f"latest version: {v.id} ({v.created_at:%Y-%m-%d %H:%M}), output: {_output(v)}", highlight=False)
    props, required = input_properties(v.openapi_schema)
    rows = [
        {
            "input": name,
            "type": _type(p) + (" (one of " + ", ".join(map(str, p["enum"])) + ")" if "enum" in p else ""),
            "default": "required" if name in required else json.dumps(p.get("default")),
            "constraints": _constraints(p),
            "description": p.get("description", ""),
        }
        for name, p in props.items()
    ]
    if rows:
        show(rows, False, ["input", "type", "default", "constraints", "description"])


def _constraints(p: dict[str, Any]) -> str:
    parts = []
    for key, text in (("minimum", ">= {}"), ("maximum", "<= {}"), ("minLength", "len >= {}"),
                      ("maxLength", "len <= {}"), ("pattern", "matches {}")):  # fmt: skip
        if key in p:
            parts.append(text.format(p[key]))
    return ", ".join(parts)


@models.command("versions")
def versions(ref: str = RefArg, as_json: bool = JsonOpt, wide: bool = WideOpt) -> None:
    """The model's versions, newest first."""
    show_list(lambda c: c.list_model_versions(_ref(ref)), as_json, lambda v: _version_row(v, wide), VERSION_COLUMNS)


@models.command("update")
def update(
    ref: str = RefArg,
    gpus: int = GpusOpt,
    gpu_fraction: float = FractionOpt,
    min_memory_gb: float = MemoryOpt,
    gpu_model: list[str] = GpuModelOpt,
    cpus: float = CpuOpt,
    ram_gb: float = RamOpt,
    description: str = typer.Option(None, "--description", help="What the model does."),
    as_json: bool = JsonOpt,
) -> None:
    """Change the description, or the default hardware: any hardware option replaces it whole (admins)."""
    hardware = _hardware(gpus, gpu_fraction, min_memory_gb, gpu_model, cpus, ram_gb)
    if description is None and not hardware:
        usage("nothing to change: give --description or hardware options")
    with client() as c:
        m = c.update_model(_ref(ref), description=description, **hardware)
    show_lines(m, as_json, f"model {m.owner}/{m.name}: {m.hardware.label}; {m.description}".rstrip("; "))


@models.command("delete")
def delete(
    ref: str = RefArg,
    version: str = typer.Option(None, "--version", help="Delete only this version (its whole id)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete a model and all its versions, or one version (admins)."""
    ref = _ref(ref)
    what = f"version {version} of {ref}" if version else f"model {ref} and all its versions"
    if not yes and not typer.confirm(f"delete {what}?"):
        raise typer.Abort()
    with client() as c:
        if version:
            c.delete_model_version(ref, version)
        else:
            c.delete_model(ref)
    console.print(f"deleted {what}", highlight=False)


# -- files --------------------------------------------------------------------------------


def _file_id(c: Client, text: str) -> UUID:
    return resolve_local(text, "file", lambda: ((UUID(f.id), f.name) for f in c.list_files()))


def _file_row(f: FileRead) -> dict[str, Any]:
    return {
        "id": f.id,
        "name": f.name,
        "content_type": f.content_type,
        "size": _size(f.size),
        "expires_at": f"{f.expires_at:%Y-%m-%d %H:%M}",
    }


@files.command("upload")
def upload(
    path: Path = typer.Argument(..., help="The file to upload."),
    metadata: str = typer.Option(None, "--metadata", help="A JSON object kept with the file."),
    content_type: str = typer.Option(None, "--type", help="Its content type (default: guessed from the name)."),
    as_json: bool = JsonOpt,
) -> None:
    """Upload a file; pass the printed URL as a prediction input."""
    if not path.is_file():
        fail(f"{path}: not a file")
    meta = None
    if metadata:
        try:
            meta = json.loads(metadata)
        except ValueError:
            usage("--metadata must be a JSON object")
        if not isinstance(meta, dict):
            usage("--metadata must be a JSON object")
    with client() as c:
        f = c.upload_file(path, content_type=content_type, metadata=meta)
    if as_json:
        show(f, True)
        return
    console.print(f"file {f.id} ({_size(f.size)}, expires {f.expires_at:%Y-%m-%d %H:%M} UTC)", highlight=False)
    console.print(f.urls["get"], highlight=False, soft_wrap=True)


@files.command("list")
def list_files(as_json: bool = JsonOpt, wide: bool = WideOpt) -> None:
    """Files that have not expired, newest first."""
    show_list(Client.list_files, as_json, _file_row, FILE_COLUMNS, wide=wide)


@files.command("show")
def show_file(file_id: str = id_arg("file"), as_json: bool = JsonOpt) -> None:
    """One file's name, type, size, checksum and URL."""
    with client() as c:
        f = c.get_file(_file_id(c, file_id))
    show(f, as_json, ["id", "name", "content_type", "size", "etag", "expires_at"], wide=True)
    if not as_json:
        console.print(f.urls["get"], highlight=False, soft_wrap=True)


@files.command("download")
def download(
    file_id: str = id_arg("file"),
    output: Path = typer.Option(None, "-o", "--output", help="Where to write it (default: its name; - for stdout)."),
) -> None:
    """Write a file's bytes to disk (or stdout)."""
    with client() as c:
        fid = _file_id(c, file_id)
        meta = c.get_file(fid)
        data = c.download_file(fid)
    if output is not None and str(output) == "-":
        sys.stdout.buffer.write(data)
        return
    target = output or Path(meta.name)
    target.write_bytes(data)
    console.print(f"wrote {target} ({_size(len(data))})", highlight=False)


@files.command("delete")
def delete_file(file_id: str = id_arg("file")) -> None:
    """Delete a file now, before it expires."""
    with client() as c:
        fid = _file_id(c, file_id)
        c.delete_file(fid)
    console.print(f"deleted file {fid}", highlight=False)
