//! The runbook's three storage locations (a local folder, an S3 bucket, an offsite folder)
//! after a ransomware hit and a failed copy: health, validate and list say which copies are
//! intact, sync repairs what it relies on, and no single delete destroys every copy.

use crate::support::{S3Server, TestEnv, chunk_files, fs_entry, reported, s3_builtin_entry, text};
use std::path::{Path, PathBuf};

struct ThreeTargets {
    env: TestEnv,
    s3: S3Server,
    local: PathBuf,
    offsite: PathBuf,
    alerts: PathBuf,
}

impl ThreeTargets {
    async fn start(bucket: &str) -> ThreeTargets {
        let env = TestEnv::start("pantry").await;
        env.load_kitchen_pantry(0.001).await;
        let s3 = S3Server::start(bucket);
        let local = env.work.path().join("primary");
        let offsite = env.work.path().join("offsite");
        let alerts = env.work.path().join("alerts.jsonl");
        std::fs::create_dir_all(&local).expect("local folder");
        std::fs::create_dir_all(&offsite).expect("offsite folder");
        let world = ThreeTargets {
            env,
            s3,
            local,
            offsite,
            alerts,
        };
        world.configure(&world.s3.bucket.clone());
        world
    }

    /// The configuration, with the S3 target pointing at `bucket`.
    fn configure(&self, bucket: &str) {
        let s3 = s3_builtin_entry("s3", &self.s3).replace(
            &format!("bucket = \"{}\"", self.s3.bucket),
            &format!("bucket = \"{bucket}\""),
        );
        self.env.write_config(&format!(
            "[monitor]\nmin_free_space = \"1MB\"\nalert_command = \"cat >> {}\"\n{}{s3}{}",
            self.alerts.display(),
            fs_entry("local", &self.local),
            fs_entry("offsite", &self.offsite)
        ));
    }

    fn backup(&self, name: &str) -> String {
        self.env.run_json(&["backup", "create", "-n", name])["backup"]["id"]
            .as_str()
            .expect("backup id")
            .to_string()
    }

    fn health(&self) -> (Option<i32>, serde_json::Value) {
        let out = self.env.run(&["--json", "monitor", "health"]);
        (out.status.code(), reported(&out))
    }
}

fn check<'a>(health: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    health["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {health}"))
}

fn copy_status(validated: &serde_json::Value, target: &str) -> String {
    validated["copies"]
        .as_array()
        .expect("copies")
        .iter()
        .find(|c| c["target"] == target)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_else(|| panic!("no copy on {target}: {validated}"))
        .to_string()
}

/// Overwrites every chunk in `repo` with as many unrelated bytes, as encryption in place does.
fn encrypt_chunks(repo: &Path) {
    let chunks = chunk_files(repo);
    assert!(!chunks.is_empty(), "no chunks in {}", repo.display());
    for chunk in chunks {
        let len = std::fs::metadata(&chunk).expect("chunk").len() as usize;
        let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 13) as u8).collect();
        std::fs::write(&chunk, garbage).expect("overwrite chunk");
    }
}

/// Renames every manifest, as ransomware renaming its victims does.
fn rename_manifests(repo: &Path) {
    for entry in std::fs::read_dir(repo.join("backups")).expect("backups folder") {
        let path = entry.expect("entry").path();
        let mut renamed = path.clone().into_os_string();
        renamed.push(".locked");
        std::fs::rename(&path, renamed).expect("rename manifest");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_ransomware_on_the_primary_health_validate_and_sync_point_at_the_intact_copies() {
    let world = ThreeTargets::start("pantry-ransom").await;
    let env = &world.env;
    world.backup("monday");
    let tuesday = world.backup("tuesday");
    env.run_ok(&["backup", "validate", "latest"]);

    // Every local chunk overwritten with bytes of the same size: a listing cannot tell.
    encrypt_chunks(&world.local);
    let verified = env.run_json(&["backup", "list", "--verify"]);
    for backup in verified.as_array().expect("list") {
        assert_eq!(backup["targets"]["local"], "damaged", "{verified}");
        assert_eq!(backup["targets"]["s3"], "complete", "{verified}");
        assert_eq!(backup["targets"]["offsite"], "complete", "{verified}");
    }
    // Health reads a sample of every copy: the damage is an alert naming the target.
    let (code, health) = world.health();
    assert_eq!(code, Some(1), "{health}");
    assert_eq!(check(&health, "target local")["alert"], "Backup Corruption");
    assert_eq!(check(&health, "target s3")["status"], "ok", "{health}");
    assert_eq!(check(&health, "target offsite")["status"], "ok", "{health}");

    // Then the manifests renamed: the primary holds nothing any more.
    rename_manifests(&world.local);
    let (code, health) = world.health();
    assert_eq!(code, Some(1), "{health}");
    let latest = check(&health, "latest backup");
    assert!(
        latest["detail"].as_str().is_some_and(|d| {
            d.contains(&tuesday)
            && d.contains(
                "primary 'local' lost, 2 backup(s) intact on s3, offsite; restore with `--from s3`"
            )
        }),
        "{latest}"
    );
    let local = check(&health, "target local");
    assert_eq!(local["status"], "fail", "{health}");
    assert!(
        local["detail"]
            .as_str()
            .is_some_and(|d| d.contains("0 of 2 backup(s) intact") && d.contains("2 missing")),
        "{local}"
    );
    let human = env.run(&["monitor", "health"]);

    assert!(
        String::from_utf8_lossy(&human.stdout).contains("primary 'local' lost"),
        "{}",
        text(&human)
    );

    // Validate reports each copy, fails naming the target, passes with --any-copy.
    let out = env.run(&["--json", "backup", "validate", "latest"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let validated = reported(&out);
    assert_eq!(validated["backup_id"], tuesday.as_str(), "{validated}");
    assert_eq!(copy_status(&validated, "local"), "missing");
    assert_eq!(copy_status(&validated, "s3"), "intact");
    assert_eq!(copy_status(&validated, "offsite"), "intact");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Backup Corruption") && stderr.contains("target 'local'"),
        "{stderr}"
    );
    env.run_ok(&["backup", "validate", "latest", "--any-copy"]);

    // Sync does not count the overwritten chunks as already there: it rewrites them.
    let synced = env.run_json(&["backup", "sync"]);
    let to_local: Vec<&serde_json::Value> = synced
        .as_array()
        .expect("copies")
        .iter()
        .filter(|c| c["to"] == "local")
        .collect();
    assert_eq!(to_local.len(), 2, "{synced}");
    assert!(to_local.iter().all(|c| c["verified"] == true), "{synced}");
    let rewritten: u64 = to_local
        .iter()
        .map(|c| c["chunks_rewritten"].as_u64().unwrap_or(0))
        .sum();
    assert!(rewritten > 0, "{synced}");
    let validated = env.run_json(&["backup", "validate", "latest"]);
    for target in ["local", "s3", "offsite"] {
        assert_eq!(copy_status(&validated, target), "intact", "{validated}");
    }
    let listed = env.run_json(&["backup", "list", "--verify"]);
    assert_eq!(listed[1]["targets"]["local"], "complete", "{listed}");
    let (code, health) = world.health();
    assert_eq!(code, Some(0), "{health}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_left_behind_by_a_failed_copy_alerts_until_sync_and_deletes_keep_a_copy() {
    let world = ThreeTargets::start("pantry-behind").await;
    let env = &world.env;
    let monday = world.backup("monday");

    // S3 refuses the copy of Tuesday's backup (exit 1); the other two hold it.
    world.configure("no-such-bucket");
    let out = env.run(&["backup", "create", "-n", "tuesday"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    world.configure(&world.s3.bucket.clone());
    let tuesday = env.run_json(&["backup", "list"])[0]["id"]
        .as_str()
        .expect("id")
        .to_string();

    // Health: s3 has fallen behind, a failing check and an alert that is delivered.
    let (code, health) = world.health();
    assert_eq!(code, Some(1), "{health}");
    let s3 = check(&health, "target s3");
    assert_eq!(s3["status"], "fail", "{health}");
    assert_eq!(s3["alert"], "Backup Failure", "{health}");
    assert!(
        s3["detail"]
            .as_str()
            .is_some_and(|d| d.contains("behind") && d.contains(&tuesday)),
        "{s3}"
    );
    let out = env.run(&["monitor", "health", "--alert-on-failure"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let delivered = std::fs::read_to_string(&world.alerts).expect("alerts delivered");
    assert!(
        delivered.contains("Backup Failure") && delivered.contains("target s3"),
        "{delivered}"
    );

    // The offsite folder replaced by an empty one: sync initialises it from a complete copy.
    std::fs::remove_dir_all(&world.offsite).expect("lose offsite");
    std::fs::create_dir_all(&world.offsite).expect("empty offsite");
    let (_, health) = world.health();
    assert!(
        check(&health, "target offsite")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no repository at")),
        "{health}"
    );
    let synced = env.run_json(&["backup", "sync"]);
    let pairs: Vec<(String, String)> = synced
        .as_array()
        .expect("copies")
        .iter()
        .map(|c| {
            (
                c["backup_id"].as_str().unwrap_or("").to_string(),
                c["to"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for expected in [
        (tuesday.clone(), "s3".to_string()),
        (monday.clone(), "offsite".to_string()),
        (tuesday.clone(), "offsite".to_string()),
    ] {
        assert!(pairs.contains(&expected), "{expected:?} not in {synced}");
    }
    let (code, health) = world.health();
    assert_eq!(code, Some(0), "{health}");

    // Deleting: never every copy at once by accident.
    let out = env.run(&["backup", "delete", &monday, "--force"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("local, s3, offsite") && text(&out).contains("--all-targets"),
        "{}",
        text(&out)
    );
    let deleted = env.run_json(&["backup", "delete", &monday, "--force", "--target", "s3"]);
    assert_eq!(deleted["targets"], serde_json::json!(["s3"]));
    assert_eq!(deleted["kept_on"], serde_json::json!(["local", "offsite"]));
    let listed = env.run_json(&["backup", "list"]);
    let monday_entry = listed
        .as_array()
        .expect("list")
        .iter()
        .find(|b| b["id"] == monday.as_str())
        .expect("monday still listed");
    assert!(monday_entry["targets"].get("s3").is_none(), "{listed}");
    let out = env.run(&[
        "backup", "delete", &monday, "--force", "--target", "local", "--target", "offsite",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the last copies: {}",
        text(&out)
    );
    env.run_ok(&["backup", "delete", &monday, "--force", "--all-targets"]);
    let listed = env.run_json(&["backup", "list"]);
    assert!(
        listed
            .as_array()
            .expect("list")
            .iter()
            .all(|b| b["id"] != monday.as_str()),
        "{listed}"
    );
}
