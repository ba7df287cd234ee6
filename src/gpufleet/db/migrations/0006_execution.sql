-- Running the work on hosts (docs/execution.md): one row per job attempt (its outcome as the
-- agent or the server decided it, and the cheap counters of its stored logs), when a host became
-- unreachable, and the wake-ups of waiting agents and log followers.

-- ---------------------------------------------------------------- host loss, by the database clock
-- The reaper requeues the work of a host unreachable for longer than a grace period; judged on
-- this stamp (hosts.updated_at moves with every ledger change, so it cannot be used).
alter table hosts add column unreachable_since timestamptz;
update hosts set unreachable_since = now() where status = 'unreachable';

create or replace function gpufleet_stamp_unreachable() returns trigger
language plpgsql as $$
begin
    if new.status = 'unreachable' and old.status <> 'unreachable' then
        new.unreachable_since := now();
    elsif new.status <> 'unreachable' then
        new.unreachable_since := null;
    end if;
    return new;
end $$;
create trigger hosts_unreachable_since before update of status on hosts
    for each row execute function gpufleet_stamp_unreachable();
create index hosts_unreachable_idx on hosts (unreachable_since) where status = 'unreachable';

-- ---------------------------------------------------------------- attempts
-- Created on the first report (start, logs or exit) of an attempt, or when the server ends one.
-- `reported_by` tells an outcome the agent reported (a resent report is then recognised and
-- changes nothing) from one the server decided (host lost, silent agent, process not found).
-- The log counters make the per-attempt cap and duplicate detection one locked row read:
-- `*_end` is how far each stream has been received (stored or not), `log_bytes` what is stored.
create table job_attempts (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    job_id          uuid not null references jobs (id) on delete cascade,
    attempt         integer not null check (attempt >= 1),
    host_id         uuid references hosts (id) on delete set null,
    pid             integer,
    started_at      timestamptz,
    finished_at     timestamptz,
    outcome         text check (outcome in ('succeeded', 'failed', 'cancelled', 'timed_out')),
    exit_code       integer,
    exit_signal     integer,
    reason          text,
    reported_by     text check (reported_by in ('agent', 'server')),
    log_next_seq    integer not null default 0 check (log_next_seq >= 0),
    log_bytes       bigint not null default 0 check (log_bytes >= 0),
    log_truncated   boolean not null default false,
    stdout_end      bigint not null default 0 check (stdout_end >= 0),
    stderr_end      bigint not null default 0 check (stderr_end >= 0),
    system_end      bigint not null default 0 check (system_end >= 0),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (job_id, attempt),
    check ((outcome is null) = (reported_by is null))
);
create index job_attempts_org_idx on job_attempts (organization_id, job_id);
create trigger job_attempts_touch before update on job_attempts
    for each row execute function gpufleet_touch_updated_at();

alter table job_attempts enable row level security;
alter table job_attempts force row level security;
create policy tenant_isolation on job_attempts as permissive for all to gpufleet_app
    using (organization_id = (select gpufleet_current_org()))
    with check (organization_id = (select gpufleet_current_org()));
create policy system_access on job_attempts as permissive for all to gpufleet_system
    using (true) with check (true);
grant select, insert, update, delete on job_attempts to gpufleet_app, gpufleet_system;

-- The reaper's double checks look at running jobs only (cancel requested, past max_runtime_s).
create index jobs_running_idx on jobs (started_at) where status = 'running';

-- The requeue rate limit counts host-loss requeues of the last minute per organization.
create index events_requeued_idx on events (organization_id, created_at) where type = 'job.requeued';

-- ---------------------------------------------------------------- wake-ups
-- A job placed on a host wakes that host's long-poll (payload: the host id); a job reaching a
-- terminal state wakes its log followers (payload: the job id; log appends notify the same
-- channel from the service). pg_notify is transactional: delivered at commit, identical ones of
-- one transaction merged. Behind a transaction pooler nobody LISTENs and the server polls.
create or replace function gpufleet_notify_execution() returns trigger
language plpgsql as $$
begin
    if new.status = 'allocated' and new.host_id is not null then
        perform pg_notify('gpufleet_assignments', new.host_id::text);
    elsif new.status in ('succeeded', 'failed', 'cancelled', 'timed_out', 'allocation_failed', 'pending') then
        perform pg_notify('gpufleet_job_logs', new.id::text);
    end if;
    return null;
end $$;
create trigger jobs_execution_notify after update of status on jobs
    for each row when (new.status is distinct from old.status) execute function gpufleet_notify_execution();

-- Supabase's column grants (0003) list columns explicitly: refresh them for the new ones.
do $$
begin
    if to_regproc('gpufleet_enable_supabase_policies') is not null then
        perform gpufleet_enable_supabase_policies();
    end if;
end $$;
