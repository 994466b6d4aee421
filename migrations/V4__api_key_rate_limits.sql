-- A key's own rate limit: on average `rate_per_second` requests a second, in bursts of up to
-- `rate_burst`. None (both NULL): the instance's default limit applies, if it has one.
ALTER TABLE api_keys
    ADD COLUMN rate_per_second integer CHECK (rate_per_second BETWEEN 1 AND 1000000),
    ADD COLUMN rate_burst      integer CHECK (rate_burst BETWEEN 1 AND 1000000),
    ADD CONSTRAINT api_keys_rate_whole CHECK ((rate_per_second IS NULL) = (rate_burst IS NULL));
