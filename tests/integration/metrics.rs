//! Metrics, `/health` and the status page against a real PostgreSQL: `monitor metrics` is read
//! by a real Prometheus text parser (python's prometheus_client) and its values are checked
//! against the repository; the daemon serves the same at `/metrics`, `/health` turns 503 once
//! the newest backup is older than the RPO, and the status page, opened in headless Chromium,
//! shows the database, its last backup and an active alert, with markup in names escaped.
//! Restore drills feed the drill metrics (through the index: each record read once) and the
//! page's "Last restore drill", with the recovery time against the RTO. A scrape of a
//! repository with 300 backups reads no manifest once the index knows them.

use crate::support::{TestEnv, finish, send, text};
use larder::repository::manifest::Manifest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A database entry name and a backup name no page may interpret.
const MARKUP: &str = "<script>alert('x')</script>";

/// One sample as prometheus_client's parser read it.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    family: String,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus text with prometheus_client (a parse error fails the test).
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let script = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       out.append({'family': f.name, 'type': f.type, 'name': s.name, 'labels': s.labels, 'value': s.value})\n\
        print(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/ensure-prerequisites installs prometheus_client)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed the parser");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "prometheus_client could not parse the metrics ({}):\n{}\n--- text ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One HTTP/1.1 exchange: status code, head and body.
fn http(port: u16, request: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in: {answer}"));
    (status, head.to_string(), body.to_string())
}

pub fn get(port: u16, path: &str) -> (u16, String, String) {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

/// Where tests keep what a person looks at afterwards (screenshots).
fn artefact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artefact folder");
    dir.join(name)
}

/// Headless Chromium with a fresh profile, as root in a container needs it.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .output()
        .expect("chromium (scripts/ensure-prerequisites installs it)");
    assert!(out.status.success(), "chromium failed: {}", text(&out));
    out
}

/// `backup-cli daemon`, once it listens on `port`.
async fn serve(env: &TestEnv, port: u16) -> std::process::Child {
    let daemon = env
        .cli()
        .args(["daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon
}

fn config(env: &TestEnv, port: u16, rpo: &str) -> String {
    format!(
        r#"[[databases]]
name = "{MARKUP}"
url = "{url}"
rpo = "{rpo}"

[repository]
path = "{repo}"

[monitor]
# Nothing has a petabyte free: "Disk Space Low" is an active alert.
min_free_space = "1000TB"
alert_command = "cat >> '{work}/alerts.jsonl'"

[alerts]
state_dir = "{work}/state"

[[schedules]]
name = "daily-full"
type = "full"
cron = "0 2 * * *"

[daemon]
listen = "127.0.0.1:{port}"
"#,
        url = env.url(),
        repo = env.repo_dir().display(),
        work = env.work.path().display(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_and_status_page_tell_the_repository_as_it_is() {
    let env = TestEnv::start("metrics_pantry").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 2000) g;",
        )
        .await
        .expect("sample data");
    let port = free_port();
    env.write_config(&config(&env, port, "30s"));
    env.run_ok(&["init"]);
    let created = env.run_json(&["backup", "create", "-n", MARKUP]);
    let id = created["backup"]["id"]
        .as_str()
        .expect("backup id")
        .to_string();
    let manifest: Manifest = env.repo().await.read_manifest(&id).await.expect("manifest");
    // A replication slot that holds back WAL written after it.
    env.client()
        .await
        .batch_execute(
            "SELECT pg_create_logical_replication_slot('larder_watch', 'pgoutput');
             INSERT INTO items SELECT g, 'more ' || g FROM generate_series(2001, 4000) g;",
        )
        .await
        .expect("a slot and some WAL");
    // Raise the alert through the alert room, as cron's `monitor health` would.
    let health = env.run(&["monitor", "health", "--alert-on-failure"]);
    assert_eq!(health.status.code(), Some(1), "{}", text(&health));

    // `monitor metrics`: the text parses, and says what the repository holds.
    let out = env.run_ok(&["monitor", "metrics"]);
    let samples = parse_prometheus(&String::from_utf8_lossy(&out.stdout));
    let db = [("database", "metrics_pantry"), ("type", "full")];
    assert_eq!(value(&samples, "larder_up", &[]), Some(1.0));
    assert_eq!(value(&samples, "larder_backups", &db), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "larder_backup_last_success_timestamp_seconds",
            &db
        ),
        Some(seconds(manifest.completed_at))
    );
    assert_eq!(value(&samples, "larder_backup_last_status", &db), Some(1.0));
    let duration = (manifest.completed_at - manifest.created_at).num_milliseconds() as f64 / 1000.0;
    assert_eq!(
        value(&samples, "larder_backup_duration_seconds", &db),
        Some(duration)
    );
    assert_eq!(
        value(&samples, "larder_backup_logical_bytes", &db),
        Some(manifest.logical_bytes() as f64)
    );
    let mut seen = std::collections::HashSet::new();
    let stored: u64 = manifest
        .chunks()
        .filter(|c| seen.insert(c.id.clone()))
        .map(|c| c.stored)
        .sum();
    assert_eq!(
        value(&samples, "larder_backup_stored_bytes", &db),
        Some(stored as f64)
    );
    assert_eq!(
        value(&samples, "larder_backup_added_bytes", &db),
        Some(manifest.new_bytes as f64)
    );
    let one = [("database", "metrics_pantry")];
    assert_eq!(
        value(&samples, "larder_rpo_objective_seconds", &one),
        Some(30.0)
    );
    assert_eq!(
        value(&samples, "larder_rto_objective_seconds", &one),
        Some(4.0 * 3600.0)
    );
    assert_eq!(value(&samples, "larder_database_up", &one), Some(1.0));
    assert_eq!(
        value(&samples, "larder_first_recoverable_timestamp_seconds", &one),
        Some(seconds(manifest.created_at))
    );
    let age = value(&samples, "larder_recovery_point_age_seconds", &one).expect("point age");
    let expected_age =
        (chrono::Utc::now() - manifest.created_at).num_milliseconds() as f64 / 1000.0;
    assert!(
        age > 0.0 && age <= expected_age,
        "age {age}, at most {expected_age}"
    );
    assert_eq!(
        value(
            &samples,
            "larder_alerts_active",
            &[("alert", "Disk Space Low")]
        ),
        Some(1.0)
    );
    let next = value(
        &samples,
        "larder_schedule_next_run_timestamp_seconds",
        &[("schedule", "daily-full")],
    )
    .expect("next run");
    let now = chrono::Utc::now();
    let tomorrow_two = (now + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(2, 0, 0)
        .expect("time")
        .and_utc();
    let today_two = now
        .date_naive()
        .and_hms_opt(2, 0, 0)
        .expect("time")
        .and_utc();
    let due = if today_two > now {
        today_two
    } else {
        tomorrow_two
    };
    assert_eq!(next, seconds(due));
    let retained = value(
        &samples,
        "larder_replication_slot_retained_bytes",
        &[("database", "metrics_pantry"), ("slot", "larder_watch")],
    );
    assert!(
        retained.is_some_and(|b| b > 0.0),
        "the slot's WAL: {retained:?}"
    );
    assert_eq!(
        value(&samples, "larder_target_up", &[("target", "local")]),
        Some(1.0)
    );
    assert!(
        value(&samples, "larder_target_free_bytes", &[("target", "local")])
            .is_some_and(|f| f > 0.0)
    );
    // Types and units as Prometheus names them.
    let kind = |family: &str| {
        samples
            .iter()
            .find(|s| s.family == family)
            .map(|s| s.kind.clone())
    };
    assert_eq!(
        kind("larder_backup_last_success_timestamp_seconds").as_deref(),
        Some("gauge")
    );
    let declared = String::from_utf8_lossy(&out.stdout).into_owned();
    for family in [
        "# TYPE larder_notification_failures_total counter",
        "# TYPE larder_plugin_calls_total counter",
        "# TYPE larder_drill_last_rto_seconds gauge",
        "# TYPE larder_drill_last_success_timestamp_seconds gauge",
        "# TYPE larder_replication_slot_retained_bytes gauge",
    ] {
        assert!(declared.contains(family), "{family} missing:\n{declared}");
    }
    // No drill has run: its metrics are declared without samples, never made up.
    assert!(!samples.iter().any(|s| s.name.starts_with("larder_drill_")));

    // The second scrape reads no manifest: the index knows them.
    let again = env.run_json(&["monitor", "metrics"]);
    assert_eq!(again["manifests_read"], 0, "{again}");
    assert_eq!(again["backups"][0]["id"], id.as_str());

    // The daemon serves the same on [daemon] listen.
    let mut daemon = serve(&env, port).await;
    let (status, head, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let served = parse_prometheus(&body);
    assert_eq!(value(&served, "larder_backups", &db), Some(1.0));
    assert_eq!(
        value(&served, "larder_backup_last_success_timestamp_seconds", &db),
        Some(seconds(manifest.completed_at))
    );

    // Fresh backup: healthy. Only GET and HEAD; bounded requests.
    let (status, _, body) = get(port, "/health");
    let health: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    let (status, head, _) = http(
        port,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );
    let (status, head, body) = http(
        port,
        "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, ""), "{head}");
    assert_eq!(get(port, "/nothing").0, 404);
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(http(port, &huge).0, 431, "an oversized request is refused");

    // The status page in a real browser: the database, its last backup, the active alert, and
    // the names' markup shown as text.
    let profile = tempfile::tempdir().expect("browser profile");
    let url = format!("http://127.0.0.1:{port}/");
    let dom = chromium(profile.path(), &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.contains("metrics_pantry"), "{dom}");
    assert!(dom.contains(&id), "the last backup is shown: {dom}");
    assert!(
        dom.contains("Disk Space Low"),
        "the active alert is shown: {dom}"
    );
    assert!(dom.contains("needs attention"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
        "{dom}"
    );
    assert!(
        !dom.contains("<script"),
        "no script element came from a name: {dom}"
    );
    assert!(dom.contains("<svg"), "the chart is drawn: {dom}");
    let shot = artefact("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        profile.path(),
        &[
            "--window-size=1280,1600",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot at {}",
        shot.display()
    );

    // Once the newest backup is older than the 30 s RPO, /health says so with 503.
    let breach = manifest.created_at + chrono::Duration::seconds(31);
    if let Ok(wait) = (breach - chrono::Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    // Past the 2 s for which a snapshot answers again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _, body) = get(port, "/health");
    let health: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(status, 503, "{health}");
    let check = health["checks"]
        .as_array()
        .and_then(|c| {
            c.iter().find(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("recovery point"))
            })
        })
        .cloned()
        .expect("the recovery point check");
    assert_eq!(check["status"], "fail", "{health}");
    assert!(
        check["detail"]
            .as_str()
            .is_some_and(|d| d.contains("older than the RPO")),
        "{check}"
    );

    send(&daemon, "TERM");
    let stderr = daemon.stderr.take();
    let out = finish(daemon).await;
    assert!(out.status.success(), "daemon: {}", text(&out));
    drop(stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_of_300_backups_reads_no_manifest_once_indexed() {
    let env = TestEnv::start("metrics_many").await;
    env.client()
        .await
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100);")
        .await
        .expect("sample data");
    let port = free_port();
    env.write_config(&config(&env, port, "1d"));
    env.run_ok(&["init"]);
    let first = env.run_json(&["backup", "create"]);
    let id = first["backup"]["id"].as_str().expect("id").to_string();
    let body = std::fs::read_to_string(env.repo_dir().join(format!("backups/{id}.json")))
        .expect("manifest");
    let original: serde_json::Value = serde_json::from_str(&body).expect("manifest JSON");
    // Copies of the one manifest under other ids and times: what matters to a scrape is how
    // many manifests there are, not what they hold.
    let base = chrono::Utc::now();
    let copy_up_to = |n: usize| {
        for i in 1..n {
            let mut copy = original.clone();
            let at = base - chrono::Duration::hours(i as i64);
            let copy_id = format!("{}-{:04x}", at.format("%Y%m%d-%H%M%S"), i);
            copy["id"] = copy_id.clone().into();
            copy["created_at"] = at.to_rfc3339().into();
            copy["completed_at"] = (at + chrono::Duration::seconds(2)).to_rfc3339().into();
            std::fs::write(
                env.repo_dir().join(format!("backups/{copy_id}.json")),
                serde_json::to_vec_pretty(&copy).expect("encode"),
            )
            .expect("write manifest");
        }
    };
    let scrape = || {
        let started = Instant::now();
        let data = env.run_json(&["monitor", "metrics"]);
        (data, started.elapsed().as_secs_f64())
    };
    let mut figures = Vec::new();
    for backups in [30, 300] {
        copy_up_to(backups);
        let (cold, _) = scrape();
        assert_eq!(
            cold["backups"].as_array().map(Vec::len),
            Some(backups),
            "{cold}"
        );
        let mut warm = Vec::new();
        for _ in 0..3 {
            let (data, _) = scrape();
            assert_eq!(data["manifests_read"], 0, "{data}");
            warm.push(data["scrape_seconds"].as_f64().expect("scrape_seconds"));
        }
        warm.sort_by(f64::total_cmp);
        figures.push((
            backups,
            cold["manifests_read"].as_u64().unwrap_or(0),
            cold["scrape_seconds"].as_f64().unwrap_or(0.0),
            warm[1],
        ));
    }
    let started = Instant::now();
    env.run(&["monitor", "health"]);
    let health_seconds = started.elapsed().as_secs_f64();
    for (backups, read, cold, warm) in &figures {
        println!(
            "scrape cost: {backups} backups: first scrape read {read} manifests in {cold:.3} s; indexed scrapes {warm:.3} s (median of 3)"
        );
    }
    println!(
        "for comparison, `monitor health` (reads every manifest) with 300 backups: {health_seconds:.3} s"
    );
    let (_, _, _, warm30) = figures[0];
    let (_, _, _, warm300) = figures[1];
    // Flat: ten times the backups costs no manifest read and nowhere near ten times the time.
    assert!(
        warm300 < warm30 * 4.0 + 0.05,
        "indexed scrape {warm30:.3} s with 30, {warm300:.3} s with 300"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drills_feed_the_drill_metrics_and_the_status_pages_last_restore_drill() {
    let env = TestEnv::start("metrics_drilled").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;",
        )
        .await
        .expect("sample data");
    let port = free_port();
    let config = |expect: u32| {
        format!(
            "[repository]\npath = \"{}\"\n\n[alerts]\nstate_dir = \"{}/state\"\n\n\
             [daemon]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[drill.checks]]\nname = \"all items\"\nsql = \"SELECT count(*) FROM items\"\nexpect = {expect}\n\n\
             [[schedules]]\nname = \"yearly\"\ntype = \"full\"\ncron = \"0 0 1 1 *\"\n",
            env.repo_dir().display(),
            env.work.path().display(),
        )
    };
    env.write_config(&config(500));
    env.run_ok(&["init"]);
    env.backup("nightly").await;
    let root = crate::drills::scratch_root();
    let drill = |args: &[&str]| {
        env.cli()
            .env("TMPDIR", root.path())
            .args(args)
            .output()
            .expect("run backup-cli")
    };
    let out = drill(&["recovery", "drill", "latest"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let passed = env.run_json(&["recovery", "drills", "-l", "1"])[0].clone();
    let db = [("database", "metrics_drilled")];
    let out = env.run_ok(&["monitor", "metrics"]);
    let samples = parse_prometheus(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        value(&samples, "larder_drill_last_rto_seconds", &db),
        passed["recovery_seconds"].as_f64(),
        "{passed:#}"
    );
    let finished = |d: &serde_json::Value| {
        let at = d["finished_at"].as_str().expect("finished_at");
        seconds(
            chrono::DateTime::parse_from_rfc3339(at)
                .expect("time")
                .with_timezone(&chrono::Utc),
        )
    };
    assert_eq!(
        value(&samples, "larder_drill_last_success_timestamp_seconds", &db),
        Some(finished(&passed))
    );
    assert_eq!(value(&samples, "larder_drill_last_status", &db), Some(1.0));
    let kind = samples
        .iter()
        .find(|s| s.family == "larder_drill_last_rto_seconds")
        .map(|s| s.kind.as_str());
    assert_eq!(kind, Some("gauge"));
    // Each drill record is read once; the index answers after that.
    let again = env.run_json(&["monitor", "metrics"]);
    assert_eq!(again["drills_read"], 0, "{again}");
    assert_eq!(
        again["databases"][0]["last_drill"]["drill_id"], passed["drill_id"],
        "{again}"
    );

    // A failed drill: its recovery time and status, the last success stays the passed one.
    env.write_config(&config(501));
    let out = drill(&["recovery", "drill", "latest"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = env.run_json(&["recovery", "drills", "-l", "1"])[0].clone();
    assert_eq!(failed["outcome"], "failed");
    let data = env.run_json(&["monitor", "metrics"]);
    assert_eq!(
        data["drills_read"], 1,
        "only the new record is read: {data}"
    );
    let out = env.run_ok(&["monitor", "metrics"]);
    let samples = parse_prometheus(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        value(&samples, "larder_drill_last_rto_seconds", &db),
        failed["recovery_seconds"].as_f64()
    );
    assert_eq!(
        value(&samples, "larder_drill_last_success_timestamp_seconds", &db),
        Some(finished(&passed))
    );
    assert_eq!(value(&samples, "larder_drill_last_status", &db), Some(0.0));

    // The status page: the last drill, failed, its recovery time against the 4 h RTO, and
    // when a drill last passed.
    let mut daemon = serve(&env, port).await;
    let profile = tempfile::tempdir().expect("browser profile");
    let dom = chromium(
        profile.path(),
        &["--dump-dom", &format!("http://127.0.0.1:{port}/")],
    );
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let section = dom
        .split("<section id=\"drills\">")
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .unwrap_or_else(|| panic!("no drills section: {dom}"));
    let failed_id = failed["drill_id"].as_str().expect("drill id");
    assert!(section.contains(failed_id), "{section}");
    assert!(section.contains(">failed<"), "{section}");
    assert!(section.contains("against 4h"), "{section}");
    assert!(section.contains(">missed<"), "{section}");
    let passed_at =
        chrono::DateTime::parse_from_rfc3339(passed["finished_at"].as_str().expect("time"))
            .expect("time")
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string();
    assert!(
        section.contains(&passed_at),
        "the last passed drill: {section}"
    );
    let shot = artefact("status-page-drill.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        profile.path(),
        &[
            "--window-size=1280,1600",
            &format!("--screenshot={}", shot.display()),
            &format!("http://127.0.0.1:{port}/#drills"),
        ],
    );
    assert!(std::fs::read(&shot).is_ok_and(|png| png.starts_with(b"\x89PNG")));
    send(&daemon, "TERM");
    let stderr = daemon.stderr.take();
    let out = finish(daemon).await;
    assert!(out.status.success(), "daemon: {}", text(&out));
    drop(stderr);
    assert_eq!(crate::drills::leftovers(root.path()), Vec::<PathBuf>::new());
}
