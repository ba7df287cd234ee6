-- One actor format for what a user did: "user:<id>". Administrative events (hosts, GPUs, join
-- tokens, members, invites, API keys, models, webhooks, the organization) recorded the bare user
-- id while jobs, deployments, predictions, quotas, budgets and prices recorded "user:<id>", so a
-- feed or a webhook consumer had to know which event type spelled it which way. New events all
-- record "user:<id>" (domain/tenancy.user_actor); this rewrites the old ones to match. Actors that
-- are not a bare uuid ("host:<name>", "scheduler", "costs", ...) are left as they are.
update events
   set actor = 'user:' || actor
 where actor ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';

-- Deliveries still to be sent (or retried) carry the event's actor in their payload: they go out
-- in the new format too. Those already delivered or given up are the record of what was sent.
update webhook_deliveries
   set payload = jsonb_set(payload, '{data,actor}', to_jsonb('user:' || (payload #>> '{data,actor}')))
 where status in ('pending', 'delivering', 'failed')
   and payload #>> '{data,actor}' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
