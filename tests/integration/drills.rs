//! Restore drills (`recovery drill`): the runbook's monthly restore test into a throwaway
//! PostgreSQL the tool starts itself, measured against the RTO and recorded; the throwaway
//! cluster is gone afterwards whether the drill passed, a check failed or Ctrl-C stopped it;
//! a drill that misses its RTO raises "Drill Failed" to a real HTTP receiver; with `[drill]
//! target_url` a drill restores into a new database on that server, dropped afterwards (also
//! when a check fails), kept with `--keep`, and an existing one is never touched.

use crate::support::{HttpReceiver, TestEnv, data, envelope, plugin_path, text};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A folder for the drill's throwaway clusters ($TMPDIR of the drill), which the `postgres`
/// account can reach: it must be empty again after every drill.
pub fn scratch_root() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("larder-drill-test-")
        .tempdir()
        .expect("scratch folder");
    let mut perms = std::fs::metadata(dir.path())
        .expect("scratch folder metadata")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.path(), perms).expect("scratch folder permissions");
    dir
}

pub fn leftovers(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .expect("read the scratch folder")
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// `backup-cli args` with the drill's throwaway clusters under `root`.
fn drill_run(env: &TestEnv, root: &Path, args: &[&str]) -> std::process::Output {
    env.cli()
        .env("TMPDIR", root)
        .args(args)
        .output()
        .expect("run backup-cli")
}

/// A shop with 100 customers (one with an odd name) and 300 orders.
async fn shop(env: &TestEnv) {
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
             INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 99) g;
             INSERT INTO customers VALUES (100, 'Odd One');
             CREATE TABLE orders (id integer PRIMARY KEY, customer integer NOT NULL REFERENCES customers, total numeric(10,2));
             INSERT INTO orders SELECT g, 1 + g % 100, g * 1.5 FROM generate_series(1, 300) g;",
        )
        .await
        .expect("the shop's data");
}

fn config(env: &TestEnv, extra: &str) -> String {
    format!(
        r#"
[repository]
path = "{repo}"

[plugins]
cache_dir = "{cache}"

[[validators]]
name = "rules"
path = "{plugin}"
config = {{ rules = [ {{ table = "public.customers", column = "name", pattern = '^customer \d+$', severity = "warning" }} ] }}

[[drill.checks]]
name = "every customer is back"
sql = "SELECT count(*) FROM customers"
expect = 100

[[drill.checks]]
sql = "SELECT name FROM customers WHERE id = 7"
expect = "customer 7"

[[drill.checks]]
name = "big orders"
sql = "SELECT id FROM orders WHERE total > 400"
expect = {{ rows = 34 }}
{extra}
"#,
        repo = env.repo_dir().display(),
        cache = env.work.path().join("plugin-cache").display(),
        plugin = plugin_path("rules_validator.wasm").display(),
    )
}

fn names(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_restores_into_a_throwaway_cluster_measures_the_rto_and_leaves_nothing_behind() {
    let env = TestEnv::start("shop").await;
    shop(&env).await;
    env.write_config(&config(&env, ""));
    let backup = env.backup("nightly").await;
    let root = scratch_root();

    let out = drill_run(
        &env,
        root.path(),
        &["--json", "recovery", "drill", "latest"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let drill = data(&envelope(&out));
    assert_eq!(drill["outcome"], "passed", "{drill}");
    assert_eq!(drill["backup_id"], backup.id.as_str());
    assert_eq!(drill["database"], "shop");
    assert_eq!(drill["chosen"], "latest");
    assert_eq!(
        drill["point_in_time"]
            .as_str()
            .map(|t| t.starts_with(&backup.created_at.format("%Y-%m-%dT%H:%M:%S").to_string())),
        Some(true),
        "{drill}"
    );
    // Each step timed, the restore's own among them, in order.
    let steps = names(&drill["steps"]);
    assert_eq!(
        steps,
        [
            "start-cluster",
            "plan",
            "create-database",
            "schema",
            "load",
            "post-data",
            "sequences",
            "vacuum-analyze",
            "event-triggers",
            "verify",
            "rename",
            "validators",
            "checks"
        ],
        "{drill}"
    );
    let total: f64 = drill["recovery_seconds"].as_f64().expect("recovery time");
    let summed: f64 = drill["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["seconds"].as_f64().expect("seconds"))
        .sum();
    assert!(total > 0.0 && summed <= total + 0.01, "{total} {summed}");
    assert!(drill["restore_seconds"].as_f64().expect("restore time") > 0.0);
    // The standard class: RTO 4 h, RPO 4 h (runbook); a fresh backup meets both.
    assert_eq!(drill["rto_seconds"], 4.0 * 3600.0);
    assert_eq!(drill["rto_met"], true);
    assert_eq!(drill["rpo_seconds"], 4.0 * 3600.0);
    assert_eq!(drill["rpo_met"], true);
    assert_eq!(drill["tables"], 2);
    assert_eq!(drill["rows"], 400);
    assert_eq!(drill["verification"], "checksums");
    assert_eq!(drill["restore"]["ok"], true);
    // The validator read the restored rows: the odd name is its (warning) finding.
    let findings = &drill["validators"][0]["findings"];
    assert_eq!(findings.as_array().map(Vec::len), Some(1), "{drill}");
    assert_eq!(findings[0]["rule"], "pattern");
    assert_eq!(findings[0]["count"], 1);
    let checks = drill["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| c["ok"] == true), "{drill}");
    assert_eq!(checks[0]["name"], "every customer is back");
    assert_eq!(checks[0]["got"], "100");
    assert_eq!(checks[1]["name"], "SELECT name FROM customers WHERE id = 7");
    assert_eq!(checks[1]["got"], "customer 7");
    assert_eq!(checks[2]["got"], "34 row(s)");
    // The throwaway cluster: stopped and removed.
    let scratch = &drill["scratch"];
    assert_eq!(scratch["kind"], "throwaway-cluster");
    assert_eq!(scratch["database"], "shop");
    assert_eq!(scratch["removed"], true);
    assert_eq!(scratch["kept"], false);
    let data_dir = scratch["data_dir"].as_str().expect("the cluster's folder");
    assert!(data_dir.starts_with(root.path().to_str().expect("path")));
    assert!(!Path::new(data_dir).exists(), "{data_dir} is left");
    assert_eq!(leftovers(root.path()), Vec::<PathBuf>::new());
    let port: u16 = scratch["server"]
        .as_str()
        .and_then(|s| s.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("the cluster's port");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the throwaway PostgreSQL still listens on {port}"
    );

    // Recorded: `recovery drills` lists it, and the plan estimates from it.
    let out = env.run(&["--json", "recovery", "drills"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let drills = data(&envelope(&out));
    let drills = drills.as_array().expect("drills");
    assert_eq!(drills.len(), 1);
    assert_eq!(drills[0]["drill_id"], drill["drill_id"]);
    assert_eq!(drills[0]["rto_met"], true);
    assert_eq!(drills[0]["steps"], drill["steps"]);
    let said = text(&env.run_ok(&["recovery", "drills"]));
    assert!(
        said.contains("passed") && said.contains(&backup.id),
        "{said}"
    );
    let plan = env.run_json(&["recovery", "plan", "latest", "-s", "new-database"]);
    let basis = plan["estimate_basis"].as_str().unwrap_or_default();
    assert!(
        basis.starts_with("the last restore drill in this size class"),
        "{plan}"
    );

    // A check that fails: the drill fails (exit 1), says which, and still removes the cluster.
    env.write_config(&config(
        &env,
        "[[drill.checks]]\nname = \"one customer too many\"\nsql = \"SELECT count(*) FROM customers\"\nexpect = 101\n",
    ));
    // (the human report this time, for a named backup)
    let out = drill_run(
        &env,
        root.path(),
        &["recovery", "drill", backup.id.as_str()],
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "error: Drill Failed: check 'one customer too many' expected value 101, got 100"
        ),
        "{said}"
    );
    assert!(said.contains("FAILED"), "{said}");
    assert!(said.contains("removed afterwards"), "{said}");
    assert!(said.contains("against an RTO of 4h: MISSED."), "{said}");
    assert_eq!(leftovers(root.path()), Vec::<PathBuf>::new());
    let drills = env.run_json(&["recovery", "drills", "-l", "1"]);
    assert_eq!(drills.as_array().map(Vec::len), Some(1));
    let drill = &drills[0];
    assert_eq!(drill["outcome"], "failed");
    assert_eq!(drill["chosen"], backup.id.as_str());
    assert_eq!(
        drill["rto_met"], false,
        "a failed drill recovers nothing in time"
    );
    assert_eq!(drill["checks"][3]["ok"], false);
    assert_eq!(drill["checks"][3]["got"], "100");
    assert_eq!(drill["scratch"]["removed"], true);
}

/// A function that sleeps for a minute when called in a database being restored (named
/// `*_larder_partial`): an index on it holds the drill in its post-data step.
const SLOW_INDEX: &str = "
CREATE FUNCTION public.slow(x integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF pg_catalog.current_database() LIKE '%larder_partial' THEN
        PERFORM pg_catalog.pg_sleep(60);
    END IF;
    RETURN x;
END $$;
CREATE TABLE t (id integer PRIMARY KEY);
INSERT INTO t VALUES (1);
CREATE INDEX t_slow ON t (public.slow(id));";

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_a_drill_removes_the_throwaway_cluster_and_records_the_interruption() {
    let env = TestEnv::start("shop").await;
    env.client()
        .await
        .batch_execute(SLOW_INDEX)
        .await
        .expect("schema");
    let backup = env.backup("nightly").await;
    let root = scratch_root();
    let mut child = env
        .cli()
        .env("TMPDIR", root.path())
        .args(["-v", "recovery", "drill", "latest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the drill");
    // Wait, from its log, until the restore builds the slow index.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            // A new database builds a table's indexes in the load step, once its rows are in.
            if line.contains(": load") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(50))
        .expect("the drill never reached the load step");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        leftovers(root.path()).len(),
        1,
        "the throwaway cluster runs"
    );
    crate::support::send(&child, "INT");
    let started = Instant::now();
    let status = child.wait().expect("wait for the drill");
    let said = reader.join().expect("stderr reader");
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the drill did not stop promptly"
    );
    assert!(
        said.contains(&format!("the drill of backup {} stopped", backup.id)),
        "{said}"
    );
    assert!(
        said.contains("the throwaway PostgreSQL was removed"),
        "{said}"
    );
    assert!(said.contains("recorded as interrupted"), "{said}");
    assert_eq!(leftovers(root.path()), Vec::<PathBuf>::new(), "{said}");
    let drills = env.run_json(&["recovery", "drills"]);
    assert_eq!(drills[0]["outcome"], "interrupted", "{drills}");
    assert_eq!(drills[0]["scratch"]["removed"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_that_misses_an_impossible_rto_raises_drill_failed_to_a_real_receiver() {
    let env = TestEnv::start("shop").await;
    shop(&env).await;
    let hooks = HttpReceiver::start();
    let alerting = |rto: &str| {
        format!(
            "[repository]\npath = \"{repo}\"\n[plugins]\ncache_dir = \"{cache}\"\n\
             [objectives]\nclass = \"critical\"\n[objectives.rto]\ncritical = \"{rto}\"\n\
             [alerts]\nstate_dir = \"{state}\"\nretry_for = \"1s\"\n\n\
             [[notifiers]]\nname = \"dba\"\npath = \"{plugin}\"\nconfig = {{ url = \"{url}\" }}\n\
             allow_hosts = [\"127.0.0.1:{port}\"]\n",
            repo = env.repo_dir().display(),
            cache = env.work.path().join("plugin-cache").display(),
            state = env.work.path().join("alert-state").display(),
            plugin = plugin_path("webhook_notifier.wasm").display(),
            url = hooks.url("/dba"),
            port = hooks.port,
        )
    };
    env.write_config(&alerting("10ms"));
    let backup = env.backup("nightly").await;
    let root = scratch_root();

    let out = drill_run(&env, root.path(), &["--json", "recovery", "drill"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = envelope(&out);
    assert_eq!(failed["kind"], "drill_failed", "{failed}");
    let drill = data(&failed);
    assert_eq!(drill["outcome"], "failed");
    assert_eq!(drill["restore"]["ok"], true, "the restore itself worked");
    assert_eq!(drill["rto_seconds"], 0.01);
    assert_eq!(drill["rto_met"], false);
    assert!(
        drill["error"]
            .as_str()
            .unwrap_or_default()
            .contains("against a recovery-time objective of 10ms"),
        "{drill}"
    );
    assert_eq!(drill["alerts"][0]["alert"], "Drill Failed");
    assert_eq!(drill["alerts"][0]["ok"], true, "{drill}");
    assert_eq!(leftovers(root.path()), Vec::<PathBuf>::new());

    let got = hooks.requests("/dba");
    assert_eq!(got.len(), 1, "{}", text(&out));
    let event = got[0].json();
    assert_eq!(event["alert"], "Drill Failed");
    assert_eq!(event["state"], "firing");
    assert_eq!(event["backup_id"], backup.id.as_str());
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("of backup {} (shop) failed", backup.id))
            && message.contains("recovery-time objective of 10ms"),
        "{message}"
    );
    assert!(
        event["action"]
            .as_str()
            .unwrap_or_default()
            .contains("slower than the objective"),
        "{event}"
    );
    let recorded = env.run_json(&["recovery", "drills"]);
    assert_eq!(recorded[0]["rto_met"], false);

    // With the runbook's 2 h the next drill passes and resolves the alert.
    env.write_config(&alerting("2h"));
    let out = drill_run(&env, root.path(), &["--json", "recovery", "drill"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = hooks.requests("/dba");
    assert_eq!(got.len(), 2, "{}", text(&out));
    assert_eq!(got[1].json()["alert"], "Drill Failed");
    assert_eq!(got[1].json()["state"], "resolved");
}

/// Whether the cluster has a database of that name.
async fn database_exists(env: &TestEnv, name: &str) -> bool {
    env.admin()
        .await
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("pg_database")
        .is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_on_a_target_url_server_restores_into_a_new_database_and_drops_it_afterwards() {
    let env = TestEnv::start("shop").await;
    shop(&env).await;
    // The drill server: this same cluster, through its postgres database.
    let server = env.url().replace("/shop?", "/postgres?");
    env.write_config(&config(
        &env,
        &format!("[drill]\ntarget_url = \"{server}\"\n"),
    ));
    let backup = env.backup("nightly").await;
    let scratch_db = format!("shop_drill_{}", backup.id.replace('-', "_"));

    let drill = env.run_json(&["recovery", "drill", "latest"]);
    assert_eq!(drill["outcome"], "passed", "{drill:#}");
    assert_eq!(drill["scratch"]["kind"], "server");
    assert_eq!(drill["scratch"]["database"], scratch_db.as_str());
    assert_eq!(drill["scratch"]["removed"], true, "{drill:#}");
    assert_eq!(drill["rows"], 400);
    assert!(
        drill["checks"]
            .as_array()
            .is_some_and(|c| c.len() == 3 && c.iter().all(|c| c["ok"] == true)),
        "{drill:#}"
    );
    let steps = names(&drill["steps"]);
    assert_eq!(steps.first().map(String::as_str), Some("plan"), "{steps:?}");
    assert!(
        !database_exists(&env, &scratch_db).await,
        "dropped afterwards"
    );
    assert!(
        database_exists(&env, "shop").await,
        "the source is untouched"
    );

    // --keep leaves it, and says how to drop it.
    let kept = env.run_json(&["recovery", "drill", "latest", "--keep"]);
    assert_eq!(kept["outcome"], "passed", "{kept:#}");
    assert_eq!(kept["scratch"]["kept"], true);
    let note = kept["scratch"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(&format!("DROP DATABASE {scratch_db}")),
        "{note}"
    );
    assert!(database_exists(&env, &scratch_db).await);
    // A drill that finds it there refuses, and never drops what it did not create.
    let out = env.run(&["--json", "recovery", "drill", "latest"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let refused = data(&envelope(&out));
    assert_eq!(refused["outcome"], "failed", "{refused:#}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("database {scratch_db} already exists"))),
        "{refused:#}"
    );
    assert!(
        database_exists(&env, &scratch_db).await,
        "the kept database is left alone"
    );
    env.admin()
        .await
        .batch_execute(&format!("DROP DATABASE {scratch_db}"))
        .await
        .expect("drop the kept drill database");

    // A failing check: the drill fails and its database is dropped all the same.
    env.write_config(&config(
        &env,
        &format!(
            "[drill]\ntarget_url = \"{server}\"\n\n[[drill.checks]]\nname = \"one customer too many\"\nsql = \"SELECT count(*) FROM customers\"\nexpect = 101\n"
        ),
    ));
    let out = env.run(&["--json", "recovery", "drill", "latest"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = data(&envelope(&out));
    assert_eq!(failed["outcome"], "failed", "{failed:#}");
    assert_eq!(failed["scratch"]["removed"], true, "{failed:#}");
    assert!(
        !database_exists(&env, &scratch_db).await,
        "dropped after the failure"
    );
}
