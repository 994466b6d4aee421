-- The change feed: one event per committed change of an order or a service, written by the
-- statement that makes the change, so an event exists exactly when its change committed.
--
-- `id` is handed out before commit, so ids alone are not commit order: a transaction that
-- commits later can hold a smaller id than one already read. Each event also records its
-- transaction's id (`tx`); the feed hands out only events of transactions older than the
-- oldest one still running, in (tx, id) order, so no event can appear behind a reader's cursor.
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx          bigint      NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    type        text        NOT NULL CHECK (type IN (
                    'order.created', 'order.updated', 'order.deleted',
                    'service.created', 'service.updated', 'service.deleted')),
    -- The name of the API key that made the change.
    actor       text        NOT NULL,
    -- The order's or the service's id, as `type` says.
    subject_id  bigint      NOT NULL,
    -- The record after the change (before it, for a delete), as storage reads it.
    data        jsonb       NOT NULL
);

CREATE UNIQUE INDEX events_feed_order ON events (tx, id);
