-- Tenant isolation enforced by PostgreSQL, and the capacity ledger guarded in the database.
--
-- Roles (cluster-wide, so created only when missing):
--   gpufleet_app     request handling. LOGIN, not superuser, owns nothing, no BYPASSRLS.
--                    Sees exactly the organization named by the per-transaction setting
--                    gpufleet.org_id (set with set_config(..., true)); empty or missing: nothing.
--   gpufleet_system  background work that must see every tenant (scheduler, reaper, webhook
--                    delivery, authentication). NOLOGIN; the owner switches to it with
--                    SET LOCAL ROLE. Its policies are the only ones that span tenants.

do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'gpufleet_app') then
        begin
            create role gpufleet_app login nosuperuser nocreatedb nocreaterole noinherit nobypassrls;
        exception when duplicate_object then null;   -- another database of this cluster won the race
        end;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'gpufleet_system') then
        begin
            create role gpufleet_system nologin nosuperuser nocreatedb nocreaterole nobypassrls;
        exception when duplicate_object then null;
        end;
    end if;
end $$;

-- The owner (who runs migrations and the system path) must be able to SET ROLE gpufleet_system.
do $$
begin
    execute format('grant gpufleet_system to %I', current_user);
exception when others then null;   -- superusers need no membership
end $$;

do $$
begin
    execute format('grant connect on database %I to gpufleet_app', current_database());
end $$;
grant usage on schema public to gpufleet_app, gpufleet_system;

-- The tenant of the current transaction; NULL (sees nothing) when unset or empty.
create or replace function gpufleet_current_org() returns uuid
language sql stable parallel safe as $$
    select nullif(current_setting('gpufleet.org_id', true), '')::uuid
$$;

create or replace function gpufleet_current_user() returns uuid
language sql stable parallel safe as $$
    select nullif(current_setting('gpufleet.user_id', true), '')::uuid
$$;

-- Every table carrying organization_id: RLS enabled and FORCED (the owner too), one tenant
-- policy for gpufleet_app, one all-tenants policy for gpufleet_system, least-privilege grants.
do $$
declare t record;
begin
    for t in
        select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = current_schema() and c.relkind in ('r', 'p') and not c.relispartition
          and exists (select 1 from pg_attribute a
                      where a.attrelid = c.oid and a.attname = 'organization_id' and not a.attisdropped)
    loop
        execute format('alter table %I enable row level security', t.relname);
        execute format('alter table %I force row level security', t.relname);
        execute format($p$create policy tenant_isolation on %I as permissive for all to gpufleet_app
                          using (organization_id = (select gpufleet_current_org()))
                          with check (organization_id = (select gpufleet_current_org()))$p$, t.relname);
        execute format($p$create policy system_access on %I as permissive for all to gpufleet_system
                          using (true) with check (true)$p$, t.relname);
        execute format('grant select, insert, update, delete on %I to gpufleet_app, gpufleet_system', t.relname);
    end loop;
end $$;

-- The organization row itself is keyed by id.
alter table organizations enable row level security;
alter table organizations force row level security;
create policy tenant_isolation on organizations as permissive for all to gpufleet_app
    using (id = (select gpufleet_current_org()))
    with check (id = (select gpufleet_current_org()));
create policy system_access on organizations as permissive for all to gpufleet_system
    using (true) with check (true);
grant select, insert, update, delete on organizations to gpufleet_app, gpufleet_system;

-- Users are global (one person, many organizations): a tenant sees the users who are its
-- members, and a request sees its own user. Users are created on the system path.
alter table users enable row level security;
alter table users force row level security;
create policy member_visibility on users as permissive for select to gpufleet_app
    using (id = (select gpufleet_current_user())
           or id in (select m.user_id from organization_members m
                     where m.organization_id = (select gpufleet_current_org())));
create policy self_update on users as permissive for update to gpufleet_app
    using (id = (select gpufleet_current_user()))
    with check (id = (select gpufleet_current_user()));
create policy system_access on users as permissive for all to gpufleet_system
    using (true) with check (true);
grant select, update (name, updated_at) on users to gpufleet_app;
grant select, insert, update, delete on users to gpufleet_system;

grant select on schema_migrations to gpufleet_app, gpufleet_system;
grant usage on all sequences in schema public to gpufleet_app, gpufleet_system;

-- ---------------------------------------------------------------- capacity ledger
-- Allocation rows move the GPU's counters; the CHECKs on gpu_resources refuse any write that
-- would exceed a GPU's 1000 milli or its memory. Concurrent writers serialise on the GPU row.
create or replace function gpufleet_allocation_ledger() returns trigger
language plpgsql as $$
declare
    gpu_host uuid;
begin
    if tg_op = 'INSERT' then
        if new.released_at is not null then
            return new;
        end if;
        update gpu_resources
           set allocated_milli = allocated_milli + new.milli,
               allocated_memory_mb = allocated_memory_mb + new.memory_mb,
               status = 'allocated'
         where id = new.gpu_id
           and organization_id = new.organization_id
           and status in ('available', 'allocated')
        returning host_id into gpu_host;
        if not found then
            raise exception 'GPU % is not available for allocation', new.gpu_id using errcode = 'GF409';
        end if;
        if gpu_host <> new.host_id then
            raise exception 'GPU % is not on host %', new.gpu_id, new.host_id using errcode = 'GF409';
        end if;
    elsif tg_op = 'UPDATE' then
        if old.released_at is null and new.released_at is not null then
            update gpu_resources
               set allocated_milli = allocated_milli - old.milli,
                   allocated_memory_mb = allocated_memory_mb - old.memory_mb,
                   status = case when status = 'allocated' and allocated_milli - old.milli = 0
                                 then 'available' else status end
             where id = old.gpu_id;
        elsif new.released_at is null and (old.released_at is not null or new.milli <> old.milli
                                           or new.memory_mb <> old.memory_mb or new.gpu_id <> old.gpu_id) then
            raise exception 'allocations are released, never re-opened or resized' using errcode = 'GF409';
        end if;
    elsif tg_op = 'DELETE' then
        if old.released_at is null then
            update gpu_resources
               set allocated_milli = allocated_milli - old.milli,
                   allocated_memory_mb = allocated_memory_mb - old.memory_mb,
                   status = case when status = 'allocated' and allocated_milli - old.milli = 0
                                 then 'available' else status end
             where id = old.gpu_id;
        end if;
        return old;
    end if;
    return new;
end $$;

create trigger allocations_ledger after insert or update or delete on allocations
    for each row execute function gpufleet_allocation_ledger();

-- A job leaving allocated/running (terminal, requeued, moved) releases everything it held in
-- the same transaction; a job entering it reserves CPU and RAM on a ready host.
create or replace function gpufleet_job_ledger() returns trigger
language plpgsql as $$
declare
    was_active boolean := old.status in ('allocated', 'running');
    is_active  boolean := new.status in ('allocated', 'running');
    moved      boolean := new.host_id is distinct from old.host_id or new.attempt <> old.attempt;
begin
    if was_active and (not is_active or moved) then
        update allocations set released_at = now() where job_id = old.id and released_at is null;
        if old.host_id is not null then
            update hosts
               set cpu_milli_allocated = greatest(cpu_milli_allocated - old.cpu_milli, 0),
                   ram_mb_allocated = greatest(ram_mb_allocated - old.ram_mb, 0)
             where id = old.host_id;
        end if;
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

create trigger jobs_ledger after update of status, host_id, attempt on jobs
    for each row execute function gpufleet_job_ledger();

-- ---------------------------------------------------------------- metric partitions
-- Daily partitions make retention a DROP instead of a DELETE. Run by the owner (DDL) at start
-- and by the retention task; rows outside any daily partition land in gpu_metrics_default.
create or replace function gpufleet_ensure_metric_partitions(days_back integer, days_ahead integer)
returns integer
language plpgsql as $$
declare
    d date;
    name text;
    created integer := 0;
begin
    for d in select generate_series(current_date - days_back, current_date + days_ahead, interval '1 day')::date
    loop
        name := 'gpu_metrics_p' || to_char(d, 'YYYYMMDD');
        if to_regclass(name) is null then
            begin
                execute format('create table %I partition of gpu_metrics for values from (%L) to (%L)',
                               name, d::timestamptz, (d + 1)::timestamptz);
                execute format('alter table %I enable row level security', name);
                execute format('alter table %I force row level security', name);
                created := created + 1;
            exception when check_violation then
                -- the default partition already holds rows of that day: leave them there
                null;
            end;
        end if;
    end loop;
    return created;
end $$;

alter table gpu_metrics_default enable row level security;
alter table gpu_metrics_default force row level security;
select gpufleet_ensure_metric_partitions(1, 3);
