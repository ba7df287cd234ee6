"""Every bound the product puts on input, in one table: schemas, services and the CLI read it here.

A value is checked once, at the edge that receives it (a pydantic schema for HTTP bodies and
query parameters). Services re-check only what internal callers could pass without that edge
(``services/job_spec.py`` guards the jobs table for replicas and other in-process submitters).
"""

from __future__ import annotations

from datetime import UTC, datetime

# ---------------------------------------------------------------- lists
DEFAULT_PAGE = 50  # items per page when ``limit`` is not given
MAX_PAGE = 200  # the most items one page of a list holds
MAX_FEED_PAGE = 500  # the event feed and the fleet's queue read on by sequence, in larger steps
MAX_CURSOR_CHARS = 200  # an opaque cursor is far shorter; longer is not one this API issued

# ---------------------------------------------------------------- PostgreSQL column ranges
INT32_MAX = 2**31 - 1  # integer columns: attempts, log seq, counters
BIGINT_MAX = 2**63 - 1  # bigint columns: byte offsets, sizes in MiB
# PostgreSQL stores timestamptz from 4713 BC to 294276 AD, but the server reads values back as
# Python datetimes (years 1 to 9999, in UTC). A day of margin on each side keeps window arithmetic
# (``end - 1 hour``, bucket edges) inside that range too.
TIMESTAMP_MIN = datetime(1, 1, 2, tzinfo=UTC)
TIMESTAMP_MAX = datetime(9999, 12, 30, tzinfo=UTC)

# ---------------------------------------------------------------- jobs
MAX_JOB_NAME = 200
MAX_COMMAND_ARGS = 1024
MAX_COMMAND_BYTES = 128 * 1024
MAX_SCRIPT_BYTES = 256 * 1024
MAX_ENV = 256
MAX_ENV_BYTES = 64 * 1024
MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_PATH = 4096
MAX_GPUS = 64  # whole GPUs one job asks for, on one host
MAX_GPU_MODELS = 16
MAX_GPU_MEMORY_MIB = 4 * 1024 * 1024  # 4 TiB of GPU memory: more than any GPU has
MAX_CPU_MILLI = 4096 * 1000
MAX_RAM_MB = 64 * 1024 * 1024  # 64 TiB
MAX_RUNTIME_S = 366 * 24 * 3600
MAX_PRIORITY = 1000
MAX_ATTEMPTS = 100
WAIT_MAX_S = 60.0  # the longest a client may wait on a job's change in one request

# ---------------------------------------------------------------- quotas
MAX_QUOTA_GPUS = 1_000_000  # whole-GPU equivalents one quota allows
