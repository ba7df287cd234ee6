-- Stops pushed through the assignment long-poll (docs/execution.md, "Kill instructions"): a cancel
-- requested on a job that a host runs, or a job moved off its host (requeued, another attempt),
-- wakes the server's listener at commit, which wakes the long-poll of each waiting host whose
-- listed runs it concerns; the reply carries the kill instruction the next heartbeat would give.
-- Bare wake-up like the others (0007): any gpufleet_app session may LISTEN.
create or replace function gpufleet_notify_stop() returns trigger
language plpgsql as $$
begin
    perform pg_notify('gpufleet_stops', '');
    return null;
end $$;

create trigger jobs_stop_notify after update of cancel_requested_at, host_id, attempt on jobs
    for each row when (
        old.status in ('allocated', 'running') and (
            (new.cancel_requested_at is not null and old.cancel_requested_at is null)
            or new.host_id is distinct from old.host_id
            or new.attempt <> old.attempt))
    execute function gpufleet_notify_stop();
