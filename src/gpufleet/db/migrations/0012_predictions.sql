-- Predictions (docs/predictions.md): Cog models stored as content-addressed versions, deployments
-- that run replicas (long-running allocations placed by the scheduler, one worker process each),
-- predictions queued in PostgreSQL and claimed by a ready replica, and files for Path inputs/outputs.

-- ---------------------------------------------------------------- models and versions
create table models (
    id                uuid primary key default gen_random_uuid(),
    organization_id   uuid not null references organizations (id) on delete cascade,
    name              text not null check (name ~ '^[a-z0-9][a-z0-9._-]{0,99}$'),
    description       text not null default '' check (length(description) <= 2000),
    -- default hardware of the model's own deployment (POST /v1/models/{owner}/{name}/predictions)
    gpu_count         integer not null default 1 check (gpu_count between 0 and 64),
    gpu_milli         integer not null default 1000 check (gpu_milli between 0 and 1000),
    min_memory_mb     integer not null default 0 check (min_memory_mb >= 0),
    gpu_models        text[] not null default '{}',
    cpu_milli         integer not null default 0 check (cpu_milli >= 0),
    ram_mb            bigint not null default 0 check (ram_mb >= 0),
    latest_version_id uuid,
    run_count         bigint not null default 0 check (run_count >= 0),
    created_by        uuid references users (id) on delete set null,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    unique (organization_id, name),
    check (gpu_milli = 1000 or gpu_count = 1 or (gpu_count = 0 and gpu_milli = 0)),
    check (gpu_count > 0 or gpu_milli = 0)
);

-- A version's id (the `version` of the API) is sha256 over the model's full name and the archive:
-- content-addressed, so pushing the same directory twice gives the same version.
create table model_versions (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    model_id        uuid not null references models (id) on delete cascade,
    digest          text not null check (digest ~ '^[0-9a-f]{64}$'),
    archive         bytea not null,                       -- tar.gz of the model directory
    archive_size    integer not null check (archive_size > 0),
    predict_ref     text not null,                        -- cog.yaml `predict`, e.g. predict.py:Predictor
    cog_config      jsonb not null default '{}'::jsonb check (jsonb_typeof(cog_config) = 'object'),
    openapi_schema  jsonb not null default '{}'::jsonb check (jsonb_typeof(openapi_schema) = 'object'),
    python_packages text[] not null default '{}',
    python_version  text,
    gpu             boolean not null default false,       -- cog.yaml build.gpu
    is_generator    boolean not null default false,       -- predict() yields: outputs stream
    cog_version     text,
    created_by      uuid references users (id) on delete set null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (model_id, digest)
);
create index model_versions_org_digest_idx on model_versions (organization_id, digest);
create index model_versions_model_created_idx on model_versions (model_id, created_at desc, id desc);
alter table models add foreign key (latest_version_id) references model_versions (id) on delete set null;

-- ---------------------------------------------------------------- deployments and replicas
create table deployments (
    id               uuid primary key default gen_random_uuid(),
    organization_id  uuid not null references organizations (id) on delete cascade,
    name             text not null check (name ~ '^[a-z0-9][a-z0-9._-]{0,99}$'),
    model_id         uuid not null references models (id) on delete cascade,
    version_id       uuid not null references model_versions (id) on delete restrict,
    implicit         boolean not null default false,      -- the model's own (follows its latest version)
    release          integer not null default 1 check (release >= 1),
    min_replicas     integer not null default 0 check (min_replicas >= 0),
    max_replicas     integer not null default 1 check (max_replicas between 1 and 100),
    idle_timeout_s   integer not null default 300 check (idle_timeout_s between 1 and 86400),
    concurrency      integer not null default 1 check (concurrency between 1 and 64),
    gpu_count        integer not null default 1 check (gpu_count between 0 and 64),
    gpu_milli        integer not null default 1000 check (gpu_milli between 0 and 1000),
    min_memory_mb    integer not null default 0 check (min_memory_mb >= 0),
    gpu_models       text[] not null default '{}',
    cpu_milli        integer not null default 0 check (cpu_milli >= 0),
    ram_mb           bigint not null default 0 check (ram_mb >= 0),
    failures         integer not null default 0 check (failures >= 0),  -- replica crashes in a row
    next_start_after timestamptz,                                      -- restart backoff
    created_by       uuid references users (id) on delete set null,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    unique (organization_id, name),
    check (min_replicas <= max_replicas),
    check (gpu_milli = 1000 or gpu_count = 1 or (gpu_count = 0 and gpu_milli = 0)),
    check (gpu_count > 0 or gpu_milli = 0)
);
create index deployments_model_idx on deployments (model_id);
create unique index deployments_implicit_key on deployments (model_id) where implicit;

-- Batch jobs and replicas share the jobs table (scheduling, quotas, budgets, allocations, costs,
-- fencing); a replica's job has kind 'replica' and its runner state lives in `replicas`.
alter table jobs add column kind text not null default 'job' check (kind in ('job', 'replica'));
create index jobs_org_kind_created_idx on jobs (organization_id, kind, created_at desc, id desc);

create table replicas (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    deployment_id   uuid not null references deployments (id) on delete cascade,
    version_id      uuid not null references model_versions (id) on delete restrict,
    job_id          uuid not null unique references jobs (id) on delete cascade,
    status          text not null default 'starting'
                    check (status in ('starting', 'ready', 'draining', 'stopped')),
    slots           integer not null default 1 check (slots between 1 and 64),
    environment_s   double precision,                     -- materializing the environment on the host
    environment_cached boolean,
    setup_s         double precision,                     -- the predictor's setup()
    error           text,
    ready_at        timestamptz,
    last_active_at  timestamptz not null default now(),   -- last claim or completion: idle timeout
    stopped_at      timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index replicas_deployment_idx on replicas (deployment_id, status);
create index replicas_live_idx on replicas (organization_id, status) where status <> 'stopped';

-- ---------------------------------------------------------------- predictions
alter table predictions
    add column deployment_id    uuid references deployments (id) on delete set null,
    add column version_id       uuid references model_versions (id) on delete set null,
    add column replica_id       uuid references replicas (id) on delete set null,
    add column stream           boolean not null default false,
    add column cancel_requested boolean not null default false,
    add column claimed_at       timestamptz,
    add column output_items     integer not null default 0 check (output_items >= 0),  -- streamed items so far
    add column source           text not null default 'api' check (source in ('api', 'web', 'cli'));
create index predictions_queue_idx on predictions (deployment_id, created_at, id)
    where status = 'starting' and replica_id is null;
create index predictions_replica_idx on predictions (replica_id) where status in ('starting', 'processing');
create index predictions_version_idx on predictions (version_id);

-- ---------------------------------------------------------------- files
create table files (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    name            text not null check (length(name) between 1 and 255),
    content_type    text not null default 'application/octet-stream' check (length(content_type) <= 255),
    size            bigint not null check (size >= 0),
    sha256          text not null check (sha256 ~ '^[0-9a-f]{64}$'),
    data            bytea not null,
    prediction_id   uuid references predictions (id) on delete cascade,
    created_by      uuid references users (id) on delete set null,
    expires_at      timestamptz not null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index files_org_created_idx on files (organization_id, created_at desc, id desc);
create index files_expires_idx on files (expires_at);
create index files_prediction_idx on files (prediction_id) where prediction_id is not null;

-- ---------------------------------------------------------------- events
alter table events drop constraint events_entity_type_check;
alter table events add constraint events_entity_type_check check (entity_type in
    ('job', 'host', 'gpu', 'prediction', 'organization', 'member', 'invite', 'api_key', 'webhook',
     'allocation', 'quota', 'model', 'deployment', 'replica', 'budget'));

-- ---------------------------------------------------------------- tenancy, triggers, grants
do $$
declare t text;
begin
    foreach t in array array['models', 'model_versions', 'deployments', 'replicas', 'files'] loop
        execute format('create trigger %I before update on %I for each row execute function gpufleet_touch_updated_at()',
                       t || '_touch', t);
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format('create policy tenant_isolation on %I as permissive for all to gpufleet_app
                            using (organization_id = (select gpufleet_current_org()))
                            with check (organization_id = (select gpufleet_current_org()))', t);
        execute format('create policy system_access on %I as permissive for all to gpufleet_system
                            using (true) with check (true)', t);
        execute format('grant select, insert, update, delete on %I to gpufleet_app, gpufleet_system', t);
    end loop;
end $$;
