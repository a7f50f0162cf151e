//! The repository under faults and hostile content: concurrent creates, deletes and garbage
//! collection; damaged, forged and crafted manifests; manifests edited to hide a table or swap
//! sections; locks left by a crash on another host; and file modes whatever the umask.

use crate::support::{S3Server, TestEnv, chunk_files, reported, text};
use larder::repository::lock::RepoLock;
use larder::repository::{Repository, manifest_key};
use larder::targets::s3::{S3Settings, S3Target};
use larder::targets::{Created, Target};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// A small database whose content changes between rounds (so every backup writes chunks).
async fn small_database(env: &TestEnv) {
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE pantry (id serial PRIMARY KEY, item text NOT NULL);
             CREATE INDEX pantry_item ON pantry (item);
             INSERT INTO pantry (item) SELECT 'item ' || g FROM generate_series(1, 2000) g;",
        )
        .await
        .expect("small database");
}

fn manifest_path(env: &TestEnv, id: &str) -> std::path::PathBuf {
    manifest_path_in(&env.repo_dir(), id)
}

fn manifest_path_in(repo: &Path, id: &str) -> std::path::PathBuf {
    repo.join(manifest_key(id))
}

fn edit_manifest(env: &TestEnv, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = manifest_path(env, id);
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read manifest")).expect("json");
    edit(&mut value);
    std::fs::write(&path, serde_json::to_vec_pretty(&value).expect("encode")).expect("write");
}

fn no_panic(out: &std::process::Output, what: &str) {
    assert_ne!(
        out.status.code(),
        Some(101),
        "{what} panicked:\n{}",
        text(out)
    );
    assert!(!text(out).contains("panicked"), "{what}:\n{}", text(out));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_deletes_and_gc_leave_every_successful_backup_restorable() {
    let env = TestEnv::start("stress").await;
    small_database(&env).await;
    let mut alive: Vec<String> = Vec::new();
    let (mut deleted, mut refused) = (0, 0);
    for round in 0..4 {
        env.client()
            .await
            .batch_execute(&format!(
                "INSERT INTO pantry (item) SELECT 'round {round} ' || g FROM generate_series(1, 500) g"
            ))
            .await
            .expect("change the data");
        // Three creates and two deletes of the same backup at once, each its own process.
        let victim = alive.first().cloned();
        let mut children = Vec::new();
        for _ in 0..3 {
            let child = env
                .cli()
                .args(["--json", "backup", "create"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn create");
            children.push(("create", child));
        }
        if let Some(victim) = &victim {
            for _ in 0..2 {
                let child = env
                    .cli()
                    .args(["--json", "backup", "delete", victim, "--force"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn delete");
                children.push(("delete", child));
            }
        }
        let mut victim_gone = false;
        for (kind, child) in children {
            let out = child.wait_with_output().expect("wait");
            no_panic(&out, kind);
            match (kind, out.status.success()) {
                ("create", true) => {
                    let json = reported(&out);
                    alive.push(json["backup"]["id"].as_str().expect("id").to_string());
                }
                ("delete", true) => {
                    deleted += 1;
                    victim_gone = true;
                }
                (_, false) => {
                    // The only acceptable failure is the lock, with the way out in it.
                    let all = text(&out);
                    assert!(
                        all.contains("repository is locked")
                            || all.contains("not found in the repository"),
                        "{kind} failed for another reason:\n{all}"
                    );
                    refused += 1;
                }
                _ => unreachable!(),
            }
        }
        if victim_gone {
            alive.retain(|id| Some(id) != victim.as_ref());
        }
    }
    assert!(deleted >= 1, "no delete ever ran");
    assert!(alive.len() >= 4, "too few backups survived: {alive:?}");
    eprintln!("{deleted} deletes, {refused} refused by the lock");
    // Every backup that reported success and was not deleted is whole.
    for id in &alive {
        env.run_ok(&["backup", "validate", id]);
    }
    let newest = alive.last().expect("a backup");
    env.run_ok(&[
        "recovery",
        "execute",
        newest,
        "--dest-db",
        "stress_check",
        "--yes",
    ]);
    assert!(env.repo().await.locks().await.expect("locks").is_empty());
}

fn s3_target(s3: &S3Server, root: &str) -> Arc<dyn Target> {
    Arc::new(
        S3Target::new(
            "s3",
            &S3Settings {
                bucket: &s3.bucket,
                endpoint: Some(&s3.endpoint()),
                region: "us-east-1",
                root,
                access_key_id: "testing",
                secret_access_key: "testing",
                session_token: None,
                object_lock: None,
            },
        )
        .expect("s3 settings"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_on_s3_are_created_atomically_with_conditional_writes() {
    let s3 = S3Server::start("locks");
    let target = s3_target(&s3, "repo");
    let body = || bytes::Bytes::from_static(b"{}");
    assert_eq!(
        target
            .put_if_absent("locks/probe.json", body())
            .await
            .expect("create"),
        Created::Written
    );
    assert_eq!(
        target
            .put_if_absent("locks/probe.json", body())
            .await
            .expect("again"),
        Created::Exists,
        "the server must honour If-None-Match"
    );
    target.delete("locks/probe.json").await.expect("delete");

    let repo = Repository::open_or_init(target).await.expect("init");
    for _ in 0..5 {
        let attempts: Vec<_> = (0..5)
            .map(|i| {
                let repo = repo.clone();
                tokio::spawn(async move { RepoLock::exclusive(&repo, &format!("gc {i}")).await })
            })
            .collect();
        let mut held = Vec::new();
        for attempt in attempts {
            match attempt.await.expect("task") {
                Ok(lock) => held.push(lock),
                Err(e) => assert!(e.to_string().contains("repository is locked"), "{e}"),
            }
        }
        assert!(held.len() <= 1, "{} exclusive locks at once", held.len());
        for lock in held {
            lock.release().await.expect("release");
        }
    }
    assert!(repo.locks().await.expect("locks").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_manifest_is_listed_and_the_other_backups_stay_usable() {
    let env = TestEnv::start("damaged").await;
    small_database(&env).await;
    let older = env.backup("older").await;
    let newer = env.backup("newer").await;
    // A newer backup whose manifest is cut short: it would be `latest` if it could be read.
    let damaged = "20991231-235959-dead";
    let full = std::fs::read(manifest_path(&env, &newer.id)).expect("read");
    let cut = String::from_utf8(full[..full.len() - 40].to_vec())
        .expect("utf-8")
        .replace(&newer.id, damaged);
    std::fs::write(manifest_path(&env, damaged), cut).expect("plant");

    let listed = env.run_json(&["backup", "list"]);
    let entries = listed.as_array().expect("list");
    assert_eq!(entries.len(), 3, "{listed}");
    assert_eq!(entries[0]["id"], damaged, "ordered by the time in its id");
    assert_eq!(entries[0]["status"], "damaged");
    let error = entries[0]["error"].as_str().expect("error");
    assert!(
        error.contains("Checksum verification failed") && error.contains(damaged),
        "{error}"
    );
    assert_eq!(entries[1]["status"], "complete");
    let human = text(&env.run_ok(&["backup", "list"]));
    assert!(
        human.contains(&format!("backup {damaged} is damaged")) && human.contains(&older.id),
        "{human}"
    );

    let latest = env.run_json(&["backup", "validate", "latest"]);
    assert_eq!(latest["backup_id"], newer.id.as_str());
    let export = env.work.path().join("latest.sql");
    env.run_ok(&[
        "backup",
        "export",
        "latest",
        "-o",
        export.to_str().expect("path"),
    ]);
    assert!(std::fs::metadata(&export).expect("export").len() > 1000);
    env.run_ok(&["backup", "create", "-n", "after"]);

    let health = env.run(&["--json", "monitor", "health"]);
    let health = reported(&health);
    let corruption: Vec<&serde_json::Value> = health["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["alert"] == "Backup Corruption")
        .collect();
    assert_eq!(corruption.len(), 1, "{health}");
    assert!(
        corruption[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(damaged))
    );

    // Deleting a good backup works, and keeps the chunks the damaged manifest still names.
    env.run_ok(&["backup", "delete", &newer.id, "--force"]);
    let chunks = chunk_files(&env.repo_dir());
    for chunk in newer.chunks() {
        assert!(
            chunks.iter().any(|p| p.ends_with(&chunk.id)),
            "chunk {} named by the damaged manifest was deleted",
            chunk.id
        );
    }
    env.run_ok(&["backup", "validate", &older.id]);

    // The damaged backup itself can be deleted by its id (not as `latest`).
    let refused = env.run(&["backup", "delete", damaged]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("is damaged"), "{}", text(&refused));
    env.run_ok(&["backup", "delete", damaged, "--force"]);
    let listed = env.run_json(&["backup", "list"]);
    assert!(
        listed
            .as_array()
            .expect("list")
            .iter()
            .all(|b| b["status"] == "complete"),
        "{listed}"
    );
    env.run_ok(&["backup", "validate", &older.id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_inner_id_cannot_make_commands_touch_other_objects() {
    let env = TestEnv::start("forged").await;
    small_database(&env).await;
    let victim = env.backup("victim").await;
    let source = env.backup("source").await;
    let format_before = std::fs::read(env.repo_dir().join("larder-repository.json")).expect("fmt");
    let original = std::fs::read_to_string(manifest_path(&env, &source.id)).expect("read");
    let inner = format!("\"id\": \"{}\"", source.id);
    assert!(original.contains(&inner));
    let forged = "20991231-000000-f0f0";
    for fake_id in [
        victim.id.as_str(),
        "../larder-repository",
        "larder-repository",
    ] {
        std::fs::write(
            manifest_path(&env, forged),
            original.replace(&inner, &format!("\"id\": \"{fake_id}\"")),
        )
        .expect("forge");
        for args in [
            vec!["backup", "validate", forged],
            vec!["backup", "export", forged, "-o", "forged.sql"],
            vec!["recovery", "plan", forged],
        ] {
            let out = env.run(&args);
            no_panic(&out, &args.join(" "));
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} must refuse:\n{}",
                text(&out)
            );
            assert!(
                text(&out).contains(&format!("inner id \\\"{fake_id}\\\" differs from its key"))
                    || text(&out).contains(&format!("inner id \"{fake_id}\" differs from its key")),
                "{}",
                text(&out)
            );
        }
        // Deleting the forged backup removes its own key and nothing the inner id names.
        let out = env.run(&["backup", "delete", forged, "--force"]);
        no_panic(&out, "delete of the forged backup");
        assert!(out.status.success(), "{}", text(&out));
        assert!(!manifest_path(&env, forged).exists());
        std::fs::write(
            manifest_path(&env, forged),
            original.replace(&inner, &format!("\"id\": \"{fake_id}\"")),
        )
        .expect("forge again");
        // Sync to a second target copies the good backups and leaves its format file alone.
        let offsite = env.work.path().join("offsite");
        Repository::open_or_init(Arc::new(
            larder::targets::fs::FsTarget::open("offsite", &offsite).expect("offsite"),
        ))
        .await
        .expect("offsite repository");
        let offsite_format = std::fs::read(offsite.join("larder-repository.json")).expect("fmt");
        env.write_config(&format!(
            "[[targets]]\nname = \"local\"\ntype = \"fs\"\npath = \"{}\"\n\n[[targets]]\nname = \"offsite\"\ntype = \"fs\"\npath = \"{}\"\n",
            env.repo_dir().display(),
            offsite.display()
        ));
        let out = env.run(&["backup", "sync"]);
        no_panic(&out, "sync");
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            std::fs::read(offsite.join("larder-repository.json")).expect("fmt"),
            offsite_format,
            "sync touched the destination's format file"
        );
        assert!(manifest_path_in(&offsite, &victim.id).is_file());
        assert!(
            !manifest_path_in(&offsite, forged).exists(),
            "the forged manifest was copied"
        );
        std::fs::remove_file(env.work.path().join("larder-test.toml")).expect("config");
        assert!(
            manifest_path(&env, &victim.id).is_file(),
            "the victim's manifest was deleted through a forged id"
        );
        assert_eq!(
            std::fs::read(env.repo_dir().join("larder-repository.json")).expect("fmt"),
            format_before,
            "the format file was touched"
        );
    }
    env.run_ok(&["backup", "validate", &victim.id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_chunk_ids_and_sizes_are_refused_without_a_crash() {
    let env = TestEnv::start("crafted").await;
    small_database(&env).await;
    let good = env.backup("good").await;
    let other = env.backup("other").await;
    let original = std::fs::read_to_string(manifest_path(&env, &other.id)).expect("read");
    let mut crafted: serde_json::Value = serde_json::from_str(&original).expect("json");
    let crafted_id = "20991231-000000-c0c0";
    crafted["id"] = crafted_id.into();
    let cases: [(&str, serde_json::Value); 3] = [
        ("id", "é".repeat(40).into()),
        ("len", u64::MAX.into()),
        ("stored", u64::MAX.into()),
    ];
    for (field, value) in cases {
        let mut manifest = crafted.clone();
        manifest["tables"][0]["parts"][0]["chunks"][0][field] = value;
        manifest["tables"][0]["parts"][0]["bytes"] = u64::MAX.into();
        std::fs::write(
            manifest_path(&env, crafted_id),
            serde_json::to_vec(&manifest).expect("encode"),
        )
        .expect("plant");
        for args in [
            vec!["backup", "list"],
            vec!["backup", "validate", crafted_id],
            vec!["recovery", "plan", crafted_id],
            vec!["backup", "export", crafted_id, "-o", "crafted.sql"],
        ] {
            let out = env.run(&args);
            no_panic(&out, &format!("{} with a crafted {field}", args.join(" ")));
        }
        let listed = env.run_json(&["backup", "list"]);
        assert_eq!(listed[0]["status"], "damaged", "{field}: {listed}");
    }
    // Deleting another backup beside the crafted manifest works.
    let out = env.run(&["backup", "delete", &good.id, "--force"]);
    no_panic(&out, "delete beside a crafted manifest");
    assert!(out.status.success(), "{}", text(&out));
    env.run_ok(&["backup", "validate", &other.id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_fails_a_manifest_with_a_table_removed_sections_swapped_or_counts_edited() {
    let env = TestEnv::start("consistency").await;
    small_database(&env).await;
    env.client()
        .await
        .batch_execute("CREATE TABLE shelf (id int PRIMARY KEY); INSERT INTO shelf SELECT generate_series(1, 10);")
        .await
        .expect("second table");
    let backup = env.backup("whole").await;
    assert!(backup.digests.is_some(), "new backups record digests");
    let original = std::fs::read(manifest_path(&env, &backup.id)).expect("read");
    let restore = || std::fs::write(manifest_path(&env, &backup.id), &original).expect("restore");
    env.run_ok(&["backup", "validate", &backup.id]);

    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit, &str); 5] = [
        (
            "a table removed",
            |m| {
                m["tables"].as_array_mut().expect("tables").remove(0);
            },
            "table list does not match the digest",
        ),
        (
            "sections swapped",
            |m| {
                let pre = m["pre_data"].clone();
                m["pre_data"] = m["post_data"].clone();
                m["post_data"] = pre;
            },
            "sections swapped or replaced",
        ),
        (
            "a table's row count raised",
            |m| {
                let rows = m["tables"][0]["rows"].as_u64().expect("rows");
                m["tables"][0]["rows"] = (rows + 5).into();
            },
            "rows",
        ),
        (
            "a part's byte count edited",
            |m| {
                m["tables"][0]["parts"][0]["bytes"] = 1.into();
            },
            "hold",
        ),
        (
            "a chunk dropped from a part",
            |m| {
                m["tables"][0]["parts"][0]["chunks"]
                    .as_array_mut()
                    .expect("chunks")
                    .clear();
            },
            "Checksum verification failed",
        ),
    ];
    for (what, edit, expected) in edits {
        edit_manifest(&env, &backup.id, edit);
        let all = env.run_failing(&["backup", "validate", &backup.id]);
        assert!(
            all.contains(expected) && all.contains("Checksum verification failed"),
            "{what}: {all}"
        );
        restore();
    }
    // A manifest from before digests validates, with a note saying what cannot be checked.
    edit_manifest(&env, &backup.id, |m| {
        m.as_object_mut().expect("object").remove("digests");
    });
    let report = env.run_json(&["backup", "validate", &backup.id]);
    assert_eq!(report["ok"], true);
    assert!(
        report["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w
                .as_str()
                .is_some_and(|w| w.contains("before manifests recorded digests"))),
        "{report}"
    );
}

/// Plants a lock as a backup-cli on another host would have left it.
fn plant_lock(env: &TestEnv, key: &str, purpose: &str, heartbeat: chrono::DateTime<chrono::Utc>) {
    let path = env.repo_dir().join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("locks folder");
    let lock = serde_json::json!({
        "purpose": purpose,
        "pid": 31337,
        "host": "db-backup-2.example",
        "created_at": heartbeat,
        "token": "0123456789abcdef",
        "heartbeat_at": heartbeat,
    });
    std::fs::write(path, lock.to_string()).expect("plant lock");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_left_by_a_crash_on_another_host_is_cleared_by_repository_unlock() {
    let env = TestEnv::start("unlock").await;
    small_database(&env).await;
    let backup = env.backup("first").await;
    let crashed = chrono::Utc::now() - chrono::Duration::hours(6);
    plant_lock(
        &env,
        "locks/exclusive.json",
        "delete of backup 20260101-000000-0000",
        crashed,
    );

    let all = env.run_failing(&["backup", "create"]);
    assert!(
        all.contains("repository is locked: delete of backup 20260101-000000-0000 (pid 31337 on db-backup-2.example")
            && all.contains("no heartbeat")
            && all.contains("backup-cli repository unlock"),
        "{all}"
    );
    let unlocked = env.run_json(&["repository", "unlock"]);
    let locks = unlocked[0]["locks"].as_array().expect("locks");
    assert_eq!(locks.len(), 1, "{unlocked}");
    assert_eq!(locks[0]["key"], "locks/exclusive.json");
    assert_eq!(locks[0]["state"], "expired");
    assert_eq!(locks[0]["cleared"], true);
    assert_eq!(locks[0]["holder"]["host"], "db-backup-2.example");
    env.run_ok(&["backup", "create"]);

    // A lock that still has a fresh heartbeat is only cleared with --force.
    plant_lock(
        &env,
        "locks/backup-20991231-000000-0000-0123456789abcdef.json",
        "backup 20991231-000000-0000",
        chrono::Utc::now(),
    );
    let all = env.run_failing(&["backup", "delete", &backup.id, "--force"]);
    assert!(
        all.contains("--force") && all.contains("repository unlock"),
        "{all}"
    );
    let kept = text(&env.run_ok(&["repository", "unlock"]));
    assert!(kept.contains("kept"), "{kept}");
    let forced = env.run_json(&["repository", "unlock", "--force"]);
    assert_eq!(forced[0]["locks"][0]["state"], "live");
    assert_eq!(forced[0]["locks"][0]["cleared"], true);
    env.run_ok(&["backup", "delete", &backup.id, "--force"]);
    assert!(text(&env.run_ok(&["repository", "unlock"])).contains("No repository locks"));
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every folder and file under `root` with its mode.
fn modes_under(root: &Path) -> Vec<(std::path::PathBuf, bool, u32)> {
    let mut out = vec![(root.to_path_buf(), true, mode_of(root))];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let is_dir = path.is_dir();
            out.push((path.clone(), is_dir, mode_of(&path)));
            if is_dir {
                stack.push(path);
            }
        }
    }
    out
}

fn under_umask(mut cmd: Command, mask: u32) -> Command {
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
            Ok(())
        });
    }
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn repository_objects_are_private_whatever_the_umask() {
    let env = TestEnv::start("modes").await;
    small_database(&env).await;
    let out = under_umask(env.cli(), 0o022)
        .args(["backup", "create"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let id = env.repo().await.backup_ids().await.expect("ids")[0].clone();
    let out = under_umask(env.cli(), 0o022)
        .args(["backup", "validate", &id])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let all = modes_under(&env.repo_dir());
    assert!(all.len() > 6, "{all:?}");
    for (path, is_dir, mode) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:o}", path.display());
    }

    // init writes its configuration owner-only too.
    let config = env.work.path().join("init.toml");
    let out = under_umask(env.cli(), 0o022)
        .args(["--config", config.to_str().expect("path"), "--repo"])
        .arg(env.work.path().join("init-repo"))
        .arg("init")
        .output()
        .expect("init");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mode_of(&config), 0o600);

    // With group access, the group may read (and still nobody else), whatever the umask.
    let shared = env.work.path().join("shared-repo");
    env.write_config(&format!(
        "[repository]\npath = \"{}\"\ngroup_access = true\n",
        shared.display()
    ));
    let out = under_umask(env.cli(), 0o077)
        .args(["backup", "create"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let shown = env.run_json(&["config", "show"]);
    assert!(
        shown.to_string().contains("repository.group_access") && shown.to_string().contains("0640"),
        "{shown}"
    );
    for (path, is_dir, mode) in modes_under(&shared) {
        let want = if is_dir { 0o750 } else { 0o640 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
}
