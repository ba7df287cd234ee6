"""One row in every tenant-owned table for an organization: what the isolation tests act on.

When a migration adds a tenant table, add a row for it here; the isolation test fails until
you do, so no table can escape it.
"""

from __future__ import annotations

import hashlib
import os
from uuid import UUID

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Organization

TENANT_TABLES_SQL = """
select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = current_schema() and c.relkind in ('r', 'p') and not c.relispartition
   and (c.relname = 'organizations'
        or exists (select 1 from pg_attribute a where a.attrelid = c.oid
                   and a.attname = 'organization_id' and not a.attisdropped))
 order by 1
"""


def _h() -> bytes:
    return hashlib.sha256(os.urandom(16)).digest()


async def populate(db: Database, org: Organization) -> None:
    o = org.id
    async with db.system_transaction() as c:
        user: UUID = await c.fetchval(
            "insert into users (email) values ($1) returning id", f"{os.urandom(5).hex()}@example.com"
        )
        await c.execute(
            "insert into organization_members (organization_id, user_id, role) values ($1,$2,'owner')", o, user
        )
        await c.execute(
            """insert into organization_invites (organization_id, email, role, token_hash, expires_at)
               values ($1, 'x@example.com', 'member', $2, now() + interval '7 days')""",
            o,
            _h(),
        )
        await c.execute(
            "insert into api_keys (organization_id, user_id, name, prefix, key_hash, role) values ($1,$2,'k','gfk_x',$3,'owner')",
            o,
            user,
            _h(),
        )
        hook: UUID = await c.fetchval(
            "insert into webhooks (organization_id, url, secret_ciphertext) values ($1, 'https://example.com/h', '\\x00') returning id",
            o,
        )
        token: UUID = await c.fetchval(
            "insert into join_tokens (organization_id, prefix, token_hash, expires_at) values ($1,'gfj_x',$2, now() + interval '1 day') returning id",
            o,
            _h(),
        )
        host: UUID = await c.fetchval(
            "insert into hosts (organization_id, name, cpu_cores, ram_mb, join_token_id) values ($1, 'h1', 8, 1024, $2) returning id",
            o,
            token,
        )
        await c.execute(
            "insert into gpu_prices (organization_id, gpu_model, hourly_price) values ($1, 'A100-80GB', 2.5)", o
        )
        gpu: UUID = await c.fetchval(
            "insert into gpu_resources (organization_id, host_id, uuid, index, model, memory_mb) values ($1,$2,'GPU-1',0,'A100-80GB',81920) returning id",
            o,
            host,
        )
        await c.execute(
            "insert into gpu_metrics (organization_id, gpu_id, ts, utilization_pct) values ($1,$2, now(), 50)", o, gpu
        )
        await c.execute(
            "insert into gpu_metrics_hourly (organization_id, gpu_id, bucket, samples) values ($1,$2, date_trunc('hour', now()), 1)",
            o,
            gpu,
        )
        job: UUID = await c.fetchval(
            "insert into jobs (organization_id, name, command) values ($1, 'j', '{true}') returning id", o
        )
        await c.execute("update jobs set status = 'allocated', host_id = $2 where id = $1", job, host)
        await c.execute(
            "insert into allocations (organization_id, job_id, gpu_id, host_id, attempt, milli, memory_mb) values ($1,$2,$3,$4,1,1000,81920)",
            o,
            job,
            gpu,
            host,
        )
        await c.execute(
            "insert into job_logs (organization_id, job_id, attempt, seq, stream, byte_offset, data) values ($1,$2,1,0,'stdout',0,'hi')",
            o,
            job,
        )
        await c.execute(
            "insert into job_attempts (organization_id, job_id, attempt, host_id, log_bytes) values ($1,$2,1,$3,2)",
            o,
            job,
            host,
        )
        await c.execute(
            "insert into cpu_reservations (organization_id, job_id, host_id, attempt, cpu_milli, ram_mb) values ($1,$2,$3,1,0,0)",
            o,
            job,
            host,
        )
        pred: UUID = await c.fetchval(
            "insert into predictions (organization_id, model) values ($1, 'm') returning id", o
        )
        await c.execute(
            """insert into cost_tracking (organization_id, job_id, prediction_id, gpu_id, gpu_model, period_start, period_end,
                                          gpu_milli, hourly_price, amount) values ($1,$2,$3,$4,'A100-80GB', now(), now(), 1000, 2.5, 0.1)""",
            o,
            job,
            pred,
            gpu,
        )
        await c.execute("insert into quotas (organization_id, max_gpus) values ($1, 8)", o)
        await c.execute("insert into budgets (organization_id, amount_limit) values ($1, 1000)", o)
        event: UUID = await c.fetchval(
            "insert into events (organization_id, entity_type, entity_id, type) values ($1,'job',$2,'job.pending') returning id",
            o,
            job,
        )
        delivery: UUID = await c.fetchval(
            "insert into webhook_deliveries (organization_id, webhook_id, event_id, event_type, payload) values ($1,$2,$3,'job.pending','{}') returning id",
            o,
            hook,
            event,
        )
        await c.execute(
            "insert into webhook_attempts (organization_id, delivery_id, webhook_id, attempt, url, succeeded) values ($1,$2,$3,1,'https://example.com/h',true)",
            o,
            delivery,
            hook,
        )
        model: UUID = await c.fetchval("insert into models (organization_id, name) values ($1, 'm') returning id", o)
        version: UUID = await c.fetchval(
            """insert into model_versions (organization_id, model_id, digest, archive, archive_size, predict_ref)
               values ($1, $2, $3, '\\x00', 1, 'predict.py:Predictor') returning id""",
            o,
            model,
            hashlib.sha256(os.urandom(8)).hexdigest(),
        )
        deployment: UUID = await c.fetchval(
            "insert into deployments (organization_id, name, model_id, version_id) values ($1, 'm', $2, $3) returning id",
            o,
            model,
            version,
        )
        replica_job: UUID = await c.fetchval(
            "insert into jobs (organization_id, name, command, kind) values ($1, 'r', '{runner}', 'replica') returning id",
            o,
        )
        await c.execute(
            "insert into replicas (organization_id, deployment_id, version_id, job_id) values ($1, $2, $3, $4)",
            o,
            deployment,
            version,
            replica_job,
        )
        await c.execute(
            "insert into webhook_default_secrets (organization_id, secret_ciphertext) values ($1, '\\x00')", o
        )
        await c.execute(
            """insert into files (organization_id, name, size, sha256, data, expires_at)
               values ($1, 'f.txt', 1, $2, 'x', now() + interval '1 day')""",
            o,
            hashlib.sha256(b"x").hexdigest(),
        )
        await c.execute(
            """insert into idempotency_keys (organization_id, scope, key, request_hash, response_status, response_body)
               values ($1, 'POST /v1/jobs', 'k', $2, 201, '{}'::jsonb)""",
            o,
            hashlib.sha256(b"k").hexdigest(),
        )
