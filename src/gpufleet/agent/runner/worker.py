"""The Model Runner's worker: one process per replica that loads a Cog predictor, calls ``setup()``
once and serves predictions to the agent over a Unix socket, one JSON object per line.

It runs in the model's environment (which has ``cog`` but need not have gpufleet's other
dependencies), as the replica job's user, started by path: **standard library and cog only**.

    python -u worker.py --socket worker.sock --src DIR --ref predict.py:Predictor [--concurrency N]

The socket lives in the replica's working directory (0700, the job user's), so only that user and
the agent (root) can connect. It outlives the agent: a restarted agent connects again and the
worker says where it stands (``status``), replays what it could not send meanwhile and repeats
every ``done`` until the agent acknowledges it. Protocol (docs/agent.md, "Worker protocol"):

    agent -> worker   {"type": "predict", "id", "input"} | {"type": "cancel", "id"} | {"type": "ack", "id"}
                      | {"type": "shutdown"}
    worker -> agent   {"type": "status", "state": "starting|ready|failed", "setup_s", "concurrency", "error",
                       "inflight": [id...], "pid"} (on connect and on every change)
                      {"type": "log", "id", "text"} | {"type": "output", "id", "item"}
                      | {"type": "done", "id", "status": "succeeded|failed|canceled", "output"?, "error",
                         "predict_time"}

A ``cog.Path`` in an input or an output travels as ``{"$gpufleet_file": {"name", "content_type", "b64"}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import pathlib
import queue
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from types import ModuleType
from typing import Any


def _io_module() -> ModuleType:
    """worker_io, the sibling module. Run by path, this file's folder (the agent's own modules)
    leaves sys.path first, so a model cannot import them by accident."""
    if __package__:
        from gpufleet.agent.runner import worker_io

        return worker_io
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        sys.path.pop(0)
    spec = importlib.util.spec_from_file_location("gpufleet_worker_io", os.path.join(here, "worker_io.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look modules up by name
    spec.loader.exec_module(module)
    return module


wio = _io_module()
MAX_LINE_BYTES = 256 * 1024 * 1024  # one message from the agent (inputs carry files as base64)
OUTBOX_BYTES = 64 * 1024 * 1024  # kept while no agent is connected; the oldest logs go first


class Canceled(BaseException):
    """Stand-in for cog's CancelationException in an older cog that lacks it."""


def _cancel_exception() -> type[BaseException]:
    try:
        import cog

        return getattr(cog, "CancelationException", Canceled)
    except ImportError:
        return Canceled


# -- the worker ----------------------------------------------------------------------------------


class Worker:
    def __init__(self, sock_path: str, src: str, ref: str, concurrency: int) -> None:
        self.sock_path, self.src, self.ref, self.requested = sock_path, src, ref, max(1, concurrency)
        self.concurrency = 1
        self.lock = threading.RLock()  # guards the connection, the outbox, the unacknowledged dones
        self.conn: socket.socket | None = None
        self.outbox: deque[bytes] = deque()
        self.outbox_bytes = 0
        self.unacked: dict[str, bytes] = {}
        self.state = "starting"
        self.setup_s: float | None = None
        self.error: str | None = None
        self.inflight: dict[str, Any] = {}  # id -> the task (async) or None (sync)
        self.canceled: set[str] = set()
        self.requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.aqueue: asyncio.Queue[dict[str, Any] | None] | None = None
        self.running: str | None = None  # sync mode: the prediction in predict() now
        self.in_predict = False
        self.cancel_exc = _cancel_exception()
        self.fn: Any = None
        self.capture: Any = None  # worker_io.FdCapture
        self.main_ident = threading.get_ident()
        self.workdir = pathlib.Path.cwd()  # the replica's own: inputs' files go under it

    # -- the connection ------------------------------------------------------------------------

    def listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock_path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.sock_path)
        server.listen(4)
        threading.Thread(target=self._accept, args=(server,), daemon=True, name="accept").start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            conn, _ = server.accept()
            with self.lock:
                if self.conn is not None:
                    with contextlib.suppress(OSError):
                        self.conn.close()
                self.conn = conn
                backlog, self.outbox, self.outbox_bytes = list(self.outbox), deque(), 0
                self._send_line(self._status_line())
                for line in backlog:
                    self._send_line(line)
                for line in list(self.unacked.values()):
                    self._send_line(line, keep=False)
            threading.Thread(target=self._read, args=(conn,), daemon=True, name="reader").start()

    def _status_line(self) -> bytes:
        status: dict[str, Any] = {"type": "status", "state": self.state, "setup_s": self.setup_s}
        status.update(concurrency=self.concurrency, error=self.error, pid=os.getpid())
        status["inflight"] = sorted(set(self.inflight) | set(self.unacked))
        return (json.dumps(status) + "\n").encode()

    def _send_line(self, line: bytes, *, keep: bool = True) -> None:
        if self.conn is not None:
            try:
                self.conn.sendall(line)
                return
            except OSError:
                self.conn = None
        if not keep:
            return
        self.outbox.append(line)
        self.outbox_bytes += len(line)
        while self.outbox_bytes > OUTBOX_BYTES and self.outbox:
            self.outbox_bytes -= len(self.outbox.popleft())

    def send(self, message: dict[str, Any]) -> None:
        line = (json.dumps(message) + "\n").encode()
        done = message["type"] == "done"
        with self.lock:
            if done:  # repeated to every new connection until acknowledged
                self.unacked[message["id"]] = line
            self._send_line(line, keep=not done)

    def status_changed(self) -> None:
        with self.lock:
            if self.conn is not None:
                self._send_line(self._status_line())

    def _read(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        try:
            while line := f.readline(MAX_LINE_BYTES + 1):
                if not line.endswith(b"\n"):
                    raise ValueError("message over the size limit")
                self.handle(json.loads(line))
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"gpufleet worker: connection to the agent lost: {exc}\n")
        with self.lock:
            if self.conn is conn:
                self.conn = None

    def handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "predict":
            with self.lock:  # against setup() moving queued requests to the event loop
                self.inflight.setdefault(str(msg["id"]), None)
                if self.loop is not None and self.aqueue is not None:
                    self.loop.call_soon_threadsafe(self.aqueue.put_nowait, msg)
                else:
                    self.requests.put(msg)
        elif kind == "cancel":
            self.cancel(str(msg["id"]))
        elif kind == "ack":
            with self.lock:
                self.unacked.pop(str(msg["id"]), None)
        elif kind == "shutdown":
            with self.lock:
                self._shutdown()

    def _shutdown(self) -> None:
        if self.loop is not None and self.aqueue is not None:
            self.loop.call_soon_threadsafe(self.aqueue.put_nowait, None)
        else:
            self.requests.put(None)

    def cancel(self, pid: str) -> None:
        if pid not in self.inflight:
            return
        self.canceled.add(pid)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._cancel_task, pid)
        elif self.running == pid and self.in_predict:
            signal.pthread_kill(self.main_ident, signal.SIGUSR1)  # as Cog does: raise in the predict

    def _cancel_task(self, pid: str) -> None:
        task = self.inflight.get(pid)
        if task is not None:
            task.cancel()

    def _on_sigusr1(self, signum: int, frame: Any) -> None:
        if self.in_predict and self.running in self.canceled:
            raise self.cancel_exc("prediction canceled")

    # -- setup -----------------------------------------------------------------------------------

    def load(self) -> Any:
        """Copy the model's files into the working directory (its own, writable, like Cog's /src),
        import the predictor and return it."""
        here = pathlib.Path.cwd() / "src"
        shutil.rmtree(here, ignore_errors=True)
        shutil.copytree(self.src, here, symlinks=True)
        os.chdir(here)
        sys.path.insert(0, str(here))
        module_path, _, class_name = self.ref.partition(":")
        name = os.path.basename(module_path).removesuffix(".py")
        spec = importlib.util.spec_from_file_location(name, here / module_path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {module_path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        target = getattr(module, class_name or "Predictor")
        predictor: Any = target() if inspect.isclass(target) else None
        if predictor is None:
            self.fn = target
            return None
        cls = type(predictor)
        own_run = any("run" in c.__dict__ for c in cls.__mro__ if c.__module__ not in ("cog.predictor", "builtins"))
        self.fn = predictor.run if own_run else predictor.predict
        return predictor

    def setup(self) -> None:
        started = time.perf_counter()
        loop = None
        try:
            predictor = self.load()
            is_async = inspect.iscoroutinefunction(self.fn) or inspect.isasyncgenfunction(self.fn)
            declared = getattr(self.fn, "__cog_concurrent_max__", None)
            self.concurrency = min(self.requested, declared or self.requested) if is_async else 1
            loop = asyncio.new_event_loop() if is_async else None
            if predictor is not None and hasattr(predictor, "setup"):
                kwargs = {}
                if "weights" in inspect.signature(predictor.setup).parameters:
                    kwargs["weights"] = os.environ.get("COG_WEIGHTS")
                result = predictor.setup(**kwargs)
                if inspect.isawaitable(result):  # async setup: on the loop the predictions will use
                    (loop or asyncio.new_event_loop()).run_until_complete(_awaited(result))
        except BaseException as exc:
            traceback.print_exc()
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            self.status_changed()
            return
        self.setup_s = time.perf_counter() - started
        self.state = "ready"
        if loop is not None:
            with self.lock:
                self.aqueue = asyncio.Queue()
                self.loop = loop
                while not self.requests.empty():  # predictions sent during setup
                    self.aqueue.put_nowait(self.requests.get())
        elif self.concurrency == 1:
            self.capture = wio.FdCapture(self.send)
        self.status_changed()

    # -- predictions -----------------------------------------------------------------------------

    def serve_sync(self) -> None:
        signal.signal(signal.SIGUSR1, self._on_sigusr1)
        while (msg := self.requests.get()) is not None:
            pid = str(msg["id"])
            token = wio.current.set(pid)
            outcome = _Outcome()
            try:
                if pid in self.canceled:
                    raise self.cancel_exc("prediction canceled")
                kwargs = wio.coerce_inputs(self.fn, msg.get("input") or {}, self._inputs_dir(pid))
                self.running, self.in_predict = pid, True
                if pid in self.canceled:  # canceled while its input was being prepared
                    raise self.cancel_exc("prediction canceled")
                if self.capture is not None:
                    self.capture.owner = pid
                outcome.started = time.perf_counter()
                result = self.fn(**kwargs)
                if inspect.isgenerator(result) or (hasattr(result, "__next__") and not isinstance(result, str)):
                    for item in result:
                        self.in_predict = False
                        self.send({"type": "output", "id": pid, "item": wio.encode_output(item)})
                        if pid in self.canceled:
                            raise self.cancel_exc("prediction canceled")
                        self.in_predict = True
                else:
                    self.in_predict = False
                    outcome.output = wio.encode_output(result)
            except BaseException as exc:
                self.in_predict = False
                if isinstance(exc, self.cancel_exc | KeyboardInterrupt) and pid in self.canceled:
                    outcome.status = "canceled"
                else:
                    traceback.print_exc()
                    outcome.failed(exc)
            finally:
                self.in_predict = False
            self._finish(pid, outcome)
            wio.current.reset(token)
        self.drain_and_exit()

    def _inputs_dir(self, pid: str) -> pathlib.Path:
        """Where a prediction's input files are written; ``_finish`` removes it."""
        return self.workdir / "inputs" / pid

    def _finish(self, pid: str, outcome: _Outcome) -> None:
        elapsed = time.perf_counter() - outcome.started  # the clock stops before output is flushed
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        if self.capture is not None:
            self.capture.settle()
        shutil.rmtree(self._inputs_dir(pid), ignore_errors=True)
        done = {
            "type": "done",
            "id": pid,
            "status": outcome.status,
            "error": outcome.error,
            "predict_time": round(elapsed, 6),
        }
        if outcome.output is not None:
            done["output"] = outcome.output
        self.send(done)
        self.running = None
        self.canceled.discard(pid)
        self.inflight.pop(pid, None)

    async def serve_async(self) -> None:
        assert self.aqueue is not None
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        while (msg := await self.aqueue.get()) is not None:
            await slots.acquire()
            task = asyncio.create_task(self._predict_async(msg, slots))
            self.inflight[str(msg["id"])] = task
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)

    async def _predict_async(self, msg: dict[str, Any], slots: asyncio.Semaphore) -> None:
        pid = str(msg["id"])
        wio.current.set(pid)
        outcome = _Outcome()
        try:
            if pid in self.canceled:
                raise asyncio.CancelledError
            raw = msg.get("input") or {}
            kwargs = await asyncio.to_thread(wio.coerce_inputs, self.fn, raw, self._inputs_dir(pid))
            outcome.started = time.perf_counter()
            if inspect.isasyncgenfunction(self.fn):
                async for item in self.fn(**kwargs):
                    self.send({"type": "output", "id": pid, "item": wio.encode_output(item)})
            else:
                outcome.output = wio.encode_output(await self.fn(**kwargs))
        except (asyncio.CancelledError, self.cancel_exc, KeyboardInterrupt) as exc:
            if pid in self.canceled:
                outcome.status = "canceled"
            else:
                outcome.failed(exc)
        except Exception as exc:
            traceback.print_exc()
            outcome.failed(exc)
        finally:
            slots.release()
        self._finish(pid, outcome)

    def drain_and_exit(self) -> None:
        """After a shutdown: give a disconnected agent up to 30 s to collect what is still unsent."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.lock:
                if self.conn is not None and not self.outbox:
                    return
            time.sleep(0.05)


class _Outcome:
    """What one prediction came to, as its ``done`` message says it: succeeded unless marked."""

    def __init__(self) -> None:
        self.status = "succeeded"
        self.output: Any = None
        self.error: str | None = None
        self.started = time.perf_counter()  # from the prediction's arrival until predict() itself starts

    def failed(self, exc: BaseException) -> None:
        self.status, self.error = "failed", _error_text(exc)


def _error_text(exc: BaseException) -> str:
    """A failed prediction's ``error``: the exception's message, or its type when it has none."""
    return str(exc) or type(exc).__name__


async def _awaited(result: Any) -> Any:
    return await result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gpufleet's Model Runner worker (started by the agent)")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args(argv)
    worker = Worker(args.socket, args.src, args.ref, args.concurrency)  # bound before any chdir: short
    sys.stdout, sys.stderr = wio.Tee(worker.send, 1), wio.Tee(worker.send, 2)
    worker.listen()
    worker.setup()
    if worker.state == "failed":
        worker.drain_and_exit()
        return 1
    if worker.loop is not None:
        worker.loop.run_until_complete(worker.serve_async())
        worker.drain_and_exit()
    else:
        worker.serve_sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
