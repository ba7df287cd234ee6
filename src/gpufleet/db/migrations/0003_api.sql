-- The HTTP API's needs: shared rate-limit counters and Supabase Auth compatibility.

-- Fixed-window request counters shared by every replica. UNLOGGED: they are worth nothing
-- after a crash, and skipping the WAL keeps the per-second flushes cheap. Not tenant data
-- (keys are API key ids and client addresses), so only the system path touches it.
create unlogged table rate_limit_counters (
    id            uuid primary key default gen_random_uuid(),
    bucket        text not null,
    window_start  timestamptz not null,
    count         bigint not null default 0 check (count >= 0),
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    unique (bucket, window_start)
);
create index rate_limit_counters_window_idx on rate_limit_counters (window_start);
create trigger rate_limit_counters_touch before update on rate_limit_counters
    for each row execute function gpufleet_touch_updated_at();
alter table rate_limit_counters enable row level security;
alter table rate_limit_counters force row level security;
create policy system_access on rate_limit_counters as permissive for all to gpufleet_system
    using (true) with check (true);
grant select, insert, update, delete on rate_limit_counters to gpufleet_system;

-- Supabase: let a supabase-js front end read its organizations' rows directly, as the
-- `authenticated` role, through auth.uid() (the JWT's `sub`, stored as users.external_id).
-- Installed only where Supabase's auth schema and role exist; callable again after they
-- appear (and by the tests, which emulate Supabase's mechanism).
-- plpgsql, not sql: the body names auth.uid(), which exists only on Supabase.
create or replace function gpufleet_supabase_org_ids() returns setof uuid
language plpgsql stable security definer set search_path = pg_catalog, public as $$
begin
    return query
        select m.organization_id
          from public.organization_members m
          join public.users u on u.id = m.user_id
         where u.external_id = (select auth.uid())::text and u.is_active;
end $$;
revoke all on function gpufleet_supabase_org_ids() from public;

create or replace function gpufleet_enable_supabase_policies() returns integer
language plpgsql as $$
declare
    t record;
    cols text;
    n integer := 0;
begin
    if to_regnamespace('auth') is null or not exists (select 1 from pg_roles where rolname = 'authenticated') then
        return 0;
    end if;
    grant execute on function gpufleet_supabase_org_ids() to authenticated;
    for t in
        select c.relname,
               case when c.relname = 'organizations' then 'id' else 'organization_id' end as col
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition
           and c.relname not in ('api_keys', 'organization_invites', 'join_tokens', 'webhooks',
                                 'webhook_deliveries', 'rate_limit_counters')
           and (c.relname = 'organizations'
                or exists (select 1 from pg_attribute a where a.attrelid = c.oid
                           and a.attname = 'organization_id' and not a.attisdropped))
    loop
        execute format('drop policy if exists supabase_member_read on %I', t.relname);
        execute format($p$create policy supabase_member_read on %I as permissive for select to authenticated
                          using (%I in (select gpufleet_supabase_org_ids()))$p$, t.relname, t.col);
        -- Never expose credential hashes or secrets, even to their own organization.
        select string_agg(quote_ident(a.attname), ', ' order by a.attnum) into cols
          from pg_attribute a
         where a.attrelid = t.relname::regclass and a.attnum > 0 and not a.attisdropped
           and a.attname !~ '(hash|secret|ciphertext)';
        execute format('grant select (%s) on %I to authenticated', cols, t.relname);
        n := n + 1;
    end loop;
    -- A signed-in user sees their own user row.
    drop policy if exists supabase_self_read on users;
    create policy supabase_self_read on users as permissive for select to authenticated
        using (external_id = (select auth.uid())::text);
    grant select on users to authenticated;
    return n;
end $$;

select gpufleet_enable_supabase_policies();
