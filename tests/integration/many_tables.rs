//! Thousands of objects on a server with a small lock table: a restore creates the schema and
//! the post-data in batches, so no transaction holds a lock per table (pg_restore's own way),
//! and a failed new-database restore drops what it built.

use crate::support::{TestEnv, reported, scalar, text};
use larder::pg::ephemeral::ClusterSetup;

/// Tables in the source database: far more than the destination's lock table holds at once.
const TABLES: usize = 1500;

#[tokio::test(flavor = "multi_thread")]
async fn fifteen_hundred_tables_restore_into_a_server_with_a_small_lock_table() {
    let source = TestEnv::start("many").await;
    source
        .client()
        .await
        .batch_execute(&format!(
            "DO $$ BEGIN FOR i IN 1..{TABLES} LOOP
               EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, note text NOT NULL)', i);
               EXECUTE format('INSERT INTO t%s SELECT g, repeat(''n'', g) FROM generate_series(1, 3) g', i);
             END LOOP; END $$;"
        ))
        .await
        .expect("create the tables");
    let manifest = source.backup("many").await;
    assert_eq!(manifest.tables.len(), TABLES);

    // max_locks_per_transaction = 10: about 800 locks for the whole server, where creating
    // the schema in one transaction takes a lock per table and per TOAST table (3,000).
    let small = ClusterSetup {
        settings: vec![("max_locks_per_transaction".into(), "10".into())],
        ..ClusterSetup::default()
    };
    let destination = TestEnv::start_with("scratch", small, "disable").await;
    let dest_url = destination.url().replace("/scratch?", "/many?");
    let out = source.run(&[
        "--json",
        "recovery",
        "execute",
        &manifest.id,
        "-s",
        "new-database",
        "--dest-url",
        &dest_url,
        "--jobs",
        "2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report = reported(&out);
    assert_eq!(report["destination_database"], "many", "{report:#}");
    let restored = destination.client_for("many").await;
    let tables: i64 = scalar(
        &restored,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    )
    .await;
    assert_eq!(tables, TABLES as i64);
    let rows: i64 = scalar(&restored, &format!("SELECT count(*) FROM t{TABLES}")).await;
    assert_eq!(rows, 3);
    let keys: i64 = scalar(
        &restored,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND connamespace = 'public'::regnamespace",
    )
    .await;
    assert_eq!(keys, TABLES as i64, "every primary key is back");
}
