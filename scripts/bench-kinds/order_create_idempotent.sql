-- POST /orders that creates, sent with an Idempotency-Key of its own: the statements of
-- app::idempotency::create_once, in the round trips the service sends them (the claim's lock
-- and look-up together, then the savepoint with the insert). Beside order_create.sql, what the
-- database itself pays for a create kept for replay.
\set slot random(0, 14000000)
\set at_epoch 95617584000 + 10800 * :slot
\set request random(1, 1000000000)
BEGIN;
\startpipeline
SELECT pg_try_advisory_xact_lock(hashtextextended(:api_key_id::bigint || ':' || 'bench-' || :client_id || '-' || :request, 0)) AS locked;
SELECT fingerprint, status, content_type, body, location, etag
FROM idempotency_records
WHERE api_key_id = :api_key_id AND idempotency_key = 'bench-' || :client_id || '-' || :request
  AND created_at > now() - 86400 * interval '1 second';
\endpipeline
\startpipeline
SAVEPOINT order_insert;
WITH o AS (
    INSERT INTO orders (scheduled_at, total_fee, created_by, updated_by)
    VALUES (to_timestamp(:at_epoch), 99.50, 'bench', 'bench')
    ON CONFLICT ON CONSTRAINT orders_three_hour_rule DO NOTHING
    RETURNING id, scheduled_at, total_fee, version, created_at, updated_at, created_by, updated_by
), os AS (
    INSERT INTO order_services (order_id, service_id, position)
    SELECT o.id, requested.service_id, requested.position
    FROM o, unnest(ARRAY[:service_id]::bigint[]) WITH ORDINALITY AS requested (service_id, position)
    RETURNING service_id, position
), event AS (
    INSERT INTO events (type, actor, subject_id, data)
    SELECT 'order.created', 'bench', o.id, jsonb_build_object(
        'id', o.id, 'scheduled_at', o.scheduled_at, 'total_fee', o.total_fee::text,
        'version', o.version, 'created_at', o.created_at, 'updated_at', o.updated_at,
        'created_by', o.created_by, 'updated_by', o.updated_by,
        'services', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', s.id, 'name', s.name, 'version', s.version)
                   ORDER BY l.position), '[]'::jsonb)
            FROM os AS l JOIN services s ON s.id = l.service_id)) FROM o
)
SELECT o.id, o.scheduled_at, o.total_fee, o.version, o.created_at, o.updated_at, o.created_by, o.updated_by, s.id AS service_id, s.name AS service_name, s.version AS service_version, os.position, NULL::bigint AS conflicting_order_id
FROM o, os JOIN services s ON s.id = os.service_id
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, clash.id
FROM (SELECT 1) AS refused
LEFT JOIN LATERAL (
    SELECT id FROM orders
    WHERE order_booking_window(scheduled_at) && (SELECT order_booking_window(to_timestamp(:at_epoch)))
    ORDER BY abs(extract(epoch FROM scheduled_at - to_timestamp(:at_epoch))), id
    LIMIT 1
) AS clash ON true
WHERE NOT EXISTS (SELECT 1 FROM o)
ORDER BY position;
\endpipeline
-- The answer as the service keeps it: about the size of a created order's JSON.
INSERT INTO idempotency_records
    (api_key_id, idempotency_key, fingerprint, status, content_type, body, location, etag)
VALUES (:api_key_id, 'bench-' || :client_id || '-' || :request, sha256(:request::text::bytea), 201,
        'application/json; charset=utf-8', convert_to(repeat('x', 330), 'UTF8'), '/orders/1', '"1.1"')
ON CONFLICT (api_key_id, idempotency_key) DO UPDATE
SET fingerprint = excluded.fingerprint, status = excluded.status,
    content_type = excluded.content_type, body = excluded.body,
    location = excluded.location, etag = excluded.etag, created_at = now()
WHERE idempotency_records.created_at <= now() - 86400 * interval '1 second';
COMMIT;
