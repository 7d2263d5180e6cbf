-- The task listing's filters and sorts (GET /tasks): full-text search on the description,
-- the playbook the task was submitted or planned with, and newest/oldest by last update.

-- The description's lexemes, kept by Postgres itself: a projector write, a shredding (which
-- rewrites the description) and a rebuild (LIKE ... INCLUDING ALL copies the expression)
-- keep it in step with no code of ours. 'english' stems ("reports" finds "report").
ALTER TABLE tasks
    ADD COLUMN search tsvector
        GENERATED ALWAYS AS (to_tsvector('english'::regconfig, description)) STORED;
CREATE INDEX tasks_search_idx ON tasks USING gin (search);

-- The playbook's name: the one constraints.playbook named at submission (a shipped name, or
-- an inline playbook's name), then the one the first plan.created was built from.
ALTER TABLE tasks ADD COLUMN playbook text;
UPDATE tasks SET playbook = CASE jsonb_typeof(constraints -> 'playbook')
        WHEN 'string' THEN constraints ->> 'playbook'
        WHEN 'object' THEN constraints -> 'playbook' ->> 'name'
    END
    WHERE jsonb_typeof(constraints) = 'object';
UPDATE tasks t SET playbook = p.playbook FROM task_plans p
    WHERE p.task_id = t.task_id AND p.playbook IS NOT NULL;
CREATE INDEX tasks_playbook_idx ON tasks (tenant_id, playbook, created_at DESC, task_id DESC);

-- sort=updated_at and sort=-updated_at walk this index (either way).
CREATE INDEX tasks_updated_idx ON tasks (tenant_id, updated_at DESC, task_id DESC);
