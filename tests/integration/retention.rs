//! Retention through `backup prune` on real repositories: one real backup, then its manifest
//! written again under crafted times (as a repository months old would hold), validation
//! records and pins, and the verdicts, deletions and garbage collection checked on every target.

use crate::support::{TestEnv, fs_entry};
use chrono::{DateTime, Duration, Utc};
use larder::repository::Repository;
use larder::repository::history::ValidationRecord;
use larder::repository::id::new_backup_id;
use larder::repository::manifest::Manifest;
use larder::repository::signing::RetiredBy;
use std::collections::BTreeMap;

/// A small database and one real backup of it, whose manifest the crafted backups copy.
async fn seeded(dbname: &str) -> (TestEnv, Manifest) {
    let env = TestEnv::start(dbname).await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE pantry (id int PRIMARY KEY, item text);
             INSERT INTO pantry SELECT g, 'item ' || g FROM generate_series(1, 200) g;",
        )
        .await
        .expect("seed table");
    let seed = env.backup("seed").await;
    (env, seed)
}

/// Writes `seed` again into `repo` as a backup taken at `at` (validated `ok`, or not when
/// None), through the repository's own manifest writer; the seed itself is removed afterwards
/// by the caller.
pub async fn craft(
    repo: &Repository,
    seed: &Manifest,
    name: &str,
    at: DateTime<Utc>,
    ok: Option<bool>,
) -> String {
    let manifest = Manifest {
        id: new_backup_id(at),
        name: name.to_string(),
        created_at: at,
        completed_at: at + Duration::minutes(1),
        ..seed.clone()
    };
    repo.write_manifest(&manifest)
        .await
        .expect("write crafted manifest");
    if let Some(ok) = ok {
        repo.record_validation(&ValidationRecord {
            backup_id: manifest.id.clone(),
            at: at + Duration::minutes(2),
            ok,
            problems: usize::from(!ok),
            first_problem: (!ok).then(|| "Checksum verification failed: crafted".to_string()),
            rows_suspect: false,
        })
        .await
        .expect("record validation");
    }
    manifest.id
}

/// name → (decision, rule) from `backup prune --json`.
fn verdicts(out: &serde_json::Value) -> BTreeMap<String, (String, String)> {
    out["backups"]
        .as_array()
        .expect("backups in prune JSON")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().expect("name").to_string(),
                (
                    b["decision"].as_str().expect("decision").to_string(),
                    b["rule"].as_str().expect("rule").to_string(),
                ),
            )
        })
        .collect()
}

fn listed_names(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = env
        .run_json(&["backup", "list"])
        .as_array()
        .expect("backups in list JSON")
        .iter()
        .map(|b| b["name"].as_str().expect("name").to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn backups_failing_for_forty_days_keep_the_last_good_ones_on_every_target() {
    let (env, seed) = seeded("retention_forty_days").await;
    let offsite = env.work.path().join("offsite");
    env.write_config(&format!(
        "{}{}\n[[schedules]]\nname = \"daily-full\"\ntype = \"full\"\ncron = \"0 2 * * *\"\ntimezone = \"America/New_York\"\nretention = {{ keep_within = \"30d\", min_keep = 3 }}\n",
        fs_entry("local", &env.repo_dir()),
        fs_entry("offsite", &offsite),
    ));
    // Daily good backups until 41 days ago; since then every backup failed (none written).
    let now = Utc::now();
    for days_ago in 41..=50 {
        craft(
            &env.repo().await,
            &seed,
            &format!("good-{days_ago}"),
            now - Duration::days(days_ago),
            Some(true),
        )
        .await;
    }
    env.repo()
        .await
        .delete_manifest(&seed.id, &RetiredBy::delete("the test's seed".into()))
        .await
        .expect("remove the seed");
    env.run_ok(&["backup", "sync"]);

    let planned = env.run_json(&["backup", "prune", "--dry-run"]);
    let plan = verdicts(&planned);
    for kept in ["good-41", "good-42", "good-43"] {
        assert_eq!(
            plan[kept],
            ("keep".into(), "min_keep".into()),
            "{planned:#}"
        );
    }
    for days_ago in 44..=50 {
        assert_eq!(
            plan[&format!("good-{days_ago}")],
            ("delete".into(), "expired".into()),
            "{planned:#}"
        );
    }
    assert_eq!(listed_names(&env).len(), 10, "a dry run deletes nothing");

    let done = env.run_json(&["backup", "prune"]);
    assert_eq!(verdicts(&done), plan, "the run does what the dry run said");
    let targets = done["targets"].as_array().expect("targets");
    assert_eq!(
        targets.len(),
        2,
        "garbage collection on every target: {done:#}"
    );
    for target in targets {
        assert_eq!(
            target["backups_deleted"].as_array().map(Vec::len),
            Some(7),
            "{done:#}"
        );
    }
    assert_eq!(listed_names(&env), ["good-41", "good-42", "good-43"]);
    // The kept backups' chunks survived garbage collection on both targets.
    for target in ["local", "offsite"] {
        env.run_ok(&["backup", "validate", "latest", "--target", target]);
    }
    // A second prune deletes nothing more.
    let again = env.run_json(&["backup", "prune"]);
    assert!(
        verdicts(&again).values().all(|(d, _)| d == "keep"),
        "{again:#}"
    );
}

#[tokio::test]
async fn prune_keeps_daily_buckets_in_the_schedules_zone_pins_and_never_counts_suspects() {
    let (env, seed) = seeded("retention_rules").await;
    let config = |zone: &str| {
        format!(
            "[repository]\npath = \"{}\"\n[[schedules]]\nname = \"daily-full\"\ntype = \"full\"\ncron = \"0 2 * * *\"\ntimezone = \"{zone}\"\nretention = {{ keep_daily = 3 }}\n",
            env.repo_dir().display()
        )
    };
    // Two backups a UTC day, at 03:00 and 13:00 UTC: in New York (EST in winter, UTC-5)
    // 03:00 UTC is 22:00 the evening before, so the days' buckets differ from UTC's.
    let day0 = (Utc::now() - Duration::days(10))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    // Winter in New York or summer, the offsets (-5 or -4) put 03:00 UTC into the day before.
    let at = |day: i64, hour: i64| day0 + Duration::days(day) + Duration::hours(hour);
    let repo = env.repo().await;
    let b1 = craft(&repo, &seed, "b1", at(0, 13), Some(true)).await;
    let b2 = craft(&repo, &seed, "b2", at(1, 3), Some(true)).await;
    craft(&repo, &seed, "b3", at(1, 13), None).await;
    craft(&repo, &seed, "b4", at(2, 3), Some(true)).await;
    craft(&repo, &seed, "b5", at(2, 13), Some(true)).await;
    craft(&repo, &seed, "b6", at(3, 3), Some(false)).await;
    craft(&repo, &seed, "b7", at(3, 13), Some(true)).await;
    env.repo()
        .await
        .delete_manifest(&seed.id, &RetiredBy::delete("the test's seed".into()))
        .await
        .expect("remove the seed");

    env.write_config(&config("America/New_York"));
    let pinned = env.run_json(&["backup", "pin", &b1, "--reason", "audit 2026"]);
    assert_eq!(
        pinned["targets"],
        serde_json::json!(["local"]),
        "{pinned:#}"
    );
    let tomorrow = (Utc::now() + Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    env.run_ok(&["backup", "pin", &b2, "--until", &tomorrow]);
    // A pin keeps a backup from a hand's delete too, and says how to lift it.
    let refused = env.run(&["backup", "delete", &b1, "--force"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        crate::support::text(&refused)
    );
    let said = crate::support::text(&refused);
    assert!(
        said.contains(&format!(
            "backup {b1} is pinned (until unpinned: audit 2026)"
        )) && said.contains(&format!("backup-cli backup unpin {b1}")),
        "{said}"
    );
    let out = env.run_json(&["backup", "prune", "--dry-run"]);
    let expected = |rows: &[(&str, &str, &str)]| -> BTreeMap<String, (String, String)> {
        rows.iter()
            .map(|(n, d, r)| (n.to_string(), (d.to_string(), r.to_string())))
            .collect()
    };
    assert_eq!(
        verdicts(&out),
        expected(&[
            ("b1", "keep", "pinned"),
            ("b2", "keep", "pinned"),
            ("b3", "delete", "expired"),
            ("b4", "keep", "keep_daily"),
            ("b5", "keep", "keep_daily"),
            ("b6", "delete", "suspect"),
            ("b7", "keep", "keep_daily"),
        ]),
        "New York days: b7 (day 3), b5 (day 2; suspect b6 fills no slot), b4 (the newest of day 1): {out:#}"
    );
    let b1_row = out["backups"]
        .as_array()
        .and_then(|rows| rows.iter().find(|b| b["name"] == "b1"))
        .expect("b1");
    assert!(
        b1_row["detail"]
            .as_str()
            .is_some_and(|d| d.contains("audit 2026")),
        "{b1_row:#}"
    );

    // In UTC the newest of day 1 is b3, not b4.
    env.write_config(&config("UTC"));
    let utc = verdicts(&env.run_json(&["backup", "prune", "--dry-run"]));
    assert_eq!(utc["b3"], ("keep".into(), "keep_daily".into()));
    assert_eq!(utc["b4"], ("delete".into(), "expired".into()));

    env.write_config(&config("America/New_York"));
    env.run_ok(&["backup", "unpin", &b2]);
    let unpinned = verdicts(&env.run_json(&["backup", "prune"]));
    assert_eq!(unpinned["b2"], ("delete".into(), "expired".into()));
    assert_eq!(listed_names(&env), ["b1", "b4", "b5", "b7"]);
    let again = env.run(&["backup", "unpin", &b2]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "unpinning what is not pinned is refused"
    );
    env.run_ok(&["backup", "validate", &b1]);
}

/// A cluster with two databases of different classes, `kitchen_pantry` (critical, the
/// entry `kitchen`) and `reports` (non-critical), each with a small table; and the
/// configuration's `[repository]` and `[[databases]]` for them.
pub async fn two_databases() -> (TestEnv, String) {
    let env = TestEnv::start("kitchen_pantry").await;
    env.admin()
        .await
        .batch_execute("CREATE DATABASE reports")
        .await
        .expect("second database");
    for db in ["kitchen_pantry", "reports"] {
        env.client_for(db)
            .await
            .batch_execute(&format!(
                "CREATE TABLE {db}_rows (id int PRIMARY KEY); INSERT INTO {db}_rows SELECT generate_series(1, 50);"
            ))
            .await
            .expect("seed");
    }
    let reports_url = env.url().replace("/kitchen_pantry?", "/reports?");
    let config = format!(
        "[repository]\npath = \"{}\"\n\
         [[databases]]\nname = \"kitchen\"\nurl = \"{}\"\nclass = \"critical\"\n\
         [[databases]]\nname = \"reports\"\nurl = \"{reports_url}\"\nclass = \"non-critical\"\n",
        env.repo_dir().display(),
        env.url(),
    );
    (env, config)
}

#[tokio::test]
async fn two_databases_of_different_classes_each_backed_up_and_judged_by_its_own_rpo() {
    let (env, databases) = two_databases().await;
    env.write_config(&format!(
        "{databases}[[schedules]]\nname = \"kitchen-daily\"\ndatabase = \"kitchen\"\ntype = \"full\"\ncron = \"0 2 * * *\"\nretention = \"30d\"\n\
         [[schedules]]\nname = \"reports-daily\"\ndatabase = \"reports\"\ntype = \"full\"\ncron = \"0 3 * * *\"\nretention = {{ keep_last = 1 }}\n",
    ));
    let refused = env.run(&["backup", "create"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        crate::support::text(&refused).contains(
            "several databases are configured (kitchen, reports); choose one with --db NAME"
        ),
        "{}",
        crate::support::text(&refused)
    );
    let kitchen = env.run_json(&["backup", "create", "--db", "kitchen", "-n", "kitchen-1"]);
    let reports = env.run_json(&["backup", "create", "--db", "reports", "-n", "reports-1"]);
    let id = |v: &serde_json::Value| v["backup"]["id"].as_str().expect("id").to_string();
    let (kitchen_id, reports_id) = (id(&kitchen), id(&reports));

    // Both backups finished three hours ago: past the critical RPO (1 h), within the
    // non-critical one (24 h).
    let repo = env.repo().await;
    for backup in [&kitchen_id, &reports_id] {
        let m = repo.read_manifest(backup).await.expect("manifest");
        let at = Utc::now() - Duration::hours(3);
        repo.write_manifest(&Manifest {
            created_at: at,
            completed_at: at + Duration::minutes(1),
            ..m
        })
        .await
        .expect("age the backup");
    }
    let out = env.run(&["--json", "monitor", "health"]);
    let health = crate::support::reported(&out);
    let check = |name: &str| {
        health["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("no check {name}: {health:#}"))
            .clone()
    };
    assert_eq!(check("database kitchen")["status"], "ok", "{health:#}");
    assert_eq!(check("database reports")["status"], "ok", "{health:#}");
    let critical = check("latest backup kitchen");
    assert_eq!(critical["status"], "warn", "{critical:#}");
    assert!(
        critical["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&kitchen_id) && d.contains("RPO 1h")),
        "{critical:#}"
    );
    let relaxed = check("latest backup reports");
    assert_eq!(relaxed["status"], "ok", "{relaxed:#}");
    assert!(
        relaxed["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&reports_id) && d.contains("RPO 1day")),
        "{relaxed:#}"
    );

    // Each schedule counts its own database's backups; --db narrows the listing.
    let schedules = env.run_json(&["schedule", "list"]);
    let last = |name: &str| {
        schedules
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .map(|s| s["last_backup_id"].clone())
            .unwrap_or_else(|| panic!("no schedule {name}: {schedules:#}"))
    };
    assert_eq!(last("kitchen-daily"), serde_json::json!(kitchen_id));
    assert_eq!(last("reports-daily"), serde_json::json!(reports_id));
    let listed = env.run_json(&["backup", "list", "--db", "reports"]);
    let ids: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, [reports_id.as_str()]);
    // A second backup of reports: its keep_last = 1 prunes the first, kitchen's stays.
    env.run_ok(&["backup", "create", "--db", "reports", "-n", "reports-2"]);
    let pruned = verdicts(&env.run_json(&["backup", "prune", "--db", "reports"]));
    assert_eq!(pruned.len(), 2, "only the reports backups: {pruned:?}");
    assert_eq!(
        pruned.values().filter(|(d, _)| d == "delete").count(),
        1,
        "{pruned:?}"
    );
    let all = env.run_json(&["backup", "list"]);
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all:#}");
    // --limit counts kitchen's backups, not the newest of all (reports-2) filtered away.
    let newest_kitchen = env.run_json(&["backup", "list", "--db", "kitchen", "--limit", "1"]);
    let ids: Vec<&str> = newest_kitchen
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, [kitchen_id.as_str()], "{newest_kitchen:#}");

    // A backup taken as a schedule would: its database without --db, its name recorded.
    let scheduled = env.run_json(&["backup", "create", "--schedule", "reports-daily"]);
    let scheduled_id = id(&scheduled);
    let m = repo.read_manifest(&scheduled_id).await.expect("manifest");
    assert_eq!(
        (m.source.database.as_str(), m.schedule.as_deref()),
        ("reports", Some("reports-daily"))
    );
    let wrong_db = env.run(&[
        "backup",
        "create",
        "--schedule",
        "reports-daily",
        "--db",
        "kitchen",
    ]);
    assert_eq!(wrong_db.status.code(), Some(2));
    assert!(
        crate::support::text(&wrong_db)
            .contains("that schedule backs up database 'reports', not 'kitchen'"),
        "{}",
        crate::support::text(&wrong_db)
    );
    let unknown = env.run(&["backup", "create", "--schedule", "hourly"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        crate::support::text(&unknown).contains(
            "--schedule hourly: no [[schedules]] entry has that name; the configured ones are: kitchen-daily, reports-daily"
        ),
        "{}",
        crate::support::text(&unknown)
    );

    // The table names each schedule's database; config show names each database's class.
    let table = crate::support::text(&env.run_ok(&["--wide", "schedule", "list"]));
    let header = table
        .lines()
        .find(|l| l.contains("NAME"))
        .unwrap_or_default();
    assert!(header.contains("DATABASE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("reports-daily") && l.contains(" reports ")),
        "{table}"
    );
    let shown = env.run_json(&["config", "show"]).to_string();
    assert!(
        shown.contains("databases.kitchen (resolved)")
            && shown.contains("class critical (RPO 1h, RTO 2h)")
            && shown.contains("databases.reports (resolved)")
            && shown.contains("class non-critical (RPO 1day, RTO 8h)")
            && !shown.contains("\"database.url\""),
        "{shown}"
    );
}
