-- The many-tables shape: larder.tables small tables (50 rows each, a key, text and a
-- timestamp), created and filled in batches of 500 per transaction so that no transaction
-- needs more locks than a server at the default max_locks_per_transaction has. Run it as a
-- statement of its own (a DO block that commits cannot run inside a multi-statement batch).
DO $$
DECLARE
    total int := current_setting('larder.tables')::int;
BEGIN
    FOR t IN 1..total LOOP
        EXECUTE format(
            'CREATE TABLE t%s (id int PRIMARY KEY, name text NOT NULL, note text, created_at timestamptz NOT NULL)', t);
        EXECUTE format(
            'INSERT INTO t%s SELECT g, md5(random()::text), CASE WHEN random() < 0.8 THEN md5(random()::text) || md5(random()::text) END, now() - random() * interval ''1 year'' FROM generate_series(1, 50) g', t);
        IF t % 500 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END $$;
