//! `monitor health`, `monitor alerts` and `schedule list` raise the runbook's alerts (Backup
//! Failure, Backup Corruption, Disk Space Low, Schedule Missed) and deliver them.

use crate::support::{TestEnv, reported, text};
use larder::repository::chunk_key;

fn alerts_of(health: &serde_json::Value) -> Vec<String> {
    health["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "fail")
        .filter_map(|c| c["alert"].as_str().map(str::to_string))
        .collect()
}

fn health(env: &TestEnv, config: &std::path::Path) -> (Option<i32>, serde_json::Value) {
    let out = env.run(&[
        "--config",
        config.to_str().expect("path"),
        "--json",
        "monitor",
        "health",
    ]);
    (out.status.code(), reported(&out))
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_raise_and_deliver_the_runbooks_alerts() {
    let mut env = TestEnv::start("monitored").await;
    env.load_kitchen_pantry(0.001).await;
    let alerts_file = env.work.path().join("alerts.jsonl");
    let config = env.work.path().join("monitor.toml");
    let write_config = |min_free: &str| {
        std::fs::write(
            &config,
            format!(
                "[monitor]\nmin_free_space = \"{min_free}\"\nalert_command = \"cat >> {}\"\n\n\
                 [[schedules]]\nname = \"new-year-schema\"\ntype = \"schema-only\"\ncron = \"0 0 1 1 *\"\n",
                alerts_file.display()
            ),
        )
        .expect("config")
    };
    write_config("1MB");
    let (code, report) = health(&env, &config);
    assert_eq!(code, Some(1), "no repository at all is a failure");
    assert_eq!(report["checks"][1]["name"], "target local");
    assert!(
        report["checks"][1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no repository at")),
        "{report}"
    );
    let init_config = env.work.path().join("init.toml");
    env.run_ok(&["--config", init_config.to_str().expect("path"), "init"]);

    // Nothing backed up yet: Backup Failure, and the yearly schema-only run was missed.
    let (code, report) = health(&env, &config);
    assert_eq!(code, Some(1));
    let raised = alerts_of(&report);
    assert!(
        raised.contains(&"Backup Failure".to_string())
            && raised.contains(&"Schedule Missed".to_string()),
        "{report}"
    );

    // A validated, recent backup and the scheduled one: healthy.
    let manifest = env.backup("nightly").await;
    env.run_ok(&[
        "--config",
        config.to_str().expect("path"),
        "backup",
        "create",
        "--type",
        "schema-only",
    ]);
    env.run_ok(&["backup", "validate", &manifest.id]);
    let (code, report) = health(&env, &config);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["status"], "ok", "{report}");
    let schedules = env.run_json(&[
        "--config",
        config.to_str().expect("path"),
        "schedule",
        "list",
    ]);
    assert_eq!(schedules[0]["status"], "ok");

    // Disk space below the threshold.
    write_config("1000TB");
    let (code, report) = health(&env, &config);
    assert_eq!(code, Some(1));
    assert_eq!(alerts_of(&report), vec!["Disk Space Low".to_string()]);
    write_config("1MB");

    // A corrupted backup, once validate (with the same configuration) has seen it.
    let chunk = &manifest.find_table("contacts").expect("contacts").parts[0].chunks[0];
    std::fs::write(env.repo_dir().join(chunk_key(&chunk.id)), b"garbage").expect("corrupt");
    let validated = env.run(&[
        "--config",
        config.to_str().expect("path"),
        "backup",
        "validate",
        &manifest.id,
    ]);
    assert_eq!(validated.status.code(), Some(1), "{}", text(&validated));
    let (_, report) = health(&env, &config);
    let raised = alerts_of(&report);
    assert!(
        !raised.is_empty() && raised.iter().all(|a| a == "Backup Corruption"),
        "{report}"
    );

    // A failed backup attempt while the database is down, delivered to the alert command.
    env.cluster.stop();
    assert_eq!(env.run(&["backup", "create"]).status.code(), Some(1));
    let out = env.run(&[
        "--config",
        config.to_str().expect("path"),
        "monitor",
        "health",
        "--alert-on-failure",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("alert(s) sent"), "{}", text(&out));
    let delivered = std::fs::read_to_string(&alerts_file).expect("alerts delivered");
    for expected in [
        "Database connection failed",
        "Backup Failure",
        "Backup Corruption",
    ] {
        assert!(
            delivered.contains(expected),
            "alert {expected} not delivered: {delivered}"
        );
    }
    let active = env.run_json(&[
        "--config",
        config.to_str().expect("path"),
        "monitor",
        "alerts",
    ]);
    let mut names: Vec<&str> = active["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["alert"].as_str())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        [
            "Backup Corruption",
            "Backup Failure",
            "Database connection failed"
        ],
        "{active}"
    );
}

/// The alert command's events (one JSON line each) as (database, alert, state).
fn events_in(file: &std::path::Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).expect("an event");
            let field = |name: &str| event[name].as_str().unwrap_or_default().to_string();
            (field("database"), field("alert"), field("state"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn several_databases_without_db_each_raise_list_and_resolve_their_own_alerts() {
    let (env, databases) = crate::retention::two_databases().await;
    let events = env.work.path().join("events.jsonl");
    env.write_config(&format!(
        "{databases}[monitor]\nmin_free_space = \"1MB\"\nalert_command = \"cat >> {}\"\n\
         [alerts]\nstate_dir = \"{}\"\n",
        events.display(),
        env.work.path().join("alert-state").display(),
    ));
    env.run_ok(&["backup", "create", "--db", "kitchen", "-n", "kitchen-1"]);

    // No --db: both databases are checked; only reports, never backed up, fails, under its name.
    let out = env.run(&["monitor", "health", "--alert-on-failure"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("alert(s) sent"), "{}", text(&out));
    assert_eq!(
        events_in(&events),
        [("reports".into(), "Backup Failure".into(), "firing".into())],
        "{}",
        text(&out)
    );
    let health = reported(&env.run(&["--json", "monitor", "health"]));
    let failing: Vec<(&str, &str)> = health["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default(),
                c["database"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        failing,
        [("latest backup reports", "reports")],
        "{health:#}"
    );

    // monitor alerts lists every database's alerts, each with its database; --ack needs no --db.
    let listed = env.run_json(&["monitor", "alerts"]);
    let alerts: Vec<(&str, &str, &str)> = listed["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            (
                a["database"].as_str().unwrap_or_default(),
                a["alert"].as_str().unwrap_or_default(),
                a["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        alerts,
        [("reports", "Backup Failure", "active")],
        "{listed:#}"
    );
    let table = env.run_ok(&["monitor", "alerts", "--ack", "Backup Failure"]);
    assert!(
        text(&table).contains("DATABASE") && text(&table).contains("acknowledged"),
        "{}",
        text(&table)
    );

    // reports backed up: the next run resolves its alert, and kitchen never had one.
    env.run_ok(&["backup", "create", "--db", "reports", "-n", "reports-1"]);
    let out = env.run(&["monitor", "health", "--alert-on-failure"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        events_in(&events),
        [
            ("reports".into(), "Backup Failure".into(), "firing".into()),
            ("reports".into(), "Backup Failure".into(), "resolved".into()),
        ]
    );
    let listed = env.run_json(&["monitor", "alerts"]);
    assert_eq!(listed["alerts"], serde_json::json!([]), "{listed:#}");
    assert_eq!(listed["resolved"][0]["database"], "reports", "{listed:#}");
}

/// `monitor health`'s failing checks as (check, alert).
fn failing_checks(health: &serde_json::Value) -> Vec<(String, String)> {
    health["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            let field = |name: &str| c[name].as_str().unwrap_or_default().to_string();
            (field("name"), field("alert"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_chunk_found_by_validate_is_one_backup_corruption_alert_until_a_validation_passes()
 {
    let env = TestEnv::start("validated").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE shelf (id int PRIMARY KEY, label text);
             INSERT INTO shelf SELECT g, 'jar ' || g FROM generate_series(1, 500) g;",
        )
        .await
        .expect("sample data");
    let events = env.work.path().join("events.jsonl");
    env.write_config(&format!(
        "[repository]\npath = \"{}\"\n[monitor]\nmin_free_space = \"1MB\"\nalert_command = \"cat >> {}\"\n\
         [alerts]\nstate_dir = \"{}\"\n",
        env.repo_dir().display(),
        events.display(),
        env.work.path().join("alert-state").display(),
    ));
    let manifest = env.backup("nightly").await;
    env.run_ok(&["backup", "validate", &manifest.id]);
    assert_eq!(
        events_in(&events),
        [],
        "a passing validation raises nothing"
    );

    // One bit of one chunk flipped, as silent disk corruption would.
    let chunk = &manifest.find_table("shelf").expect("shelf").parts[0].chunks[0];
    let path = env.repo_dir().join(chunk_key(&chunk.id));
    let good = std::fs::read(&path).expect("the chunk");
    crate::support::flip_a_bit(&path);
    let out = env.run(&["backup", "validate", &manifest.id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("1 alert(s) sent"), "{}", text(&out));
    let raised = || {
        events_in(&events)
            .into_iter()
            .map(|(_, alert, state)| (alert, state))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        raised(),
        [("Backup Corruption".into(), "firing".into())],
        "a damaged chunk is corruption, not also Backup Validation Failed"
    );

    // Health sees the same damaged copy (its last validation, and its sample of the newest
    // backup's chunks): the same alert, not a second one.
    let out = env.run(&["monitor", "health", "--alert-on-failure"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let health = reported(&env.run(&["--json", "monitor", "health"]));
    let failing = failing_checks(&health);
    assert!(
        !failing.is_empty()
            && failing
                .iter()
                .all(|f| *f == ("target local".into(), "Backup Corruption".into())),
        "{health:#}"
    );
    assert_eq!(raised(), [("Backup Corruption".into(), "firing".into())]);
    let listed = env.run_json(&["monitor", "alerts"]);
    let alerts = listed["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{listed:#}");
    assert_eq!(alerts[0]["check"], "target local", "{listed:#}");
    assert_eq!(alerts[0]["status"], "active", "{listed:#}");

    // The chunk repaired: the next validation finds the copy intact and resolves the alert.
    std::fs::write(&path, good).expect("repair the chunk");
    env.run_ok(&["backup", "validate", &manifest.id]);
    assert_eq!(
        raised(),
        [
            ("Backup Corruption".into(), "firing".into()),
            ("Backup Corruption".into(), "resolved".into()),
        ]
    );
    let out = env.run(&["monitor", "health", "--alert-on-failure"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(raised().len(), 2, "nothing more to say");
}
