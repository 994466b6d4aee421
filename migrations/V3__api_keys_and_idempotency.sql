-- Who may call the API, who changed what, and what an idempotent create answered.

-- API keys. A secret is `ord_<lookup_id>_<random>`: the lookup id finds the key, and only a
-- SHA-256 hash of the whole secret is kept, so the table cannot be used to call the API. A
-- revoked key stays, so its name is never given to another key and `created_by` keeps
-- meaning one caller.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    scopes       text[]      NOT NULL CHECK (
                     cardinality(scopes) > 0
                     AND scopes <@ ARRAY['orders:read', 'orders:write', 'services:write']
                 ),
    lookup_id    text        NOT NULL UNIQUE CHECK (lookup_id ~ '^[0-9a-f]{16}$'),
    secret_hash  bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Written at most once a minute per key and instance: "to the minute" is what it promises.
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- The name of the key that created and last changed each record. Rows from before keys
-- existed are the sample data's.
ALTER TABLE services
    ADD COLUMN created_by text NOT NULL DEFAULT 'seed',
    ADD COLUMN updated_by text NOT NULL DEFAULT 'seed';
ALTER TABLE services ALTER COLUMN created_by DROP DEFAULT, ALTER COLUMN updated_by DROP DEFAULT;
ALTER TABLE orders
    ADD COLUMN created_by text NOT NULL DEFAULT 'seed',
    ADD COLUMN updated_by text NOT NULL DEFAULT 'seed';
ALTER TABLE orders ALTER COLUMN created_by DROP DEFAULT, ALTER COLUMN updated_by DROP DEFAULT;

-- The first answer to each idempotent create, per API key and `Idempotency-Key`, written in
-- the create's own transaction. `fingerprint` is a hash of the operation and the request it
-- answered, so the same key sent with another request can be refused.
CREATE TABLE idempotency_records (
    api_key_id      bigint      NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    idempotency_key text        NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     bytea       NOT NULL,
    status          smallint    NOT NULL,
    content_type    text        NOT NULL,
    body            bytea       NOT NULL,
    location        text,
    etag            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, idempotency_key)
);

-- The purge deletes by age.
CREATE INDEX idempotency_records_created_at ON idempotency_records (created_at);
