-- Serving predictions (docs/predictions.md): replicas remember the deployment release they were
-- started for (a rolling update replaces the older ones), and agents are told to cancel or drain
-- through the claim reply, at most once per few seconds each (the *_sent_at marks).
alter table replicas
    add column release       integer not null default 1 check (release >= 1),
    add column drain_sent_at timestamptz;
alter table predictions
    add column cancel_sent_at timestamptz;
create index replicas_job_idx on replicas (job_id) where status <> 'stopped';

-- Agents long-polling for predictions (WakeHub channel "predictions") are woken when a prediction
-- is queued, a cancel is requested, or a replica becomes ready or is drained. No payload: the hub
-- asks the database which of its waiting hosts have something.
create or replace function gpufleet_notify_prediction_work() returns trigger
language plpgsql as $$
begin
    perform pg_notify('gpufleet_predictions', '');
    return null;
end $$;
create trigger predictions_queued_notify after insert on predictions
    for each statement execute function gpufleet_notify_prediction_work();
create trigger predictions_cancel_notify after update of cancel_requested on predictions
    for each row when (new.cancel_requested and not old.cancel_requested)
    execute function gpufleet_notify_prediction_work();
create trigger replicas_work_notify after update of status on replicas
    for each row when (new.status in ('ready', 'draining') and new.status is distinct from old.status)
    execute function gpufleet_notify_prediction_work();

-- Followers of one prediction (`Prefer: wait`, the SSE stream) are woken when its status, output or
-- logs change (channel "prediction", keyed by prediction id).
create or replace function gpufleet_notify_prediction_change() returns trigger
language plpgsql as $$
begin
    perform pg_notify('gpufleet_prediction_changes', '');
    return null;
end $$;
create trigger predictions_change_notify after update on predictions
    for each row when (new.status is distinct from old.status
                       or new.output_items <> old.output_items
                       or length(new.logs) <> length(old.logs))
    execute function gpufleet_notify_prediction_change();
