-- The tenant of a transaction is verified by the database, not only read from a setting.
--
-- Until now any session of gpufleet_app could run set_config('gpufleet.org_id', <another org>)
-- and read that organization's rows. From here on the policies accept the setting only with a
-- matching gpufleet.tenant_tag: HMAC-SHA256 over "<org_id>/<user_id>" (the settings' exact text)
-- under a key kept in gpufleet_tenant_key. Only the owner can read that table; the server reads
-- the key once at start (it connects as the owner anyway, for migrations and the system path)
-- and sends the tag as a bind parameter, so it never appears in query text (pg_stat_activity).
-- A session with SQL access as gpufleet_app alone cannot compute a tag for another organization:
-- a forged or missing tag makes gpufleet_current_org()/gpufleet_current_user() NULL, which
-- sees nothing. The policies of 0002/0003/0006 call those functions, so they all change at once;
-- each policy calls them in the `(select ...)` form, an InitPlan evaluated once per statement.

create table gpufleet_tenant_key (
    id          boolean primary key default true check (id),   -- one row
    secret      bytea not null check (length(secret) = 64),    -- the HMAC key (SHA-256's block size)
    ipad        bytea not null check (length(ipad) = 64),      -- secret XOR 0x36.., precomputed:
    opad        bytea not null check (length(opad) = 64),      -- core SQL has no bytea XOR
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
create trigger gpufleet_tenant_key_touch before update on gpufleet_tenant_key
    for each row execute function gpufleet_touch_updated_at();
-- Owner only. RLS on (not forced, no policy): even a role that some platform's default
-- privileges grant SELECT on every new table (Supabase's anon/authenticated) reads no row.
alter table gpufleet_tenant_key enable row level security;
revoke all on gpufleet_tenant_key from public;
do $$
declare r text;
begin
    foreach r in array array['gpufleet_app', 'gpufleet_system', 'anon', 'authenticated', 'service_role'] loop
        if exists (select 1 from pg_roles where rolname = r) then
            execute format('revoke all on gpufleet_tenant_key from %I', r);
        end if;
    end loop;
end $$;

-- A new random key (pg_strong_random through gen_random_uuid: 4 x 122 random bits). The
-- servers read the key at start: after a rotation, restart them (their tags stop verifying).
create or replace function gpufleet_rotate_tenant_key() returns void
language plpgsql as $$
declare
    k bytea := decode(replace(gen_random_uuid()::text || gen_random_uuid()::text
                              || gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
    ipad bytea;
    opad bytea;
begin
    select decode(string_agg(lpad(to_hex(get_byte(k, i) # 54), 2, '0'), '' order by i), 'hex'),
           decode(string_agg(lpad(to_hex(get_byte(k, i) # 92), 2, '0'), '' order by i), 'hex')
      into ipad, opad
      from generate_series(0, 63) i;
    insert into gpufleet_tenant_key (id, secret, ipad, opad) values (true, k, ipad, opad)
        on conflict (id) do update set secret = excluded.secret, ipad = excluded.ipad, opad = excluded.opad;
end $$;
revoke all on function gpufleet_rotate_tenant_key() from public;
select gpufleet_rotate_tenant_key();

-- The tag's check. SECURITY DEFINER (the owner's rights) to read the key; the caller only learns
-- whether its own settings verify. search_path fixed with pg_temp last, so a session's temporary
-- objects cannot stand in for the key table.
create or replace function gpufleet_tenant_verified(org text, usr text) returns boolean
language plpgsql stable parallel restricted security definer set search_path = pg_catalog, pg_temp as $$
declare
    tag text := current_setting('gpufleet.tenant_tag', true);
begin
    if tag is null or length(tag) <> 64 then
        return false;
    end if;
    return exists (
        select 1 from public.gpufleet_tenant_key k
         where encode(sha256(k.opad || sha256(k.ipad || convert_to(org || '/' || usr, 'UTF8'))), 'hex') = tag);
end $$;
revoke all on function gpufleet_tenant_verified(text, text) from public;
grant execute on function gpufleet_tenant_verified(text, text) to gpufleet_app;

-- Same names and results as 0002's, for a verified setting; NULL (sees nothing) otherwise.
-- Plain SQL, so each is inlined into the policy's InitPlan: one check per statement.
create or replace function gpufleet_current_org() returns uuid
language sql stable parallel restricted as $$
    select case when coalesce(current_setting('gpufleet.org_id', true), '') <> ''
                     and gpufleet_tenant_verified(current_setting('gpufleet.org_id', true),
                                                  coalesce(current_setting('gpufleet.user_id', true), ''))
                then current_setting('gpufleet.org_id', true)::uuid end
$$;

create or replace function gpufleet_current_user() returns uuid
language sql stable parallel restricted as $$
    select case when coalesce(current_setting('gpufleet.user_id', true), '') <> ''
                     and gpufleet_tenant_verified(coalesce(current_setting('gpufleet.org_id', true), ''),
                                                  current_setting('gpufleet.user_id', true))
                then current_setting('gpufleet.user_id', true)::uuid end
$$;

-- A runtime-role session may create temporary tables, and pg_temp is searched first unless it is
-- named: a temporary `jobs` would stand in for public.jobs in that session's later (pooled)
-- transactions, of any tenant. Name it last. The pool's RESET ALL brings this default back.
-- For the role in every database (the role is gpufleet's, and a per-database setting would not
-- follow a database copied with CREATE DATABASE ... TEMPLATE).
do $$
begin
    alter role gpufleet_app set search_path = public, pg_temp;
exception when insufficient_privilege then
    raise notice 'gpufleet: could not set search_path for gpufleet_app (needs superuser or CREATEROLE)';
end $$;

-- ---------------------------------------------------------------- wake-ups without tenant data
-- Any gpufleet_app session may LISTEN, so a payload would tell it other tenants' host and job
-- ids. The notifications are now bare wake-ups; the server's listener asks the database (one
-- query for all its waiters) which of them have something new.
create or replace function gpufleet_notify_execution() returns trigger
language plpgsql as $$
begin
    if new.status = 'allocated' and new.host_id is not null then
        perform pg_notify('gpufleet_assignments', '');
    elsif new.status in ('succeeded', 'failed', 'cancelled', 'timed_out', 'allocation_failed', 'pending') then
        perform pg_notify('gpufleet_job_logs', '');
    end if;
    return null;
end $$;
