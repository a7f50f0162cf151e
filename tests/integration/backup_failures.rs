//! Bad things happen; nothing is lost and the message says what and where: a corrupted or
//! missing chunk, a database that is down or goes away, a killed backup, a full disk.

use crate::support::{
    TestEnv, chunk_files, finish, flip_a_bit, reported, send, text, wait_for_lock_waiter,
};
use larder::repository::chunk_key;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

async fn kitchen_pantry_backup(env: &TestEnv) -> larder::repository::manifest::Manifest {
    env.load_kitchen_pantry(0.005).await;
    env.backup("before-damage").await
}

fn chunk_path(env: &TestEnv, id: &str) -> PathBuf {
    env.repo_dir().join(chunk_key(id))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_one_chunk_is_named_by_validate() {
    let env = TestEnv::start("flipped").await;
    let manifest = kitchen_pantry_backup(&env).await;
    let chunk = &manifest
        .find_table("interactions")
        .expect("interactions")
        .parts[0]
        .chunks[0];
    flip_a_bit(&chunk_path(&env, &chunk.id));

    let out = env.run(&["backup", "validate", &manifest.id]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "validate must fail: {}",
        text(&out)
    );
    let expected = format!("Checksum verification failed: {}", chunk_key(&chunk.id));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&expected),
        "stderr must name the chunk: {stderr}"
    );
    assert!(
        stderr.contains("table public.interactions"),
        "stderr must name the table: {stderr}"
    );
    assert!(
        stderr.contains(&format!("backup {}", manifest.id)),
        "stderr must name the backup: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("public.contacts") && stdout.contains("FAILED"),
        "per-table report: {stdout}"
    );

    // By id: `latest` now passes over the backup that just failed validation.
    let report = reported(&env.run(&["--json", "backup", "validate", &manifest.id]));
    assert_eq!(report["ok"], false);
    let failed: Vec<&str> = report["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["ok"] == false)
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(
        failed,
        vec!["public.interactions"],
        "only the damaged table fails"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_chunk_is_reported_as_backup_file_not_found() {
    let env = TestEnv::start("missing").await;
    let manifest = kitchen_pantry_backup(&env).await;
    let chunk = &manifest.find_table("contacts").expect("contacts").parts[0].chunks[0];
    std::fs::remove_file(chunk_path(&env, &chunk.id)).expect("remove chunk");
    let out = env.run(&["backup", "validate", "latest"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("Backup file not found: {}", chunk_key(&chunk.id))),
        "{stderr}"
    );
    assert!(stderr.contains("table public.contacts"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_database_gives_database_connection_failed_without_the_password() {
    let mut env = TestEnv::start("stopped").await;
    env.cluster.stop();
    let url = format!(
        "postgres://postgres:sekret-pw@127.0.0.1:{}/stopped?sslmode=disable",
        env.cluster.port()
    );
    let out = env
        .cli()
        .env("DATABASE_URL", &url)
        .args(["backup", "create"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let all = text(&out);
    let expected = format!(
        "Database connection failed: host=127.0.0.1 port={} database=stopped user=postgres",
        env.cluster.port()
    );
    assert!(all.contains(&expected), "{all}");
    assert!(
        !all.contains("sekret-pw"),
        "the password must never be printed: {all}"
    );
    assert!(!env.repo_dir().join("backups").exists() || chunk_files(&env.repo_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_goes_away_mid_backup_leaves_no_visible_backup() {
    let mut env = TestEnv::start("goesaway").await;
    let db = env.client().await;
    db.batch_execute("CREATE TABLE gate (id int); CREATE TABLE data AS SELECT g AS id FROM generate_series(1, 1000) g;")
        .await
        .expect("schema");
    let holder = env.client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let backup = env
        .cli()
        .args(["backup", "create"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_lock_waiter(&db, "gate").await;
    drop((db, holder));
    env.cluster.stop(); // the server goes away while the backup is inside its snapshot
    let out = tokio::task::spawn_blocking(move || backup.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("database error while") || stderr.contains("Database connection failed"),
        "the error names the database failure: {stderr}"
    );
    let list = env.run_json(&["backup", "list"]);
    assert_eq!(
        list,
        serde_json::json!([]),
        "a failed backup must not be listed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backup_leaves_no_visible_backup_and_its_chunks_are_reclaimed() {
    let env = TestEnv::start("killed").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE big (id int, payload text);
             INSERT INTO big SELECT g, md5(g::text) || repeat(md5(random()::text), 8) FROM generate_series(1, 250000) g;",
        )
        .await
        .expect("data");
    let mut backup = env
        .cli()
        .args(["backup", "create", "--jobs", "1"])
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while chunk_files(&env.repo_dir()).is_empty() {
        assert!(Instant::now() < deadline, "no chunk was ever written");
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = backup.id().to_string();
    Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("stop");
    assert!(
        backup.try_wait().expect("try_wait").is_none(),
        "the backup finished before it could be interrupted; make the table bigger"
    );
    backup.kill().expect("kill");
    let _ = backup.wait();
    assert!(
        !chunk_files(&env.repo_dir()).is_empty(),
        "the killed backup had written chunks"
    );

    assert_eq!(
        env.run_json(&["backup", "list"]),
        serde_json::json!([]),
        "no manifest, no backup"
    );
    let out = env.run(&["backup", "validate", "latest"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // The next backup clears the dead process's lock; deleting it collects everything.
    let manifest = env.backup("after-kill").await;
    env.run_ok(&["backup", "delete", &manifest.id, "--force"]);
    assert!(
        chunk_files(&env.repo_dir()).is_empty(),
        "orphaned chunks of the killed backup must be reclaimed"
    );
}

/// A small tmpfs mounted on the repository folder for the test's lifetime.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, bytes: u64) -> SmallDisk {
        assert!(
            rustix::process::geteuid().is_root(),
            "the full-disk tests mount a small tmpfs and need root (CI runs as root)"
        );
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}); the full-disk tests need mount(8) and root"
        );
        SmallDisk(path.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_backup_releases_the_lock_and_leaves_no_visible_backup() {
    let env = TestEnv::start("stopped").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE big (id int, payload text);
             INSERT INTO big SELECT g, md5(g::text) || repeat(md5(random()::text), 8) FROM generate_series(1, 250000) g;",
        )
        .await
        .expect("data");
    let backup = env
        .cli()
        .args(["backup", "create", "--jobs", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while chunk_files(&env.repo_dir()).is_empty() {
        assert!(Instant::now() < deadline, "no chunk was ever written");
        std::thread::sleep(Duration::from_millis(2));
    }
    send(&backup, "TERM");
    let out = finish(backup).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(143), "{said}");
    assert!(
        said.contains("interrupted by SIGTERM: backup ")
            && said.contains("was stopped before its manifest was written"),
        "{said}"
    );
    assert_eq!(env.run_json(&["backup", "list"]), serde_json::json!([]));
    let locks: Vec<_> = std::fs::read_dir(env.repo_dir().join("locks"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(locks.is_empty(), "locks left behind: {locks:?}");
    assert!(
        chunk_files(&env.repo_dir()).is_empty(),
        "the stopped backup's chunks were reclaimed: {:?}\n{said}",
        chunk_files(&env.repo_dir())
    );
}

async fn incompressible_table(env: &TestEnv, rows: u32) {
    env.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE blobs (id int, data bytea);
             INSERT INTO blobs SELECT g, decode(string_agg(lpad(to_hex((random() * 4294967295)::bigint), 8, '0'), ''), 'hex')
               FROM generate_series(1, {rows}) g, generate_series(1, 120) k GROUP BY g;"
        ))
        .await
        .expect("incompressible data");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_that_cannot_fit_stops_before_writing_with_insufficient_disk_space() {
    let env = TestEnv::start("diskfull").await;
    incompressible_table(&env, 20_000).await; // ~10 MB
    let _disk = SmallDisk::mount(&env.repo_dir(), 1024 * 1024);
    let out = env.run(&["backup", "create"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Insufficient disk space: need about"),
        "{stderr}"
    );
    assert!(stderr.contains("free"), "{stderr}");
    assert!(
        chunk_files(&env.repo_dir()).is_empty(),
        "nothing may be written when the preflight fails"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_that_fills_during_the_backup_fails_cleanly_and_frees_what_it_wrote() {
    let env = TestEnv::start("diskfills").await;
    incompressible_table(&env, 20_000).await; // ~10 MB on disk, compresses to about as much
    let _disk = SmallDisk::mount(&env.repo_dir(), 7 * 1024 * 1024); // passes the 0.5x estimate
    let out = env.run(&["backup", "create"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Insufficient disk space"), "{stderr}");
    assert!(stderr.contains("ran out of space"), "{stderr}");
    assert_eq!(env.run_json(&["backup", "list"]), serde_json::json!([]));
    assert!(
        chunk_files(&env.repo_dir()).is_empty(),
        "the failed backup's chunks are removed at once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pg_dump_older_than_the_server_is_refused() {
    let env = TestEnv::start("olddump").await;
    let fake = env.work.path().join("pg_dump-9.6");
    std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").expect("script");
    let mut perms = std::fs::metadata(&fake).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).expect("chmod");
    let config = env.work.path().join("old.toml");
    std::fs::write(
        &config,
        format!("[backup]\npg_dump = \"{}\"\n", fake.display()),
    )
    .expect("config");
    let out = env.run(&[
        "--config",
        config.to_str().expect("path"),
        "backup",
        "create",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("older than the server"),
        "{}",
        text(&out)
    );
}
