"""The worker's inputs, outputs and captured output (runner/worker.py): standard library and cog only,
since it runs in the model's environment. A ``cog.Path`` travels between the agent and the worker as
``{"$gpufleet_file": {"name", "content_type", "b64"}}``: the worker reads and writes files as the
replica's user, so the agent never opens a path a model named.
"""

from __future__ import annotations

import base64
import codecs
import contextvars
import dataclasses
import inspect
import io
import math
import mimetypes
import os
import pathlib
import threading
import typing
from collections.abc import Callable
from typing import Any

FILE_KEY = "$gpufleet_file"
MAX_FILE_BYTES = 100 * 1024 * 1024  # one Path output, read whole into a message
Send = Callable[[dict[str, Any]], None]
current: contextvars.ContextVar[str | None] = contextvars.ContextVar("gpufleet_prediction", default=None)


def coerce_inputs(fn: Any, raw: dict[str, Any], files_dir: pathlib.Path) -> dict[str, Any]:
    """The keyword arguments of ``fn`` from a prediction's (validated) input, typed per its signature."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # forward references the module cannot resolve: use what is annotated
        hints = getattr(fn, "__annotations__", {})
    kwargs: dict[str, Any] = {}
    params = inspect.signature(fn).parameters
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in raw:
            kwargs[name] = _coerce(raw[name], hints.get(name), files_dir, f"input.{name}")
            continue
        default = p.default
        if type(default).__name__ == "FieldInfo" and hasattr(default, "description"):
            default = default.default  # cog.Input(...)
        if default is p.empty:
            raise ValueError(f"input.{name}: required")
        kwargs[name] = default
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs.update({k: _coerce(v, None, files_dir, f"input.{k}") for k, v in raw.items() if k not in kwargs})
    return kwargs


def _coerce(value: Any, tp: Any, files_dir: pathlib.Path, where: str) -> Any:
    if isinstance(value, dict) and FILE_KEY in value:
        value = _write_input_file(value[FILE_KEY], files_dir)
        if tp is None:
            return str(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        return None
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], files_dir, where) if len(inner) == 1 else value
    if origin in (list, typing.List) and isinstance(value, list):  # noqa: UP006 - List[...] annotations
        item = args[0] if args else None
        return [_coerce(v, item, files_dir, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type):
        if issubclass(tp, pathlib.Path):
            import cog

            path = cog.Path.validate(value)
            return path.convert() if hasattr(path, "convert") else path
        if tp.__name__ == "Secret" and isinstance(value, str):
            return tp(value)  # type: ignore[call-arg]  # cog.Secret(value)
        if tp.__name__ == "File" and hasattr(tp, "validate"):
            return tp.validate(str(value))
        if tp is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return value


def _write_input_file(meta: dict[str, Any], files_dir: pathlib.Path) -> pathlib.Path:
    files_dir.mkdir(parents=True, exist_ok=True)
    name = os.path.basename(str(meta.get("name") or "file")).lstrip(".") or "file"
    path = files_dir / name
    n = 1
    while path.exists():
        path, n = files_dir / f"{n}-{name}", n + 1
    path.write_bytes(base64.b64decode(meta.get("b64", "")))
    import cog

    local: pathlib.Path = cog.Path(path)
    return local


def encode_output(value: Any, depth: int = 0) -> Any:
    """A predictor's output as JSON: Path/File become file markers the agent uploads."""
    if depth > 64:
        raise ValueError("output nested too deep")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"output holds {value}: JSON has no NaN or Infinity")
        return value
    if isinstance(value, pathlib.Path):
        if hasattr(value, "convert"):  # a URLPath given back as an output
            value = value.convert()
        return _file_marker(os.path.basename(str(value)), pathlib.Path(value).read_bytes, str(value))
    if isinstance(value, io.IOBase):
        name = os.path.basename(str(getattr(value, "name", "") or "output"))
        return _file_marker(name, value.read, name)
    if isinstance(value, dict):
        return {str(k): encode_output(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode_output(v, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode_output(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    for method in ("model_dump", "dict", "tolist", "item"):  # pydantic v2 / v1, numpy arrays and scalars
        if callable(getattr(value, method, None)):
            return encode_output(getattr(value, method)(), depth + 1)
    if type(value).__name__ == "Secret":
        return str(value)
    raise TypeError(f"cannot return a {type(value).__name__} as output")


def _file_marker(name: str, read: Any, where: str) -> dict[str, Any]:
    data = read()
    if isinstance(data, str):
        data = data.encode()
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"output file {where} is {len(data)} bytes, over the {MAX_FILE_BYTES} byte limit")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return {FILE_KEY: {"name": name or "output", "content_type": content_type, "b64": base64.b64encode(data).decode()}}


def _marker_prefix(data: bytes, mark: bytes) -> int:
    """The length of the longest end of ``data`` that begins ``mark``."""
    for n in range(min(len(data), len(mark) - 1), 0, -1):
        if data.endswith(mark[:n]):
            return n
    return 0


class FdCapture:
    """Output written to file descriptors 1 and 2 while a prediction runs (subprocesses, C code)
    goes to the job's log and to that prediction's logs. Python's own writes are teed directly
    (``Tee``); a marker written at the end of each prediction tells where its output ends."""

    MARK = b"\x00gpufleet-settle\x00"

    def __init__(self, send: Send) -> None:
        self.send = send
        self.owner: str | None = None
        self.settled = [threading.Event(), threading.Event()]
        for i, fd in enumerate((1, 2)):
            saved = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            threading.Thread(target=self._pump, args=(read_end, saved, i), daemon=True, name=f"fd{fd}").start()

    def _pump(self, read_end: int, out: int, i: int) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = b""
        while data := os.read(read_end, 65536):
            pending += data
            while True:
                at = pending.find(self.MARK)
                chunk = pending if at < 0 else pending[:at]
                if at < 0:  # keep back a tail that may be the start of a marker split across reads
                    chunk = pending[: len(pending) - _marker_prefix(pending, self.MARK)]
                if chunk:
                    os.write(out, chunk)
                    text = decoder.decode(chunk)
                    if text and self.owner is not None:
                        self.send({"type": "log", "id": self.owner, "text": text})
                pending = pending[len(chunk) :]
                if at < 0:
                    break
                pending = pending[len(self.MARK) :]
                self.settled[i].set()

    def settle(self) -> None:
        for i, fd in enumerate((1, 2)):
            self.settled[i].clear()
            os.write(fd, self.MARK)
        for event in self.settled:
            event.wait(1.0)
        self.owner = None


class Tee(io.TextIOBase):
    """sys.stdout / sys.stderr: the job's log, and the logs of the prediction running in this context."""

    def __init__(self, send: Send, fd: int) -> None:
        self.send, self.out = send, os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
        self.pending: dict[str, str] = {}

    def write(self, text: str) -> int:
        self.out.write(text)
        pid = current.get()
        if pid is not None:
            buf = self.pending.get(pid, "") + text
            if "\n" in buf:
                head, _, buf = buf.rpartition("\n")
                self.send({"type": "log", "id": pid, "text": head + "\n"})
            self.pending[pid] = buf
        return len(text)

    def flush(self) -> None:
        self.out.flush()
        pid = current.get()
        if pid is not None and self.pending.get(pid):
            self.send({"type": "log", "id": pid, "text": self.pending.pop(pid)})

    def fileno(self) -> int:
        return self.out.fileno()

    def isatty(self) -> bool:
        return False
