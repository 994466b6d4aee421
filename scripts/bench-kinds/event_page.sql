-- GET /events?limit=100: storage::events::read, from the oldest event kept (its parameters
-- as the service sends them: `oldest`, 0, 0).
WITH bound AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS visible_below
), head AS (
    SELECT e.tx, e.id FROM events e, bound
    WHERE e.tx < bound.visible_below
    ORDER BY e.tx DESC, e.id DESC
    LIMIT 1
), start AS (
    SELECT CASE :feed_start WHEN 'oldest' THEN h.tx
                         WHEN 'now' THEN coalesce((SELECT tx FROM head), h.tx)
                         ELSE :feed_zero END AS tx,
           CASE :feed_start WHEN 'oldest' THEN h.id
                         WHEN 'now' THEN coalesce((SELECT id FROM head), h.id)
                         ELSE :feed_zero END AS id,
           h.tx AS horizon_tx, h.id AS horizon_id
    -- One row; saying so keeps the planner's estimate of a never-analysed table
    -- (a thousand rows) from making the whole read look costly.
    FROM (SELECT tx, id FROM event_horizon LIMIT 1) AS h
)
SELECT start.tx AS start_tx, start.id AS start_id,
       (start.tx, start.id) < (start.horizon_tx, start.horizon_id) AS start_is_purged,
       (start.tx, start.id) = (start.horizon_tx, start.horizon_id) OR EXISTS (
           SELECT 1 FROM events WHERE tx = start.tx AND id = start.id
       ) AS start_is_known,
       page.tx, page.id, page.type, page.occurred_at, page.actor, page.data
FROM start LEFT JOIN LATERAL (
    SELECT e.tx, e.id, e.type, e.occurred_at, e.actor, e.data::text AS data
    FROM events e, bound
    WHERE (e.tx, e.id) > (start.tx, start.id) AND e.tx < bound.visible_below
      AND (start.tx, start.id) >= (start.horizon_tx, start.horizon_id)
    ORDER BY e.tx, e.id
    LIMIT 100
) AS page ON true
ORDER BY page.tx, page.id;
