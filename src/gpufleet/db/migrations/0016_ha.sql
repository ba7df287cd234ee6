-- Several replicas on one database (docs/deployment.md, "Several replicas"): idempotency keys, so a
-- client may retry a POST on any replica, and the control plane's liveness clock, so a host is
-- never judged silent for time when no replica could hear it.

-- ---------------------------------------------------------------- idempotency keys
-- One row per (organization, scope, key): written in the transaction that does the work, so a
-- concurrent duplicate waits on the primary key and then replays the stored response. Only
-- successful responses are stored (an error rolls the row back with the work). Kept 24 h.
create table idempotency_keys (
    organization_id uuid not null references organizations (id) on delete cascade,
    scope           text not null check (length(scope) between 1 and 100),   -- e.g. 'POST /v1/jobs'
    key             text not null check (length(key) between 1 and 255 and key ~ '^[\x21-\x7e]+$'),
    request_hash    text not null check (request_hash ~ '^[0-9a-f]{64}$'),
    response_status integer check (response_status between 200 and 299),
    response_body   jsonb,
    created_by      uuid references users (id) on delete set null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    primary key (organization_id, scope, key),
    check ((response_status is null) = (response_body is null))
);
create index idempotency_keys_created_idx on idempotency_keys (created_at);

create trigger idempotency_keys_touch before update on idempotency_keys
    for each row execute function gpufleet_touch_updated_at();
alter table idempotency_keys enable row level security;
alter table idempotency_keys force row level security;
create policy tenant_isolation on idempotency_keys as permissive for all to gpufleet_app
    using (organization_id = (select gpufleet_current_org()))
    with check (organization_id = (select gpufleet_current_org()));
create policy system_access on idempotency_keys as permissive for all to gpufleet_system
    using (true) with check (true);
grant select, insert, update, delete on idempotency_keys to gpufleet_app, gpufleet_system;

-- ---------------------------------------------------------------- the control plane's clock
-- One row. Every liveness and reaper pass (any replica) moves last_pass_at to now(); a pass that
-- finds it older than the outage gap knows no replica was running against the database (all
-- down, or the database unreachable) and sets resumed_at: silence before that is not counted.
create table control_plane_clock (
    id           boolean primary key default true check (id),
    last_pass_at timestamptz not null,
    resumed_at   timestamptz not null,           -- '-infinity' until an outage is seen
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);
create trigger control_plane_clock_touch before update on control_plane_clock
    for each row execute function gpufleet_touch_updated_at();
grant select, insert, update on control_plane_clock to gpufleet_system;
