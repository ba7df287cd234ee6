-- Costs (docs/costs.md): effective-dated prices, metering of every allocation from the database
-- clock into accounting intervals, and budgets per period (thresholds, hard limits).
--
-- Exact arithmetic throughout: prices and amounts are numeric. The one rounding is per cost row
-- (amount to 6 decimals, half away from zero); totals are sums of rows, shown to the cent.

-- ---------------------------------------------------------------- prices
-- One row per price *change*: the price in force at time t is the newest row with
-- effective_from <= t; history is kept. `kind` gpu: per GPU-hour of one model; cpu: per
-- core-hour; ram: per GiB-hour. A row with host_id applies to that host only and wins over the
-- organization-wide price of the same kind (owned vs rented machines).
alter table gpu_prices drop constraint if exists gpu_prices_organization_id_gpu_model_key;
alter table gpu_prices alter column gpu_model drop not null;
alter table gpu_prices
    add column kind text not null default 'gpu' check (kind in ('gpu', 'cpu', 'ram')),
    add column host_id uuid references hosts (id) on delete cascade,
    add column effective_from timestamptz not null default now(),
    add column set_by text;
alter table gpu_prices add constraint gpu_prices_model_of_kind check ((kind = 'gpu') = (gpu_model is not null));
create unique index gpu_prices_change_key on gpu_prices
    (organization_id, kind, coalesce(gpu_model, ''), coalesce(host_id, '00000000-0000-0000-0000-000000000000'::uuid),
     effective_from);
create index gpu_prices_lookup_idx on gpu_prices (organization_id, kind, gpu_model, effective_from desc);

-- ---------------------------------------------------------------- metering
-- An allocation is metered up to `metered_until` (null: nothing yet, from created_at): what lies
-- before it is in cost_tracking, what lies after it is accrued live. The two never overlap, so
-- nothing is counted twice; each attempt of a job has its own allocations and pays for them.
alter table allocations add column metered_until timestamptz;

alter table cost_tracking
    add column allocation_id    uuid references allocations (id) on delete set null,
    add column attempt          integer check (attempt >= 1),
    add column host_id          uuid references hosts (id) on delete set null,
    add column user_id          uuid references users (id) on delete set null,
    add column labels           jsonb not null default '{}'::jsonb,
    add column gpu_seconds      numeric(20, 6) not null default 0 check (gpu_seconds >= 0),
    add column cpu_milli        integer not null default 0 check (cpu_milli >= 0),
    add column ram_mb           bigint not null default 0 check (ram_mb >= 0),
    add column cpu_hourly_price numeric(12, 4) not null default 0 check (cpu_hourly_price >= 0),
    add column ram_hourly_price numeric(12, 4) not null default 0 check (ram_hourly_price >= 0);
-- The guard against double counting: an allocation's intervals are disjoint, so one row per start.
create unique index cost_tracking_allocation_period_key on cost_tracking (allocation_id, period_start)
    where allocation_id is not null;
create index cost_tracking_org_user_idx on cost_tracking (organization_id, user_id, period_start);

-- The price rows of one kind in force for an allocation's GPU model and host at `at`.
create or replace function gpufleet_price_at(org uuid, k text, model text, host uuid, at timestamptz)
returns numeric
language sql stable as $$
    select coalesce((select p.hourly_price from gpu_prices p
                      where p.organization_id = org and p.kind = k
                        and (k <> 'gpu' or p.gpu_model = model)
                        and (p.host_id is null or p.host_id = host)
                        and p.effective_from <= at
                      order by p.host_id is null, p.effective_from desc
                      limit 1), 0)
$$;

-- The cost of allocation `a` over [s, e), cut at every hour boundary and every price change.
-- The attempt's first GPU (lowest id) also carries the job's CPU cores and RAM.
create or replace function gpufleet_cost_segments(a allocations, s timestamptz, e timestamptz)
returns table (
    organization_id uuid, job_id uuid, allocation_id uuid, attempt integer, gpu_id uuid, host_id uuid,
    user_id uuid, labels jsonb, gpu_model text, period_start timestamptz, period_end timestamptz,
    gpu_milli integer, hourly_price numeric, cpu_milli integer, ram_mb bigint, cpu_hourly_price numeric,
    ram_hourly_price numeric, gpu_seconds numeric, amount numeric, currency text
)
language sql stable as $$
    with job as (
        select j.submitted_by, j.labels,
               case when a.gpu_id = (select x.gpu_id from allocations x
                                      where x.job_id = a.job_id and x.attempt = a.attempt
                                      order by x.gpu_id limit 1)
                    then j.cpu_milli else 0 end as cpu_milli,
               case when a.gpu_id = (select x.gpu_id from allocations x
                                      where x.job_id = a.job_id and x.attempt = a.attempt
                                      order by x.gpu_id limit 1)
                    then j.ram_mb else 0 end as ram_mb
          from jobs j where j.id = a.job_id
    ), gpu as (
        select g.model from gpu_resources g where g.id = a.gpu_id
    ), cuts as (
        select s as t
        union select e
        union select generate_series(date_trunc('hour', s) + interval '1 hour', e, interval '1 hour')
        union select p.effective_from from gpu_prices p
               where p.organization_id = a.organization_id and p.effective_from > s and p.effective_from < e
                 and (p.host_id is null or p.host_id = a.host_id)
    ), seg as (
        select t as b0, lead(t) over (order by t) as b1 from cuts where t <= e
    ), priced as (
        select seg.b0, seg.b1, extract(epoch from seg.b1 - seg.b0) as secs,
               gpufleet_price_at(a.organization_id, 'gpu', gpu.model, a.host_id, seg.b0) as gp,
               gpufleet_price_at(a.organization_id, 'cpu', null, a.host_id, seg.b0) as cp,
               gpufleet_price_at(a.organization_id, 'ram', null, a.host_id, seg.b0) as rp
          from seg, gpu where seg.b1 is not null and seg.b1 > seg.b0
    )
    select a.organization_id, a.job_id, a.id, a.attempt, a.gpu_id, a.host_id, job.submitted_by, job.labels,
           gpu.model, priced.b0, priced.b1, a.milli, priced.gp, job.cpu_milli, job.ram_mb, priced.cp, priced.rp,
           round(priced.secs * a.milli / 1000, 6),
           round(priced.secs * (a.milli * priced.gp / 1000 + job.cpu_milli * priced.cp / 1000
                                + job.ram_mb * priced.rp / 1024) / 3600, 6),
           coalesce((select p.currency from gpu_prices p where p.organization_id = a.organization_id
                      order by p.effective_from desc limit 1), 'USD')
      from priced, job, gpu
$$;

create or replace function gpufleet_write_costs(a allocations, s timestamptz, e timestamptz)
returns void
language sql as $$
    insert into cost_tracking (organization_id, job_id, allocation_id, attempt, gpu_id, host_id, user_id, labels,
                               gpu_model, period_start, period_end, gpu_milli, hourly_price, cpu_milli, ram_mb,
                               cpu_hourly_price, ram_hourly_price, gpu_seconds, amount, currency)
    select * from gpufleet_cost_segments(a, s, e)
$$;

-- Closed at release, in the transaction that releases (a job finishing, requeued, host lost).
create or replace function gpufleet_meter_on_release() returns trigger
language plpgsql as $$
begin
    if old.released_at is null and new.released_at is not null then
        if new.released_at > coalesce(old.metered_until, old.created_at) then
            perform gpufleet_write_costs(old, coalesce(old.metered_until, old.created_at), new.released_at);
        end if;
        new.metered_until := greatest(new.released_at, coalesce(old.metered_until, old.created_at));
    end if;
    return new;
end $$;
create trigger allocations_meter before update of released_at on allocations
    for each row execute function gpufleet_meter_on_release();

-- Closed hourly for running work (background/costs.py): everything up to `upto` is written, at
-- most `lim` allocations per call (a short transaction: a release waiting on one of its rows waits little).
create or replace function gpufleet_close_cost_intervals(upto timestamptz, lim integer) returns integer
language plpgsql as $$
declare
    a allocations;
    n integer := 0;
begin
    for a in select * from allocations
              where released_at is null and coalesce(metered_until, created_at) < upto
              order by id limit lim for update skip locked
    loop
        perform gpufleet_write_costs(a, coalesce(a.metered_until, a.created_at), upto);
        update allocations set metered_until = upto where id = a.id;
        n := n + 1;
    end loop;
    return n;
end $$;

-- ---------------------------------------------------------------- budgets
-- Scope: the organization, or one user, or jobs carrying one label (key = value). Period: the
-- calendar day/week/month (UTC). action 'block' is a hard budget. alerted_* remember which
-- threshold events (50/80/100 %) this period already emitted.
alter table budgets drop constraint if exists budgets_organization_id_period_key;
alter table budgets
    add column user_id              uuid references users (id) on delete cascade,
    add column label_key            text check (length(label_key) between 1 and 100),
    add column label_value          text check (length(label_value) <= 200),
    add column alerted_period_start timestamptz,
    add column alerted_pct          integer not null default 0 check (alerted_pct between 0 and 100),
    add constraint budgets_label_pair check ((label_key is null) = (label_value is null)),
    add constraint budgets_one_scope check (user_id is null or label_key is null);
create unique index budgets_scope_key on budgets
    (organization_id, period, coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid),
     coalesce(label_key, ''), coalesce(label_value, ''));
create trigger budgets_wake after insert or delete or update of amount_limit, action on budgets
    for each statement execute function gpufleet_wake_scheduler();

create or replace function gpufleet_budget_window(period text, at timestamptz) returns timestamptz
language sql immutable as $$
    select date_trunc(period, at at time zone 'UTC') at time zone 'UTC'
$$;

-- A job's expected cost, fixed at submission: max_runtime_s x its hourly price (null: no bound).
alter table jobs add column cost_estimate numeric(14, 6) check (cost_estimate >= 0);

grant execute on function gpufleet_price_at(uuid, text, text, uuid, timestamptz),
    gpufleet_cost_segments(allocations, timestamptz, timestamptz),
    gpufleet_write_costs(allocations, timestamptz, timestamptz),
    gpufleet_budget_window(text, timestamptz),
    gpufleet_close_cost_intervals(timestamptz, integer)
    to gpufleet_app, gpufleet_system;

-- Supabase's column grants (0003) list columns explicitly: refresh them for the new ones.
do $$
begin
    if to_regproc('gpufleet_enable_supabase_policies') is not null then
        perform gpufleet_enable_supabase_policies();
    end if;
end $$;
