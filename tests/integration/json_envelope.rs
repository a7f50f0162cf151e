//! The one JSON envelope of `--json`: every command, errors included, prints
//! `{"status", "kind", "error", KEY: data}` on stdout, so scripts branch on `status` and
//! `kind` and never grep messages.

use crate::support::{TestEnv, chunk_files, envelope, flip_a_bit, text};

/// Runs `backup-cli --json args`, checks its exit code and returns the envelope it printed.
fn run_envelope(env: &TestEnv, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    assert_eq!(
        out.status.code(),
        Some(code),
        "backup-cli {}: {}",
        all.join(" "),
        text(&out)
    );
    let printed = envelope(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(message) = printed["error"].as_str() {
        assert!(
            stderr.contains(&format!("error: {message}")),
            "stderr says what the envelope says: {stderr}"
        );
    }
    printed
}

/// The envelope's keys, sorted.
fn keys(envelope: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = envelope
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn json_errors_of_different_failures_share_one_envelope_and_name_their_kind() {
    let env = TestEnv::start("envelope").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, body text);
             INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 200) g",
        )
        .await
        .expect("a small table");
    let created = run_envelope(&env, &["backup", "create", "-n", "first"], 0);
    assert_eq!(keys(&created), ["created", "status"], "{created}");
    assert_eq!(created["status"], "ok");
    let id = created["created"]["backup"]["id"]
        .as_str()
        .expect("backup id")
        .to_string();

    let unknown = id.replace(&id[id.len() - 4..], "zzzz");
    let unreachable = "postgres://postgres@127.0.0.1:1/envelope?sslmode=disable&connect_timeout=5";
    let missing_config = env.work.path().join("no-such-config.toml");
    let failures = [
        (
            run_envelope(&env, &["backup", "validate", &unknown], 1),
            "backup_not_found",
            format!("backup '{unknown}' not found"),
        ),
        (
            run_envelope(
                &env,
                &["--database-url", unreachable, "backup", "create"],
                1,
            ),
            "connection_failed",
            "Database connection failed".to_string(),
        ),
        (
            run_envelope(
                &env,
                &[
                    "--config",
                    missing_config.to_str().expect("path"),
                    "backup",
                    "list",
                ],
                2,
            ),
            "config",
            "configuration error".to_string(),
        ),
    ];
    for (printed, kind, starts) in &failures {
        assert_eq!(keys(printed), ["error", "kind", "status"], "{printed}");
        assert_eq!(printed["status"], "error", "{printed}");
        assert_eq!(printed["kind"], *kind, "{printed}");
        let message = printed["error"].as_str().expect("message");
        assert!(message.starts_with(starts.as_str()), "{printed}");
    }

    // A damaged backup is an outcome, not an error: validate prints its report in the same
    // envelope, with status "failed" and the runbook's message first.
    for chunk in chunk_files(&env.repo_dir()) {
        flip_a_bit(&chunk);
    }
    let validated = run_envelope(&env, &["backup", "validate", &id], 1);
    assert_eq!(
        keys(&validated),
        ["error", "kind", "status", "validation"],
        "{validated}"
    );
    assert_eq!(validated["status"], "failed", "{validated}");
    assert_eq!(validated["kind"], "validation_failed", "{validated}");
    assert!(
        validated["error"]
            .as_str()
            .expect("message")
            .starts_with("Checksum verification failed"),
        "{validated}"
    );
    assert_eq!(validated["validation"]["backup_id"], id.as_str());
    assert_eq!(validated["validation"]["copies"][0]["status"], "damaged");
}
