//! A notifier written in Python (`plugins/syslog-notifier-py`, built with componentize-py
//! against the same `wit/v1.1` contract) is loaded by the host unchanged, like the Rust ones: it
//! sends each alert as an RFC 5424 syslog message over TCP to a real receiver on loopback,
//! through the destination its `allow_tcp` grants.

use crate::support::*;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// A syslog-over-TCP receiver on loopback: records every octet-counted frame (RFC 6587).
struct SyslogReceiver {
    port: u16,
    frames: Arc<Mutex<Vec<String>>>,
}

impl SyslogReceiver {
    fn start() -> SyslogReceiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let log = frames.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut bytes = Vec::new();
                if stream.read_to_end(&mut bytes).is_err() {
                    continue;
                }
                let mut rest = bytes.as_slice();
                // `LEN SP MSG`, repeated.
                while let Some(space) = rest.iter().position(|b| *b == b' ') {
                    let Some(len) = std::str::from_utf8(&rest[..space])
                        .ok()
                        .and_then(|l| l.parse::<usize>().ok())
                    else {
                        break;
                    };
                    let frame = &rest[space + 1..(space + 1 + len).min(rest.len())];
                    log.lock()
                        .expect("frames")
                        .push(String::from_utf8_lossy(frame).into_owned());
                    rest = &rest[(space + 1 + len).min(rest.len())..];
                }
            }
        });
        SyslogReceiver { port, frames }
    }

    fn frames(&self) -> Vec<String> {
        self.frames.lock().expect("frames").clone()
    }
}

#[test]
fn a_python_notifier_is_loaded_unchanged_and_delivers_alerts_to_a_syslog_receiver() {
    let work = tempfile::tempdir().expect("temporary folder");
    let syslog = SyslogReceiver::start();
    let server = format!("127.0.0.1:{}", syslog.port);
    let plugin = plugin_path("syslog_notifier.wasm");
    let config = work.path().join("larder.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\npath = \"{repo}\"\n[alerts]\nstate_dir = \"{state}\"\nretry_for = \"1s\"\n\n\
             [[notifiers]]\nname = \"siem\"\npath = \"{plugin}\"\nconfig = {{ server = \"{server}\", facility = \"local0\" }}\nallow_tcp = [\"{server}\"]\n",
            repo = work.path().join("repo").display(),
            state = work.path().join("alert-state").display(),
            plugin = plugin.display(),
        ),
    )
    .expect("config");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_backup-cli"))
            .env("BACKUP_CLI_CONFIG", &config)
            .env_remove("BACKUP_CLI_REPO")
            .env(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/crm?sslmode=disable&connect_timeout=2",
            )
            .args(args)
            .output()
            .expect("run backup-cli")
    };

    // The host sees a notifier like any other: its world, its name, what it is granted.
    let out = run(&["--json", "plugin", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = reported(&out);
    assert_eq!(
        listed[0]["world"], "larder:plugin/notifier@1.1.0",
        "{listed}"
    );
    assert_eq!(listed[0]["name"], "syslog-notifier");
    assert!(
        listed[0]["capabilities"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "python")),
        "{listed}"
    );
    assert_eq!(
        listed[0]["granted"],
        serde_json::json!([format!("tcp {server}"), "config facility", "config server"])
    );

    // `notify test`: one informational message (local0.info = <134>).
    let out = run(&["notify", "test"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let frames = syslog.frames();
    assert_eq!(frames.len(), 1, "{}", text(&out));
    assert!(frames[0].starts_with("<134>1 "), "{}", frames[0]);
    assert!(
        frames[0].contains("[larder@32473 id=\"test.") && frames[0].contains("state=\"test\""),
        "{}",
        frames[0]
    );

    // A real alert: the database is down, a critical message (local0.crit = <130>) with the
    // runbook's action; the event's fields as structured data.
    let out = run(&["monitor", "health", "--alert-on-failure"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let frames = syslog.frames();
    let down = frames
        .iter()
        .find(|f| f.contains("alert=\"Database connection failed\""))
        .unwrap_or_else(|| panic!("no alert frame in {frames:?}\n{}", text(&out)));
    assert!(down.starts_with("<130>1 "), "{down}");
    assert!(down.contains(" larder - firing [larder@32473 "), "{down}");
    assert!(down.contains("database=\"crm\""), "{down}");
    assert!(
        down.contains("[FIRING] Database connection failed on crm (level 1): ")
            && down.ends_with("-- action: Restart PostgreSQL service"),
        "{down}"
    );
}
