-- Kitchen Pantry data generator. Set the scale first (1 ≈ 1.2 GB database):
--   SET larder.scale = '0.01';   then run this file (psql -f, or any client).
-- Text is random-looking, numbers and timestamps are random, jsonb has varied
-- values: the database compresses about 3:1 (its size on disk over
-- `pg_dump -Fc -Z0 | zstd -3`), as real CRM data does.

CREATE FUNCTION pg_temp.n(base bigint) RETURNS bigint LANGUAGE sql AS
$$ SELECT greatest(1, round(base * current_setting('larder.scale')::numeric))::bigint $$;

CREATE FUNCTION pg_temp.pick(k bigint) RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT 1 + floor(random() * k)::bigint $$;

-- k random-looking words, about 7 letters each, spaces included (one md5 of a random number
-- for every three words, in base64, lower-cased, some digits and signs read as spaces): text
-- that zstd cannot shrink much, as real notes and names (a dictionary of a few dozen words
-- compressed 5:1 and flattered every tool's figures).
CREATE FUNCTION pg_temp.words(k int) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT left(btrim(translate(lower(encode(string_agg(decode(md5(random()::text), 'hex'), ''), 'base64')),
                                E'+/=0123456\n', '           ')), 7 * k)
    FROM generate_series(1, 1 + k / 3)
$$;

INSERT INTO organizations (name, industry, city, created_at, metadata)
SELECT initcap(pg_temp.words(2)) || ' ' || substr(md5(random()::text), 1, 6),
       (ARRAY['restaurant','food bank','catering','grocery','school'])[1 + floor(random() * 5)::int],
       (ARRAY['Lyon','Austin','Osaka','Lagos','Lima','Oslo','Pune','Porto'])[1 + floor(random() * 8)::int],
       now() - random() * interval '5 years',
       jsonb_build_object('tier', floor(random() * 4)::int, 'region', substr(md5(random()::text), 1, 4))
FROM generate_series(1, pg_temp.n(2000));

INSERT INTO users (organization_id, email, full_name, role, created_at, last_login)
SELECT pg_temp.pick(pg_temp.n(2000)),
       'user' || g || '.' || substr(md5(random()::text), 1, 8) || '@pantry.example',
       initcap(pg_temp.words(2)),
       (ARRAY['staff','manager','admin'])[1 + floor(random() * 3)::int],
       now() - random() * interval '3 years',
       CASE WHEN random() < 0.9 THEN now() - random() * interval '30 days' END
FROM generate_series(1, pg_temp.n(20000)) g;

INSERT INTO contacts (organization_id, owner_id, first_name, last_name, email, phone, notes, tags, created_at, updated_at)
SELECT pg_temp.pick(pg_temp.n(2000)), pg_temp.pick(pg_temp.n(20000)),
       initcap(pg_temp.words(1)), initcap(pg_temp.words(1)) || substr(md5(random()::text), 1, 3),
       'c' || g || '@' || substr(md5(random()::text), 1, 10) || '.example',
       '+1-' || (100 + floor(random() * 900))::int || '-' || (1000000 + floor(random() * 9000000))::int,
       pg_temp.words(8 + floor(random() * 12)::int),
       ARRAY[pg_temp.words(1), pg_temp.words(1)],
       now() - random() * interval '2 years', now() - random() * interval '30 days'
FROM generate_series(1, pg_temp.n(400000)) g;

INSERT INTO interactions (contact_id, user_id, kind, occurred_at, summary, details)
SELECT pg_temp.pick(pg_temp.n(400000)), pg_temp.pick(pg_temp.n(20000)),
       (ARRAY['call','email','meeting','visit','note']::interaction_kind[])[1 + floor(random() * 5)::int],
       now() - random() * interval '2 years',
       pg_temp.words(12 + floor(random() * 20)::int) || ' ref ' || substr(md5(random()::text), 1, 12),
       jsonb_build_object('duration_min', floor(random() * 90)::int, 'sentiment', round(random()::numeric, 3),
                          'channel', (ARRAY['phone','web','in-person'])[1 + floor(random() * 3)::int],
                          'ticket', md5(random()::text))
FROM generate_series(1, pg_temp.n(2000000));

INSERT INTO pantry_items (organization_id, sku, name, quantity, unit_price, expires_on)
SELECT pg_temp.pick(pg_temp.n(2000)), 'SKU-' || g || '-' || substr(md5(random()::text), 1, 6),
       initcap(pg_temp.words(3)), floor(random() * 500)::int, round((random() * 200)::numeric, 2),
       CASE WHEN random() < 0.7 THEN current_date + floor(random() * 365)::int END
FROM generate_series(1, pg_temp.n(20000)) g;

INSERT INTO orders (organization_id, contact_id, placed_at, status, total)
SELECT pg_temp.pick(pg_temp.n(2000)), pg_temp.pick(pg_temp.n(400000)), now() - random() * interval '2 years',
       (ARRAY['open','paid','shipped','cancelled'])[1 + floor(random() * 4)::int], round((random() * 5000)::numeric, 2)
FROM generate_series(1, pg_temp.n(400000));

INSERT INTO order_items (order_id, line, pantry_item_id, quantity, price)
SELECT o, l, pg_temp.pick(pg_temp.n(20000)), 1 + floor(random() * 20)::int, round((random() * 200)::numeric, 2)
FROM generate_series(1, pg_temp.n(400000)) o, generate_series(1, 3) l;

SELECT setval('invoice_number_seq', 100000 + pg_temp.n(400000));
ANALYZE;
