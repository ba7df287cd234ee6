"""Reference benchmark: Slurm on this machine, with the same trivial one-GPU jobs as
`bench/short_jobs.py`, so that gpufleet's short-job throughput is quoted as a ratio to Slurm's
measured in the same run on the same cores.

    python bench/slurm_short_jobs.py [--jobs 1000] [--sequential 50] [--parallel 4]

It needs Debian's `slurm-wlm` (22.05 on bookworm: slurmctld, slurmd and the client commands) and
`munge`, as root (`apt-get install -y slurm-wlm munge`); without them it exits with a one-line
message. It is not part of the test suite or CI. Callable from another benchmark as
``run(jobs=..., sequential=...)``, which returns the result as a dict.

A private one-node Slurm is started from a configuration written into a temporary directory:
munged (its own key and socket), slurmctld and slurmd in the foreground, on free loopback ports,
nothing read from or written to /etc. The node is the controller's host with
CPUs=max(nproc, 8) (``--cpus``; with ``SlurmdParameters=config_overrides`` when that is not
nproc), so that the 8 GPUs, not this machine's 2 cores, bound how many one-CPU jobs run at once,
as in gpufleet: with CPUs=2 Slurm runs two jobs at a time and does about 2 jobs/s here.
``Gres=gpu:8`` is given in gres.conf with ``AutoDetect=off`` and, since Slurm 22.05 drops a GPU
that has no ``File``, eight empty regular files in the temporary directory standing in for
/dev/nvidia0-7 (no device cgroup reads them with ``task/none``); ``select/cons_tres``.
Daemons, their job records and the directory are removed at the end, also on Ctrl-C, SIGTERM
or a failure.

Measured:

- **throughput**: N individual `sbatch --gres=gpu:1 -n1 --wrap true` (not a job array: each job
  is its own submission), from ``--parallel`` concurrent sbatch processes, as fast as sbatch
  returns. jobs/s = jobs completed / (just before the first sbatch -> the last job's completion
  record appearing in the job completion log, polled every 20 ms, which costs the controller
  nothing, unlike polling squeue). Only jobs recorded ``JobState=COMPLETED`` count.
- **sequential submit -> process start**: ``--sequential`` jobs one after another, each timed from
  just before `sbatch` starts to the job's first action writing ``date +%s.%N``; p50 / p99. As
  gpufleet's ``bench/submit_latency.py`` times from just before its POST. Each submission
  follows a random pause of 0 to ``--think-ms`` (default 1000): slurmctld starts batch jobs on
  a scheduling pass about once a second, and back-to-back submissions (``--think-ms 0``) would
  all land just after one and wait nearly the whole second.

Tuning for many short jobs, following Slurm's High Throughput Computing Administration Guide:

- ``SchedulerType=sched/builtin``: FIFO, no priority sorting; the guide's choice when most jobs
  are short. ``PriorityType=priority/basic`` for the same reason.
- ``SchedulerParameters`` (``--sched-params``): ``batch_sched_delay=0,sched_min_interval=0``,
  chosen by trying the guide's options on this machine (docs/benchmarks.md has the trials):
  *batch_sched_delay* (default 3 s) is how long a submitted batch job may wait to be
  considered, and 0 starts it on the next pass; *sched_min_interval* (microseconds) throttles
  the event-triggered passes, and 0 lets a GPU freed by a finished job be given out again at
  once. *defer* (no scheduling attempt per submission) was slower here: 7.6-7.9 jobs/s against
  9.8-12.0 without it. The guide's large-cluster set (``batch_sched_delay=20``,
  ``sched_min_interval=2000000``, ``sched_max_job_start=200``, ``partition_job_depth=500``) is
  built for hundreds of nodes; on one node with 8 GPUs it did not finish 200 jobs in 300 s.
- ``AccountingStorageType=accounting_storage/none``, ``JobAcctGatherType=jobacct_gather/none``:
  no accounting, no per-job sampling (the guide: both cost throughput). No slurmdbd.
- ``JobCompType=jobcomp/filetxt``: one line per finished job to a local file, the only record
  kept; the guide prefers ``jobcomp/none``, but this is how completions are timed without RPCs.
- ``MinJobAge=2``: finished jobs leave the controller's memory after 2 s (default 300 s; the
  guide: "a few seconds if possible").
- ``SlurmctldDebug=error``, ``SlurmdDebug=error``, logs on local disk: logging costs throughput.
- ``MessageTimeout=5``, ``TCPTimeout=2``, ``KillWait=2``, ``InactiveLimit=0``: short timeouts
  (all on loopback); no inactivity limit. No prolog, epilog or job-submit plugin (the guide
  advises against them for throughput).
- ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``: no cgroups to set up per job.
- munged with ``--num-threads 10`` (the guide's suggestion; the default is 2).
- Not applied: the guide's sysctls (somaxconn, port range) and several SlurmctldPorts, which
  matter for thousands of simultaneous clients, not for a few sbatch processes on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loadgen import MAX_ERROR_RATE
from _machine import machine

NEEDED = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "munged")
DEFAULT_SCHED_PARAMS = "batch_sched_delay=0,sched_min_interval=0"
GPUS = 8


class SlurmMissing(RuntimeError):
    pass


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.is_file() and os.access(p, os.X_OK)),
        None,
    )


def check_installed() -> dict[str, str]:
    found = {n: _which(n) for n in NEEDED}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise SlurmMissing(
            f"missing {', '.join(missing)}: this benchmark needs Debian's slurm-wlm and munge "
            "(apt-get install -y slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        raise SlurmMissing("this benchmark starts slurmd, which must run as root")
    return {n: str(p) for n, p in found.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


class Slurm:
    """A private one-node Slurm (munged, slurmctld, slurmd) in a temporary directory."""

    def __init__(self, *, cpus: int | None = None, sched_params: str = DEFAULT_SCHED_PARAMS) -> None:
        self.bins = check_installed()
        # As many CPUs as GPUs at least, so that the 8 GPUs bound how many jobs run at once (as
        # in gpufleet), not the 2 cores of this machine with each `-n1` job holding one.
        self.cpus = cpus or max(len(os.sched_getaffinity(0)), GPUS)
        self.sched_params = sched_params
        self.dir = Path(tempfile.mkdtemp(prefix="slurm-bench-"))
        self.dir.chmod(0o755)  # munged insists that everyone may traverse to its socket
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.host = socket.gethostname().split(".")[0]
        self.settings: dict[str, str] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.dir / "slurm.conf")}
        for k in list(self.env):  # nothing from a surrounding Slurm job or config
            if k.startswith(("SLURM_", "SBATCH_", "SQUEUE_")) and k != "SLURM_CONF":
                del self.env[k]
        self.completions = self.dir / "jobcomp.log"

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Slurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _write_config(self) -> None:
        d = self.dir
        self.settings = {
            "ClusterName": "bench",
            "SlurmctldHost": f"{self.host}(127.0.0.1)",
            "SlurmctldPort": str(_free_port()),
            "SlurmdPort": str(_free_port()),
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={d / 'munge.socket'}",
            "StateSaveLocation": str(d / "state"),
            "SlurmdSpoolDir": str(d / "spool"),
            "SlurmctldPidFile": str(d / "slurmctld.pid"),
            "SlurmdPidFile": str(d / "slurmd.pid"),
            "SlurmctldLogFile": str(d / "slurmctld.log"),
            "SlurmdLogFile": str(d / "slurmd.log"),
            "SlurmctldDebug": "error",
            "SlurmdDebug": "error",
            "SchedulerType": "sched/builtin",
            "SchedulerParameters": self.sched_params,
            "PriorityType": "priority/basic",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "GresTypes": "gpu",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/filetxt",
            "JobCompLoc": str(self.completions),
            "SwitchType": "switch/none",
            "MpiDefault": "none",
            "ReturnToService": "2",
            "MinJobAge": "2",
            "MessageTimeout": "5",
            "TCPTimeout": "2",
            "KillWait": "2",
            "InactiveLimit": "0",
            "SlurmdTimeout": "300",
        }
        if self.cpus != len(os.sched_getaffinity(0)):
            # More (or fewer) CPUs than the machine has: slurmd takes the configured count.
            self.settings["SlurmdParameters"] = "config_overrides"
        lines = [f"{k}={v}" for k, v in self.settings.items()]
        lines.append(
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} Boards=1 SocketsPerBoard=1"
            f" CoresPerSocket={self.cpus} ThreadsPerCore=1 RealMemory=1000 Gres=gpu:{GPUS} State=UNKNOWN"
        )
        lines.append(f"PartitionName=bench Nodes={self.host} Default=YES MaxTime=INFINITE State=UP")
        (d / "slurm.conf").write_text("\n".join(lines) + "\n")
        # Slurm 22.05 drops a GPU with no File ("Removing file-less GPU"): empty regular files
        # stand in for /dev/nvidiaN; with task/none no device cgroup ever looks at them.
        (d / "gpu").mkdir()
        for i in range(GPUS):
            (d / "gpu" / f"nvidia{i}").touch()
        (d / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.host} Name=gpu File={d / 'gpu'}/nvidia[0-{GPUS - 1}]\n"
        )
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / f"{name}.out", "wb")  # noqa: SIM115 - the daemon holds it
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, start_new_session=True
        )
        log.close()

    def start(self) -> None:
        self._write_config()
        d, conf = self.dir, str(self.dir / "slurm.conf")
        self._spawn(
            "munged",
            [
                self.bins["munged"],
                "-F",
                "--num-threads=10",
                f"--key-file={d / 'munge.key'}",
                f"--socket={d / 'munge.socket'}",
                f"--pid-file={d / 'munged.pid'}",
                f"--log-file={d / 'munged.log'}",
                f"--seed-file={d / 'munge.seed'}",
            ],
        )
        self._wait_for(lambda: (d / "munge.socket").exists(), "munged", 10)
        self._spawn("slurmctld", [self.bins["slurmctld"], "-D", "-i", "-f", conf])
        self._spawn("slurmd", [self.bins["slurmd"], "-D", "-N", self.host, "-f", conf])
        self._wait_for(self._node_idle, "the node to come up idle", 60)

    def _node_idle(self) -> bool:
        r = self.cmd(["sinfo", "-h", "-N", "-o", "%T"], check=False)
        return r.returncode == 0 and r.stdout.strip() == "idle"

    def _wait_for(self, ok: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ok():
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) while waiting for {what}: {self._tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: {self._tail('slurmctld')} {self._tail('slurmd')}")
            time.sleep(0.1)

    def _tail(self, name: str) -> str:
        out = ""
        for f in (self.dir / f"{name}.out", self.dir / f"{name}.log"):
            if f.exists():
                out += f.read_text(errors="replace")[-600:]
        return out.strip().replace("\n", " | ")

    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.cmd(["scancel", "--full", "--partition=bench"], check=False, timeout=10)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self._kill_leftover_steps()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_leftover_steps(self) -> None:
        """slurmstepd daemonizes out of slurmd's session; end any left from this cluster (its
        environment names this directory's slurm.conf)."""
        mine = str(self.dir).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
                environ = (proc / "environ").read_bytes() if b"slurmstepd" in cmdline else b""
            except OSError:
                continue
            if mine in environ:
                with contextlib.suppress(OSError):
                    os.kill(int(proc.name), signal.SIGKILL)

    # -- client commands --------------------------------------------------------------------

    def cmd(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.bins.get(argv[0], argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            env=self.env,
            check=check,
            timeout=timeout,
            cwd=self.dir,
        )

    def sbatch(self, wrap: str) -> int:
        r = self.cmd(["sbatch", "--parsable", "--gres=gpu:1", "-n1", "--output=/dev/null", "--wrap", wrap])
        return int(r.stdout.strip().split(";")[0])

    def completed(self) -> list[dict[str, str]]:
        if not self.completions.exists():
            return []
        out = []
        for line in self.completions.read_text().splitlines():
            out.append(dict(re.findall(r"(\w+)=(\S*)", line)))
        return out

    def version(self) -> str:
        return self.cmd(["sbatch", "--version"]).stdout.strip()


# -- measurements ---------------------------------------------------------------------------


def measure_sequential(slurm: Slurm, n: int, think_ms: float = 1000, seed: int = 15) -> dict[str, object]:
    """One job at a time, each after a pause drawn uniformly from [0, think_ms).

    slurmctld 22.05 starts a batch job on its next scheduling pass (a one-second tick here), not
    as it is submitted; back-to-back submissions would each land just after a pass and wait
    nearly the whole second, so the pause gives each submission an independent phase, as users'
    submissions have.
    """
    rng = random.Random(seed)
    lat_ms: list[float] = []
    before = len(slurm.completed())
    for i in range(n):
        time.sleep(rng.uniform(0, think_ms) / 1000)
        mark = slurm.dir / f"seq-{before}-{i}"
        t0 = time.time()
        slurm.sbatch(f"date +%s.%N > {mark}.tmp && mv {mark}.tmp {mark}")
        deadline = time.monotonic() + 60
        while not mark.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"sequential job {i} did not start within 60 s")
            time.sleep(0.002)
        lat_ms.append((float(mark.read_text().strip()) - t0) * 1000)
    _drain(slurm, n, before, 120)
    return {
        "jobs": n,
        "think_ms_uniform_0_to": think_ms,
        "p50_ms": round(statistics.median(lat_ms), 1),
        "p99_ms": round(_percentile(lat_ms, 99), 1),
        "min_ms": round(min(lat_ms), 1),
        "max_ms": round(max(lat_ms), 1),
    }


def _drain(slurm: Slurm, n: int, before: int, timeout_s: float) -> float:
    """Wait until n more completion records than ``before`` exist; the wall time it happened."""
    deadline = time.monotonic() + timeout_s
    while True:
        if len(slurm.completed()) >= before + n:
            return time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(slurm.completed()) - before} of {n} jobs finished within {timeout_s:.0f} s")
        time.sleep(0.02)


def measure_throughput(slurm: Slurm, n: int, parallel: int) -> dict[str, object]:
    before = len(slurm.completed())
    t0 = time.time()
    with ThreadPoolExecutor(parallel) as pool:
        ids = list(pool.map(lambda _: slurm.sbatch("true"), range(n)))
    submitted = time.time()
    done = _drain(slurm, n, before, max(600.0, n * 0.5))
    records = slurm.completed()[before:]
    mine = {str(i) for i in ids}
    states = Counter(r.get("JobState", "?") for r in records if r.get("JobId") in mine)
    ok = states.get("COMPLETED", 0)
    elapsed = done - t0
    return {
        "jobs": n,
        "parallel_sbatch": parallel,
        "states": dict(states),
        "completed": ok,
        "failure_rate": round(1 - ok / n, 6) if n else 1.0,
        "submit_s": round(submitted - t0, 2),
        "sbatch_per_s": round(n / (submitted - t0), 1),
        "elapsed_s": round(elapsed, 2),
        "jobs_per_s": round(ok / elapsed, 2),
    }


def run(
    jobs: int = 1000,
    sequential: int = 50,
    parallel: int = 4,
    cpus: int | None = None,
    sched_params: str = DEFAULT_SCHED_PARAMS,
    think_ms: float = 1000,
) -> dict[str, object]:
    """Start a private Slurm, measure, stop it; the result as one dict (raises SlurmMissing)."""
    with Slurm(cpus=cpus, sched_params=sched_params) as slurm:
        seq = measure_sequential(slurm, sequential, think_ms) if sequential else None
        thr = measure_throughput(slurm, jobs, parallel) if jobs else None
        return {
            "benchmark": "slurm_short_jobs",
            "slurm_version": slurm.version(),
            "node": {"cpus": slurm.cpus, "gpus": GPUS, "gres": "gpu (no device files, AutoDetect=off)"},
            "throughput": thr,
            "sequential_submit_to_start": seq,
            "settings": {**{k: v for k, v in slurm.settings.items() if not _local(k)}, "munged": "--num-threads=10"},
            "machine": machine(),
        }


def _local(key: str) -> bool:
    """Paths and ports of this one run, left out of the printed settings."""
    return key.endswith(("Location", "Loc", "Dir", "File", "Port", "Info")) or key == "SlurmctldHost"


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--jobs", type=int, default=1000, help="trivial one-GPU jobs for the throughput figure")
    ap.add_argument("--sequential", type=int, default=50, help="jobs for the submit->start latency")
    ap.add_argument("--parallel", type=int, default=4, help="concurrent sbatch processes")
    ap.add_argument("--think-ms", type=float, default=1000, help="sequential: random pause in [0, this)")
    ap.add_argument("--cpus", type=int, default=None, help="the node's CPUs (default: nproc)")
    ap.add_argument("--sched-params", default=DEFAULT_SCHED_PARAMS, help="slurm.conf SchedulerParameters")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        result = run(args.jobs, args.sequential, args.parallel, args.cpus, args.sched_params, args.think_ms)
    except SlurmMissing as e:
        sys.exit(str(e))
    print(json.dumps(result))
    thr = result["throughput"]
    if isinstance(thr, dict) and float(thr["failure_rate"]) > MAX_ERROR_RATE:
        sys.exit(f"more than {MAX_ERROR_RATE:.1%} of the jobs did not complete: {thr['states']}")


if __name__ == "__main__":
    main()
