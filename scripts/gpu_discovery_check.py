#!/usr/bin/env python3
"""Check GPU discovery on this host: NVML inventory, host facts and a few samples, printed as JSON.

    python scripts/gpu_discovery_check.py [--samples 3] [--interval 1.0] [--simulate 8xH100-80GB]

Without an NVIDIA driver it prints the one-line reason on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime

from gpufleet.agent.gpus import GpuDiscoveryError, open_backend
from gpufleet.agent.hostinfo import collect_host_facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3, help="how many samples to take (default 3)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--simulate", metavar="SPEC", help="use a simulated inventory instead of NVML")
    args = parser.parse_args(argv)
    try:
        started = time.perf_counter()
        backend = open_backend(args.simulate)
        gpus = backend.discover()
        discover_ms = (time.perf_counter() - started) * 1000
    except (GpuDiscoveryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        facts = collect_host_facts(backend)
        samples, sample_ms = [], []
        for i in range(args.samples):
            if i:
                time.sleep(args.interval)
            t = time.perf_counter()
            samples.append([asdict(s) for s in backend.sample(datetime.now(UTC))])
            sample_ms.append(round((time.perf_counter() - t) * 1000, 3))
    except GpuDiscoveryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    report = {
        "backend": backend.name,
        "host": asdict(facts),
        "gpus": [asdict(g) for g in gpus],
        "samples": samples,
        "timing_ms": {"init_and_discover": round(discover_ms, 3), "sample": sample_ms},
    }
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
