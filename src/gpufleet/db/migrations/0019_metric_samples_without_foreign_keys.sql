-- GPU samples without per-row foreign-key checks. Every sample is written by the heartbeat's
-- one INSERT, which joins it to a GPU of the reporting host within its organization, under
-- the host's row lock (repo/heartbeats.py): the row it names exists when it is written. The
-- two foreign keys re-checked that for each sample, two lookups a row: measured, 45% of
-- PostgreSQL's time for an 800-sample heartbeat (10.7 -> 5.9 ms). What they also gave, the
-- cascade when a GPU goes (its host's or organization's deletion), a trigger keeps, per GPU.
do $$
declare c record;
begin
    for c in select conname from pg_constraint
              where conrelid = 'gpu_metrics'::regclass and contype = 'f' and conparentid = 0 loop
        execute format('alter table gpu_metrics drop constraint %I', c.conname);
    end loop;
end $$;

create or replace function gpufleet_gpu_metrics_cascade() returns trigger
language plpgsql as $$
begin
    delete from gpu_metrics where gpu_id = old.id;
    return null;
end $$;

create trigger gpu_resources_metrics_cascade after delete on gpu_resources
    for each row execute function gpufleet_gpu_metrics_cascade();
