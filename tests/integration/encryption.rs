//! Encryption at rest (#18): what is on disk reveals nothing of the data, the passphrase is
//! needed to read it, and a sealed object that was altered is a checksum failure that a
//! second target's copy covers.

use crate::support::{TestEnv, envelope, fs_entry, reported, text};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

pub const PASSPHRASE: &str = "correct horse battery staple";
const MARKER: &str = "MARKER-7f3a-pantry-secret-recipe";

/// `backup-cli args` with `passphrase` in `BACKUP_CLI_PASSPHRASE` (none: unset), no terminal.
pub fn run_with(env: &TestEnv, passphrase: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = env.cli();
    cmd.env_remove("BACKUP_CLI_PASSPHRASE").stdin(Stdio::null());
    if let Some(passphrase) = passphrase {
        cmd.env("BACKUP_CLI_PASSPHRASE", passphrase);
    }
    cmd.args(args).output().expect("run backup-cli")
}

pub fn ok(out: Output, args: &[&str]) -> Output {
    assert!(
        out.status.success(),
        "backup-cli {} failed:\n{}",
        args.join(" "),
        text(&out)
    );
    out
}

/// Every file under `dir`.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_repository_hides_the_data_needs_the_passphrase_and_falls_back_on_tampering() {
    let env = TestEnv::start("pantry").await;
    env.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE secret_recipes (id int PRIMARY KEY, note text);
             INSERT INTO secret_recipes SELECT g, '{MARKER} ' || g FROM generate_series(1, 2000) g;"
        ))
        .await
        .expect("marker table");
    let local = env.work.path().join("local");
    let offsite = env.work.path().join("offsite");
    env.write_config(&format!(
        "[repository]\nencryption = true\n{}{}",
        fs_entry("local", &local),
        fs_entry("offsite", &offsite)
    ));

    // No passphrase: creating the encrypted repository is refused, nothing is written.
    let out = run_with(&env, None, &["--json", "backup", "create"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(envelope(&out)["kind"], "key_required", "{}", text(&out));
    assert!(
        !local.join("larder-repository.json").exists(),
        "{}",
        text(&out)
    );

    let args = ["--json", "backup", "create", "-n", "sealed"];
    let created = ok(run_with(&env, Some(PASSPHRASE), &args), &args);
    let id = reported(&created)["backup"]["id"]
        .as_str()
        .expect("backup id")
        .to_string();

    // The marker and the table's name are nowhere on either target, in no object.
    for dir in [&local, &offsite] {
        let all = files(dir);
        assert!(all.iter().any(|f| f.starts_with(dir.join("chunks"))));
        assert!(dir.join("keys.json").exists());
        for file in all {
            let bytes = std::fs::read(&file).expect("read object");
            assert!(
                !contains(&bytes, MARKER),
                "{} holds the marker",
                file.display()
            );
            assert!(
                !contains(&bytes, "secret_recipes"),
                "{} names the table",
                file.display()
            );
        }
    }

    // A wrong passphrase: exit 1, naming the repository and what is needed; nothing written.
    let before = files(&local);
    let out = run_with(&env, Some("wrong horse"), &["--json", "backup", "create"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = envelope(&out);
    assert_eq!(failed["kind"], "key_required", "{failed}");
    let message = failed["error"].as_str().expect("error");
    assert!(
        message.contains(&local.display().to_string())
            && message.contains("the passphrase opens none of its 1 passphrase slot(s)"),
        "{message}"
    );
    assert_eq!(files(&local), before, "a refused backup wrote nothing");
    let out = run_with(&env, None, &["backup", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no passphrase given (set BACKUP_CLI_PASSPHRASE"),
        "{}",
        text(&out)
    );

    // One byte of a sealed chunk flipped on the primary: authentication fails, named as a
    // checksum failure, and the restore reads the offsite copy.
    let chunk = files(&local.join("chunks"))
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .expect("a chunk");
    crate::support::flip_a_bit(&chunk);
    let args = [
        "--json",
        "recovery",
        "execute",
        &id,
        "-s",
        "new-database",
        "--dest-db",
        "pantry_restored",
    ];
    let restored = ok(run_with(&env, Some(PASSPHRASE), &args), &args);
    let report = envelope(&restored);
    let fallbacks = report.to_string();
    assert!(
        fallbacks.contains("Checksum verification failed")
            && fallbacks.contains("authentication failed")
            && fallbacks.contains("target 'offsite'"),
        "{report}"
    );
    let db = env.client_for("pantry_restored").await;
    let row = db
        .query_one("SELECT note FROM secret_recipes WHERE id = 7", &[])
        .await
        .expect("restored row");
    assert_eq!(row.get::<_, String>(0), format!("{MARKER} 7"));

    // The records kept beside the backups are sealed too: the measured restore (naming the
    // database restored into) and a pin with the operator's reason. Both still read back:
    // the next plan estimates from the restore, and the pin keeps the backup.
    let reason = format!("kept for the {MARKER} audit");
    let args = ["--json", "backup", "pin", &id, "--reason", &reason];
    ok(run_with(&env, Some(PASSPHRASE), &args), &args);
    for dir in [&local, &offsite] {
        for file in files(dir) {
            let bytes = std::fs::read(&file).expect("read object");
            assert!(
                !contains(&bytes, MARKER) && !contains(&bytes, "pantry_restored"),
                "{} holds the marker or the restored database's name",
                file.display()
            );
        }
    }
    assert!(
        files(&local)
            .iter()
            .any(|f| f.starts_with(local.join("restores"))),
        "no restore record"
    );
    let args = [
        "--json",
        "recovery",
        "plan",
        &id,
        "--dest-db",
        "pantry_again",
    ];
    let plan = reported(&ok(run_with(&env, Some(PASSPHRASE), &args), &args));
    assert!(
        plan["estimate_basis"]
            .as_str()
            .is_some_and(|b| b.contains("1 measured restore")),
        "{plan}"
    );
    let out = run_with(
        &env,
        Some(PASSPHRASE),
        &["--json", "backup", "delete", &id, "--dry-run"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        envelope(&out)["error"]
            .as_str()
            .is_some_and(|e| e.contains("is pinned") && e.contains(&reason)),
        "{}",
        text(&out)
    );
}

/// The write-only host's refusals: exit 1, `key_required`, saying why.
fn assert_write_only_refused(env: &TestEnv, args: &[&str]) {
    let out = run_with(env, None, args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = envelope(&out);
    assert_eq!(failed["kind"], "key_required", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("holds only the repository's writer key")),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_only_host_backs_up_and_deduplicates_but_cannot_read_and_slots_are_managed() {
    let env = TestEnv::start("pantry").await;
    let db = env.client().await;
    db.batch_execute(&format!(
        "CREATE TABLE pantry_shelves (id int PRIMARY KEY, label text);
         INSERT INTO pantry_shelves SELECT g, 'shelf ' || g || repeat(md5(g::text), 8) FROM generate_series(1, 30000) g;
         CREATE TABLE secret_recipes (id int PRIMARY KEY, note text);
         INSERT INTO secret_recipes VALUES (1, '{MARKER} 1');"
    ))
    .await
    .expect("tables");
    let repo = env.work.path().join("repo");
    let targets = fs_entry("local", &repo);
    // Each host signs what it writes; the restore host trusts both.
    let signing = |name: &str| {
        let file = env.work.path().join(format!("{name}.signing"));
        let args = [
            "--json",
            "key",
            "signer",
            "-o",
            file.to_str().expect("path"),
        ];
        let made = reported(&ok(run_with(&env, None, &args), &args));
        (file, made["public"].as_str().expect("signer").to_string())
    };
    let (admin_key, admin_signer) = signing("admin");
    let (writer_key, writer_signer) = signing("backup-host");
    let trusted = format!("trusted_signers = [\"{admin_signer}\", \"{writer_signer}\"]\n");
    env.write_config(&format!(
        "[repository]\nencryption = true\nsigning_key_file = \"{}\"\n{trusted}{targets}",
        admin_key.display()
    ));
    let args = ["--json", "backup", "create", "-n", "by-the-admin"];
    let first = reported(&ok(run_with(&env, Some(PASSPHRASE), &args), &args));

    // The admin host adds a recipient slot for the restore host and writes a writer key.
    let identity = env.work.path().join("restore-host.identity");
    let writer = env.work.path().join("backup-host.writer");
    let args = [
        "--json",
        "key",
        "identity",
        "-o",
        identity.to_str().expect("path"),
    ];
    let made = reported(&ok(run_with(&env, None, &args), &args));
    let recipient = made["public"].as_str().expect("recipient").to_string();
    let args = [
        "--json",
        "key",
        "add",
        "--recipient",
        &recipient,
        "--label",
        "restore host",
    ];
    ok(run_with(&env, Some(PASSPHRASE), &args), &args);
    let args = [
        "--json",
        "key",
        "add",
        "--writer",
        writer.to_str().expect("path"),
    ];
    ok(run_with(&env, Some(PASSPHRASE), &args), &args);
    let args = ["--json", "key", "list"];
    let listed = reported(&ok(run_with(&env, Some(PASSPHRASE), &args), &args));
    let slots = listed["slots"].as_array().expect("slots");
    assert_eq!(
        slots.iter().map(|s| s["kind"].as_str()).collect::<Vec<_>>(),
        [Some("passphrase"), Some("recipient")],
        "{listed}"
    );
    assert_eq!(slots[0]["kdf"], "argon2id", "{listed}");
    let passphrase_slot = slots[0]["id"].as_str().expect("id").to_string();
    let recipient_slot = slots[1]["id"].as_str().expect("id").to_string();

    // The write-only backup host: only the writer key. It backs up, deduplicating against
    // what is there (the unchanged table is not written again), and reads nothing.
    env.write_config(&format!(
        "[repository]\nencryption = true\nwriter_key_file = \"{}\"\nsigning_key_file = \"{}\"\n{trusted}{targets}",
        writer.display(),
        writer_key.display()
    ));
    db.batch_execute(&format!(
        "INSERT INTO secret_recipes VALUES (2, '{MARKER} 2')"
    ))
    .await
    .expect("new row");
    let args = ["--json", "backup", "create", "-n", "by-the-backup-host"];
    let second = reported(&ok(run_with(&env, None, &args), &args));
    let second_id = second["backup"]["id"].as_str().expect("id").to_string();
    // Its next backup links to it too (the chain goes on between writer-key backups).
    let args = [
        "--json",
        "backup",
        "create",
        "-n",
        "again-by-the-backup-host",
    ];
    let third = reported(&ok(run_with(&env, None, &args), &args));
    let third_id = third["backup"]["id"].as_str().expect("id").to_string();
    let (first_new, second_new) = (
        first["backup"]["new_bytes"].as_u64().expect("bytes"),
        second["backup"]["new_bytes"].as_u64().expect("bytes"),
    );
    assert!(
        second_new * 4 < first_new,
        "the write-only host rewrote what was there: {second_new} new bytes after {first_new}"
    );
    for file in files(&repo) {
        let bytes = std::fs::read(&file).expect("object");
        assert!(
            !contains(&bytes, MARKER),
            "{} holds the marker",
            file.display()
        );
    }
    let export = env.work.path().join("export.sql");
    assert_write_only_refused(
        &env,
        &[
            "--json",
            "recovery",
            "execute",
            &second_id,
            "--dest-db",
            "stolen",
        ],
    );
    assert_write_only_refused(
        &env,
        &[
            "--json",
            "backup",
            "export",
            &second_id,
            "-o",
            export.to_str().expect("path"),
        ],
    );
    assert!(!export.exists(), "the refused export wrote a file");
    assert_write_only_refused(&env, &["--json", "key", "add", "--recipient", &recipient]);

    // The restore host holds the identity only: it restores the write-only host's backup.
    // The write-only host's backups carry the chain link (to the admin's backup, which it
    // cannot open), verified by the restore and by verify-history.
    env.write_config(&format!(
        "[repository]\nidentity_file = \"{}\"\n{trusted}{targets}",
        identity.display()
    ));
    let args = [
        "--json",
        "recovery",
        "execute",
        &second_id,
        "--dest-db",
        "pantry_restored",
    ];
    let report = reported(&ok(run_with(&env, None, &args), &args));
    let signature = &report["signature"];
    assert_eq!(signature["signer"], writer_signer.as_str(), "{signature}");
    let chain = &signature["chain"];
    assert_eq!(
        chain["previous"]["backup_id"], first["backup"]["id"],
        "{signature}"
    );
    assert_eq!(chain["previous"]["state"], "verified", "{signature}");
    assert_eq!(chain["next"]["backup_id"], third_id.as_str(), "{signature}");
    assert_eq!(chain["next"]["state"], "verified", "{signature}");
    assert_eq!(signature["chain_verified"], true, "{signature}");
    let args = ["--json", "backup", "verify-history"];
    let history = reported(&ok(run_with(&env, None, &args), &args));
    assert_eq!(history["signed"], 3, "{history}");
    assert_eq!(history["problems"], serde_json::json!([]), "{history}");
    let restored = env.client_for("pantry_restored").await;
    let notes: Vec<String> = restored
        .query("SELECT note FROM secret_recipes ORDER BY id", &[])
        .await
        .expect("restored rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(notes, [format!("{MARKER} 1"), format!("{MARKER} 2")]);

    // Slots: the passphrase slot can go (the identity still opens the repository), the last
    // slot cannot.
    let args = ["--json", "key", "remove", &passphrase_slot];
    ok(run_with(&env, None, &args), &args);
    let out = run_with(&env, None, &["--json", "key", "remove", &recipient_slot]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        envelope(&out)["error"]
            .as_str()
            .is_some_and(|e| e.contains("is the last key slot")),
        "{}",
        text(&out)
    );
    let out = run_with(&env, Some(PASSPHRASE), &["--json", "key", "list"]);
    assert_eq!(
        reported(&out)["slots"].as_array().map(Vec::len),
        Some(1),
        "{}",
        text(&out)
    );
}
