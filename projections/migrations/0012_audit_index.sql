-- GET /audit/events pages a tenant's archived events oldest first by
-- (occurred_at, topic, partition, offset): one index walk per page, however long the history.
CREATE INDEX event_log_audit_idx
    ON event_log (tenant_id, occurred_at, topic, partition, "offset")
    WHERE status = 'applied';
