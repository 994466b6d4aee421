-- GET /orders/{id}: storage::orders::fetch.
\set id random(:first_id, :first_id + :orders - 1)
SELECT o.id, o.scheduled_at, o.total_fee, o.version, o.created_at, o.updated_at, o.created_by, o.updated_by, s.id AS service_id, s.name AS service_name, s.version AS service_version
FROM orders o
JOIN order_services os ON os.order_id = o.id
JOIN services s ON s.id = os.service_id
WHERE o.id = :id
ORDER BY os.position;
