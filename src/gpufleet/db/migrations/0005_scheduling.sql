-- The scheduler's needs: cancellation of running jobs, wake-ups, a lease for pooled deployments,
-- and one lock order for every writer of the capacity ledger.

-- A running job cannot be cancelled by the server alone: its process lives on a host. The
-- request is recorded here; the agent side kills the process and moves the job to `cancelled`.
alter table jobs add column cancel_requested_at timestamptz;

-- ---------------------------------------------------------------- lock order
-- Every writer of the ledger now locks job -> host -> GPU: allocate_gpu (job update reserves the
-- host, then the allocation insert moves the GPU), the scheduler's batch commit (it pre-locks in
-- that order) and, with this new body, a job leaving allocated/running (it used to release the
-- GPUs before the host, the opposite order, which could deadlock against a concurrent
-- allocation). The behaviour is otherwise identical to 0002's.
create or replace function gpufleet_job_ledger() returns trigger
language plpgsql as $$
declare
    was_active boolean := old.status in ('allocated', 'running');
    is_active  boolean := new.status in ('allocated', 'running');
    moved      boolean := new.host_id is distinct from old.host_id or new.attempt <> old.attempt;
begin
    if was_active and (not is_active or moved) then
        if old.host_id is not null then
            update hosts
               set cpu_milli_allocated = greatest(cpu_milli_allocated - old.cpu_milli, 0),
                   ram_mb_allocated = greatest(ram_mb_allocated - old.ram_mb, 0)
             where id = old.host_id;
        end if;
        update allocations set released_at = now() where job_id = old.id and released_at is null;
    end if;
    if is_active and (not was_active or moved) then
        if new.host_id is null then
            raise exception 'job % cannot be % without a host', new.id, new.status using errcode = 'GF409';
        end if;
        update hosts
           set cpu_milli_allocated = cpu_milli_allocated + new.cpu_milli,
               ram_mb_allocated = ram_mb_allocated + new.ram_mb
         where id = new.host_id and organization_id = new.organization_id and status = 'ready'
           and revoked_at is null;
        if not found then
            raise exception 'host % is not ready for new work', new.host_id using errcode = 'GF409';
        end if;
    end if;
    return new;
end $$;

-- ---------------------------------------------------------------- wake-ups
-- Whatever may let a pending job run wakes the scheduler: a job queued, capacity released, a
-- host or GPU coming (back) into service, a quota changed. pg_notify is transactional (delivered
-- at commit, identical notifications of one transaction merged). Deployments behind a
-- transaction pooler cannot LISTEN; their scheduler polls this sequence instead (a bump seen
-- before its transaction commits costs at most one spurious cycle).
create sequence gpufleet_scheduler_wakeups;
grant usage, select on sequence gpufleet_scheduler_wakeups to gpufleet_app, gpufleet_system;

create or replace function gpufleet_wake_scheduler() returns trigger
language plpgsql as $$
begin
    perform pg_notify('gpufleet_scheduler', '');
    perform nextval('gpufleet_scheduler_wakeups');
    return null;
end $$;

create trigger jobs_wake_insert after insert on jobs
    for each row when (new.status = 'pending') execute function gpufleet_wake_scheduler();
create trigger jobs_wake_update after update of status on jobs
    for each row when ((new.status = 'pending' and old.status <> 'pending')
                       or (old.status in ('allocated', 'running') and new.status not in ('allocated', 'running')))
    execute function gpufleet_wake_scheduler();
create trigger hosts_wake_insert after insert on hosts
    for each row when (new.status = 'ready') execute function gpufleet_wake_scheduler();
create trigger hosts_wake_update after update of status on hosts
    for each row when (new.status = 'ready' and old.status <> 'ready') execute function gpufleet_wake_scheduler();
create trigger gpu_resources_wake_insert after insert on gpu_resources
    for each row execute function gpufleet_wake_scheduler();
create trigger gpu_resources_wake_update after update of status on gpu_resources
    for each row when (old.status not in ('available', 'allocated') and new.status in ('available', 'allocated'))
    execute function gpufleet_wake_scheduler();
create trigger quotas_wake after insert or update or delete on quotas
    for each statement execute function gpufleet_wake_scheduler();

-- ---------------------------------------------------------------- leadership behind a pooler
-- A session advisory lock elects the scheduler leader; through a transaction pooler a session
-- lock would stay on whichever server connection took it, so there a lease row is used instead,
-- judged by the database clock. Not tenant data: no organization_id, no RLS.
create table scheduler_leases (
    name        text primary key,
    owner       text not null,
    expires_at  timestamptz not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
create trigger scheduler_leases_touch before update on scheduler_leases
    for each row execute function gpufleet_touch_updated_at();
grant select, insert, update, delete on scheduler_leases to gpufleet_system;
