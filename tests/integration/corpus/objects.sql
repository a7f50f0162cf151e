-- The object corpus: one database holding every kind of object pg_dump knows, with awkward
-- names, for tests/integration/fidelity_corpus.rs. Run by a superuser in a fresh database.
CREATE ROLE corpus_reader;
CREATE ROLE corpus_owner;
ALTER ROLE corpus_reader IN DATABASE corpus SET statement_timeout = '1min';
ALTER DATABASE corpus SET work_mem = '7MB';
ALTER DATABASE corpus SET default_statistics_target = 150;

-- Audit of DDL by an event trigger that writes rows (created first so the DDL below fires it).
CREATE TABLE public.ddl_audit (id serial PRIMARY KEY, tag text NOT NULL, obj text);
CREATE FUNCTION public.audit_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        INSERT INTO public.ddl_audit (tag, obj) VALUES (r.command_tag, r.object_identity);
    END LOOP;
END $$;
CREATE EVENT TRIGGER audit_ddl ON ddl_command_end EXECUTE FUNCTION public.audit_ddl();
CREATE FUNCTION public.audit_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
        INSERT INTO public.ddl_audit (tag, obj) VALUES ('DROP', r.object_identity);
    END LOOP;
END $$;
CREATE EVENT TRIGGER audit_drop ON sql_drop EXECUTE FUNCTION public.audit_drop();
CREATE FUNCTION public.note_rewrite() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ddl_audit (tag, obj) VALUES ('REWRITE', pg_event_trigger_table_rewrite_oid()::regclass::text);
END $$;
CREATE EVENT TRIGGER note_rewrite ON table_rewrite EXECUTE FUNCTION public.note_rewrite();
CREATE FUNCTION public.ddl_start() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER ddl_start ON ddl_command_start WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION public.ddl_start();
ALTER EVENT TRIGGER ddl_start DISABLE;

-- Identifiers: keywords, mixed case, unicode, spaces, quotes, newlines, backslashes.
CREATE SCHEMA "select";
CREATE SCHEMA "Mixed Case";
CREATE SCHEMA "ünïcødé";
CREATE SCHEMA "quo""te\back";
CREATE SCHEMA "new
line";
CREATE TABLE "select"."from" ("where" int PRIMARY KEY, "user" text, "Order" text, "col umn" text);
CREATE TABLE "Mixed Case"."Tbl" ("Id" int PRIMARY KEY, "ÄÖÜ" text);
CREATE TABLE "ünïcødé"."tαblé" (id int PRIMARY KEY, "naïve" text);
CREATE TABLE "quo""te\back"."a""b\c" (id int PRIMARY KEY, "x""y" text);
CREATE TABLE "new
line"."t
-- Name: fake; Type: INDEX; Schema: public; Owner: x
\! echo bad" (id int PRIMARY KEY, "c
d" text);
CREATE INDEX "idx; Type: INDEX" ON "select"."from" ("user");
COMMENT ON TABLE "select"."from" IS E'a comment\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: postgres\n--\n\n\\unrestrict x\n\\! echo comment';
INSERT INTO "select"."from" SELECT g, 'u' || g, 'o' || g, E'sp\\ace ' || g FROM generate_series(1, 20) g;
INSERT INTO "Mixed Case"."Tbl" VALUES (1, 'Größe'), (2, 'Ærø');
INSERT INTO "ünïcødé"."tαblé" VALUES (1, '日本語'), (2, 'emoji 🎉');
INSERT INTO "quo""te\back"."a""b\c" VALUES (1, E'back\\slash "quote"');
INSERT INTO "new
line"."t
-- Name: fake; Type: INDEX; Schema: public; Owner: x
\! echo bad" VALUES (1, E'line\nbreak');

-- Every built-in base type (and a few containers of them).
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE public.pair AS (a int, b text);
CREATE TYPE public.floatrange AS RANGE (subtype = float8);
CREATE DOMAIN public.posint AS int CHECK (VALUE > 0) NOT NULL;
CREATE TABLE public.all_types (
    id int PRIMARY KEY,
    t_bool boolean, t_int2 smallint, t_int4 integer, t_int8 bigint, t_num numeric(20, 6), t_numnan numeric,
    t_float4 real, t_float8 double precision, t_money money, t_char char(3), t_varchar varchar(10), t_text text,
    t_name name, t_qchar "char", t_bytea bytea, t_date date, t_time time, t_timetz timetz, t_ts timestamp,
    t_tstz timestamptz, t_interval interval, t_point point, t_line line, t_lseg lseg, t_box box, t_path path,
    t_polygon polygon, t_circle circle, t_cidr cidr, t_inet inet, t_macaddr macaddr, t_macaddr8 macaddr8,
    t_bit bit(4), t_varbit varbit(8), t_tsvector tsvector, t_tsquery tsquery, t_uuid uuid, t_xml xml, t_json json,
    t_jsonb jsonb, t_jsonpath jsonpath, t_int4range int4range, t_int8range int8range, t_numrange numrange,
    t_tsrange tsrange, t_tstzrange tstzrange, t_daterange daterange, t_int4multi int4multirange,
    t_datemulti datemultirange, t_floatrange public.floatrange, t_pg_lsn pg_lsn, t_snapshot pg_snapshot,
    t_txid txid_snapshot, t_oid oid, t_xid xid, t_xid8 xid8, t_cid cid, t_tid tid, t_regclass regclass,
    t_regproc regproc, t_regprocedure regprocedure, t_regoper regoper, t_regoperator regoperator, t_regtype regtype,
    t_regnamespace regnamespace, t_regrole regrole, t_regconfig regconfig, t_regdictionary regdictionary,
    t_regcollation regcollation, t_mood public.mood, t_pair public.pair, t_posint public.posint,
    t_int_array int[], t_text_2d text[][], t_jsonb_array jsonb[], t_pair_array public.pair[]
);
INSERT INTO public.all_types VALUES (
    1, true, -32768, 2147483647, -9223372036854775808, 12345678901234.123456, 'NaN',
    'Infinity', 1.0000000000000002, '$1,234.56', 'ab', 'varchar', E'tab\there\nnewline \\ backslash',
    'a name', 'x', '\x00ff10', '2026-02-28', '23:59:59.999999', '12:00+05:30', '2026-01-01 00:00:00.000001',
    '2026-06-01 12:00:00+02', '1 year 2 mons -3 days 04:05:06.7', '(1.5,2)', '{1,2,3}', '[(0,0),(1,1)]', '((0,0),(2,2))', '[(0,0),(1,1),(2,0)]',
    '((0,0),(1,1),(1,0))', '<(0,0),2>', '10.0.0.0/8', '2001:db8::1/64', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
    B'1010', B'101', 'a fat cat', 'fat & (rat | cat)', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '<a b="c">d</a>', '{"j": [1, "two"]}',
    '{"jb": {"n": null}}', '$.a[*] ? (@ > 1)', '[1,10)', '(,5]', '[1.5,2.5]',
    '[2026-01-01,2026-02-01)', '[2026-01-01 00:00+00,infinity)', '[2026-01-01,2026-12-31]', '{[1,3),[5,7)}',
    '{[2026-01-01,2026-01-05)}', '[0.5,1.5)', '16/B374D848', '10:20:10,14,15', '10:20:10,14,15', 4294967295, '12345', '18446744073709551615', '7', '(3,4)',
    'select.from', 'pg_catalog.now', 'pg_catalog.abs(integer)', 'pg_catalog.^@', 'pg_catalog.+(integer,integer)', 'public.mood',
    '"select"', 'corpus_reader', 'pg_catalog.english', 'pg_catalog.simple', '"default"', 'happy', '(7,"seven")', 3,
    '{1,NULL,3}', '{{a,b},{"c d",NULL}}', ARRAY['{"x":1}'::jsonb], ARRAY[ROW(1, 'one')::public.pair]
), (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 5, NULL, NULL, NULL, NULL);

-- Inheritance, with a NOT VALID check inherited by children that break it.
CREATE TABLE public.vehicle (id int, wheels int, name text);
CREATE TABLE public.car (doors int) INHERITS (public.vehicle);
CREATE TABLE public.amphibian (keel boolean) INHERITS (public.vehicle, public.car);
INSERT INTO public.vehicle VALUES (1, 2, 'bike');
INSERT INTO public.car VALUES (2, 4, 'sedan', 4), (3, -1, 'broken', 2);
INSERT INTO public.amphibian VALUES (4, 4, 'duck', 2, true);
ALTER TABLE public.vehicle ADD CONSTRAINT vehicle_wheels_check CHECK (wheels >= 0) NOT VALID;

-- Partitions: a default partition, two levels, one attached with its columns in another order,
-- and foreign keys referencing partitioned tables.
CREATE TABLE public.measure (id int NOT NULL, region text NOT NULL, at date NOT NULL, v numeric,
    PRIMARY KEY (id, region, at)) PARTITION BY LIST (region);
CREATE TABLE public.measure_eu PARTITION OF public.measure FOR VALUES IN ('eu') PARTITION BY RANGE (at);
CREATE TABLE public.measure_eu_2025 PARTITION OF public.measure_eu FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.measure_eu_rest PARTITION OF public.measure_eu DEFAULT;
CREATE TABLE public.measure_us (v numeric, at date NOT NULL, region text NOT NULL, id int NOT NULL);
ALTER TABLE public.measure ATTACH PARTITION public.measure_us FOR VALUES IN ('us');
CREATE TABLE public.measure_other PARTITION OF public.measure DEFAULT;
INSERT INTO public.measure SELECT g, (ARRAY['eu', 'us', 'asia'])[1 + g % 3], date '2025-06-01' + g * 3, g / 7.0 FROM generate_series(1, 300) g;
CREATE TABLE public.measure_note (id serial PRIMARY KEY, m_id int, m_region text, m_at date,
    FOREIGN KEY (m_id, m_region, m_at) REFERENCES public.measure (id, region, at));
INSERT INTO public.measure_note (m_id, m_region, m_at) SELECT id, region, at FROM public.measure WHERE id % 10 = 0;
CREATE TABLE public.measure_tag (m_id int, m_region text, m_at date, tag text) PARTITION BY HASH (m_id);
CREATE TABLE public.measure_tag_0 PARTITION OF public.measure_tag FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE public.measure_tag_1 PARTITION OF public.measure_tag FOR VALUES WITH (MODULUS 2, REMAINDER 1);
ALTER TABLE public.measure_tag ADD FOREIGN KEY (m_id, m_region, m_at) REFERENCES public.measure (id, region, at) ON DELETE CASCADE;
INSERT INTO public.measure_tag SELECT id, region, at, 'tag' || id FROM public.measure WHERE id % 4 = 0;
CREATE TABLE public.old_refs (m_id int, m_region text, m_at date);
INSERT INTO public.old_refs VALUES (99999, 'eu', '2025-01-01');
ALTER TABLE public.old_refs ADD CONSTRAINT old_refs_measure_fkey FOREIGN KEY (m_id, m_region, m_at) REFERENCES public.measure (id, region, at) NOT VALID;

-- Generated and identity columns.
CREATE TABLE public.ident (
    a bigint GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 10),
    b int GENERATED BY DEFAULT AS IDENTITY,
    price numeric, qty int,
    total numeric GENERATED ALWAYS AS (price * qty) STORED,
    PRIMARY KEY (a));
INSERT INTO public.ident (price, qty) SELECT g * 1.25, g FROM generate_series(1, 15) g;
INSERT INTO public.ident (b, price, qty) OVERRIDING SYSTEM VALUE VALUES (500, 1, 1);

-- NOT VALID checks and keys, deferrable and exclusion constraints.
CREATE TABLE public.parent (id int PRIMARY KEY, code text UNIQUE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE public.child (id int PRIMARY KEY, parent_id int, amount int, during tsrange,
    CONSTRAINT child_parent_fkey FOREIGN KEY (parent_id) REFERENCES public.parent (id) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT child_no_overlap EXCLUDE USING gist (during WITH &&));
INSERT INTO public.parent SELECT g, 'c' || g FROM generate_series(1, 10) g;
INSERT INTO public.child SELECT g, 1 + g % 10, g - 5, tsrange('2026-01-01'::timestamp + g * interval '1 day', '2026-01-01'::timestamp + (g + 1) * interval '1 day') FROM generate_series(1, 30) g;
ALTER TABLE public.child ADD CONSTRAINT child_amount_check CHECK (amount > 0) NOT VALID;
ALTER TABLE public.child ADD CONSTRAINT child_parent_strict FOREIGN KEY (parent_id) REFERENCES public.parent (id) NOT VALID;
INSERT INTO public.child VALUES (101, NULL, 3, NULL);

-- ICU and nondeterministic collations.
CREATE COLLATION public.de_icu (provider = icu, locale = 'de-DE');
CREATE COLLATION public.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE public.words (w text COLLATE public.ci PRIMARY KEY, d text COLLATE public.de_icu);
INSERT INTO public.words VALUES ('Straße', 'Äpfel'), ('apple', 'Zebra'), ('Banana', 'öl');
CREATE INDEX words_d_idx ON public.words (d COLLATE public.de_icu);

-- Rules, views, every kind of trigger.
CREATE TABLE public.log (id bigserial PRIMARY KEY, what text, at timestamptz DEFAULT '2026-01-01');
CREATE TABLE public.item (id int PRIMARY KEY, name text, touched int DEFAULT 0);
CREATE VIEW public.item_view AS SELECT id, name FROM public.item;
CREATE RULE item_log AS ON UPDATE TO public.item DO ALSO INSERT INTO public.log (what) VALUES ('rule ' || NEW.id);
CREATE FUNCTION public.tg_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.touched := NEW.touched + 1; RETURN NEW; END $$;
CREATE FUNCTION public.tg_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.log (what) VALUES (TG_NAME || ' ' || TG_OP || ' ' || TG_LEVEL); RETURN NULL; END $$;
CREATE FUNCTION public.tg_instead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.item (id, name) VALUES (NEW.id, NEW.name); RETURN NEW; END $$;
CREATE FUNCTION public.tg_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.log (what) SELECT 'new ' || count(*) FROM new_rows; RETURN NULL; END $$;
CREATE TRIGGER item_before BEFORE INSERT OR UPDATE ON public.item FOR EACH ROW WHEN (NEW.name IS NOT NULL) EXECUTE FUNCTION public.tg_row();
CREATE TRIGGER item_after_stmt AFTER INSERT ON public.item FOR EACH STATEMENT EXECUTE FUNCTION public.tg_log();
CREATE TRIGGER item_truncate AFTER TRUNCATE ON public.item FOR EACH STATEMENT EXECUTE FUNCTION public.tg_log();
CREATE TRIGGER item_transition AFTER INSERT ON public.item REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.tg_transition();
CREATE CONSTRAINT TRIGGER item_constraint AFTER INSERT ON public.item DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW EXECUTE FUNCTION public.tg_log();
CREATE TRIGGER item_disabled AFTER DELETE ON public.item FOR EACH ROW EXECUTE FUNCTION public.tg_log();
ALTER TABLE public.item DISABLE TRIGGER item_disabled;
CREATE TRIGGER item_view_instead INSTEAD OF INSERT ON public.item_view FOR EACH ROW EXECUTE FUNCTION public.tg_instead();
CREATE TRIGGER measure_row AFTER INSERT ON public.measure FOR EACH ROW EXECUTE FUNCTION public.tg_log();
INSERT INTO public.item_view VALUES (1, 'one'), (2, 'two');
INSERT INTO public.item VALUES (3, NULL);
UPDATE public.item SET name = name || '!' WHERE id = 1;

-- Row-level security.
CREATE TABLE public.secret (id int PRIMARY KEY, owner name DEFAULT current_user, body text);
ALTER TABLE public.secret ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.secret FORCE ROW LEVEL SECURITY;
CREATE POLICY secret_own ON public.secret USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY secret_read ON public.secret AS RESTRICTIVE FOR SELECT TO corpus_reader USING (body <> 'hidden');
INSERT INTO public.secret VALUES (1, 'postgres', 'mine'), (2, 'someone', 'hidden');

-- Statistics objects, reloptions, column options.
CREATE STATISTICS public.measure_note_stats (ndistinct, dependencies, mcv) ON m_id, m_region FROM public.measure_note;
ALTER STATISTICS public.measure_note_stats SET STATISTICS 500;
ALTER TABLE public.item SET (fillfactor = 70, autovacuum_enabled = off, toast.autovacuum_enabled = off);
ALTER TABLE public.log SET (autovacuum_vacuum_scale_factor = 0.01);
ALTER TABLE public.log ALTER COLUMN what SET STATISTICS 300;
ALTER TABLE public.log ALTER COLUMN what SET STORAGE EXTERNAL;
ALTER TABLE public.log ALTER COLUMN what SET (n_distinct = -0.5);
CREATE INDEX log_what_idx ON public.log (what) WITH (fillfactor = 50);

-- Foreign tables (file_fdw and postgres_fdw ship with the server's contrib).
CREATE EXTENSION file_fdw;
CREATE EXTENSION postgres_fdw;
CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE public.nothing (a text) SERVER files OPTIONS (filename '/dev/null', format 'csv');
CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', dbname 'elsewhere');
CREATE USER MAPPING FOR corpus_reader SERVER elsewhere OPTIONS (user 'corpus_reader');
CREATE FOREIGN TABLE public.remote_item (id int, name text) SERVER elsewhere OPTIONS (schema_name 'public', table_name 'item');

-- Publications.
CREATE PUBLICATION corpus_pub FOR TABLE public.item, public.child WHERE (amount > 0);
CREATE PUBLICATION corpus_cols FOR TABLE public.parent (id, code);
CREATE PUBLICATION corpus_schema FOR TABLES IN SCHEMA "select" WITH (publish = 'insert, update');

-- Privileges, default privileges, ownership.
GRANT USAGE ON SCHEMA "select" TO corpus_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA "select" TO corpus_reader;
GRANT SELECT (id, name), UPDATE (name) ON public.item TO corpus_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA "select" GRANT SELECT ON TABLES TO corpus_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE corpus_owner GRANT EXECUTE ON FUNCTIONS TO corpus_reader;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
CREATE SCHEMA owned AUTHORIZATION corpus_owner;
CREATE TABLE owned.stuff (id int PRIMARY KEY);
ALTER TABLE owned.stuff OWNER TO corpus_owner;
INSERT INTO owned.stuff VALUES (1), (2);

-- Sequences: standalone, owned, cycled.
CREATE SEQUENCE public.standalone START 1000 INCREMENT -3 MINVALUE 1 MAXVALUE 5000 CYCLE CACHE 5;
SELECT nextval('public.standalone') FROM generate_series(1, 4);
CREATE SEQUENCE public.unused;
SELECT setval('public.log_id_seq', 4242);

-- Functions, procedures, aggregates, operators, casts, text search, materialized views.
CREATE FUNCTION public.add_pair(public.pair, public.pair) RETURNS public.pair LANGUAGE sql IMMUTABLE AS
$body$ SELECT ROW(($1).a + ($2).a, ($1).b || ($2).b)::public.pair $body$;
CREATE AGGREGATE public.pair_sum (public.pair) (SFUNC = public.add_pair, STYPE = public.pair, INITCOND = '(0,"")');
CREATE OPERATOR public.&&& (LEFTARG = public.pair, RIGHTARG = public.pair, FUNCTION = public.add_pair);
CREATE PROCEDURE public.bump(n int) LANGUAGE plpgsql AS $$ BEGIN UPDATE public.item SET touched = touched + n; END $$;
CREATE FUNCTION public.pair_text(public.pair) RETURNS text LANGUAGE sql AS $$ SELECT ($1).b $$;
CREATE CAST (public.pair AS text) WITH FUNCTION public.pair_text(public.pair);
CREATE TEXT SEARCH CONFIGURATION public.corpus_ts (COPY = pg_catalog.english);
CREATE MATERIALIZED VIEW public.measure_counts AS SELECT region, count(*) AS n FROM public.measure GROUP BY region;
CREATE UNIQUE INDEX measure_counts_region ON public.measure_counts (region);
COMMENT ON COLUMN public.all_types.t_xml IS 'xml';
