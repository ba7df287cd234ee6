-- Webhooks: Standard Webhooks signatures with secret rotation, per-attempt history, and the fan-out
-- from the events outbox to deliveries in the same transaction as the event (nothing is lost
-- between the two: a rolled-back change neither records an event nor notifies anyone).

-- ---------------------------------------------------------------- endpoints
alter table webhooks
    add column previous_secret_ciphertext bytea,          -- still signs until previous_secret_expires_at
    add column previous_secret_expires_at timestamptz,
    add column failing_since              timestamptz,    -- first failure of the current failing streak
    add column disabled_reason            text,
    add column created_by                 uuid references users (id) on delete set null;
create index webhooks_org_created_idx on webhooks (organization_id, created_at desc, id desc);

-- ---------------------------------------------------------------- deliveries
alter table webhook_deliveries
    add column event_seq  bigint,                         -- the event's position: claims go in event order
    add column retry_from integer not null default 0;     -- attempts made before the last redelivery
drop index webhook_deliveries_due_idx;
create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at, event_seq)
    where status in ('pending', 'failed');
-- A replica killed mid-delivery leaves its claims behind; they are taken again when the lease ends.
create index webhook_deliveries_lease_idx on webhook_deliveries (lease_expires_at) where status = 'delivering';
drop index webhook_deliveries_hook_idx;
create index webhook_deliveries_hook_idx on webhook_deliveries (webhook_id, created_at desc, id desc);
create index webhook_deliveries_event_idx on webhook_deliveries (event_id);

-- ---------------------------------------------------------------- attempts
create table webhook_attempts (
    id               uuid primary key default gen_random_uuid(),
    organization_id  uuid not null references organizations (id) on delete cascade,
    delivery_id      uuid not null references webhook_deliveries (id) on delete cascade,
    webhook_id       uuid not null references webhooks (id) on delete cascade,
    attempt          integer not null check (attempt >= 1),
    url              text not null,
    address          text,                                 -- the validated address connected to
    status_code      integer check (status_code is null or status_code between 100 and 599),
    response_headers jsonb not null default '{}'::jsonb check (jsonb_typeof(response_headers) = 'object'),
    response_body    text not null default '' check (length(response_body) <= 4096),
    error            text,
    latency_ms       integer not null default 0 check (latency_ms >= 0),
    succeeded        boolean not null,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);
create index webhook_attempts_delivery_idx on webhook_attempts (delivery_id, attempt);
create index webhook_attempts_org_idx on webhook_attempts (organization_id);
create trigger webhook_attempts_touch before update on webhook_attempts
    for each row execute function gpufleet_touch_updated_at();

alter table webhook_attempts enable row level security;
alter table webhook_attempts force row level security;
create policy tenant_isolation on webhook_attempts as permissive for all to gpufleet_app
    using (organization_id = (select gpufleet_current_org()))
    with check (organization_id = (select gpufleet_current_org()));
create policy system_access on webhook_attempts as permissive for all to gpufleet_system
    using (true) with check (true);
grant select, insert, update, delete on webhook_attempts to gpufleet_app, gpufleet_system;

-- Retention deletes events oldest first in batches.
create index events_created_idx on events (created_at);

-- ---------------------------------------------------------------- fan-out
-- A subscription pattern: '*' (everything), an exact type, or a prefix ending in '.*' ('job.*').
-- No patterns at all also means everything.
create or replace function gpufleet_webhook_matches(patterns text[], event_type text) returns boolean
language sql immutable parallel safe as $$
    select cardinality(patterns) = 0
        or exists (select 1 from unnest(patterns) as p
                    where p = '*' or p = event_type
                       or (right(p, 2) = '.*' and starts_with(event_type, left(p, -1))))
$$;

-- Statement-level, so the scheduler's set-based event writes fan out in one statement too. Runs
-- as the writer (RLS applies: a tenant's events reach only its own webhooks). The notification is
-- delivered at commit and wakes the delivery workers at once.
create or replace function gpufleet_webhook_fanout() returns trigger
language plpgsql as $$
begin
    insert into webhook_deliveries (organization_id, webhook_id, event_id, event_seq, event_type, payload)
    select e.organization_id, w.id, e.id, e.seq, e.type,
           jsonb_build_object(
               'type', e.type,
               'timestamp', to_char(e.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object(
                   'event_id', e.id, 'seq', e.seq, 'entity_type', e.entity_type,
                   'entity_id', e.entity_id, 'actor', e.actor, 'payload', e.data))
      from new_events e
      join webhooks w on w.organization_id = e.organization_id and w.is_active
     where gpufleet_webhook_matches(w.event_types, e.type)
       and e.type <> 'webhook.test';
    if found then
        perform pg_notify('gpufleet_webhooks', '');
    end if;
    return null;
end $$;
create trigger events_webhook_fanout after insert on events
    referencing new table as new_events
    for each statement execute function gpufleet_webhook_fanout();

-- A delivery made outside the events (a test ping, a redelivery) wakes the workers too.
create or replace function gpufleet_webhook_due_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('gpufleet_webhooks', '');
    return null;
end $$;
create trigger webhook_deliveries_due_notify after update of status on webhook_deliveries
    for each row when (new.status = 'pending' and old.status is distinct from 'pending')
    execute function gpufleet_webhook_due_notify();

-- Supabase's column grants (0003) list columns explicitly: refresh them for the new ones.
do $$
begin
    if to_regproc('gpufleet_enable_supabase_policies') is not null then
        perform gpufleet_enable_supabase_policies();
    end if;
end $$;

-- Receivers' answers are for admins: no Supabase member read on the attempts (the call above
-- grants one on every tenant table it finds).
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        drop policy if exists supabase_member_read on webhook_attempts;
        revoke all on webhook_attempts from authenticated;
    end if;
end $$;
