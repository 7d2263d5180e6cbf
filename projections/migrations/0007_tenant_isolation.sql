-- Tenant isolation, with row-level security as the backstop: the API reads as the role
-- wrench_api, which cannot bypass RLS, and sets ``wrench.tenant_id`` per transaction. A query
-- that forgets its tenant filter still sees nothing of another tenant. The projector and
-- the admin commands write as the owner, which RLS does not restrict.

-- Every read model a tenant reads carries its tenant; four planning tables did not.
ALTER TABLE task_roles ADD COLUMN tenant_id text;
ALTER TABLE task_allocations ADD COLUMN tenant_id text;
ALTER TABLE task_plans ADD COLUMN tenant_id text;
ALTER TABLE task_thoughts ADD COLUMN tenant_id text;
UPDATE task_roles r SET tenant_id = t.tenant_id FROM tasks t WHERE t.task_id = r.task_id;
UPDATE task_allocations a SET tenant_id = t.tenant_id FROM tasks t WHERE t.task_id = a.task_id;
UPDATE task_plans p SET tenant_id = t.tenant_id FROM tasks t WHERE t.task_id = p.task_id;
UPDATE task_thoughts h SET tenant_id = t.tenant_id FROM tasks t WHERE t.task_id = h.task_id;
-- Rows of a task that was never submitted (events seen out of order) keep what their event
-- said, which the archive holds.
UPDATE task_roles r SET tenant_id = e.tenant_id FROM event_log e
    WHERE r.tenant_id IS NULL AND e.id = r.event_id;
UPDATE task_allocations a SET tenant_id = e.tenant_id FROM event_log e
    WHERE a.tenant_id IS NULL AND e.id = a.event_id;
UPDATE task_plans p SET tenant_id = e.tenant_id FROM event_log e
    WHERE p.tenant_id IS NULL AND e.id = p.event_id;
UPDATE task_thoughts h SET tenant_id = e.tenant_id FROM event_log e
    WHERE h.tenant_id IS NULL AND e.id = h.event_id;
ALTER TABLE task_roles ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE task_allocations ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE task_plans ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE task_thoughts ALTER COLUMN tenant_id SET NOT NULL;

-- The role the API reads as. Roles belong to the cluster, so two databases migrating at
-- once may race to create it.
DO $$
BEGIN
    CREATE ROLE wrench_api NOLOGIN NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT wrench_api TO CURRENT_USER;
GRANT USAGE ON SCHEMA public TO wrench_api;

-- RLS on one table: enabled, one policy on tenant_id, readable by wrench_api. A rebuild
-- recreates read-model tables (LIKE copies neither policies nor grants) and calls this again.
CREATE FUNCTION wrench_isolate(tbl regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', tbl);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s FOR SELECT TO wrench_api '
        'USING (tenant_id = current_setting(''wrench.tenant_id'', true))',
        tbl
    );
    EXECUTE format('GRANT SELECT ON %s TO wrench_api', tbl);
END
$$;

SELECT wrench_isolate(t::regclass) FROM unnest(ARRAY[
    'event_log', 'tasks', 'task_roles', 'task_allocations', 'task_plans', 'task_stages',
    'task_thoughts', 'tool_calls', 'task_recoveries', 'tool_stats', 'evaluations', 'alerts',
    'tenants', 'users', 'api_keys', 'auth_sessions'
]) AS t;

-- Platform-wide, no tenant's content: the projector's offsets (for ?wait_for=) and the
-- quality model's fits, which describe roles, tools and models (the insights route shows a
-- tenant only the groups its own evaluations touched).
GRANT SELECT ON consumer_offsets, quality_fits, quality_posteriors TO wrench_api;
