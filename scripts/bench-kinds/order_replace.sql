-- PUT /orders/{id} with If-Match: *: storage::orders::replace, a transaction of its own. The
-- order moves within the first half hour of its slot (order FIRST + i is at BASE + 4h * i), so
-- it stays 3 h from its neighbours.
\set index random(0, :orders - 1)
\set id :first_id + :index
\set at_epoch 1924992000 + 14400 * :index + 60 * random(0, 30)
BEGIN;
SELECT 1 WHERE (SELECT true FROM (SELECT pg_advisory_xact_lock(1869767794, (:id::bigint % 2147483647)::int)) AS locked);
SELECT 1 FROM services WHERE id = ANY (ARRAY[:service_id]::bigint[]) ORDER BY id FOR KEY SHARE;
SELECT pg_advisory_xact_lock(1869767795, slot)
FROM (
    SELECT DISTINCT floor(extract(epoch FROM t) / 10800)::int + step AS slot
    FROM (SELECT to_timestamp(:at_epoch) UNION ALL
          SELECT scheduled_at FROM orders WHERE id = :id) AS times (t),
         (VALUES (0), (1)) AS steps (step)
) AS slots
ORDER BY slot;
UPDATE orders
SET scheduled_at = to_timestamp(:at_epoch), total_fee = 101.25, version = version + 1, updated_at = now(),
    updated_by = 'bench'
WHERE id = :id AND (NULL::bigint[] IS NULL OR (orders.version, (
    SELECT coalesce(sum(s.version), 0)::bigint
    FROM order_services os JOIN services s ON s.id = os.service_id
    WHERE os.order_id = orders.id
)) IN (SELECT * FROM unnest(NULL::bigint[], NULL::bigint[])))
RETURNING id, scheduled_at, total_fee, version, created_at, updated_at, created_by, updated_by;
WITH dropped AS (
    DELETE FROM order_services
    WHERE order_id = :id AND service_id <> ALL (ARRAY[:service_id]::bigint[])
), os AS (
    INSERT INTO order_services (order_id, service_id, position)
    SELECT :id, requested.service_id, requested.position
    FROM unnest(ARRAY[:service_id]::bigint[]) WITH ORDINALITY AS requested (service_id, position)
    ON CONFLICT (order_id, service_id) DO UPDATE SET position = excluded.position
    RETURNING service_id, position
)
SELECT s.id AS service_id, s.name AS service_name, s.version AS service_version
FROM os JOIN services s ON s.id = os.service_id
ORDER BY os.position;
INSERT INTO events (type, actor, subject_id, data)
SELECT 'order.updated', 'bench', o.id, jsonb_build_object(
    'id', o.id, 'scheduled_at', o.scheduled_at, 'total_fee', o.total_fee::text,
    'version', o.version, 'created_at', o.created_at, 'updated_at', o.updated_at,
    'created_by', o.created_by, 'updated_by', o.updated_by,
    'services', (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'id', s.id, 'name', s.name, 'version', s.version)
               ORDER BY l.position), '[]'::jsonb)
        FROM (SELECT service_id, position FROM order_services WHERE order_id = o.id) AS l JOIN services s ON s.id = l.service_id)) FROM orders o WHERE o.id = :id;
COMMIT;
