-- POST /orders that creates, as order_create.sql, but without recording its event: what the
-- change feed costs a create (scripts/bench compares the two). Not a statement the service runs.
\set slot random(0, 14000000)
\set at_epoch 95617584000 + 10800 * :slot
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
