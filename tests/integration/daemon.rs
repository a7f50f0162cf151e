//! `backup-cli daemon` against a real PostgreSQL for about two minutes: a per-minute schedule
//! is backed up, copied, validated and retention applied, health is checked with alerts
//! delivered, a second daemon is refused, and SIGTERM during a backup leaves nothing
//! half-visible and no lock.

use crate::support::{TestEnv, finish, fs_entry, send, wait_for_lock_waiter};
use larder::repository::Repository;
use larder::targets::fs::FsTarget;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A daemon running in the background and the JSON log lines it has written so far.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(env: &TestEnv) -> Daemon {
        let mut child = env
            .cli()
            .args(["daemon", "--log-format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start backup-cli daemon");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("log lines").push(line);
            }
        });
        Daemon { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().expect("log lines").join("\n")
    }

    /// Waits (at most `limit`) for a log line whose JSON satisfies `matches`; returns it.
    async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            for line in self.lines.lock().expect("log lines").iter() {
                let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("--log-format json printed a line that is not JSON ({e}): {line}")
                });
                if matches(&json) {
                    return json;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the daemon never logged {what} within {limit:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn message(line: &serde_json::Value) -> &str {
    line["message"].as_str().unwrap_or("")
}

async fn backups_on(dir: &Path) -> Vec<String> {
    let target = Arc::new(FsTarget::open("t", dir).expect("open target"));
    let repo = Repository::open(target).await.expect("repository");
    let mut ids: Vec<String> = repo
        .manifests()
        .await
        .expect("manifests")
        .into_iter()
        .map(|m| m.id)
        .collect();
    ids.sort();
    ids
}

fn locks_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("locks"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_backs_up_copies_validates_checks_health_and_stops_cleanly() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.01).await;
    let primary = env.work.path().join("primary");
    let offsite = env.work.path().join("offsite");
    let alerts = env.work.path().join("alerts.jsonl");
    env.write_config(&format!(
        "{}{}
[monitor]
# Never met: every health check raises Disk Space Low, which must reach the alert command.
min_free_space = \"1000TB\"
alert_command = \"cat >> '{}'\"

[daemon]
health_every = \"20s\"
stop_grace = \"2s\"

[[schedules]]
name = \"every-minute\"
type = \"full\"
cron = \"* * * * *\"
timezone = \"Europe/Berlin\"
retention = {{ keep_last = 1 }}
",
        fs_entry("primary", &primary),
        fs_entry("offsite", &offsite),
        alerts.display()
    ));
    let daemon = Daemon::start(&env);
    daemon
        .wait_for("its start", Duration::from_secs(30), |l| {
            message(l).starts_with("daemon started for database pantry")
        })
        .await;

    // One daemon per repository and database: a second one names the first.
    let second = env.run(&["daemon"]);
    let said = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(second.status.code(), Some(1), "{said}");
    assert!(
        said.contains("another backup-cli daemon already runs for database 'pantry'")
            && said.contains(&format!("pid {} on ", daemon.child.id()))
            && said.contains("since "),
        "{said}"
    );

    // The first run: backed up, copied to the second target, validated on both.
    let done = daemon
        .wait_for("a finished run", Duration::from_secs(100), |l| {
            l["outcome"].is_string()
        })
        .await;
    assert_eq!(done["outcome"], "ok", "{}", daemon.log());
    let run_id = done["run_id"].as_str().expect("run id").to_string();
    assert!(run_id.starts_with("every-minute@"), "{run_id}");
    assert!(done["seconds"].as_f64().is_some(), "{done}");
    let backup_id = done["backup_id"].as_str().expect("backup id").to_string();
    assert_eq!(backups_on(&primary).await, vec![backup_id.clone()]);
    assert_eq!(backups_on(&offsite).await, vec![backup_id.clone()]);
    let listed = env.run_json(&["backup", "list"]);
    assert!(
        listed.to_string().contains(&backup_id),
        "backup list shows the daemon's backup: {listed}"
    );

    // Retention ran after the validated backup (the floor keeps it: nothing to delete yet).
    daemon
        .wait_for("retention", Duration::from_secs(10), |l| {
            l["run_id"] == run_id.as_str() && message(l).contains("retention applied")
        })
        .await;

    // Health runs periodically and its alert went through the alert command.
    daemon
        .wait_for("a health check", Duration::from_secs(30), |l| {
            l["health"] == "fail"
        })
        .await;
    let delivered = std::fs::read_to_string(&alerts).unwrap_or_default();
    assert!(
        delivered.contains("Disk Space Low"),
        "the alert command received: {delivered}"
    );

    // `schedule list` shows the daemon running and the schedule's last run.
    let schedules = env.run_json(&["schedule", "list"]);
    let text = schedules.to_string();
    assert!(
        text.contains(&run_id) && text.contains("\"running\":true"),
        "{schedules}"
    );

    // SIGTERM while the next backup waits for a table: stopped after the grace period,
    // nothing half-visible, every lock released, exit 0.
    let blocker = env.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE pantry_items IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    daemon
        .wait_for("the next run starting", Duration::from_secs(75), |l| {
            message(l).starts_with("run every-minute@")
                && message(l).contains("started")
                && l["run_id"] != run_id.as_str()
        })
        .await;
    wait_for_lock_waiter(&blocker, "pantry_items").await;
    send(&daemon.child, "TERM");
    let lines = daemon.lines.clone();
    let out = finish(daemon.child).await;
    let log = lines.lock().expect("log lines").join("\n");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("did not finish within 2s: stopping it"),
        "{log}"
    );
    assert!(log.contains("\"outcome\":\"interrupted\""), "{log}");
    assert!(log.contains("daemon stopped"), "{log}");
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(
        backups_on(&primary).await,
        vec![backup_id.clone()],
        "the stopped backup is not visible"
    );
    assert!(locks_in(&primary).is_empty(), "{:?}", locks_in(&primary));
    assert!(locks_in(&offsite).is_empty(), "{:?}", locks_in(&offsite));
    let schedules = env.run_json(&["schedule", "list"]);
    let text = schedules.to_string();
    assert!(
        text.contains("\"running\":false") && text.contains("\"outcome\":\"interrupted\""),
        "{schedules}"
    );
}
