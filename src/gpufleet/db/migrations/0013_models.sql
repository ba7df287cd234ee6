-- Files carry the metadata their uploader attached (Replicate's files API: `metadata`, any JSON object).
alter table files add column metadata jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object');
