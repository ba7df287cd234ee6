"""The Model Runner's worker as a real process, spoken to over its socket as the agent does:
setup once, predictions with their logs, streaming, cancel, crash, files in and out, concurrency,
and a reconnect (what an agent restart looks like to the worker)."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpufleet.agent.runner.connection import WorkerConnection, WorkerGone
from gpufleet.agent.runner.envs import EnvCache

WORKER = Path(__file__).resolve().parents[2] / "src" / "gpufleet" / "agent" / "runner" / "worker.py"

MODEL = """
import asyncio, os, subprocess, sys, time
from cog import BasePredictor, Input, Path

class Predictor(BasePredictor):
    def setup(self):
        with open(os.path.join(os.environ["MARKS"], "setup"), "a") as f:
            f.write("x")
        self.prefix = open("prefix.txt").read().strip()   # relative to the model's directory, like Cog's /src

    def predict(self, text: str = Input(description="t"), n: int = Input(default=1, ge=1), mode: str = "echo",
                image: Path = Input(default=None)) -> Any:
        print("predicting", text)
        if mode == "echo":
            return f"{self.prefix}{text * n}"
        if mode == "fd":
            subprocess.run(["echo", "from a child"], check=True)
            os.write(2, b"raw stderr\\n")
            return "ok"
        if mode == "slow":
            for _ in range(1000):
                time.sleep(0.01)
            return "finished"
        if mode == "crash":
            sys.stdout.flush()
            os._exit(3)
        if mode == "fail":
            raise ValueError("bad input, says the model")
        if mode == "file-out":
            out = Path("out.txt")   # written in the working directory, like a Cog model does
            out.write_text("made " + text)
            return out
        if mode == "file-in":
            return image.read_text()
        if mode == "float":
            return n * 1.5
""".replace("-> Any", "")

GENERATOR = """
import time
from cog import BasePredictor, ConcatenateIterator

class Predictor(BasePredictor):
    def predict(self, words: int = 3, delay: float = 0.0) -> ConcatenateIterator[str]:
        for i in range(words):
            print(f"token {i}")
            yield f"w{i} "
            time.sleep(delay)
"""

ASYNC = """
import asyncio
import cog

class Predictor(cog.BasePredictor):
    async def setup(self):
        self.lock = asyncio.Lock()

    @cog.concurrent(max=4)
    async def predict(self, delay: float = 0.3, tag: str = "") -> str:
        print("start", tag)
        await asyncio.sleep(delay)
        return tag
"""

BROKEN = """
from cog import BasePredictor

class Predictor(BasePredictor):
    def setup(self):
        raise RuntimeError("weights not found at /models/x")

    def predict(self) -> str:
        return "never"
"""


class Worker:
    """One worker process in its own session (as under the runtime's shim) and the agent's end."""

    def __init__(self, tmp: Path, source: str, *, concurrency: int = 1, extra: dict[str, str] | None = None) -> None:
        self.src = tmp / "model"
        self.src.mkdir()
        (self.src / "predict.py").write_text(textwrap.dedent(source))
        (self.src / "prefix.txt").write_text(">")
        for name, text in (extra or {}).items():
            (self.src / name).write_text(text)
        self.workdir = tmp / "work"
        self.workdir.mkdir()
        self.marks = tmp / "marks"
        self.marks.mkdir()
        self.log = open(tmp / "worker.log", "wb")  # noqa: SIM115 - the process's stdout/stderr
        argv = [sys.executable, "-u", str(WORKER), "--socket", "worker.sock", "--src", str(self.src)]
        argv += ["--ref", "predict.py:Predictor", "--concurrency", str(concurrency)]
        env = {"PATH": os.environ["PATH"], "MARKS": str(self.marks), "HOME": str(self.workdir)}
        self.proc = subprocess.Popen(
            argv, cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.conn: WorkerConnection | None = None

    async def connect(self) -> WorkerConnection:
        self.conn = await WorkerConnection.wait_open(
            self.workdir / "worker.sock",
            pgid=self.proc.pid,
            uid=None,
            alive=lambda: self.proc.poll() is None,
            timeout_s=20,
        )
        return self.conn

    async def until(self, kind: str, state: str | None = None, limit_s: float = 20.0) -> list[dict[str, Any]]:
        """Messages up to and including the first of ``kind`` (and ``state``)."""
        assert self.conn is not None
        seen = []
        while True:
            msg = await asyncio.wait_for(self.conn.receive(), limit_s)
            assert msg is not None, f"the worker closed the connection; seen {seen}"
            seen.append(msg)
            if msg["type"] == kind and (state is None or msg.get("state") == state):
                return seen

    async def ready(self) -> dict[str, Any]:
        await self.connect()
        return (await self.until("status", "ready"))[-1]

    async def predict(self, pid: str, **inputs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        assert self.conn is not None
        await self.conn.send({"type": "predict", "id": pid, "input": inputs})
        seen = await self.until("done")
        return seen[-1], seen[:-1]

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for w in made:
        w.stop()


@pytest.fixture
async def echo(tmp_path: Path, workers: list[Worker]) -> AsyncIterator[Worker]:
    w = Worker(tmp_path, MODEL)
    workers.append(w)
    status = await w.ready()
    assert status["concurrency"] == 1 and status["setup_s"] > 0 and status["pid"] == w.proc.pid
    yield w


def _logs(messages: list[dict[str, Any]]) -> str:
    return "".join(m["text"] for m in messages if m["type"] == "log")


async def test_setup_once_then_predictions_with_their_own_logs(echo: Worker) -> None:
    done, before = await echo.predict("p1", text="ab", n=2)
    assert done["status"] == "succeeded" and done["output"] == ">abab" and done["error"] is None
    assert done["predict_time"] > 0 and _logs(before) == "predicting ab\n"
    done, before = await echo.predict("p2", text="c")
    assert done["output"] == ">c" and _logs(before) == "predicting c\n"
    assert (echo.marks / "setup").read_text() == "x"  # setup() ran once for both
    # A float that is a whole number is an int to an int input; the output is JSON.
    done, _ = await echo.predict("p3", text="-", n=2.0, mode="float")
    assert done["output"] == 3.0
    # The job's own log still has everything (the replica's log in gpufleet).
    assert "predicting ab" in echo.output() and "predicting c" in echo.output()


async def test_output_of_child_processes_and_raw_descriptors_is_the_predictions(echo: Worker) -> None:
    done, before = await echo.predict("p1", text="x", mode="fd")
    assert done["status"] == "succeeded"
    logs = _logs(before)
    assert "from a child\n" in logs and "raw stderr\n" in logs and "predicting x\n" in logs
    done, before = await echo.predict("p2", text="y")
    assert _logs(before) == "predicting y\n"  # nothing of the previous prediction leaks into this one
    assert "from a child" in echo.output()


async def test_a_failing_predict_fails_that_prediction_only(echo: Worker) -> None:
    done, before = await echo.predict("p1", text="x", mode="fail")
    assert done["status"] == "failed" and done["error"] == "bad input, says the model"
    assert "Traceback" in _logs(before) and "ValueError" in _logs(before)
    done, _ = await echo.predict("p2", text="ok")
    assert done["status"] == "succeeded" and done["output"] == ">ok"


async def test_cancel_interrupts_a_running_predict(echo: Worker) -> None:
    assert echo.conn is not None
    await echo.conn.send({"type": "predict", "id": "slow", "input": {"text": "x", "mode": "slow"}})
    await echo.until("log")  # it is in predict()
    started = time.monotonic()
    await echo.conn.send({"type": "cancel", "id": "slow"})
    done = (await echo.until("done"))[-1]
    assert done["status"] == "canceled" and done["id"] == "slow" and time.monotonic() - started < 2
    # A prediction canceled before it started never runs; the next one runs normally.
    await echo.conn.send({"type": "predict", "id": "busy", "input": {"text": "x", "mode": "slow"}})
    await echo.conn.send({"type": "predict", "id": "queued", "input": {"text": "q"}})
    await echo.conn.send({"type": "cancel", "id": "queued"})
    await echo.conn.send({"type": "cancel", "id": "busy"})
    first = (await echo.until("done"))[-1]
    second = (await echo.until("done"))[-1]
    assert {(first["id"], first["status"]), (second["id"], second["status"])} == {
        ("busy", "canceled"),
        ("queued", "canceled"),
    }
    done, _ = await echo.predict("after", text="z")
    assert done["output"] == ">z"


async def test_a_crash_in_predict_ends_the_worker(echo: Worker) -> None:
    assert echo.conn is not None
    await echo.conn.send({"type": "predict", "id": "boom", "input": {"text": "x", "mode": "crash"}})
    seen = []
    while (msg := await asyncio.wait_for(echo.conn.receive(), 10)) is not None:
        seen.append(msg)
    assert not [m for m in seen if m["type"] == "done"]
    assert echo.proc.wait(10) == 3 and "predicting x" in echo.output()


async def test_path_outputs_and_inputs_travel_as_file_markers(echo: Worker) -> None:
    done, _ = await echo.predict("out", text="hi", mode="file-out")
    marker = done["output"]["$gpufleet_file"]
    assert marker["name"] == "out.txt" and marker["content_type"] == "text/plain"
    assert base64.b64decode(marker["b64"]) == b"made hi"
    # A file the agent fetched (a gpufleet file URL) arrives as a marker; the worker writes it.
    sent = {"$gpufleet_file": {"name": "in.txt", "content_type": "text/plain", "b64": base64.b64encode(b"IN").decode()}}
    done, _ = await echo.predict("in", text="-", mode="file-in", image=sent)
    assert done["status"] == "succeeded" and done["output"] == "IN"
    assert not (echo.workdir / "inputs" / "in").exists()  # removed once the prediction is done
    # A data: URI is cog.Path's business, as in Cog.
    done, _ = await echo.predict("uri", text="-", mode="file-in", image="data:text/plain;base64,VVJJ")
    assert done["output"] == "URI"


async def test_a_generator_streams_each_item_at_once(tmp_path: Path, workers: list[Worker]) -> None:
    w = Worker(tmp_path, GENERATOR)
    workers.append(w)
    await w.ready()
    assert w.conn is not None
    await w.conn.send({"type": "predict", "id": "g", "input": {"words": 3, "delay": 0.2}})
    first = await w.until("output")
    assert first[-1]["item"] == "w0 " and "token 0" in _logs(first)  # before the generator went on
    done, rest = (await w.until("done"))[-1], []
    assert "output" not in done and done["status"] == "succeeded"
    done, seen = await w.predict("g2", words=4)
    assert [m["item"] for m in seen if m["type"] == "output"] == ["w0 ", "w1 ", "w2 ", "w3 "]
    # Canceled between items: it stops at the next one.
    await w.conn.send({"type": "predict", "id": "g3", "input": {"words": 50, "delay": 0.05}})
    await w.until("output")
    await w.conn.send({"type": "cancel", "id": "g3"})
    seen = await w.until("done")
    assert seen[-1]["status"] == "canceled" and len([m for m in seen if m["type"] == "output"]) < 45
    del rest


async def test_async_predictors_run_several_at_once_up_to_their_concurrency(
    tmp_path: Path, workers: list[Worker]
) -> None:
    w = Worker(tmp_path, ASYNC, concurrency=3)
    workers.append(w)
    status = await w.ready()
    assert status["concurrency"] == 3  # the deployment's 3, within the predictor's declared 4
    assert w.conn is not None
    started = time.monotonic()
    for i in range(3):
        await w.conn.send({"type": "predict", "id": f"a{i}", "input": {"delay": 0.5, "tag": str(i)}})
    dones: dict[str, dict[str, Any]] = {}
    logs: dict[str, str] = {}
    while len(dones) < 3:
        msg = await asyncio.wait_for(w.conn.receive(), 10)
        assert msg is not None
        if msg["type"] == "done":
            dones[msg["id"]] = msg
        elif msg["type"] == "log":
            logs[msg["id"]] = logs.get(msg["id"], "") + msg["text"]
    assert time.monotonic() - started < 1.4  # together, not one after another (3 x 0.5 s)
    assert {k: v["output"] for k, v in dones.items()} == {"a0": "0", "a1": "1", "a2": "2"}
    assert logs == {"a0": "start 0\n", "a1": "start 1\n", "a2": "start 2\n"}  # each its own
    await w.conn.send({"type": "predict", "id": "c", "input": {"delay": 5}})
    await w.until("log")
    await w.conn.send({"type": "cancel", "id": "c"})
    assert (await w.until("done"))[-1]["status"] == "canceled"


async def test_a_failing_setup_is_reported_and_the_worker_exits(tmp_path: Path, workers: list[Worker]) -> None:
    w = Worker(tmp_path, BROKEN)
    workers.append(w)
    await w.connect()
    status = (await w.until("status", "failed"))[-1]
    assert "RuntimeError: weights not found at /models/x" in status["error"]
    assert w.proc.wait(10) == 1 and "Traceback" in w.output()


async def test_a_reconnect_gets_the_status_and_every_unacknowledged_done(echo: Worker) -> None:
    assert echo.conn is not None
    await echo.conn.send({"type": "predict", "id": "p1", "input": {"text": "a"}})
    await echo.until("done")
    echo.conn.close()  # the agent died before the server took the done
    await echo.connect()
    seen = await echo.until("done")
    assert seen[0]["type"] == "status" and seen[0]["state"] == "ready" and seen[0]["inflight"] == ["p1"]
    assert seen[-1]["id"] == "p1" and seen[-1]["output"] == ">a"
    await echo.conn.send({"type": "ack", "id": "p1"})
    # Work sent while nobody listens is kept and comes on the next connection.
    await echo.conn.send({"type": "predict", "id": "p2", "input": {"text": "b", "mode": "slow"}})
    await echo.until("log")
    echo.conn.close()
    await asyncio.sleep(0.1)
    await echo.connect()
    status = (await echo.until("status"))[-1]
    assert status["inflight"] == ["p2"]
    await echo.conn.send({"type": "cancel", "id": "p2"})
    assert (await echo.until("done"))[-1]["status"] == "canceled"
    # Shutdown: the worker exits 0 once nothing is left.
    await echo.conn.send({"type": "shutdown"})
    assert echo.proc.wait(10) == 0


async def test_the_agent_talks_only_to_the_replicas_own_process(echo: Worker) -> None:
    with pytest.raises(WorkerGone, match="not the replica's worker"):
        await WorkerConnection.open(echo.workdir / "worker.sock", pgid=os.getpgid(0), uid=None)
    with pytest.raises(WorkerGone, match="not the replica's user"):
        await WorkerConnection.open(echo.workdir / "worker.sock", pgid=echo.proc.pid, uid=os.getuid() + 1)


async def test_a_long_socket_path_is_reached_through_its_directory(tmp_path: Path, workers: list[Worker]) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    w = Worker(deep, MODEL)
    workers.append(w)
    assert len(str(w.workdir / "worker.sock")) > 108
    await w.ready()
    done, _ = await w.predict("p", text="long")
    assert done["output"] == ">long"


def test_the_worker_runs_from_its_installed_copy_without_gpufleet(tmp_path: Path) -> None:
    """The copy the environments hand to job users runs with the standard library and cog only."""
    cache = EnvCache(tmp_path / "state", fetch=_no_fetch, root=tmp_path / "envs")
    cache._prepare_root()
    worker = cache._install_worker()
    assert worker.parent.name.startswith("runner-") and oct(worker.stat().st_mode & 0o777) == "0o644"
    code = (
        "import runpy, sys; sys.modules['gpufleet'] = None; sys.modules['pydantic'] = None; "
        f"sys.argv = [{str(worker)!r}, '--help']; runpy.run_path({str(worker)!r}, run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Model Runner worker" in result.stdout


async def _no_fetch(version_id: Any) -> tuple[bytes, str | None]:
    raise AssertionError("no download expected")
