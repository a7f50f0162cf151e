//! Thousands of objects on servers with a small lock table. A backup holds about one lock
//! per table (pg_dump's): the leader releases what its catalog reads took and each worker
//! reads a table in a short transaction of its own. A restore creates the schema and the
//! post-data in batches, so no transaction holds a lock per table (pg_restore's own way), and
//! a failed new-database restore drops what it built.

use crate::support::{TestEnv, reported, scalar, text};
use larder::error::Error;
use larder::pg::ephemeral::ClusterSetup;
use larder::pg::{session, snapshot};
use larder::repository::manifest::{ChunkRef, Manifest, OBJECT_LIST_FORMAT};

/// Tables in the source database: far more than the destination's lock table holds at once.
const TABLES: usize = 1500;

/// A server whose shared lock table holds `locks` × (connections and background processes).
fn small_lock_table(locks: u32) -> ClusterSetup {
    ClusterSetup {
        settings: vec![("max_locks_per_transaction".into(), locks.to_string())],
        ..ClusterSetup::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifteen_hundred_tables_back_up_and_restore_on_servers_with_a_small_lock_table() {
    // max_locks_per_transaction = 24: about 2,000 locks for the whole server. pg_dump -Fc
    // holds one per table and one per sequence for its whole run (3,000 here) and passes
    // on the spare shared memory; a backup holding a lock per table in each of its leader,
    // two pg_dump runs and workers (6,000) does not.
    let source = TestEnv::start_with("many", small_lock_table(24), "disable").await;
    // A transaction per 100 tables: creating one takes four locks (table, TOAST, its index,
    // the key's index).
    source
        .client()
        .await
        .batch_execute(&format!(
            "DO $$ BEGIN FOR i IN 1..{TABLES} LOOP
               EXECUTE format('CREATE TABLE t%s (id serial PRIMARY KEY, note text NOT NULL)', i);
               EXECUTE format('INSERT INTO t%s (note) SELECT repeat(''n'', g) FROM generate_series(1, 3) g', i);
               IF i % 100 = 0 THEN COMMIT; END IF;
             END LOOP; END $$"
        ))
        .await
        .expect("create the tables");
    // The bound is fair: pg_dump's own custom-format dump of the database passes.
    let archive = source.work.path().join("many.dump");
    source.pg_dump(
        "many",
        &["-Fc", "-f", archive.to_str().expect("utf-8 path")],
    );
    let manifest = source.backup("many").await;
    assert_eq!(manifest.tables.len(), TABLES);
    assert_eq!(manifest.sequences.len(), TABLES);
    // Small tables are stored together: windows on a few shared chunks, not a file each;
    // the tables and sequences, too many for the manifest, are kept apart in chunks of their own.
    assert_eq!(manifest.format, OBJECT_LIST_FORMAT);
    assert!(
        manifest
            .tables
            .iter()
            .all(|t| t.parts.iter().all(|p| p.skip.is_some())),
        "every table is a window"
    );
    let chunks: std::collections::HashSet<&str> = manifest
        .tables
        .iter()
        .flat_map(|t| &t.parts)
        .flat_map(|p| &p.chunks)
        .map(|c| c.id.as_str())
        .collect();
    assert!(
        chunks.len() < 10,
        "{} chunks for {TABLES} tables",
        chunks.len()
    );
    // Validation reads each window from its shared chunk and checks every table's rows.
    let report = reported(&source.run(&["--json", "backup", "validate", &manifest.id]));
    assert_eq!(report["ok"], true, "{report:#}");

    // max_locks_per_transaction = 10 (about 800 locks), where creating the schema in one
    // transaction takes a lock per table and per TOAST table (3,000).
    let destination = TestEnv::start_with("scratch", small_lock_table(10), "disable").await;
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
    assert!(
        source.all_rows("many", &manifest).await == destination.all_rows("many", &manifest).await,
        "every table's rows are restored as they were"
    );
    let keys: i64 = scalar(
        &restored,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND connamespace = 'public'::regnamespace",
    )
    .await;
    assert_eq!(keys, TABLES as i64, "every primary key is back");
    let next: i64 = scalar(&restored, &format!("SELECT nextval('t{TABLES}_id_seq')")).await;
    assert_eq!(next, 4, "the sequences carry on where they were");
    object_list_kept_apart(&source, &manifest, chunks.len()).await;
}

/// The tables and sequences of `first` (a backup of `TABLES` tables on `holding` shared
/// chunks) are kept apart: the manifest stays small, an unchanged second backup stores
/// nothing new but its DDL's first and last chunks, and a lost list makes a damaged backup
/// whose chunks garbage collection still keeps, which comes back whole when the list's chunk
/// is put back.
async fn object_list_kept_apart(env: &TestEnv, first: &Manifest, holding: usize) {
    let list = first
        .object_list
        .as_ref()
        .expect("the object list is kept apart");
    assert_eq!(first.table_chunks.len(), holding);
    let stored = |id: &str| std::fs::metadata(env.repo_dir().join(format!("backups/{id}.json")));
    let size = stored(&first.id).expect("the manifest").len();
    assert!(
        size < 16 << 10,
        "a manifest of {size} bytes for {TABLES} tables"
    );
    assert!(list.bytes > 256 << 10, "a list of {} bytes", list.bytes);

    let second = env.backup("unchanged").await;
    assert_eq!(
        second.object_list, first.object_list,
        "the same list, stored once"
    );
    // New: only the DDL sections' first and last chunks, which hold pg_dump's `\restrict`
    // key (random in every dump); the tables' chunks and the list are the first's.
    let before: std::collections::HashSet<&str> = first.chunks().map(|c| c.id.as_str()).collect();
    let ddl: Vec<&ChunkRef> = second
        .pre_data
        .chunks
        .iter()
        .chain(&second.post_data.chunks)
        .collect();
    for chunk in second.chunks().filter(|c| !before.contains(c.id.as_str())) {
        assert!(
            ddl.contains(&chunk),
            "chunk {} of the unchanged second backup is new",
            chunk.id
        );
    }

    env.client()
        .await
        .batch_execute("UPDATE t700 SET note = 'changed'")
        .await
        .expect("change a table");
    let third = env.backup("changed").await;
    let third_list = third.object_list.clone().expect("the third's list");
    assert_ne!(Some(&third_list), first.object_list.as_ref());
    let chunk_path = |id: &str| env.repo_dir().join("chunks").join(&id[..2]).join(id);
    // A chunk of the list only the third backup has (its entry of t700 changed).
    let own = third_list
        .chunks
        .iter()
        .find(|c| !list.chunks.contains(c))
        .expect("a chunk of its own");
    let list_chunk = chunk_path(&own.id);
    let saved = std::fs::read(&list_chunk).expect("the list's chunk");
    std::fs::remove_file(&list_chunk).expect("lose the list's chunk");
    let listed = env.run_json(&["backup", "list"]);
    let damaged: Vec<&serde_json::Value> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter(|b| b["status"] == "damaged")
        .collect();
    assert_eq!(damaged.len(), 1, "{listed:#}");
    assert_eq!(damaged[0]["id"], third.id.as_str(), "{listed:#}");
    let error = damaged[0]["error"].as_str().expect("error");
    assert!(error.contains("object list"), "{error}");

    // Deleting the other two collects garbage: the damaged manifest's text still names the
    // chunks of its tables, so none of them goes.
    for gone in [&first.id, &second.id] {
        env.run_ok(&["backup", "delete", gone, "--force"]);
    }
    for id in &third.table_chunks {
        assert!(
            chunk_path(id).exists(),
            "chunk {id} of the damaged backup was deleted"
        );
    }
    std::fs::write(&list_chunk, saved).expect("put the list's chunk back");
    let report = reported(&env.run(&["--json", "backup", "validate", &third.id]));
    assert_eq!(report["ok"], true, "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_dropped_or_rewritten_after_the_snapshot_is_refused_not_read_empty() {
    let env = TestEnv::start("changed").await;
    let db = env.client().await;
    db.batch_execute(
        "CREATE TABLE truncated (id int); INSERT INTO truncated VALUES (1), (2);
         CREATE TABLE dropped (id int); INSERT INTO dropped VALUES (1);
         CREATE TABLE rewritten (id int); INSERT INTO rewritten VALUES (1);
         CREATE TABLE replaced (id int); INSERT INTO replaced VALUES (1);
         CREATE TABLE altered (id int); INSERT INTO altered VALUES (1), (2), (3);
         CREATE TABLE kept (id int); INSERT INTO kept VALUES (1);",
    )
    .await
    .expect("create the tables");
    let settings = env.settings();
    let leader = snapshot::SnapshotLeader::begin(&settings)
        .await
        .expect("export the snapshot");
    leader.release_read_locks().await.expect("release");
    // Nothing holds the tables: other sessions change them after the snapshot.
    db.batch_execute(
        "TRUNCATE truncated; DROP TABLE dropped;
         ALTER TABLE replaced RENAME TO replaced_old; CREATE TABLE replaced (id int);
         ALTER TABLE altered ADD COLUMN note text; INSERT INTO altered VALUES (4, 'late');",
    )
    .await
    .expect("change the tables");
    db.batch_execute("VACUUM FULL rewritten")
        .await
        .expect("rewrite a table");
    let worker = session::open(&settings, "", "a test worker")
        .await
        .expect("worker");
    for table in [
        "public.truncated",
        "public.dropped",
        "public.rewritten",
        "public.replaced",
    ] {
        match snapshot::begin_read(&worker, &leader.snapshot_id, &[table]).await {
            Err(Error::ChangedDuringBackup(message)) => {
                assert!(message.contains(table), "{message}");
                assert!(message.contains("run the backup again"), "{message}");
            }
            other => panic!("{table} changed after the snapshot, yet: {other:?}"),
        }
        // The failed read leaves the session usable for the next.
        worker.batch_execute("ROLLBACK").await.expect("rollback");
    }
    // A change that keeps the table's file (a new column, new rows) reads as of the snapshot.
    snapshot::begin_read(&worker, &leader.snapshot_id, &["public.altered"])
        .await
        .expect("an altered table is still the snapshot's");
    let rows: i64 = scalar(&worker, "SELECT count(*) FROM public.altered").await;
    assert_eq!(rows, 3, "the late row is not in the snapshot");
    snapshot::end_read(&worker, "public.altered")
        .await
        .expect("commit");
    let held: i64 = scalar(
        &db,
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = 'altered' AND l.pid <> pg_backend_pid()",
    )
    .await;
    assert_eq!(held, 0, "the read's lock is released when it ends");

    // A backup worker's reads: each commits the one before it in its own round trip, so the
    // worker holds one group's locks at a time, and the check still refuses a changed table.
    let reader = snapshot::reader(&settings).await.expect("reader");
    let locked = |table: &'static str| {
        let db = &db;
        async move {
            scalar(
                db,
                &format!(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                     WHERE c.relname = '{table}' AND l.pid <> pg_backend_pid()"
                ),
            )
            .await
        }
    };
    snapshot::next_read(&reader, &leader.snapshot_id, &["public.altered"])
        .await
        .expect("the first read commits the session's empty transaction");
    assert_eq!(locked("altered").await, 1, "the table is locked while read");
    let rows: i64 = scalar(&reader, "SELECT count(*) FROM public.altered").await;
    assert_eq!(rows, 3, "the next read is in the snapshot too");
    snapshot::next_read(&reader, &leader.snapshot_id, &["public.kept"])
        .await
        .expect("a table unchanged since the snapshot");
    assert_eq!(
        (locked("altered").await, locked("kept").await),
        (0, 1),
        "the next read released the previous table's lock"
    );
    // A group of small tables: one transaction locks them all, and its check names the one
    // that changed, whichever way.
    snapshot::next_read(
        &reader,
        &leader.snapshot_id,
        &["public.altered", "public.kept"],
    )
    .await
    .expect("a group of unchanged tables");
    assert_eq!(
        (locked("altered").await, locked("kept").await),
        (1, 1),
        "a group's tables are locked together"
    );
    for (group, culprit) in [
        (
            ["public.kept", "public.rewritten", "public.altered"],
            "public.rewritten",
        ),
        (
            ["public.kept", "public.altered", "public.dropped"],
            "public.dropped",
        ),
        (
            ["public.replaced", "public.kept", "public.altered"],
            "public.replaced",
        ),
    ] {
        match snapshot::next_read(&reader, &leader.snapshot_id, &group).await {
            Err(Error::ChangedDuringBackup(message)) => {
                assert!(
                    message.contains(&format!("table {culprit} was")),
                    "{message}"
                );
                for other in group.iter().filter(|t| **t != culprit) {
                    assert!(
                        !message.contains(other),
                        "{other} is not to blame: {message}"
                    );
                }
            }
            other => panic!("a group holding {culprit}, changed, read by a worker: {other:?}"),
        }
    }
    // The session survives a refused group: the next read starts afresh.
    snapshot::next_read(&reader, &leader.snapshot_id, &["public.kept"])
        .await
        .expect("a read after a refused group");
    leader.finish().await.expect("end the snapshot");
}
