-- GET /free-slots?from=...&to=... (one day): storage::free_slots::orders_near.
\set from_epoch 1924992000 + 14400 * random(0, :orders - 1)
SELECT scheduled_at FROM orders
WHERE scheduled_at > to_timestamp(:from_epoch) - interval '3 hours'
  AND scheduled_at < to_timestamp(:from_epoch + 86400) + interval '3 hours'
ORDER BY scheduled_at;
