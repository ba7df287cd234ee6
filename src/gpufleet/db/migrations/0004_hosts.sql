-- Hosts and GPUs as the node agent sees them: removal that keeps history, liveness that
-- remembers a drain, XID baselines for GPU health, and indexes for metric rollups.

-- Removing a host keeps its row (jobs, allocations, costs and metrics still point at it) but
-- frees its name for a new registration. A removed host is always revoked too.
alter table hosts add column removed_at timestamptz;
alter table hosts add constraint hosts_removed_is_revoked check (removed_at is null or revoked_at is not null);
drop index hosts_org_name_key;
create unique index hosts_org_name_key on hosts (organization_id, name) where removed_at is null;

-- The status a host had when the liveness sweep marked it unreachable (ready or draining),
-- so its next heartbeat restores an admin's drain instead of silently undoing it.
alter table hosts add column status_before_unreachable text
    check (status_before_unreachable is null or status_before_unreachable in ('ready', 'draining'));

-- The XID error count of the GPU's latest sample: a rise marks the GPU unhealthy. Written only
-- when it changes, so steady heartbeats do not rewrite GPU rows.
alter table gpu_resources add column xid_errors_last bigint check (xid_errors_last >= 0);

-- Rollups scan raw samples by time across every GPU; BRIN keeps that cheap on append-mostly
-- partitions (new partitions inherit it). The retention task finds its watermark by bucket.
create index gpu_metrics_ts_brin on gpu_metrics using brin (ts);
create index gpu_metrics_hourly_bucket_idx on gpu_metrics_hourly (bucket);

-- Supabase's column grants (0003) list columns explicitly: refresh them for the new ones.
do $$
begin
    if to_regproc('gpufleet_enable_supabase_policies') is not null then
        perform gpufleet_enable_supabase_policies();
    end if;
end $$;
