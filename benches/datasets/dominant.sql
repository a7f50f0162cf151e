-- The "one dominant table" shape, added to a Kitchen Pantry generated at a quarter of the
-- scale (about 1 M rows): contact_events holds about three quarters of the database's rows
-- and references contacts (another big table) through a foreign key without an index, as
-- real CRM databases often do. Needs larder.scale set again to the full scale and the
-- generator's pg_temp functions (run it in the same session, after generate.sql).

CREATE TABLE contact_events (
    id          bigserial PRIMARY KEY,
    contact_id  bigint NOT NULL REFERENCES contacts (id),
    user_id     bigint REFERENCES users (id),
    occurred_at timestamptz NOT NULL,
    action      text NOT NULL,
    detail      text NOT NULL,
    amount      numeric(12, 2)
);

INSERT INTO contact_events (contact_id, user_id, occurred_at, action, detail, amount)
SELECT pg_temp.pick(pg_temp.n(100000)), pg_temp.pick(pg_temp.n(5000)),
       now() - random() * interval '3 years',
       (ARRAY['opened','clicked','replied','ordered','called','visited','bounced'])[1 + floor(random() * 7)::int],
       pg_temp.words(4 + floor(random() * 12)::int),
       CASE WHEN random() < 0.3 THEN round((random() * 900)::numeric, 2) END
FROM generate_series(1, pg_temp.n(3000000));
CREATE INDEX contact_events_occurred_idx ON contact_events (occurred_at);
ANALYZE contact_events;
