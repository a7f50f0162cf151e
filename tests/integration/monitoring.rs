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

    // A corrupted backup, once validate has seen it.
    let chunk = &manifest.find_table("contacts").expect("contacts").parts[0].chunks[0];
    std::fs::write(env.repo_dir().join(chunk_key(&chunk.id)), b"garbage").expect("corrupt");
    assert_eq!(
        env.run(&["backup", "validate", &manifest.id]).status.code(),
        Some(1)
    );
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
