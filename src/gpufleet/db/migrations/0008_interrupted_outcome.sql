-- An attempt may end `interrupted`: its host stopped it (the agent shut down with
-- --stop-jobs-on-exit, as `gpufleet up`'s local agent does, or the machine rebooted under it).
-- It is neither a failure of the job nor a cancel anyone asked for; the job is requeued per its
-- host-loss retry policy, else it fails with that reason (docs/execution.md, "Interrupted").
alter table job_attempts drop constraint job_attempts_outcome_check;
alter table job_attempts add constraint job_attempts_outcome_check
    check (outcome in ('succeeded', 'failed', 'cancelled', 'timed_out', 'interrupted'));
