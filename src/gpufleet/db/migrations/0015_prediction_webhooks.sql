-- Prediction webhooks (Replicate's `webhook` + `webhook_events_filter`): a prediction's own URL is
-- sent deliveries with no webhook endpoint behind them, by the same worker (claims, retries, SSRF
-- guard, Standard Webhooks signatures), signed with the organization's default secret
-- (`GET /v1/webhooks/default/secret`).
create table webhook_default_secrets (
    organization_id   uuid primary key references organizations (id) on delete cascade,
    secret_ciphertext bytea not null,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);
create trigger webhook_default_secrets_touch before update on webhook_default_secrets
    for each row execute function gpufleet_touch_updated_at();
alter table webhook_default_secrets enable row level security;
alter table webhook_default_secrets force row level security;
create policy tenant_isolation on webhook_default_secrets as permissive for all to gpufleet_app
    using (organization_id = (select gpufleet_current_org()))
    with check (organization_id = (select gpufleet_current_org()));
create policy system_access on webhook_default_secrets as permissive for all to gpufleet_system
    using (true) with check (true);
grant select, insert, update, delete on webhook_default_secrets to gpufleet_app, gpufleet_system;

alter table webhook_deliveries
    alter column webhook_id drop not null,
    add column url           text check (url is null or url ~ '^https?://'),
    add column prediction_id uuid references predictions (id) on delete cascade,
    add constraint webhook_deliveries_target_check
        check ((webhook_id is not null) <> (url is not null and prediction_id is not null));
create index webhook_deliveries_prediction_idx on webhook_deliveries (prediction_id) where prediction_id is not null;
alter table webhook_attempts alter column webhook_id drop not null;

alter table predictions
    add column webhook_sent_at timestamptz,  -- the last output/logs webhook: at most one per 500 ms
    add column base_url        text;         -- the server's address as the creating client saw it (urls.*)

-- Supabase's column grants (0003) list columns explicitly: refresh them for the new ones.
do $$
begin
    if to_regproc('gpufleet_enable_supabase_policies') is not null then
        perform gpufleet_enable_supabase_policies();
    end if;
end $$;

-- Signing secrets are for the server: no Supabase member read on them.
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        drop policy if exists supabase_member_read on webhook_default_secrets;
        revoke all on webhook_default_secrets from authenticated;
    end if;
end $$;
