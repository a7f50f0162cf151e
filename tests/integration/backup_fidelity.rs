//! What goes into a backup is exactly what the database holds: awkward types, identifiers,
//! partitions, empty tables and split tables all come back byte for byte.

use crate::support::{TestEnv, backup_rows, live_rows};
use larder::config::Objectives;
use larder::engine::Progress;
use larder::engine::backup::{BackupOptions, create};
use larder::engine::validate::validate;

const AWKWARD_SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE SCHEMA "Mixed Case";
CREATE TABLE "Mixed Case"."Weird ""Table""" (id int PRIMARY KEY, "Column A" text, "ünïcödé" text);
CREATE TABLE types (
    id serial PRIMARY KEY, t text, b bytea, ints int[], texts text[], j json, jb jsonb,
    n numeric, ts timestamptz, tsn timestamp, d date, m mood, p positive, f float8,
    iv interval, u uuid, doubled int GENERATED ALWAYS AS (id * 2) STORED
);
CREATE TABLE measurements (id int, region text, v int) PARTITION BY LIST (region);
CREATE TABLE measurements_eu PARTITION OF measurements FOR VALUES IN ('eu');
CREATE TABLE measurements_us PARTITION OF measurements FOR VALUES IN ('us');
CREATE TABLE empty_table (id int);
CREATE TABLE no_columns ();
INSERT INTO no_columns DEFAULT VALUES; INSERT INTO no_columns DEFAULT VALUES;
INSERT INTO "Mixed Case"."Weird ""Table""" VALUES (1, 'quoted "value"', 'ünïcödé ✓ 🍅');
INSERT INTO types (t, b, ints, texts, j, jb, n, ts, tsn, d, m, p, f, iv, u) VALUES
 (E'tab\there', '\x00ff10', '{1,NULL,3}', '{"a,b","c\"d",NULL}', '{"k": [1, 2]}', '{"z": {"y": null}}',
  'NaN', 'infinity', '-infinity', '2024-02-29', 'happy', 7, 'NaN', '1 year 2 mons -3 days', '6f1c7d3e-0000-4000-8000-000000000001'),
 (E'line1\nline2\r\n', '\x', '{}', '{}', '[]', '[]', '-1.5e-20', '-infinity', 'infinity', 'infinity', 'sad', 1, 'Infinity', '-1 second', NULL),
 (E'back\\slash \\N not null', NULL, NULL, NULL, NULL, NULL, '123456789012345678901234567890.123', '2026-11-26 03:00:00+05:30',
  '1999-12-31 23:59:59.999999', '0001-01-01 BC', 'ok', 2147483647, '-0', '0', NULL),
 ('emoji 🍅 and ünïcödé and 中文', NULL, NULL, '{"\\\\"}', '"str"', '1', '0', NULL, NULL, NULL, NULL, NULL, '1e308', NULL, NULL);
INSERT INTO measurements SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 1000) g;
"#;

#[tokio::test(flavor = "multi_thread")]
async fn awkward_data_types_round_trip_through_backup_and_validate() {
    let env = TestEnv::start("awkward").await;
    let db = env.client().await;
    db.batch_execute(AWKWARD_SCHEMA).await.expect("schema");

    let manifest = env.backup("awkward").await;
    env.run_ok(&["backup", "validate", &manifest.id]);

    for table in &manifest.tables {
        let stored = backup_rows(&env.repo().await, &manifest, &table.display_name()).await;
        let live = live_rows(&db, &table.qualified(), &table.columns).await;
        assert_eq!(
            stored,
            live,
            "rows of {} differ between backup and database",
            table.display_name()
        );
        assert_eq!(
            table.rows as usize,
            live.len(),
            "row count of {}",
            table.display_name()
        );
    }
    let names: Vec<String> = manifest.tables.iter().map(|t| t.display_name()).collect();
    for expected in [
        "Mixed Case.Weird \"Table\"",
        "public.types",
        "public.measurements_eu",
        "public.measurements_us",
        "public.empty_table",
        "public.no_columns",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names.contains(&"public.measurements".to_string()),
        "a partitioned parent holds no rows itself"
    );
    let eu = manifest
        .find_table("measurements_eu")
        .expect("leaf partition");
    assert_eq!(eu.partition_of.as_deref(), Some("public.measurements"));
    assert_eq!(eu.rows, 500);
    let types = manifest.find_table("types").expect("types");
    assert!(
        !types.columns.contains(&"doubled".to_string()),
        "generated columns are recomputed, not copied"
    );
    assert_eq!(
        manifest.find_table("no_columns").expect("no_columns").rows,
        2
    );
    assert_eq!(
        manifest
            .find_table("empty_table")
            .expect("empty_table")
            .rows,
        0
    );

    let repo = env.repo().await;
    let pre = String::from_utf8(
        repo.read_stream(&manifest.pre_data, "pre-data")
            .await
            .expect("pre-data"),
    )
    .expect("utf-8");
    let post = String::from_utf8(
        repo.read_stream(&manifest.post_data, "post-data")
            .await
            .expect("post-data"),
    )
    .expect("utf-8");
    assert!(
        pre.contains("CREATE TYPE public.mood AS ENUM"),
        "enum in pre-data"
    );
    assert!(
        pre.contains("CREATE DOMAIN public.positive"),
        "domain in pre-data"
    );
    assert!(
        pre.contains("PARTITION BY LIST (region)"),
        "partitioning in pre-data"
    );
    assert!(
        pre.contains("GENERATED ALWAYS AS"),
        "generated column definition in pre-data"
    );
    assert!(
        post.contains("PRIMARY KEY (id)"),
        "constraints in post-data"
    );
    let seq = manifest
        .sequences
        .iter()
        .find(|s| s.name == "types_id_seq")
        .expect("types_id_seq captured");
    assert_eq!((seq.last_value, seq.is_called), (4, true));
    assert_eq!(manifest.source.database, "awkward");
    assert_eq!(manifest.source.encoding, "UTF8");
    assert!(
        manifest.source.snapshot_lsn.is_some(),
        "snapshot LSN recorded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_table_split_into_block_ranges_keeps_every_row_once() {
    let env = TestEnv::start("split").await;
    let db = env.client().await;
    db.batch_execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, payload text);
         INSERT INTO events SELECT g, md5(g::text) || repeat('x', g % 200) FROM generate_series(1, 60000) g;
         DELETE FROM events WHERE id % 7 = 0;",
    )
    .await
    .expect("data");
    let repo = larder::repository::Repository::open_or_init(std::sync::Arc::new(
        larder::targets::fs::FsTarget::open("local", &env.repo_dir()).expect("target"),
    ))
    .await
    .expect("repository");
    let opts = BackupOptions {
        jobs: 3,
        split_bytes: Some(256 * 1024),
        ..BackupOptions::default()
    };
    let manifest = create(&env.settings(), &repo, &opts, &Progress::hidden())
        .await
        .expect("backup");
    let events = manifest.find_table("events").expect("events");
    assert!(
        events.parts.len() >= 4,
        "expected the table split into ranges, got {} part(s)",
        events.parts.len()
    );
    let stored = backup_rows(&repo, &manifest, "events").await;
    let live = live_rows(&db, "events", &events.columns).await;
    assert_eq!(stored.len(), 60000 - 60000 / 7);
    assert_eq!(
        stored, live,
        "split ranges must cover every row exactly once"
    );
    let report = validate(
        &repo,
        &manifest,
        &Objectives::default(),
        &[],
        2,
        &Progress::hidden(),
    )
    .await
    .expect("validate");
    assert!(
        report.ok,
        "validation of a split backup failed: {:?}",
        report.first_error()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_only_backup_stores_ddl_and_sequences_but_no_rows() {
    let env = TestEnv::start("schemaonly").await;
    env.load_kitchen_pantry(0.001).await;
    let out = env.run_json(&[
        "backup",
        "create",
        "--type",
        "schema-only",
        "-n",
        "before-migration",
    ]);
    assert_eq!(out["backup"]["type"], "schema-only");
    assert_eq!(out["backup"]["rows"], 0);
    let id = out["backup"]["id"].as_str().expect("id");
    let manifest = env.repo().await.read_manifest(id).await.expect("manifest");
    assert!(manifest.tables.is_empty());
    assert!(manifest.pre_data.bytes > 0 && manifest.post_data.bytes > 0);
    assert!(
        manifest
            .sequences
            .iter()
            .any(|s| s.name == "invoice_number_seq"),
        "sequence values captured"
    );
    let listed = env.run_json(&["backup", "list", "--type", "schema-only"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    // `latest` names full backups only; the schema-only one is `latest-schema`.
    env.run_ok(&["backup", "validate", "latest-schema"]);
}
