-- gpufleet's schema: every table of the architecture sketch plus what the design adds.
-- Conventions: UUID keys, created_at/updated_at (updated_at kept by a trigger), explicit
-- foreign keys with deliberate ON DELETE, CHECK constraints for enumerations and ranges.
-- Tenancy (roles, row-level security, grants) is in 0002_tenancy.sql.

create or replace function gpufleet_touch_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end $$;

-- ---------------------------------------------------------------- people and tenants
create table users (
    id           uuid primary key default gen_random_uuid(),
    email        text not null,
    name         text not null default '',
    external_id  text,                        -- Supabase Auth `sub`, when used
    is_active    boolean not null default true,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    constraint users_email_format check (email ~ '^[^@\s]+@[^@\s]+$' and length(email) <= 320)
);
create unique index users_email_key on users (lower(email));
create unique index users_external_id_key on users (external_id) where external_id is not null;

create table organizations (
    id           uuid primary key default gen_random_uuid(),
    name         text not null check (length(name) between 1 and 200),
    slug         text not null check (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    settings     jsonb not null default '{}'::jsonb check (jsonb_typeof(settings) = 'object'),
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);
create unique index organizations_slug_key on organizations (slug);

create table organization_members (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    user_id         uuid not null references users (id) on delete cascade,
    role            text not null check (role in ('owner', 'admin', 'member', 'viewer')),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (organization_id, user_id)
);
create index organization_members_user_idx on organization_members (user_id);

create table organization_invites (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    email           text not null check (email ~ '^[^@\s]+@[^@\s]+$'),
    role            text not null check (role in ('owner', 'admin', 'member', 'viewer')),
    token_hash      bytea not null,
    invited_by      uuid references users (id) on delete set null,
    expires_at      timestamptz not null,
    accepted_at     timestamptz,
    accepted_by     uuid references users (id) on delete set null,
    revoked_at      timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    check (accepted_at is null or revoked_at is null)
);
create unique index organization_invites_token_key on organization_invites (token_hash);
create index organization_invites_org_idx on organization_invites (organization_id, created_at desc);

create table api_keys (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    user_id         uuid not null references users (id) on delete cascade,
    name            text not null check (length(name) between 1 and 200),
    prefix          text not null,             -- shown in listings, e.g. gfk_AbCd1234
    key_hash        bytea not null,            -- SHA-256 of the whole key; the key is never stored
    role            text not null check (role in ('owner', 'admin', 'member', 'viewer')),
    expires_at      timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create unique index api_keys_hash_key on api_keys (key_hash);
create index api_keys_org_idx on api_keys (organization_id, created_at desc);

-- ---------------------------------------------------------------- webhooks
create table webhooks (
    id                uuid primary key default gen_random_uuid(),
    organization_id   uuid not null references organizations (id) on delete cascade,
    url               text not null check (url ~ '^https?://' and length(url) <= 2048),
    description       text not null default '',
    event_types       text[] not null default '{}',   -- empty: every event
    secret_ciphertext bytea not null,                 -- signing secret, encrypted with the server key
    is_active         boolean not null default true,
    failure_count     integer not null default 0 check (failure_count >= 0),
    disabled_at       timestamptz,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);
create index webhooks_org_idx on webhooks (organization_id) where is_active;

-- ---------------------------------------------------------------- hosts and GPUs
create table join_tokens (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    name            text not null default '',
    prefix          text not null,
    token_hash      bytea not null,
    max_uses        integer check (max_uses is null or max_uses >= 1),   -- null: unlimited
    uses            integer not null default 0 check (uses >= 0),
    expires_at      timestamptz not null,
    revoked_at      timestamptz,
    created_by      uuid references users (id) on delete set null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    check (max_uses is null or uses <= max_uses)
);
create unique index join_tokens_hash_key on join_tokens (token_hash);
create index join_tokens_org_idx on join_tokens (organization_id);

create table hosts (
    id                 uuid primary key default gen_random_uuid(),
    organization_id    uuid not null references organizations (id) on delete cascade,
    name               text not null check (length(name) between 1 and 253),
    status             text not null default 'ready'
                       check (status in ('ready', 'unreachable', 'draining', 'maintenance')),
    status_reason      text,
    hostname           text not null default '',
    os                 text not null default '',
    kernel             text not null default '',
    arch               text not null default '',
    cpu_cores          integer not null default 0 check (cpu_cores >= 0),
    ram_mb             bigint not null default 0 check (ram_mb >= 0),
    cpu_milli_allocated integer not null default 0 check (cpu_milli_allocated >= 0),
    ram_mb_allocated   bigint not null default 0 check (ram_mb_allocated >= 0),
    driver_version     text,
    cuda_version       text,
    agent_version      text,
    labels             jsonb not null default '{}'::jsonb check (jsonb_typeof(labels) = 'object'),
    simulated          boolean not null default false,
    credential_prefix  text,
    credential_hash    bytea,
    join_token_id      uuid references join_tokens (id) on delete set null,
    revoked_at         timestamptz,
    registered_at      timestamptz not null default now(),
    last_heartbeat_at  timestamptz,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    check (cpu_milli_allocated <= cpu_cores * 1000),
    check (ram_mb_allocated <= ram_mb)
);
create unique index hosts_org_name_key on hosts (organization_id, name);
create unique index hosts_credential_key on hosts (credential_hash) where credential_hash is not null;
create index hosts_heartbeat_idx on hosts (last_heartbeat_at) where status in ('ready', 'draining');

create table gpu_prices (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    gpu_model       text not null,
    hourly_price    numeric(12, 4) not null check (hourly_price >= 0),
    currency        text not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (organization_id, gpu_model)
);

create table gpu_resources (
    id                  uuid primary key default gen_random_uuid(),
    organization_id     uuid not null references organizations (id) on delete cascade,
    host_id             uuid not null references hosts (id) on delete cascade,
    uuid                text not null,            -- NVML UUID (GPU-...)
    index               integer not null check (index >= 0),
    model               text not null,
    memory_mb           integer not null check (memory_mb > 0),
    pci_bus_id          text,
    mig_mode            boolean,
    driver_version      text,
    status              text not null default 'available'
                        check (status in ('available', 'allocated', 'unhealthy', 'offline', 'maintenance')),
    status_reason       text,
    simulated           boolean not null default false,
    hourly_price        numeric(12, 4) check (hourly_price >= 0),   -- overrides gpu_prices
    -- The capacity ledger: kept by the allocations trigger; the CHECKs are the final guard
    -- against over-allocation, whoever writes and however they race.
    allocated_milli     integer not null default 0 check (allocated_milli between 0 and 1000),
    allocated_memory_mb integer not null default 0 check (allocated_memory_mb >= 0),
    version             integer not null default 1,                 -- optimistic lock
    foreign_usage       text,                     -- truth check: memory/processes not ours
    last_seen_at        timestamptz,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    check (allocated_memory_mb <= memory_mb)
);
create unique index gpu_resources_host_uuid_key on gpu_resources (host_id, uuid);
create index gpu_resources_org_status_idx on gpu_resources (organization_id, status, model);

create table gpu_metrics (
    organization_id  uuid not null references organizations (id) on delete cascade,
    gpu_id           uuid not null references gpu_resources (id) on delete cascade,
    ts               timestamptz not null,
    utilization_pct  real check (utilization_pct between 0 and 100),
    memory_used_mb   integer check (memory_used_mb >= 0),
    temperature_c    real,
    power_w          real check (power_w >= 0),
    ecc_uncorrected  bigint check (ecc_uncorrected >= 0),
    xid_errors       bigint check (xid_errors >= 0),
    process_count    integer check (process_count >= 0),
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (gpu_id, ts)
) partition by range (ts);
create index gpu_metrics_org_ts_idx on gpu_metrics (organization_id, ts);
create table gpu_metrics_default partition of gpu_metrics default;

create table gpu_metrics_hourly (
    id               uuid primary key default gen_random_uuid(),
    organization_id  uuid not null references organizations (id) on delete cascade,
    gpu_id           uuid not null references gpu_resources (id) on delete cascade,
    bucket           timestamptz not null,
    samples          integer not null check (samples > 0),
    utilization_avg  real,
    utilization_max  real,
    memory_used_avg  real,
    memory_used_max  integer,
    temperature_max  real,
    power_avg        real,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    unique (gpu_id, bucket)
);
create index gpu_metrics_hourly_org_idx on gpu_metrics_hourly (organization_id, bucket);

-- ---------------------------------------------------------------- jobs
create table jobs (
    id                 uuid primary key default gen_random_uuid(),
    organization_id    uuid not null references organizations (id) on delete cascade,
    name               text not null check (length(name) between 1 and 200),
    model_type         text,
    command            text[],
    script             text,
    env                jsonb not null default '{}'::jsonb check (jsonb_typeof(env) = 'object'),
    working_dir        text,
    labels             jsonb not null default '{}'::jsonb check (jsonb_typeof(labels) = 'object'),
    priority           integer not null default 0 check (priority between -1000 and 1000),
    status             text not null default 'pending'
                       check (status in ('pending', 'allocated', 'running', 'succeeded', 'failed',
                                         'cancelled', 'timed_out', 'allocation_failed')),
    status_reason      text,
    pending_reason     text,
    gpu_count          integer not null default 1 check (gpu_count between 0 and 64),
    gpu_milli          integer not null default 1000 check (gpu_milli between 0 and 1000),
    min_memory_mb      integer not null default 0 check (min_memory_mb >= 0),
    gpu_models         text[] not null default '{}',
    cpu_milli          integer not null default 0 check (cpu_milli >= 0),
    ram_mb             bigint not null default 0 check (ram_mb >= 0),
    max_runtime_s      integer check (max_runtime_s > 0),
    retry_on_host_loss boolean not null default true,
    retry_on_failure   boolean not null default false,
    max_attempts       integer not null default 3 check (max_attempts between 1 and 100),
    attempt            integer not null default 1 check (attempt >= 1),
    host_id            uuid references hosts (id) on delete set null,
    exit_code          integer,
    exit_signal        integer,
    submitted_by       uuid references users (id) on delete set null,
    cost               numeric(14, 6) not null default 0 check (cost >= 0),
    queued_at          timestamptz not null default now(),
    allocated_at       timestamptz,
    started_at         timestamptz,
    finished_at        timestamptz,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    check (command is not null or script is not null),
    check (gpu_milli = 1000 or gpu_count = 1 or (gpu_count = 0 and gpu_milli = 0)),
    check (gpu_count > 0 or gpu_milli = 0)
);
create index jobs_org_status_idx on jobs (organization_id, status, created_at desc);
create index jobs_org_created_idx on jobs (organization_id, created_at desc, id desc);
create index jobs_pending_idx on jobs (priority desc, queued_at, id) where status = 'pending';
create index jobs_host_active_idx on jobs (host_id) where status in ('allocated', 'running');

create table allocations (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    job_id          uuid not null references jobs (id) on delete cascade,
    gpu_id          uuid not null references gpu_resources (id) on delete restrict,
    host_id         uuid not null references hosts (id) on delete cascade,
    attempt         integer not null check (attempt >= 1),
    milli           integer not null check (milli between 1 and 1000),
    memory_mb       integer not null check (memory_mb >= 0),
    released_at     timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (job_id, attempt, gpu_id)
);
create index allocations_active_gpu_idx on allocations (gpu_id) where released_at is null;
create index allocations_active_job_idx on allocations (job_id) where released_at is null;

create table job_logs (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    job_id          uuid not null references jobs (id) on delete cascade,
    attempt         integer not null check (attempt >= 1),
    seq             integer not null check (seq >= 0),
    stream          text not null check (stream in ('stdout', 'stderr', 'system')),
    byte_offset     bigint not null check (byte_offset >= 0),
    data            bytea not null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (job_id, attempt, seq)
);

create table cost_tracking (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    job_id          uuid references jobs (id) on delete set null,
    prediction_id   uuid,
    gpu_id          uuid references gpu_resources (id) on delete set null,
    gpu_model       text not null,
    period_start    timestamptz not null,
    period_end      timestamptz not null,
    gpu_milli       integer not null check (gpu_milli between 1 and 1000),
    hourly_price    numeric(12, 4) not null check (hourly_price >= 0),
    amount          numeric(14, 6) not null check (amount >= 0),
    currency        text not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    check (period_end >= period_start)
);
create index cost_tracking_org_period_idx on cost_tracking (organization_id, period_start);
create index cost_tracking_job_idx on cost_tracking (job_id) where job_id is not null;

create table quotas (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    gpu_model       text,                                      -- null: all models together
    max_gpus        integer not null check (max_gpus >= 0),    -- concurrent whole-GPU equivalents
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create unique index quotas_org_model_key on quotas (organization_id, coalesce(gpu_model, ''));

create table budgets (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    period          text not null default 'month' check (period in ('day', 'week', 'month')),
    amount_limit    numeric(14, 2) not null check (amount_limit >= 0),
    currency        text not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
    action          text not null default 'warn' check (action in ('warn', 'block')),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (organization_id, period)
);

-- ---------------------------------------------------------------- predictions
create table predictions (
    id                    uuid primary key default gen_random_uuid(),
    organization_id       uuid not null references organizations (id) on delete cascade,
    model                 text not null check (length(model) between 1 and 200),
    version               text,
    input                 jsonb not null default '{}'::jsonb,
    output                jsonb,
    status                text not null default 'starting'
                          check (status in ('starting', 'processing', 'succeeded', 'failed', 'canceled')),
    error                 text,
    logs                  text not null default '',
    webhook               text check (webhook is null or webhook ~ '^https?://'),
    webhook_events_filter text[] not null default '{start,output,logs,completed}',
    metrics               jsonb not null default '{}'::jsonb,
    created_by            uuid references users (id) on delete set null,
    started_at            timestamptz,
    completed_at          timestamptz,
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now()
);
create index predictions_org_created_idx on predictions (organization_id, created_at desc, id desc);
create index predictions_active_idx on predictions (status, created_at) where status in ('starting', 'processing');
alter table cost_tracking add foreign key (prediction_id) references predictions (id) on delete set null;

-- ---------------------------------------------------------------- events: history and outbox
create table events (
    id              uuid primary key default gen_random_uuid(),
    seq             bigint generated always as identity,
    organization_id uuid not null references organizations (id) on delete cascade,
    entity_type     text not null check (entity_type in
                    ('job', 'host', 'gpu', 'prediction', 'organization', 'member', 'invite',
                     'api_key', 'webhook', 'allocation', 'quota')),
    entity_id       uuid not null,
    type            text not null check (type ~ '^[a-z_]+\.[a-z_.]+$'),
    data            jsonb not null default '{}'::jsonb,
    actor           text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create unique index events_seq_key on events (seq);
create index events_entity_idx on events (organization_id, entity_type, entity_id, seq);
create index events_org_seq_idx on events (organization_id, seq desc);

create table webhook_deliveries (
    id               uuid primary key default gen_random_uuid(),
    organization_id  uuid not null references organizations (id) on delete cascade,
    webhook_id       uuid not null references webhooks (id) on delete cascade,
    event_id         uuid references events (id) on delete set null,
    event_type       text not null,
    payload          jsonb not null,
    status           text not null default 'pending'
                     check (status in ('pending', 'delivering', 'succeeded', 'failed', 'dead')),
    attempt          integer not null default 0 check (attempt >= 0),
    next_attempt_at  timestamptz not null default now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    last_status_code integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);
create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at)
    where status in ('pending', 'failed');
create index webhook_deliveries_hook_idx on webhook_deliveries (webhook_id, created_at desc);

-- ---------------------------------------------------------------- triggers
-- updated_at on every table (partitions inherit the parent's row trigger).
do $$
declare t record;
begin
    for t in
        select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = current_schema() and c.relkind in ('r', 'p') and not c.relispartition
          and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'updated_at')
    loop
        execute format('create trigger %I before update on %I for each row execute function gpufleet_touch_updated_at()',
                       t.relname || '_touch', t.relname);
    end loop;
end $$;

create or replace function gpufleet_bump_gpu_version() returns trigger
language plpgsql as $$
begin
    new.version := old.version + 1;
    return new;
end $$;
create trigger gpu_resources_version before update on gpu_resources
    for each row execute function gpufleet_bump_gpu_version();
