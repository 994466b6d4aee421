-- GET /orders?from=...&page_size=100: storage::orders::list (101 rows: one more tells whether
-- another page follows).
\set from_epoch 1924992000 + 14400 * random(0, :orders - 1)
WITH o AS (
    SELECT id, scheduled_at, total_fee, version, created_at, updated_at, created_by, updated_by
    FROM orders
    WHERE (to_timestamp(:from_epoch) IS NULL OR scheduled_at >= to_timestamp(:from_epoch))
      AND (NULL::timestamptz IS NULL OR scheduled_at < NULL::timestamptz)
      AND (NULL::bigint IS NULL OR EXISTS (
              SELECT 1 FROM order_services f
              WHERE f.order_id = orders.id AND f.service_id = NULL::bigint))
      AND (NULL::timestamptz IS NULL OR (scheduled_at, id) > (NULL::timestamptz, NULL::bigint))
    ORDER BY scheduled_at, id
    LIMIT 101
)
SELECT o.id, o.scheduled_at, o.total_fee, o.version, o.created_at, o.updated_at, o.created_by, o.updated_by, s.id AS service_id, s.name AS service_name, s.version AS service_version
FROM o
JOIN order_services os ON os.order_id = o.id
JOIN services s ON s.id = os.service_id
ORDER BY o.scheduled_at, o.id, os.position;
