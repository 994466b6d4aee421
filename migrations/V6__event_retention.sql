-- Retention: events older than the configured period are purged, oldest first in feed order.
-- The feed then begins after the last event purged, its horizon: a cursor before it points at
-- events that are gone (the API answers 410), one at it reads on from the oldest event kept.
-- One row, moved by the statement that purges, so it always agrees with what is kept.
CREATE TABLE event_horizon (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    tx       bigint NOT NULL,
    id       bigint NOT NULL
);

INSERT INTO event_horizon (tx, id) VALUES (0, 0);
