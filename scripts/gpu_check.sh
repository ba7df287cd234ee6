#!/usr/bin/env bash
# Real-GPU check: on a machine with an NVIDIA GPU, start gpufleet (`gpufleet up` on a temporary data
# dir, GPUs discovered by NVML), wait for the GPUs in `gpufleet gpus list`, run a real CUDA job
# (a PyTorch matrix multiply printing the device and a checksum; `nvidia-smi -L` without torch),
# print its logs and result, and stop everything. Exits 1 with a clear message without a GPU.
#
#   scripts/gpu_check.sh            (uses the gpufleet on PATH, or .venv/bin/gpufleet)
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
GPUFLEET="${GPUFLEET:-$(command -v gpufleet || echo "$here/.venv/bin/gpufleet")}"
PYTHON="${PYTHON:-$(dirname "$GPUFLEET")/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi missing or failing): this check needs a GPU machine" >&2
    exit 1
fi
if ! "$PYTHON" -c "from gpufleet.agent.gpus import NvmlBackend; NvmlBackend().discover()" >/dev/null 2>&1; then
    echo "gpu_check: NVML is not usable from $PYTHON (pip install nvidia-ml-py?): cannot discover the GPUs" >&2
    exit 1
fi

base="$(mktemp -d /tmp/gpufleet-gpu-check-XXXXXX)"
chmod 755 "$base"
port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export GPUFLEET_DATA_DIR="$base/data" GPUFLEET_CONFIG_DIR="$base/cfg" GPUFLEET_PORT="$port"
unset GPUFLEET_DATABASE_URL GPUFLEET_URL GPUFLEET_API_KEY || true

"$GPUFLEET" up --port "$port" >"$base/up.log" 2>&1 &
up_pid=$!
cleanup() {
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
    rm -rf "$base"
}
trap cleanup EXIT

echo "== waiting for gpufleet and its GPUs (log: $base/up.log)"
for _ in $(seq 1 300); do
    if ! kill -0 "$up_pid" 2>/dev/null; then
        echo "gpu_check: gpufleet up exited:" >&2; tail -30 "$base/up.log" >&2; exit 1
    fi
    if "$GPUFLEET" gpus list --json 2>/dev/null | "$PYTHON" -c \
        'import json, sys; g = json.load(sys.stdin); sys.exit(0 if g and not any(x.get("simulated") for x in g) else 1)' 2>/dev/null; then
        break
    fi
    sleep 0.5
done
grep -m1 -E "NVIDIA GPU|SIMULATED" "$base/up.log" || true
"$GPUFLEET" gpus list

if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    job=(-- "$PYTHON" -c "
import torch
assert torch.cuda.is_available(), 'CUDA is not available to the job'
d = torch.device('cuda')
print('device:', torch.cuda.get_device_name(d))
torch.manual_seed(0)
a = torch.randn(4096, 4096, device=d); b = torch.randn(4096, 4096, device=d)
c = a @ b; torch.cuda.synchronize()
print('checksum:', float(c.double().abs().sum()))
")
else
    echo "== torch is not installed: the job runs nvidia-smi -L instead"
    job=(-- nvidia-smi -L)
fi

echo "== submitting a 1-GPU job"
id="$("$GPUFLEET" jobs submit --json --name gpu-check --gpus 1 "${job[@]}" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
echo "job $id"
"$GPUFLEET" jobs logs -f "$id" || true
"$GPUFLEET" jobs wait "$id" --timeout 600 >/dev/null || true
"$GPUFLEET" jobs show "$id" --json | "$PYTHON" -c '
import json, sys
j = json.load(sys.stdin)
print("== result:", j["status"], "exit", j.get("exit_code"), "-", j.get("status_reason") or "")
sys.exit(0 if j["status"] == "succeeded" else 1)
'
