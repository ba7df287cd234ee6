-- Costs, continued (docs/costs.md): metering of CPU-only jobs, custom budget periods, and the
-- optional policy that stops a hard budget's running work at 100 %.

-- ---------------------------------------------------------------- CPU-only jobs
-- A job without GPUs holds no allocation, only host CPU and RAM (the job ledger trigger adds its
-- cpu_milli/ram_mb to the host). It is metered through a reservation row per attempt, the
-- counterpart of an allocation: created when the job takes the host, released when it leaves it
-- (finished, cancelled, requeued), metered up to `metered_until` like an allocation.
create table cpu_reservations (
    id              uuid primary key default gen_random_uuid(),
    organization_id uuid not null references organizations (id) on delete cascade,
    job_id          uuid not null references jobs (id) on delete cascade,
    host_id         uuid not null references hosts (id) on delete cascade,
    attempt         integer not null check (attempt >= 1),
    cpu_milli       integer not null check (cpu_milli >= 0),
    ram_mb          bigint not null check (ram_mb >= 0),
    released_at     timestamptz,
    metered_until   timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
-- One held at a time per job (a move to another host within an attempt releases, then takes anew).
create unique index cpu_reservations_held_key on cpu_reservations (job_id) where released_at is null;
create trigger cpu_reservations_touch before update on cpu_reservations
    for each row execute function gpufleet_touch_updated_at();
create index cpu_reservations_active_idx on cpu_reservations (organization_id) where released_at is null;

alter table cpu_reservations enable row level security;
alter table cpu_reservations force row level security;
create policy tenant_isolation on cpu_reservations as permissive for all to gpufleet_app
    using (organization_id = (select gpufleet_current_org()))
    with check (organization_id = (select gpufleet_current_org()));
create policy system_access on cpu_reservations as permissive for all to gpufleet_system
    using (true) with check (true);
grant select, insert, update, delete on cpu_reservations to gpufleet_app, gpufleet_system;

-- Cost rows of a reservation: no GPU (model null, share 0, no GPU-seconds).
alter table cost_tracking alter column gpu_model drop not null;
alter table cost_tracking drop constraint if exists cost_tracking_gpu_milli_check;
alter table cost_tracking add constraint cost_tracking_gpu_milli_check check (gpu_milli between 0 and 1000);
alter table cost_tracking add column reservation_id uuid references cpu_reservations (id) on delete set null;
create unique index cost_tracking_reservation_period_key on cost_tracking (reservation_id, period_start)
    where reservation_id is not null;

-- Same status moves as the job ledger (gpufleet_job_ledger), for jobs without GPUs.
create or replace function gpufleet_job_reservation() returns trigger
language plpgsql as $$
declare
    was_active boolean := tg_op = 'UPDATE' and old.status in ('allocated', 'running');
    is_active  boolean := new.status in ('allocated', 'running');
    moved      boolean := tg_op = 'UPDATE' and (new.host_id is distinct from old.host_id or new.attempt <> old.attempt);
begin
    if new.gpu_count <> 0 then
        return null;
    end if;
    if was_active and (not is_active or moved) then
        update cpu_reservations set released_at = now() where job_id = old.id and released_at is null;
    end if;
    if is_active and (not was_active or moved) then
        insert into cpu_reservations (organization_id, job_id, host_id, attempt, cpu_milli, ram_mb)
        values (new.organization_id, new.id, new.host_id, new.attempt, new.cpu_milli, new.ram_mb)
        on conflict (job_id) where released_at is null do nothing;
    end if;
    return null;
end $$;
-- Only jobs without GPUs fire it (the WHEN keeps it off the scheduler's path for GPU jobs).
create trigger jobs_cpu_reservation after insert or update of status, host_id, attempt on jobs
    for each row when (new.gpu_count = 0) execute function gpufleet_job_reservation();

-- Jobs without GPUs already holding a host when this migration runs start being metered now.
insert into cpu_reservations (organization_id, job_id, host_id, attempt, cpu_milli, ram_mb)
select organization_id, id, host_id, attempt, cpu_milli, ram_mb from jobs
 where gpu_count = 0 and status in ('allocated', 'running') and host_id is not null
on conflict do nothing;

-- The cost of reservation `r` over [s, e), cut at every hour boundary and every CPU/RAM price
-- change; the same columns as gpufleet_cost_segments.
create or replace function gpufleet_reservation_cost_segments(r cpu_reservations, s timestamptz, e timestamptz)
returns table (
    organization_id uuid, job_id uuid, reservation_id uuid, attempt integer, host_id uuid,
    user_id uuid, labels jsonb, period_start timestamptz, period_end timestamptz,
    cpu_milli integer, ram_mb bigint, cpu_hourly_price numeric, ram_hourly_price numeric, amount numeric,
    currency text
)
language sql stable as $$
    with job as (
        select j.submitted_by, j.labels from jobs j where j.id = r.job_id
    ), cuts as (
        select s as t
        union select e
        union select generate_series(date_trunc('hour', s) + interval '1 hour', e, interval '1 hour')
        union select p.effective_from from gpu_prices p
               where p.organization_id = r.organization_id and p.kind in ('cpu', 'ram')
                 and p.effective_from > s and p.effective_from < e
                 and (p.host_id is null or p.host_id = r.host_id)
    ), seg as (
        select t as b0, lead(t) over (order by t) as b1 from cuts where t <= e
    ), priced as (
        select seg.b0, seg.b1, extract(epoch from seg.b1 - seg.b0) as secs,
               gpufleet_price_at(r.organization_id, 'cpu', null, r.host_id, seg.b0) as cp,
               gpufleet_price_at(r.organization_id, 'ram', null, r.host_id, seg.b0) as rp
          from seg where seg.b1 is not null and seg.b1 > seg.b0
    )
    select r.organization_id, r.job_id, r.id, r.attempt, r.host_id, job.submitted_by, job.labels,
           priced.b0, priced.b1, r.cpu_milli, r.ram_mb, priced.cp, priced.rp,
           round(priced.secs * (r.cpu_milli * priced.cp / 1000 + r.ram_mb * priced.rp / 1024) / 3600, 6),
           coalesce((select p.currency from gpu_prices p where p.organization_id = r.organization_id
                      order by p.effective_from desc limit 1), 'USD')
      from priced, job
$$;

create or replace function gpufleet_write_reservation_costs(r cpu_reservations, s timestamptz, e timestamptz)
returns void
language sql as $$
    insert into cost_tracking (organization_id, job_id, reservation_id, attempt, gpu_id, host_id, user_id, labels,
                               gpu_model, period_start, period_end, gpu_milli, hourly_price, cpu_milli, ram_mb,
                               cpu_hourly_price, ram_hourly_price, gpu_seconds, amount, currency)
    select x.organization_id, x.job_id, x.reservation_id, x.attempt, null, x.host_id, x.user_id, x.labels,
           null, x.period_start, x.period_end, 0, 0, x.cpu_milli, x.ram_mb, x.cpu_hourly_price,
           x.ram_hourly_price, 0, x.amount, x.currency
      from gpufleet_reservation_cost_segments(r, s, e) x
$$;

-- Closed at release, in the transaction that releases (as for allocations).
create or replace function gpufleet_meter_reservation_on_release() returns trigger
language plpgsql as $$
begin
    if old.released_at is null and new.released_at is not null then
        if new.released_at > coalesce(old.metered_until, old.created_at) then
            perform gpufleet_write_reservation_costs(old, coalesce(old.metered_until, old.created_at),
                                                     new.released_at);
        end if;
        new.metered_until := greatest(new.released_at, coalesce(old.metered_until, old.created_at));
    end if;
    return new;
end $$;
create trigger cpu_reservations_meter before update of released_at on cpu_reservations
    for each row execute function gpufleet_meter_reservation_on_release();

-- Closed hourly: allocations first (0009's function), then reservations, `lim` rows per call.
create or replace function gpufleet_close_reservation_intervals(upto timestamptz, lim integer) returns integer
language plpgsql as $$
declare
    r cpu_reservations;
    n integer := 0;
begin
    for r in select * from cpu_reservations
              where released_at is null and coalesce(metered_until, created_at) < upto
              order by id limit lim for update skip locked
    loop
        perform gpufleet_write_reservation_costs(r, coalesce(r.metered_until, r.created_at), upto);
        update cpu_reservations set metered_until = upto where id = r.id;
        n := n + 1;
    end loop;
    return n;
end $$;

-- ---------------------------------------------------------------- custom budget periods
-- period 'custom': periods of `period_days` days repeating from `period_anchor` (the first one
-- starts there; before it, the budget's window is the first period).
alter table budgets drop constraint if exists budgets_period_check;
alter table budgets
    add constraint budgets_period_check check (period in ('day', 'week', 'month', 'custom')),
    add column period_days   integer check (period_days between 1 and 366),
    add column period_anchor timestamptz,
    add constraint budgets_custom_period check ((period = 'custom') = (period_days is not null and period_anchor is not null)),
    -- the optional policy of a hard budget: at 100 % its running work is cancelled
    add column stop_running  boolean not null default false,
    add constraint budgets_stop_running_hard check (not stop_running or action = 'block');

create or replace function gpufleet_budget_start(period text, days integer, anchor timestamptz, at timestamptz)
returns timestamptz
language sql immutable as $$
    select case when period = 'custom'
                then anchor + make_interval(days => days)
                              * greatest(0, floor(extract(epoch from at - anchor) / (days * 86400)))::integer
                else date_trunc(period, at at time zone 'UTC') at time zone 'UTC' end
$$;

grant execute on function gpufleet_reservation_cost_segments(cpu_reservations, timestamptz, timestamptz),
    gpufleet_write_reservation_costs(cpu_reservations, timestamptz, timestamptz),
    gpufleet_close_reservation_intervals(timestamptz, integer),
    gpufleet_budget_start(text, integer, timestamptz, timestamptz)
    to gpufleet_app, gpufleet_system;

do $$
begin
    if to_regproc('gpufleet_enable_supabase_policies') is not null then
        perform gpufleet_enable_supabase_policies();
    end if;
end $$;
