//! `backup-cli daemon` against a real PostgreSQL: a schedule missed while no daemon ran is run
//! once at start (the daemon's record says when it last ran, written as the daemon writes it),
//! backed up, copied, validated and pruned by its policy on every target; health is checked
//! with alerts delivered; a second daemon is refused; a bad reload is refused; SIGTERM during a
//! backup leaves nothing half-visible and no lock; chunk validation names a damaged copy; two
//! databases each get their own daemon running their own schedules (and their own listen
//! port: a shared one is refused at start, naming both); an incremental schedule runs on the
//! chain of the last full backup; a drill schedule runs the monthly restore test, a failing
//! one raises "Drill Failed" and the daemon carries on.

use crate::retention::craft;
use crate::support::{TestEnv, finish, fs_entry, send, wait_for_lock_waiter};
use chrono::{Duration as Days, Utc};
use larder::engine::daemon::state::{DaemonState, Skipped};
use larder::repository::Repository;
use larder::repository::manifest::Manifest;
use larder::repository::signing::RetiredBy;
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
    /// `backup-cli [extra] daemon --log-format json`.
    fn start(env: &TestEnv, extra: &[&str]) -> Daemon {
        Daemon::spawn(env.cli().args(extra))
    }

    /// `command daemon --log-format json`.
    fn spawn(command: &mut std::process::Command) -> Daemon {
        let mut child = command
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

async fn repo_at(dir: &Path) -> Repository {
    let target = Arc::new(FsTarget::open("t", dir).expect("open target"));
    Repository::open(target).await.expect("repository")
}

async fn backups_on(dir: &Path) -> Vec<String> {
    let repo = repo_at(dir).await;
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

/// Records in the daemon's state (as the daemon writes it) that `schedule` last came due two
/// years ago, so a yearly schedule with `missed = "run-once"` runs as soon as a daemon starts.
async fn last_due_long_ago(repo: &Repository, database: &str, schedule: &str) {
    let now = Utc::now();
    let mut state = DaemonState::read(repo, database)
        .await
        .expect("read the daemon's state")
        .unwrap_or(DaemonState {
            database: database.to_string(),
            pid: 0,
            host: String::new(),
            started_at: now,
            updated_at: now,
            stopped_at: Some(now),
            schedules: Vec::new(),
            last_health: None,
        });
    let record = state.schedule_mut(schedule);
    record.last_run = None;
    record.last_skipped = Some(Skipped {
        at: now,
        due: now - Days::days(730),
        reason: "missed".into(),
        count: 1,
    });
    state.write(repo).await.expect("write the daemon's state");
}

/// A schedule due every 1 January at midnight in Berlin: never due while a test runs, so
/// only a missed time (see [`last_due_long_ago`]) runs it.
fn yearly(name: &str, extra: &str) -> String {
    format!(
        "\n[[schedules]]\nname = \"{name}\"\ntype = \"full\"\ncron = \"0 0 1 1 *\"\ntimezone = \"Europe/Berlin\"\nmissed = \"run-once\"\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_runs_a_missed_schedule_once_prunes_by_its_policy_on_every_target_and_stops_cleanly()
 {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.01).await;
    let primary = env.work.path().join("primary");
    let offsite = env.work.path().join("offsite");
    let alerts = env.work.path().join("alerts.jsonl");
    let config = |cron: &str| {
        format!(
            "{}{}
[monitor]
# Never met: every health check raises Disk Space Low, on both targets, which must reach the
# alert command.
min_free_space = \"1000TB\"
alert_command = \"cat >> '{}'\"

[daemon]
health_every = \"20s\"
stop_grace = \"2s\"
{}
[[schedules]]
name = \"offsite-schema\"
type = \"schema-only\"
cron = \"{cron}\"
targets = [\"offsite\"]
",
            fs_entry("primary", &primary),
            fs_entry("offsite", &offsite),
            alerts.display(),
            yearly("yearly", "retention = { keep_within = \"7d\" }"),
        )
    };
    env.write_config(&config("0 0 1 1 *"));

    // A repository weeks old on both targets: crafted backups of the schedule (the real
    // manifest writer, times set), validated or not, one pinned.
    let seeded = env.run_json(&["backup", "create", "-n", "seed"]);
    let seed_id = seeded["backup"]["id"]
        .as_str()
        .expect("seed id")
        .to_string();
    let repo = repo_at(&primary).await;
    let seed: Manifest = repo.read_manifest(&seed_id).await.expect("seed manifest");
    let now = Utc::now();
    let expired = craft(&repo, &seed, "expired", now - Days::days(40), Some(true)).await;
    let pinned = craft(&repo, &seed, "pinned", now - Days::days(35), Some(true)).await;
    let suspect = craft(&repo, &seed, "suspect", now - Days::days(20), Some(false)).await;
    let recent = craft(&repo, &seed, "recent", now - Days::days(2), Some(true)).await;
    for dir in [&primary, &offsite] {
        repo_at(dir)
            .await
            .delete_manifest(&seed_id, &RetiredBy::delete("the test's seed".into()))
            .await
            .expect("remove the seed");
    }
    env.run_ok(&["backup", "sync"]);
    env.run_ok(&["backup", "pin", &pinned, "--reason", "audit"]);
    let before = vec![
        expired.clone(),
        pinned.clone(),
        recent.clone(),
        suspect.clone(),
    ];
    let mut sorted = before.clone();
    sorted.sort();
    assert_eq!(
        backups_on(&offsite).await,
        sorted,
        "crafted on both targets"
    );
    last_due_long_ago(&repo, "pantry", "yearly").await;

    let daemon = Daemon::start(&env, &[]);
    daemon
        .wait_for("its start", Duration::from_secs(30), |l| {
            message(l).starts_with("daemon started for database pantry")
        })
        .await;
    // The time missed while no daemon ran is run once, at once.
    daemon
        .wait_for("the missed run", Duration::from_secs(10), |l| {
            l["schedule"] == "yearly"
                && message(l).contains("running once now (missed = \"run-once\")")
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

    // The run: backed up, copied to the second target, validated on both.
    let done = daemon
        .wait_for("a finished run", Duration::from_secs(60), |l| {
            l["outcome"].is_string()
        })
        .await;
    assert_eq!(done["outcome"], "ok", "{}", daemon.log());
    let run_id = done["run_id"].as_str().expect("run id").to_string();
    // Due at midnight in Berlin, 23:00 UTC on 31 December.
    assert!(
        run_id.starts_with("yearly@") && run_id.ends_with("1231T230000Z"),
        "{run_id}"
    );
    assert!(done["seconds"].as_f64().is_some(), "{done}");
    let new = done["backup_id"].as_str().expect("backup id").to_string();

    // Retention did what the policy says on every target: younger than 7 days and the pinned
    // one stay; the expired and the suspect (older than keep_within) go.
    let applied = daemon
        .wait_for("retention", Duration::from_secs(10), |l| {
            l["run_id"] == run_id.as_str() && message(l).contains("retention applied")
        })
        .await;
    assert_eq!(applied["deleted"], 2, "{applied}");
    let mut kept = vec![pinned.clone(), recent.clone(), new.clone()];
    kept.sort();
    assert_eq!(backups_on(&primary).await, kept, "{}", daemon.log());
    assert_eq!(backups_on(&offsite).await, kept, "{}", daemon.log());
    // What stayed is whole: garbage collection kept every chunk they use, on both targets.
    env.run_ok(&["backup", "validate", &pinned]);

    // Health runs periodically; its alert went through the alert command, and two targets
    // low on space are one alert in the daemon's record.
    let checked = daemon
        .wait_for("a health check", Duration::from_secs(30), |l| {
            l["health"] == "fail"
        })
        .await;
    let raised = checked["alerts"].as_str().unwrap_or_default();
    assert_eq!(raised.matches("Disk Space Low").count(), 1, "{checked}");
    let delivered = std::fs::read_to_string(&alerts).unwrap_or_default();
    assert!(
        delivered.contains("Disk Space Low"),
        "the alert command received: {delivered}"
    );

    // `schedule list` shows the daemon running and the schedule's last run and what it pruned.
    let schedules = env.run_json(&["schedule", "list"]);
    let yearly_row = schedules
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "yearly"))
        .expect("yearly in schedule list");
    assert_eq!(
        yearly_row["last_run"]["run_id"],
        run_id.as_str(),
        "{schedules:#}"
    );
    let mut pruned: Vec<String> = yearly_row["last_run"]["pruned"]
        .as_array()
        .expect("pruned")
        .iter()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    pruned.sort();
    let mut gone = vec![expired.clone(), suspect.clone()];
    gone.sort();
    assert_eq!(pruned, gone, "{schedules:#}");
    assert_eq!(yearly_row["daemon"]["running"], true, "{schedules:#}");

    // SIGHUP with a bad configuration: refused, the running one kept.
    env.write_config(&config("every night"));
    send(&daemon.child, "HUP");
    daemon
        .wait_for("the refused reload", Duration::from_secs(10), |l| {
            message(l).contains("configuration reload refused, the running configuration is kept")
                && message(l).contains("every night")
        })
        .await;
    // Fixed, it is taken on the next SIGHUP.
    env.write_config(&config("0 0 1 1 *"));
    send(&daemon.child, "HUP");
    daemon
        .wait_for("the reload", Duration::from_secs(10), |l| {
            message(l) == "configuration reloaded: 2 schedule(s)"
        })
        .await;

    // SIGTERM with nothing running: a clean stop, exit 0.
    send(&daemon.child, "TERM");
    let lines = daemon.lines.clone();
    let out = finish(daemon.child).await;
    let log = lines.lock().expect("log lines").join("\n");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("daemon stopped"), "{log}");

    // SIGTERM while a run waits for a table: stopped after the grace period, nothing
    // half-visible, every lock released, exit 0.
    last_due_long_ago(&repo, "pantry", "yearly").await;
    let blocker = env.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE pantry_items IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let daemon = Daemon::start(&env, &[]);
    daemon
        .wait_for("the next run starting", Duration::from_secs(30), |l| {
            message(l).starts_with("run yearly@") && message(l).contains("started")
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
        kept,
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

    // By hand, as a schedule would: its type and its targets (only offsite).
    let by_hand = env.run_json(&["backup", "create", "--schedule", "offsite-schema"]);
    let id = by_hand["backup"]["id"].as_str().expect("id").to_string();
    assert_eq!(by_hand["backup"]["type"], "schema-only", "{by_hand:#}");
    assert!(backups_on(&offsite).await.contains(&id));
    assert!(!backups_on(&primary).await.contains(&id));
    let m = repo_at(&offsite)
        .await
        .read_manifest(&id)
        .await
        .expect("manifest");
    assert_eq!(m.schedule.as_deref(), Some("offsite-schema"));
}

#[tokio::test(flavor = "multi_thread")]
async fn chunk_validation_in_the_daemon_names_a_damaged_copy_raises_one_alert_and_prunes_nothing() {
    let env = TestEnv::start("larder_chunks").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE pantry (id int PRIMARY KEY, item text);
             INSERT INTO pantry SELECT g, 'item ' || g FROM generate_series(1, 2000) g;",
        )
        .await
        .expect("seed table");
    let primary = env.work.path().join("primary");
    let offsite = env.work.path().join("offsite");
    let alerts = env.work.path().join("alerts.jsonl");
    env.write_config(&format!(
        "{}{}
[monitor]
alert_command = \"cat >> '{}'\"

[daemon]
validate = \"chunks\"
health_every = \"1h\"
{}",
        fs_entry("primary", &primary),
        fs_entry("offsite", &offsite),
        alerts.display(),
        yearly("yearly", "retention = { keep_last = 1 }"),
    ));
    let first = env.run_json(&["backup", "create", "-n", "first"]);
    let first = first["backup"]["id"].as_str().expect("id").to_string();
    // Silent corruption on offsite: every chunk keeps its size, so the copy of the next backup
    // (unchanged rows, the same chunks) relies on them; only reading them finds it.
    for chunk in crate::support::chunk_files(&offsite) {
        crate::support::flip_a_bit(&chunk);
    }
    last_due_long_ago(&repo_at(&primary).await, "larder_chunks", "yearly").await;
    let daemon = Daemon::start(&env, &[]);
    let done = daemon
        .wait_for("a finished run", Duration::from_secs(60), |l| {
            l["outcome"].is_string()
        })
        .await;
    assert_eq!(done["outcome"], "failed", "{}", daemon.log());
    assert_eq!(done["stage"], "validate", "{done}");
    let said = message(&done);
    assert!(
        said.contains("the copy on target 'offsite' is damaged") && !said.contains("'primary' is"),
        "{said}"
    );
    // Retention runs only after a validated backup: keep_last = 1 deleted nothing.
    let second = done["backup_id"].as_str().expect("backup id").to_string();
    let mut both = vec![first, second];
    both.sort();
    assert_eq!(backups_on(&primary).await, both);
    // The failure triggered a health check at once, whose alert reached the command.
    daemon
        .wait_for(
            "the health check after the failure",
            Duration::from_secs(30),
            |l| l["health"] == "fail",
        )
        .await;
    // The damaged copy is Backup Corruption of its target, raised by the run's validation and
    // seen again by the health check: one alert, and the run that failed at validate is not
    // also the last backup attempt's Backup Failure.
    let delivered = std::fs::read_to_string(&alerts).unwrap_or_default();
    let corruption: Vec<serde_json::Value> = delivered
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["alert"] == "Backup Corruption")
        .collect();
    assert_eq!(corruption.len(), 1, "{delivered}");
    assert_eq!(corruption[0]["check"], "target offsite", "{delivered}");
    assert_eq!(corruption[0]["state"], "firing", "{delivered}");
    assert!(!delivered.contains("last backup attempt"), "{delivered}");
    send(&daemon.child, "TERM");
    let out = finish(daemon.child).await;
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_databases_each_get_a_daemon_that_runs_only_their_own_schedules() {
    let (env, databases) = crate::retention::two_databases().await;
    let config = |databases: &str, listen: &str| {
        format!(
            "{databases}[daemon]\nhealth_every = \"1h\"\nlisten = \"{listen}\"\n{}{}",
            yearly("kitchen-yearly", "database = \"kitchen\""),
            yearly("reports-yearly", "database = \"reports\""),
        )
    };
    // One [daemon] listen for both: the second daemon could not have the port, so neither
    // starts, and the error names the clash and the way out.
    let shared = format!("127.0.0.1:{}", crate::metrics::free_port());
    env.write_config(&config(&databases, &shared));
    let refused = env.run(&["--db", "kitchen", "daemon"]);
    let said = crate::support::text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!(
            "[daemon] listen = \"{shared}\" is also where the daemon of [[databases]] 'reports' would listen"
        )) && said.contains("Give each [[databases]] entry its own `listen"),
        "{said}"
    );
    // Each database its own port.
    let (kitchen_port, reports_port) = (crate::metrics::free_port(), crate::metrics::free_port());
    let own = databases
        .replace(
            "class = \"critical\"\n",
            &format!("class = \"critical\"\nlisten = \"127.0.0.1:{kitchen_port}\"\n"),
        )
        .replace(
            "class = \"non-critical\"\n",
            &format!("class = \"non-critical\"\nlisten = \"127.0.0.1:{reports_port}\"\n"),
        );
    env.write_config(&config(&own, &shared));
    let repo = Repository::open_or_init(Arc::new(
        FsTarget::open("local", &env.repo_dir()).expect("open target"),
    ))
    .await
    .expect("repository");
    last_due_long_ago(&repo, "kitchen_pantry", "kitchen-yearly").await;
    last_due_long_ago(&repo, "reports", "kitchen-yearly").await;
    last_due_long_ago(&repo, "reports", "reports-yearly").await;
    let kitchen = Daemon::start(&env, &["--db", "kitchen"]);
    let reports = Daemon::start(&env, &["--db", "reports"]);
    for (daemon, schedule) in [(&kitchen, "kitchen-yearly"), (&reports, "reports-yearly")] {
        let done = daemon
            .wait_for("its run", Duration::from_secs(60), |l| {
                l["outcome"].is_string()
            })
            .await;
        assert_eq!(done["outcome"], "ok", "{}", daemon.log());
        assert!(
            done["run_id"]
                .as_str()
                .is_some_and(|r| r.starts_with(&format!("{schedule}@"))),
            "{done}"
        );
    }
    // Each daemon serves its own database's health on its own port.
    for (daemon, port, entry) in [
        (&kitchen, kitchen_port, "kitchen"),
        (&reports, reports_port, "reports"),
    ] {
        daemon
            .wait_for("its listener", Duration::from_secs(30), |l| {
                message(l).starts_with("serving /metrics")
            })
            .await;
        let (_, _, body) = crate::metrics::get(port, "/health");
        assert!(
            body.contains(&format!("recovery point {entry}")),
            "{entry} on {port}: {body}"
        );
    }
    // The reports daemon never ran the kitchen's schedule, whatever its record said.
    assert!(
        !reports.log().contains("kitchen-yearly@"),
        "{}",
        reports.log()
    );
    let mut by_db: Vec<(String, Option<String>)> = repo
        .manifests()
        .await
        .expect("manifests")
        .into_iter()
        .map(|m| (m.source.database, m.schedule))
        .collect();
    by_db.sort();
    assert_eq!(
        by_db,
        [
            (
                "kitchen_pantry".to_string(),
                Some("kitchen-yearly".to_string())
            ),
            ("reports".to_string(), Some("reports-yearly".to_string())),
        ]
    );
    let table = crate::support::text(&env.run_ok(&["--wide", "schedule", "list"]));
    for db in ["kitchen_pantry", "reports"] {
        assert!(
            table.contains(&format!("Daemon for database {db}: running")),
            "{table}"
        );
    }
    for daemon in [kitchen, reports] {
        send(&daemon.child, "TERM");
        let out = finish(daemon.child).await;
        assert_eq!(out.status.code(), Some(0));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_schedule_runs_from_the_daemon_through_the_chain_of_the_last_full() {
    let env = TestEnv::start("ledger").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE entries (id int PRIMARY KEY, note text);
             INSERT INTO entries SELECT g, 'before' FROM generate_series(1, 20) g;",
        )
        .await
        .expect("seed");
    env.write_config(&format!(
        "[repository]\npath = '{}'\n\n[incremental]\nenabled = true\n\n[daemon]\nhealth_every = \"1h\"\n\
         \n[[schedules]]\nname = \"incr-yearly\"\ntype = \"incremental\"\ncron = \"0 0 1 1 *\"\n\
         timezone = \"Europe/Berlin\"\nmissed = \"run-once\"\n",
        env.repo_dir().display()
    ));
    let full = env.run_json(&["backup", "create", "-n", "base"]);
    let full_id = full["backup"]["id"].as_str().expect("full id").to_string();
    env.client()
        .await
        .batch_execute(
            "SET synchronous_commit = on;
             INSERT INTO entries SELECT g, 'after' FROM generate_series(21, 30) g;
             DELETE FROM entries WHERE id = 1;",
        )
        .await
        .expect("changes after the full");
    let repo = env.repo().await;
    last_due_long_ago(&repo, "ledger", "incr-yearly").await;

    let daemon = Daemon::start(&env, &[]);
    let done = daemon
        .wait_for("the incremental run", Duration::from_secs(60), |l| {
            l["outcome"].is_string()
        })
        .await;
    assert_eq!(done["outcome"], "ok", "{}", daemon.log());
    assert!(
        done["run_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("incr-yearly@")),
        "{done}"
    );
    let incremental = repo
        .manifests()
        .await
        .expect("manifests")
        .into_iter()
        .find(|m| m.id != full_id)
        .unwrap_or_else(|| panic!("no incremental was written; log:\n{}", daemon.log()));
    assert_eq!(incremental.backup_type.to_string(), "incremental");
    assert_eq!(incremental.schedule.as_deref(), Some("incr-yearly"));
    assert_eq!(
        incremental.chain.as_ref().map(|c| c.base.as_str()),
        Some(full_id.as_str())
    );
    let changes = incremental.incremental.as_ref().expect("incremental info");
    let entries = changes
        .tables
        .iter()
        .find(|t| t.table == "public.entries")
        .unwrap_or_else(|| panic!("no changes of public.entries: {:?}", changes.tables));
    assert_eq!((entries.inserts, entries.deletes), (10, 1), "{entries:?}");
    send(&daemon.child, "TERM");
    let out = finish(daemon.child).await;
    assert_eq!(out.status.code(), Some(0));
}

/// Waits (at most 30 s) until the alert command's file holds an event of `alert` in `state`.
async fn delivered(file: &Path, alert: &str, state: &str) {
    let wanted = format!("\"state\":\"{state}\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains(alert) && l.contains(&wanted))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {state} {alert} reached the alert command: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_schedule_runs_the_restore_test_from_the_daemon_and_a_failed_one_raises_drill_failed()
 {
    let env = TestEnv::start("drilled").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE shelves (id int PRIMARY KEY, label text);
             INSERT INTO shelves SELECT g, 'shelf ' || g FROM generate_series(1, 50) g;",
        )
        .await
        .expect("seed");
    let alerts = env.work.path().join("alerts.jsonl");
    let config = |shelves: u32| {
        format!(
            "[repository]\npath = '{}'\n\n[monitor]\nalert_command = \"cat >> '{}'\"\n\n\
             [daemon]\nhealth_every = \"1h\"\nlisten = \"off\"\n\n\
             [[drill.checks]]\nname = \"every shelf\"\nsql = \"SELECT count(*) FROM shelves\"\nexpect = {shelves}\n\n\
             [[schedules]]\nname = \"monthly-drill\"\ntype = \"drill\"\ncron = \"0 0 1 1 *\"\n\
             timezone = \"Europe/Berlin\"\nmissed = \"run-once\"\nbackup = \"latest\"\n",
            env.repo_dir().display(),
            alerts.display()
        )
    };
    // A check that cannot pass: the drill fails.
    env.write_config(&config(51));
    let backup = env.backup("nightly").await;
    // A drill schedule takes no backup, and says what runs it.
    let refused = env.run(&["backup", "create", "--schedule", "monthly-drill"]);
    let said = crate::support::text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains("that schedule is a restore drill")
            && said.contains("backup-cli recovery drill --schedule monthly-drill"),
        "{said}"
    );
    let repo = env.repo().await;
    last_due_long_ago(&repo, "drilled", "monthly-drill").await;
    let root = crate::drills::scratch_root();

    let daemon = Daemon::spawn(env.cli().env("TMPDIR", root.path()));
    let done = daemon
        .wait_for("the failed drill run", Duration::from_secs(90), |l| {
            l["outcome"].is_string()
        })
        .await;
    assert_eq!(done["outcome"], "failed", "{}", daemon.log());
    assert_eq!(done["stage"], "drill", "{done}");
    assert_eq!(done["backup_id"], backup.id.as_str(), "{done}");
    assert!(
        message(&done).contains("check 'every shelf' expected value 51, got 50"),
        "{done}"
    );
    // Drill Failed went out through the alert command.
    delivered(&alerts, "Drill Failed", "firing").await;
    assert_eq!(
        crate::drills::leftovers(root.path()),
        Vec::<std::path::PathBuf>::new(),
        "the throwaway PostgreSQL is gone after the failed drill"
    );
    // The daemon carries on, and `schedule status` tells the story.
    let status = env.run_json(&["schedule", "status", "monthly-drill"]);
    assert_eq!(status["type"], "drill", "{status:#}");
    assert_eq!(status["status"], "missed", "no drill passed: {status:#}");
    assert_eq!(status["last_run"]["outcome"], "failed", "{status:#}");
    assert_eq!(status["last_run"]["stage"], "drill", "{status:#}");
    assert!(status["last_run"]["drill_id"].is_string(), "{status:#}");
    assert_eq!(status["daemon"]["running"], true, "{status:#}");
    let human = crate::support::text(&env.run_ok(&["schedule", "status", "monthly-drill"]));
    assert!(
        human.contains("Schedule monthly-drill (drill): missed")
            && human.contains("last passed drill: none")
            && human.contains("at drill: "),
        "{human}"
    );
    send(&daemon.child, "TERM");
    let out = finish(daemon.child).await;
    assert_eq!(out.status.code(), Some(0));

    // The check fixed: the next run passes, the schedule is kept, the alert resolves.
    env.write_config(&config(50));
    last_due_long_ago(&repo, "drilled", "monthly-drill").await;
    let daemon = Daemon::spawn(env.cli().env("TMPDIR", root.path()));
    let done = daemon
        .wait_for("the passing drill run", Duration::from_secs(90), |l| {
            l["outcome"].is_string()
        })
        .await;
    assert_eq!(done["outcome"], "ok", "{}", daemon.log());
    let drill_id = done["drill_id"].as_str().expect("drill id").to_string();
    assert!(
        message(&done).contains(&format!("drill {drill_id} of backup {} passed", backup.id)),
        "{done}"
    );
    let schedules = env.run_json(&["schedule", "list"]);
    let row = schedules
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "monthly-drill"))
        .expect("the drill schedule in schedule list");
    assert_eq!(row["status"], "ok", "{row:#}");
    assert_eq!(row["last_drill"]["drill_id"], drill_id.as_str(), "{row:#}");
    assert_eq!(row["last_drill"]["rto_met"], true, "{row:#}");
    assert!(row["last_backup_id"].is_null(), "{row:#}");
    let table = crate::support::text(&env.run_ok(&["schedule", "list"]));
    assert!(table.contains("drill"), "{table}");
    let drills = env.run_json(&["recovery", "drills"]);
    assert_eq!(drills.as_array().map(Vec::len), Some(2), "{drills:#}");
    delivered(&alerts, "Drill Failed", "resolved").await;
    assert_eq!(
        crate::drills::leftovers(root.path()),
        Vec::<std::path::PathBuf>::new()
    );
    send(&daemon.child, "TERM");
    let out = finish(daemon.child).await;
    assert_eq!(out.status.code(), Some(0));
}
