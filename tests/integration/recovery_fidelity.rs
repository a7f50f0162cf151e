//! A restore gives back the same database: every object type pg_dump knows, every row.

use crate::support::{TestEnv, reported, scalar, text};
use larder::repository::manifest::Manifest;

pub const RICH_SCHEMA: &str = r#"
CREATE EXTENSION pgcrypto;
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE ROLE larder_reader;
CREATE SCHEMA crm;
CREATE TYPE crm.status AS ENUM ('new', 'active', 'closed');
CREATE DOMAIN crm.email AS citext CHECK (VALUE ~ '@');
CREATE SEQUENCE crm.ticket_seq START 500 INCREMENT 5;
CREATE TABLE crm.accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    email crm.email,
    status crm.status NOT NULL DEFAULT 'new',
    attrs hstore,
    secret bytea DEFAULT gen_random_bytes(8),
    balance numeric(12, 2) CHECK (balance >= 0),
    tags text[],
    meta jsonb,
    created timestamptz NOT NULL DEFAULT now(),
    name_upper text GENERATED ALWAYS AS (upper(name)) STORED
);
COMMENT ON TABLE crm.accounts IS 'Customer accounts';
COMMENT ON COLUMN crm.accounts.name IS 'Display name';
CREATE TABLE crm.notes (
    id serial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES crm.accounts (id) ON DELETE CASCADE,
    body text,
    during tstzrange,
    EXCLUDE USING gist (during WITH &&)
);
ALTER TABLE crm.notes SET (autovacuum_enabled = off, fillfactor = 90);
CREATE TABLE crm.events (id int, happened date NOT NULL, v int, account_id bigint REFERENCES crm.accounts (id)) PARTITION BY RANGE (happened);
CREATE TABLE crm.events_2025 PARTITION OF crm.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE crm.events_2026 PARTITION OF crm.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX events_happened_idx ON crm.events (happened);
CREATE VIEW crm.active_accounts AS SELECT id, name FROM crm.accounts WHERE status = 'active';
CREATE MATERIALIZED VIEW crm.account_counts AS SELECT status, count(*) AS n FROM crm.accounts GROUP BY status;
CREATE FUNCTION crm.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.body := NEW.body || ' (touched)';
    RETURN NEW;
END $$;
CREATE TRIGGER notes_touch BEFORE INSERT ON crm.notes FOR EACH ROW EXECUTE FUNCTION crm.touch();
ALTER TABLE crm.accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY accounts_reader ON crm.accounts FOR SELECT TO larder_reader USING (status <> 'closed');
GRANT USAGE ON SCHEMA crm TO larder_reader;
GRANT SELECT ON crm.accounts, crm.active_accounts TO larder_reader;
INSERT INTO crm.accounts (name, email, status, attrs, balance, tags, meta)
SELECT 'account ' || g, 'Owner' || g || '@Example.com', (ARRAY['new', 'active', 'closed']::crm.status[])[1 + g % 3],
       hstore('tier', (g % 4)::text), (g * 1.5)::numeric(12, 2), ARRAY['t' || g % 5, E'quote"s'],
       jsonb_build_object('n', g, 'nested', jsonb_build_object('ok', g % 2 = 0))
FROM generate_series(1, 300) g;
INSERT INTO crm.notes (account_id, body, during)
SELECT 1 + g % 300, E'note\t' || g || E'\nsecond line', tstzrange(timestamptz '2026-01-01' + g * interval '1 hour', timestamptz '2026-01-01' + (g + 1) * interval '1 hour')
FROM generate_series(1, 500) g;
INSERT INTO crm.events SELECT g, date '2025-06-01' + g, g * 7, 1 + g % 300 FROM generate_series(1, 400) g;
SELECT nextval('crm.ticket_seq'), nextval('crm.ticket_seq');
REFRESH MATERIALIZED VIEW crm.account_counts;
CREATE TABLE crm.legacy (id int PRIMARY KEY, account_id bigint, code text);
INSERT INTO crm.legacy VALUES (1, 999999, 'x'), (2, 1, 'y');
ALTER TABLE crm.legacy ADD CONSTRAINT legacy_account_fkey FOREIGN KEY (account_id) REFERENCES crm.accounts (id) NOT VALID;
ALTER TABLE crm.legacy ADD CONSTRAINT legacy_code_check CHECK (code <> 'x') NOT VALID;
"#;

/// A cluster whose database holds the rich schema plus Kitchen Pantry, backed up once.
async fn rich_backup(dbname: &str) -> (TestEnv, Manifest) {
    let env = TestEnv::start(dbname).await;
    env.client()
        .await
        .batch_execute(RICH_SCHEMA)
        .await
        .expect("rich schema");
    env.load_kitchen_pantry(0.002).await;
    let manifest = env.backup(dbname).await;
    (env, manifest)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_rich_in_object_types_restores_identically_into_a_new_database() {
    let (env, manifest) = rich_backup("rich").await;
    let out = env.run(&[
        "--json",
        "recovery",
        "execute",
        "latest",
        "-s",
        "new-database",
        "--dest-db",
        "rich_restored",
        "--verify",
        "checksums",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report = reported(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(report["verification"], "checksums");
    let tables = report["tables"].as_array().expect("tables");
    assert!(tables.len() > 5, "{report}");
    for table in tables {
        assert_eq!(
            table["checksum_ok"], true,
            "every table re-read and compared: {table}"
        );
    }
    assert!(
        report["duration_seconds"].as_f64().expect("duration") > 0.0,
        "RTO measured"
    );

    assert_eq!(
        env.pg_dump("rich", &["--schema-only"]),
        env.pg_dump("rich_restored", &["--schema-only"]),
        "the restored schema differs from the source"
    );
    assert_eq!(
        env.all_rows("rich", &manifest).await,
        env.all_rows("rich_restored", &manifest).await,
        "restored rows differ"
    );
    let restored = env.client_for("rich_restored").await;
    let touched: i64 = scalar(
        &restored,
        "SELECT count(*) FROM crm.notes WHERE body LIKE '%(touched) (touched)'",
    )
    .await;
    assert_eq!(touched, 0, "triggers must not fire for restored rows");
    let seq: i64 = scalar(&restored, "SELECT last_value FROM crm.ticket_seq").await;
    assert_eq!(seq, 505, "sequence values are restored");
    let counts: i64 = scalar(&restored, "SELECT sum(n)::int8 FROM crm.account_counts").await;
    assert_eq!(counts, 300, "materialized views are refreshed");
    // Constraints NOT VALID at the source (old rows break them) stay NOT VALID, as pg_restore
    // leaves them; the restore validates everything else (the runbook's check).
    let invalid = "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE NOT convalidated";
    let source = env.client().await;
    for db in [&source, &restored] {
        let names: String = db
            .query_one(invalid, &[])
            .await
            .expect("constraints")
            .get(0);
        assert_eq!(names, "legacy_account_fkey,legacy_code_check");
    }
    assert_eq!(
        report["not_valid_as_before"],
        serde_json::json!([
            "crm.legacy.legacy_account_fkey",
            "crm.legacy.legacy_code_check"
        ])
    );
    assert_eq!(report["unvalidated_constraints"], serde_json::json!([]));
    // Autovacuum, paused on the new tables during the restore, is back to what the source had:
    // off where the source turned it off, the server's default everywhere else.
    let paused: Vec<String> = restored
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE array_to_string(c.reloptions, ',') LIKE '%autovacuum_enabled=%' ORDER BY 1",
            &[],
        )
        .await
        .expect("reloptions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(paused, vec!["crm.notes".to_string()]);

    // A second restore learns from the first: the plan's estimate is based on measured history.
    let plan = env.run_json(&["recovery", "plan", "latest", "--dest-db", "rich_again"]);
    assert!(
        plan["estimate_basis"]
            .as_str()
            .expect("basis")
            .contains("measured restore"),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exported_sql_script_restores_through_psql_alone() {
    let (env, manifest) = rich_backup("exported").await;
    let file = env.work.path().join("export.sql.zst");
    env.export_latest(&file);
    let plain = env.work.path().join("export.sql");
    let status = std::process::Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&plain)
        .arg(&file)
        .status()
        .expect("zstd");
    assert!(status.success(), "the export is a valid zstd stream");
    env.admin()
        .await
        .batch_execute("CREATE DATABASE from_psql")
        .await
        .expect("create");
    let out = std::process::Command::new(env.cluster.bindir().join("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &env.cluster.port().to_string(),
            "-U",
            "postgres",
            "-d",
            "from_psql",
            "-f",
        ])
        .arg(&plain)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql could not restore the export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.pg_dump("exported", &["--schema-only"]),
        env.pg_dump("from_psql", &["--schema-only"])
    );
    assert_eq!(
        env.all_rows("exported", &manifest).await,
        env.all_rows("from_psql", &manifest).await
    );
    let stdout = env.run_ok(&["backup", "export", "latest"]);
    assert!(
        String::from_utf8_lossy(&stdout.stdout).contains("COPY public.contacts"),
        "export to stdout by default"
    );
}
