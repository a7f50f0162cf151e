//! Recovery never leaves a target half-done: dry runs write nothing, corrupted backups are
//! caught before the target is touched, failures roll back or remove what was built.

use crate::support::{TestEnv, envelope, flip_a_bit, scalar};
use larder::repository::chunk_key;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_reads_everything_and_changes_nothing() {
    let env = TestEnv::start("dryrun").await;
    env.load_kitchen_pantry(0.002).await;
    env.backup("baseline").await;
    env.client()
        .await
        .batch_execute("DELETE FROM interactions WHERE id % 2 = 0")
        .await
        .expect("change");
    let before = env.pg_dump("dryrun", &[]);
    let databases = env.databases().await;
    for strategy in ["replace", "missing-rows", "new-database"] {
        let printed = envelope(&env.run_ok(&[
            "--json",
            "recovery",
            "execute",
            "latest",
            "-s",
            strategy,
            "--dry-run",
        ]));
        assert_eq!(printed["status"], "ok", "{printed}");
        let out = &printed["dry_run"];
        assert!(
            out["chunks_verified"].as_u64().expect("count") > 0,
            "the dry run reads the chunks"
        );
    }
    assert_eq!(
        env.pg_dump("dryrun", &[]),
        before,
        "the target must be byte-for-byte unchanged"
    );
    assert_eq!(env.databases().await, databases, "no database created");
    assert!(
        !env.repo_dir().join("restores").exists(),
        "a dry run records no restore"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_chunk_makes_execute_fail_before_touching_the_target() {
    let env = TestEnv::start("corrupt").await;
    env.load_kitchen_pantry(0.002).await;
    let manifest = env.backup("baseline").await;
    env.client().await.batch_execute("DELETE FROM contacts WHERE id > 700 AND id NOT IN (SELECT contact_id FROM interactions UNION SELECT contact_id FROM orders WHERE contact_id IS NOT NULL)").await.expect("change");
    let before = env.pg_dump("corrupt", &[]);
    let chunk = &manifest
        .find_table("interactions")
        .expect("interactions")
        .parts[0]
        .chunks[0];
    flip_a_bit(&env.repo_dir().join(chunk_key(&chunk.id)));
    let all = env.run_failing(&["recovery", "execute", "latest", "-s", "replace", "--yes"]);
    assert!(
        all.contains(&format!(
            "Checksum verification failed: {}",
            chunk_key(&chunk.id)
        )),
        "{all}"
    );
    assert!(all.contains("nothing was changed"), "{all}");
    assert_eq!(
        env.pg_dump("corrupt", &[]),
        before,
        "the target is untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_chunk_fails_a_new_database_restore_and_the_database_is_dropped() {
    let env = TestEnv::start("corruptnew").await;
    env.load_kitchen_pantry(0.002).await;
    let manifest = env.backup("baseline").await;
    // The last chunk of the biggest table: the restore is well under way when it gets there.
    let chunk = manifest
        .find_table("interactions")
        .expect("interactions")
        .parts
        .iter()
        .flat_map(|p| &p.chunks)
        .last()
        .expect("a chunk")
        .clone();
    flip_a_bit(&env.repo_dir().join(chunk_key(&chunk.id)));
    let all = env.run_failing(&["recovery", "execute", "latest", "--dest-db", "corrupt_copy"]);
    assert!(
        all.contains(&format!(
            "Checksum verification failed: {}",
            chunk_key(&chunk.id)
        )),
        "{all}"
    );
    // The runbook's words come first on the error line, not behind a "recovery failed".
    assert!(
        all.lines()
            .any(|l| l.starts_with("error: Checksum verification failed: ")),
        "{all}"
    );
    env.assert_half_built_dropped(&all, "corrupt_copy").await;
    assert!(
        !env.repo_dir().join("restores").exists(),
        "a failed restore records no recovery time"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_that_would_break_a_foreign_key_is_rolled_back() {
    let env = TestEnv::start("rollback").await;
    env.load_kitchen_pantry(0.002).await;
    env.backup("baseline").await;
    let db = env.client().await;
    // Orders and their contacts were deleted; restoring orders alone would orphan them.
    db.batch_execute(
        "DELETE FROM order_items; DELETE FROM orders WHERE contact_id > 400;
         DELETE FROM interactions WHERE contact_id > 400; DELETE FROM contacts WHERE id > 400;",
    )
    .await
    .expect("deletes");
    let before = env.pg_dump("rollback", &[]);
    let all = env.run_failing(&[
        "recovery",
        "execute",
        "latest",
        "-s",
        "missing-rows",
        "-t",
        "orders",
    ]);
    assert!(
        all.contains("orders_contact_id_fkey") && all.contains("rolled back"),
        "{all}"
    );
    assert_eq!(
        env.pg_dump("rollback", &[]),
        before,
        "the transaction left no trace"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_database_restore_that_fails_midway_is_dropped() {
    let env = TestEnv::start("midway").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, payload text);
             INSERT INTO big SELECT g, repeat(md5(g::text), 10) FROM generate_series(1, 200000) g;",
        )
        .await
        .expect("data");
    env.backup("big").await;
    let restore = env
        .cli()
        .args([
            "recovery",
            "execute",
            "latest",
            "-s",
            "new-database",
            "--dest-db",
            "halfway",
            "--jobs",
            "1",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let admin = env.admin().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    // The restore builds under a temporary name until it is complete.
    let building = larder::engine::recovery::restore::partial_name("halfway");
    loop {
        let killed: i64 = scalar(&admin, &format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{building}' AND query LIKE 'COPY%FROM STDIN%'")).await;
        if killed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restore never started loading"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = tokio::task::spawn_blocking(move || restore.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    env.assert_half_built_dropped(&stderr, "halfway").await;
}
