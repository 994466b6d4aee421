-- POST /orders that creates, sent with an Idempotency-Key of its own: storage::orders::insert_kept,
-- the one statement that claims the key, creates the order and keeps it as the key's answer.
-- Beside order_create.sql, what the database itself pays for a create kept for replay.
\set slot random(0, 14000000)
\set at_epoch 95617584000 + 10800 * :slot
\set request random(1, 1000000000)
WITH claim AS (
    SELECT pg_try_advisory_xact_lock(hashtextextended(:api_key_id::bigint || ':' || 'bench-' || :client_id || '-' || :request, 0)) AS locked
), o AS (
    INSERT INTO orders (scheduled_at, total_fee, created_by, updated_by)
    SELECT to_timestamp(:at_epoch), 99.50, 'bench', 'bench'
    WHERE (SELECT locked FROM claim) AND NOT EXISTS (
        SELECT 1 FROM idempotency_records
        WHERE api_key_id = :api_key_id AND idempotency_key = 'bench-' || :client_id || '-' || :request
    )
    ON CONFLICT ON CONSTRAINT orders_three_hour_rule DO NOTHING
    RETURNING id, scheduled_at, total_fee, version, created_at, updated_at, created_by, updated_by
), os AS (
    INSERT INTO order_services (order_id, service_id, position)
    SELECT o.id, requested.service_id, requested.position
    FROM o, unnest(ARRAY[:service_id]::bigint[]) WITH ORDINALITY AS requested (service_id, position)
    RETURNING service_id, position
), document AS (
    SELECT o.id, jsonb_build_object(
        'id', o.id, 'scheduled_at', o.scheduled_at, 'total_fee', o.total_fee::text,
        'version', o.version, 'created_at', o.created_at, 'updated_at', o.updated_at,
        'created_by', o.created_by, 'updated_by', o.updated_by,
        'services', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', s.id, 'name', s.name, 'version', s.version)
                   ORDER BY l.position), '[]'::jsonb)
            FROM os AS l JOIN services s ON s.id = l.service_id)) AS data
    FROM o
), event AS (
    INSERT INTO events (type, actor, subject_id, data)
    SELECT 'order.created', 'bench', id, data FROM document
), kept AS (
    INSERT INTO idempotency_records (api_key_id, idempotency_key, fingerprint, status, order_document)
    SELECT :api_key_id, 'bench-' || :client_id || '-' || :request, sha256(:request::text::bytea), 201, data
    FROM document
)
SELECT o.id, o.scheduled_at, o.total_fee, o.version, o.created_at, o.updated_at, o.created_by, o.updated_by, s.id AS service_id, s.name AS service_name, s.version AS service_version, os.position
FROM o, os JOIN services s ON s.id = os.service_id
ORDER BY os.position;
