//! The repository over time: deduplication between backups, listing, deletion that never
//! touches a chunk another backup needs, locks that keep garbage collection away from a
//! running backup, and `init`.

use crate::support::{TestEnv, chunk_files, envelope, text};
use larder::repository::chunk_key;
use larder::repository::lock::RepoLock;

#[tokio::test(flavor = "multi_thread")]
async fn a_second_backup_of_an_unchanged_database_adds_under_one_percent() {
    let env = TestEnv::start("dedup").await;
    env.load_kitchen_pantry(0.05).await;
    let first = env.backup("first").await;
    let second = env.backup("second").await;
    assert!(
        first.new_bytes > 1_000_000,
        "first backup stored {} bytes",
        first.new_bytes
    );
    let ratio = second.new_bytes as f64 / first.new_bytes as f64;
    assert!(
        ratio < 0.01,
        "second backup added {} of {} bytes ({:.2} %)",
        second.new_bytes,
        first.new_bytes,
        ratio * 100.0
    );
    let table_chunks = |m: &larder::repository::manifest::Manifest| -> Vec<String> {
        m.tables
            .iter()
            .flat_map(|t| t.parts.iter())
            .flat_map(|p| p.chunks.iter())
            .map(|c| c.id.clone())
            .collect()
    };
    assert_eq!(
        table_chunks(&first),
        table_chunks(&second),
        "both backups reference the same table chunks"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_backup_keeps_every_chunk_another_backup_uses() {
    let env = TestEnv::start("deletes").await;
    env.load_kitchen_pantry(0.01).await;
    let older = env.backup("older").await;
    env.client()
        .await
        .batch_execute("UPDATE interactions SET summary = summary || ' (edited)' WHERE id % 10 = 0")
        .await
        .expect("edit");
    let newer = env.backup("newer").await;

    let refused = env.run(&["backup", "delete", &older.id]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "delete without --force is a refusal"
    );
    assert!(text(&refused).contains("--force"), "{}", text(&refused));
    assert_eq!(
        env.run_json(&["backup", "list"]).as_array().map(Vec::len),
        Some(2),
        "nothing deleted without --force"
    );

    let deleted = env.run_json(&["backup", "delete", &older.id, "--force"]);
    assert!(
        deleted["chunks_deleted"].as_u64().expect("count") > 0,
        "chunks only the older backup used are freed"
    );
    assert!(deleted["chunks_kept"].as_u64().expect("count") > 0);
    for chunk in newer.chunks() {
        assert!(
            env.repo_dir().join(chunk_key(&chunk.id)).is_file(),
            "chunk {} of the newer backup was deleted",
            chunk.id
        );
    }
    env.run_ok(&["backup", "validate", &newer.id]);
    let listed = env.run_json(&["backup", "list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["id"], newer.id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_newest_first_with_the_documented_fields_and_limit() {
    let env = TestEnv::start("listing").await;
    env.load_kitchen_pantry(0.001).await;
    let a = env.backup("a").await;
    let b = env.backup("b").await;
    let listed = env.run_json(&["backup", "list"]);
    assert_eq!(listed[0]["id"], b.id.as_str());
    assert_eq!(listed[1]["id"], a.id.as_str());
    for field in [
        "id",
        "name",
        "type",
        "created_at",
        "completed_at",
        "status",
        "stored_bytes",
        "logical_bytes",
        "tables",
        "rows",
    ] {
        assert!(
            listed[0].get(field).is_some(),
            "backup list --json lacks {field}"
        );
    }
    assert_eq!(listed[0]["status"], "complete");
    assert_eq!(listed[0]["tables"], 7);
    assert_eq!(
        env.run_json(&["backup", "list", "-l", "1"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let human =
        String::from_utf8_lossy(&env.run_ok(&["backup", "list", "-l", "10"]).stdout).into_owned();
    assert!(
        human.contains("STORED") && human.contains(&a.id) && human.contains(&b.id),
        "{human}"
    );
    let latest = env
        .repo()
        .await
        .resolve("latest", &env.dbname)
        .await
        .expect("latest");
    assert_eq!(latest.id, b.id, "latest is the most recent backup");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_collection_waits_for_a_running_backup() {
    let env = TestEnv::start("locks").await;
    env.load_kitchen_pantry(0.001).await;
    let manifest = env.backup("locked").await;
    let repo = env.repo().await;
    let running = RepoLock::shared(&repo, "20991231-000000-beef")
        .await
        .expect("shared lock");
    let out = env.run(&["backup", "delete", &manifest.id, "--force"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("repository is locked: backup 20991231-000000-beef"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.run_json(&["backup", "list"]).as_array().map(Vec::len),
        Some(1),
        "nothing deleted while locked"
    );
    running.release().await.expect("release");
    env.run_ok(&["backup", "delete", &manifest.id, "--force"]);
    assert!(chunk_files(&env.repo_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn init_writes_a_commented_config_that_backup_cli_then_uses() {
    let env = TestEnv::start("init").await;
    env.load_kitchen_pantry(0.001).await;
    let config = env.work.path().join("site.toml");
    let out = env
        .cli()
        .env_remove("BACKUP_CLI_REPO")
        .args(["--config", config.to_str().expect("path"), "init"])
        .output()
        .expect("init");
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(&config).expect("config written");
    assert!(
        written.contains("[objectives.rpo]") && written.contains("# "),
        "commented template"
    );
    assert!(
        env.work
            .path()
            .join("backups/larder-repository.json")
            .is_file(),
        "repository initialised next to the config"
    );
    let again = env
        .cli()
        .args(["--config", config.to_str().expect("path"), "init"])
        .output()
        .expect("init");
    assert_eq!(
        again.status.code(),
        Some(2),
        "init refuses to overwrite without --force"
    );
    let out = env
        .cli()
        .env_remove("BACKUP_CLI_REPO")
        .args([
            "--config",
            config.to_str().expect("path"),
            "--json",
            "backup",
            "create",
        ])
        .output()
        .expect("create");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !chunk_files(&env.work.path().join("backups")).is_empty(),
        "backup went to the configured repository"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_warns_when_the_newest_backup_is_older_than_the_rpo() {
    let env = TestEnv::start("rpo").await;
    env.load_kitchen_pantry(0.001).await;
    let manifest = env.backup("soon-stale").await;
    let config = env.work.path().join("critical.toml");
    std::fs::write(
        &config,
        "[objectives]\nclass = \"critical\"\n\n[objectives.rpo]\ncritical = \"1s\"\n",
    )
    .expect("config");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = env.run_ok(&[
        "--config",
        config.to_str().expect("path"),
        "backup",
        "validate",
        &manifest.id,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("older than the recovery-point objective of 1s (critical data)"),
        "{stdout}"
    );
    let report = env.run_json(&["backup", "validate", &manifest.id]);
    assert_eq!(
        report["warnings"],
        serde_json::json!([]),
        "the default (standard, 4 h) RPO is not exceeded"
    );
    assert_eq!(report["rpo_seconds"], 4 * 3600);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_delete_shows_what_goes_and_what_gc_reclaims_and_changes_nothing() {
    let env = TestEnv::start("deleteplan").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE kept (id int PRIMARY KEY, note text);
             INSERT INTO kept SELECT g, 'kept ' || g FROM generate_series(1, 500) g;
             CREATE TABLE churn (id int PRIMARY KEY, note text);
             INSERT INTO churn SELECT g, 'old ' || g FROM generate_series(1, 500) g;",
        )
        .await
        .expect("tables");
    let older = env.backup("older").await;
    env.client()
        .await
        .batch_execute("UPDATE churn SET note = 'new ' || id")
        .await
        .expect("change");
    env.backup("newer").await;
    let chunks_before = chunk_files(&env.repo_dir());

    let printed = envelope(&env.run_ok(&["--json", "backup", "delete", &older.id, "--dry-run"]));
    assert_eq!(printed["status"], "ok", "{printed}");
    let planned = &printed["dry_run"];
    let plan = &planned["plan"];
    assert_eq!(plan["backup_id"], older.id.as_str(), "{planned}");
    let reclaim = &plan["reclaim"][0];
    assert_eq!(reclaim["target"], "local", "{planned}");
    assert!(
        reclaim["chunks_deleted"].as_u64().expect("count") > 0
            && reclaim["chunks_kept"].as_u64().expect("count") > 0,
        "the old rows of churn go, kept and the sections stay: {planned}"
    );
    assert_eq!(
        chunk_files(&env.repo_dir()),
        chunks_before,
        "a dry run deletes no chunk"
    );
    assert_eq!(
        env.run_json(&["backup", "list"]).as_array().map(Vec::len),
        Some(2),
        "a dry run deletes no backup"
    );
    let shown = text(&env.run_ok(&["backup", "delete", &older.id, "--dry-run"]));
    assert!(
        shown.contains("Nothing was changed") && shown.contains("on target 'local'"),
        "{shown}"
    );

    // The deletion then does what the plan said.
    let deleted = env.run_json(&["backup", "delete", &older.id, "--force"]);
    for field in ["chunks_deleted", "bytes_freed", "chunks_kept"] {
        assert_eq!(deleted[field], reclaim[field], "{field}: {deleted}");
    }
}
