-- POST /orders refused by the 3-hour rule (409): storage::orders::insert, 1 h after a loaded
-- order, so the insert does nothing and the same statement names the order it clashes with.
\set slot random(0, :orders - 1)
\set at_epoch 1924992000 + 14400 * :slot + 3600
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
