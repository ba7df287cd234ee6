"""The Model Runner's own cost per prediction: the examples' echo served by a real worker process
(runner/worker.py) over its Unix socket, as the agent speaks to it, against the same predict()
called in-process. Prints one JSON object.

    python bench/runner_worker.py [--n 2000]

What it measures is the agent <-> worker leg only (JSON lines both ways, input coercion, output
capture, the per-prediction log settle); the server's part (claim, events, Prefer: wait) is in
the predictions benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _machine import machine  # noqa: E402
from gpufleet.agent.runner.connection import WorkerConnection  # noqa: E402

ECHO = ROOT / "examples" / "models" / "echo"
WORKER = ROOT / "src" / "gpufleet" / "agent" / "runner" / "worker.py"


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "p50_ms": round(statistics.median(s) * 1000, 3),
        "p99_ms": round(s[int(0.99 * (len(s) - 1))] * 1000, 3),
        "mean_ms": round(statistics.fmean(s) * 1000, 3),
    }


def in_process(n: int) -> list[float]:
    sys.path.insert(0, str(ECHO))
    import predict  # the examples' echo

    predictor = predict.Predictor()
    predictor.setup()
    out = []
    for i in range(n):
        started = time.perf_counter()
        predictor.predict(text=f"hello {i}", repeat=1, case="as-is", reverse=False, separator=" ")
        out.append(time.perf_counter() - started)
    return out


async def over_the_socket(n: int, workdir: Path) -> tuple[list[float], float]:
    argv = [sys.executable, "-u", str(WORKER), "--socket", "worker.sock", "--src", str(ECHO)]
    argv += ["--ref", "predict.py:Predictor"]
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=workdir, stdout=asyncio.subprocess.DEVNULL, start_new_session=True
    )
    try:
        conn = await WorkerConnection.wait_open(
            workdir / "worker.sock", pgid=proc.pid, uid=None, alive=lambda: proc.returncode is None, timeout_s=30
        )
        while (msg := await conn.receive()) is not None and msg.get("state") != "ready":
            pass
        ready_s = time.perf_counter() - started
        out = []
        for i in range(n):
            sent = time.perf_counter()
            await conn.send({"type": "predict", "id": str(i), "input": {"text": f"hello {i}", "repeat": 1}})
            while (msg := await conn.receive()) is not None and msg["type"] != "done":
                pass
            out.append(time.perf_counter() - sent)
            conn.send_nowait({"type": "ack", "id": str(i)})
        conn.close()
        return out, ready_s
    finally:
        proc.kill()
        await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    local = in_process(args.n)
    workdir = Path(tempfile.mkdtemp(prefix="gf-bench-"))
    try:
        remote, ready_s = asyncio.run(over_the_socket(args.n, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    p_local, p_remote = percentiles(local), percentiles(remote)
    print(
        json.dumps(
            {
                "benchmark": "runner_worker",
                "predictions": args.n,
                "worker_start_to_ready_s": round(ready_s, 3),
                "in_process": p_local,
                "over_the_socket": p_remote,
                "added_p50_ms": round(p_remote["p50_ms"] - p_local["p50_ms"], 3),
                "added_p99_ms": round(p_remote["p99_ms"] - p_local["p99_ms"], 3),
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
