//! A validator gets no network and no filesystem unless its `[[validators]]` entry grants
//! them: `test-nosy-validator` tries HTTP, a raw TCP connection, `/etc/passwd`, the root folder
//! and a write; every attempt is denied (the HTTP denial logged by the host with the
//! validator's name), the backup completes all the same, and the same attempts succeed once
//! `allow_hosts` and `dirs` grant them.

use crate::support::{HttpReceiver, TestEnv, data, envelope, plugin_path, text};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A TCP listener on loopback counting the connections it accepts.
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for _ in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, count)
}

/// `backup create --json`, asserting it completes; the envelope's data and everything printed.
fn backup(env: &TestEnv, name: &str) -> (serde_json::Value, String) {
    let out = env.run(&["--json", "backup", "create", "-n", name]);
    let all = text(&out);
    assert!(out.status.success(), "the backup completes:\n{all}");
    let report = data(&envelope(&out));
    assert_eq!(report["backup"]["status"], "complete", "{report}");
    (report, all)
}

/// The probe finding's message.
fn probes(report: &serde_json::Value) -> String {
    let finding = &report["validators"][0]["findings"][0];
    assert_eq!(finding["rule"], "sandbox-probe", "{report}");
    assert_eq!(finding["severity"], "info", "{report}");
    finding["message"].as_str().expect("message").to_string()
}

#[tokio::test]
async fn a_validator_has_no_network_and_no_files_unless_granted_and_the_backup_completes() {
    let env = TestEnv::start("validator_sandbox").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE contacts (id int PRIMARY KEY, name text);
             INSERT INTO contacts SELECT g, 'contact ' || g FROM generate_series(1, 50) g;",
        )
        .await
        .expect("source data");
    let receiver = HttpReceiver::start();
    let (tcp_port, connections) = counting_listener();
    let granted = env.work.path().join("granted");
    std::fs::create_dir(&granted).expect("granted folder");
    let config = |grants: &str| {
        format!(
            r#"
[repository]
path = "{repo}"

[plugins]
cache_dir = "{cache}"

[[validators]]
name = "nosy"
path = "{plugin}"
config = {{ url = "{url}", tcp = "127.0.0.1:{tcp_port}", dir = "/granted" }}
{grants}
"#,
            repo = env.repo_dir().display(),
            cache = env.work.path().join("plugin-cache").display(),
            plugin = plugin_path("test_nosy_validator.wasm").display(),
            url = receiver.url("/exfiltrate"),
        )
    };

    // Nothing granted: every attempt is refused, and the backup is taken all the same.
    env.write_config(&config(""));
    let (report, all) = backup(&env, "denied");
    let said = probes(&report);
    for denied in [
        "http http://127.0.0.1",
        "tcp 127.0.0.1",
        "read /etc/passwd: denied",
        "list /: denied",
        "write /granted/probe.txt: denied",
    ] {
        assert!(said.contains(denied), "{denied:?} in {said}");
    }
    assert!(!said.contains("allowed"), "{said}");
    assert!(
        all.contains("nosy (test_nosy_validator.wasm)")
            && all.contains(&format!(
                "denied an outbound request to 127.0.0.1:{}",
                receiver.port
            )),
        "the host logs the HTTP denial with the validator's name: {all}"
    );
    assert!(
        all.contains("sandbox probe: tcp") && all.contains("sandbox probe: read /etc/passwd"),
        "the validator's own account is logged under its name: {all}"
    );
    assert!(receiver.requests("/exfiltrate").is_empty());
    assert_eq!(connections.load(Ordering::SeqCst), 0, "no TCP connection");
    assert!(!granted.join("probe.txt").exists());

    // Granted: the same validator reaches the allow-listed host and writes its folder; TCP
    // (never granted to a validator) and everything outside the folder stay out of reach.
    env.write_config(&config(&format!(
        "allow_hosts = [\"127.0.0.1:{}\"]\ndirs = [{{ host = \"{}\", guest = \"/granted\", mode = \"read-write\" }}]",
        receiver.port,
        granted.display()
    )));
    let (report, _) = backup(&env, "granted");
    let said = probes(&report);
    assert!(said.contains("write /granted/probe.txt: allowed"), "{said}");
    assert!(
        said.contains(&format!("http {}: allowed", receiver.url("/exfiltrate"))),
        "{said}"
    );
    assert!(said.contains("read /etc/passwd: denied"), "{said}");
    assert!(
        said.contains(&format!("tcp 127.0.0.1:{tcp_port}: denied")),
        "{said}"
    );
    assert_eq!(receiver.requests("/exfiltrate").len(), 1);
    assert_eq!(
        std::fs::read_to_string(granted.join("probe.txt")).expect("probe file"),
        "written by test-nosy-validator"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "still no TCP connection"
    );
}
