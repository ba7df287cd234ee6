-- A prediction that ends frees a slot on its replica: wake the host's claim long-polls then too.
-- An agent offers the slot again as soon as its worker is done, which can reach the server before
-- the prediction's `done` event has committed; that claim finds the slot still taken and waits.
-- Without this wake-up it waited for the next queued prediction (or its 30 s poll), so under load
-- the queue stalled while replicas sat idle.
create trigger predictions_slot_freed_notify after update of status on predictions
    for each row when (old.status = 'processing' and new.status is distinct from old.status)
    execute function gpufleet_notify_prediction_work();
