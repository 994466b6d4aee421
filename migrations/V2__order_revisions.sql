-- An order's ETag is its own version together with the versions of the services it books,
-- read when the order is read; a rename no longer bumps the versions of the orders that book
-- the service. The schema is unchanged; what the column means is not.
COMMENT ON COLUMN orders.version IS
    'Bumped on every change to the order row itself; with the sum of its services'' versions it is the order''s ETag.';
COMMENT ON COLUMN services.version IS
    'Bumped on every change to the service; the service''s ETag, and part of the ETag of every order that books it.';
