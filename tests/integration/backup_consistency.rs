//! A backup is one instant of the database: a transaction that commits while the backup runs
//! is wholly in it or wholly absent, across all tables.

use crate::support::{TestEnv, backup_rows, wait_for_lock_waiter};
use std::collections::BTreeSet;

fn batches(rows: &[String], column: usize) -> BTreeSet<i64> {
    rows.iter()
        .map(|r| {
            r.split('\t')
                .nth(column)
                .expect("column")
                .parse::<i64>()
                .expect("batch number")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_committed_during_the_backup_is_wholly_in_or_wholly_absent() {
    let env = TestEnv::start("consistency").await;
    let db = env.client().await;
    db.batch_execute(
        "CREATE TABLE parent (id serial PRIMARY KEY, batch bigint NOT NULL UNIQUE);
         CREATE TABLE child (id serial PRIMARY KEY, parent_batch bigint NOT NULL REFERENCES parent (batch), filler text);
         CREATE TABLE gate (id int);
         INSERT INTO parent (batch) SELECT g FROM generate_series(1, 100) g;
         INSERT INTO child (parent_batch, filler) SELECT g, repeat('x', 500) FROM generate_series(1, 100) g;",
    )
    .await
    .expect("schema");

    // Hold the gate table so the backup stops right after exporting its snapshot.
    let holder = env.client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock gate");

    // A writer that keeps committing parent+child pairs for the whole backup.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (settings, stop) = (env.settings(), stop.clone());
        tokio::spawn(async move {
            let client = settings.connect().await.expect("writer connects");
            let mut batch = 100_000i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                batch += 1;
                client
                    .batch_execute(&format!(
                        "BEGIN; INSERT INTO parent (batch) VALUES ({batch}); \
                         INSERT INTO child (parent_batch, filler) VALUES ({batch}, 'during'); COMMIT"
                    ))
                    .await
                    .expect("writer transaction");
            }
            batch - 100_000
        })
    };

    let mut backup = env
        .cli()
        .args([
            "--json",
            "backup",
            "create",
            "-n",
            "during-writes",
            "--jobs",
            "2",
        ])
        .spawn()
        .expect("start backup");

    // Wait until the backup is blocked on the gate, i.e. its snapshot exists.
    wait_for_lock_waiter(&db, "gate").await;
    // These commit strictly after the snapshot: none may appear in the backup.
    for batch in 1000..1050 {
        db.batch_execute(&format!(
            "BEGIN; INSERT INTO parent (batch) VALUES ({batch}); \
             INSERT INTO child (parent_batch, filler) VALUES ({batch}, 'after snapshot'); COMMIT"
        ))
        .await
        .expect("post-snapshot write");
    }
    holder.batch_execute("COMMIT").await.expect("release gate");
    let status = tokio::task::spawn_blocking(move || backup.wait())
        .await
        .expect("join")
        .expect("backup process");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let concurrent_commits = writer.await.expect("writer");
    assert!(status.success(), "backup failed: {status}");
    assert!(
        concurrent_commits > 0,
        "the writer must have committed during the backup"
    );

    let repo = env.repo().await;
    let manifest = repo.resolve("latest", &env.dbname).await.expect("manifest");
    let parents = batches(&backup_rows(&repo, &manifest, "parent").await, 1);
    let children = batches(&backup_rows(&repo, &manifest, "child").await, 1);
    assert_eq!(
        parents, children,
        "every transaction must be wholly in the backup or wholly absent"
    );
    assert!(
        (1..=100).all(|b| parents.contains(&b)),
        "rows committed before the backup are all present"
    );
    assert!(
        (1000..1050).all(|b| !parents.contains(&b)),
        "rows committed after the snapshot are absent"
    );
}
