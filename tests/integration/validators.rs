//! Validator plugins (`[[validators]]`, the `rules-validator` plugin) on the rows a backup
//! streams (and `backup validate` re-reads): a mass DELETE makes the next backup suspect (kept,
//! listed, exit 1, passed over by `latest`, "Backup Validation Failed" delivered to a real
//! receiver), and the column rules catch purpose-made bad data.

use crate::support::{HttpReceiver, TestEnv, data, envelope, plugin_path, reported, text};

/// A configuration with the test's repository and one `rules-validator` entry with `rules`
/// (TOML inline array).
fn config_with_rules(env: &TestEnv, rules: &str) -> String {
    format!(
        r#"
[repository]
path = "{repo}"

[plugins]
cache_dir = "{cache}"

[[validators]]
name = "rules"
path = "{plugin}"
config = {{ rules = {rules} }}
"#,
        repo = env.repo_dir().display(),
        cache = env.work.path().join("plugin-cache").display(),
        plugin = plugin_path("rules_validator.wasm").display(),
    )
}

/// `backup create --json` that must fail with exit 1 (status `failed`, kind `backup_suspect`);
/// returns its report and all output.
fn suspect_backup(env: &TestEnv, name: &str) -> (serde_json::Value, String) {
    let out = env.run(&["--json", "backup", "create", "-n", name]);
    let all = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a suspect backup exits 1:\n{all}"
    );
    let envelope = envelope(&out);
    assert_eq!(envelope["status"], "failed", "{envelope}");
    assert_eq!(envelope["kind"], "backup_suspect", "{envelope}");
    (data(&envelope), all)
}

#[tokio::test]
async fn a_mass_delete_makes_the_next_backup_suspect_kept_listed_and_passed_over_by_latest() {
    let env = TestEnv::start("validators_shrink").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE contacts (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO contacts SELECT g, 'contact ' || g FROM generate_series(1, 500) g;",
        )
        .await
        .expect("source data");
    let hooks = HttpReceiver::start();
    env.write_config(&format!(
        "{}\n[alerts]\nstate_dir = \"{state}\"\nretry_for = \"1s\"\n\n[[notifiers]]\nname = \"dba\"\npath = \"{hook}\"\nconfig = {{ url = \"{url}\" }}\nallow_hosts = [\"127.0.0.1:{port}\"]\n",
        config_with_rules(
            &env,
            r#"[ { table = "public.contacts", max_shrink_percent = 20 }, { table = "*", min_rows = 1 } ]"#,
        ),
        state = env.work.path().join("alert-state").display(),
        hook = plugin_path("webhook_notifier.wasm").display(),
        url = hooks.url("/dba"),
        port = hooks.port,
    ));

    let first = env.run_json(&["backup", "create", "-n", "before"]);
    assert_eq!(first["backup"]["status"], "complete", "{first}");
    assert_eq!(first["validators"][0]["name"], "rules");
    assert_eq!(first["validators"][0]["plugin"], "rules-validator");
    assert_eq!(
        first["validators"][0]["findings"],
        serde_json::json!([]),
        "{first}"
    );
    let good = first["backup"]["id"].as_str().expect("id").to_string();

    // The ransomware signal: 80 % of the table gone between two backups.
    env.client()
        .await
        .batch_execute("DELETE FROM contacts WHERE id > 100")
        .await
        .expect("mass delete");
    let (report, all) = suspect_backup(&env, "after");
    assert!(all.contains("Backup Validation Failed"), "{all}");
    assert_eq!(report["backup"]["status"], "suspect", "{report}");
    let findings = report["validators"][0]["findings"]
        .as_array()
        .expect("findings");
    assert_eq!(findings.len(), 1, "{report}");
    let finding = &findings[0];
    assert_eq!(finding["rule"], "max_shrink_percent");
    assert_eq!(finding["table"], "public.contacts");
    assert_eq!(finding["severity"], "error");
    assert_eq!(finding["count"], 400);
    let message = finding["message"].as_str().expect("message");
    assert!(
        message.contains("80.0% fewer than the 500") && message.contains(&good),
        "{message}"
    );
    let suspect = report["backup"]["id"].as_str().expect("id").to_string();

    // The alert room delivered "Backup Validation Failed" once, about this database and backup
    // (the clean backup before it sent nothing).
    let sent = hooks.requests("/dba");
    assert_eq!(sent.len(), 1, "{all}");
    let event = sent[0].json();
    assert_eq!(event["alert"], "Backup Validation Failed", "{event}");
    assert_eq!(event["state"], "firing");
    assert_eq!(event["database"], env.dbname.as_str());
    assert_eq!(event["backup_id"], suspect.as_str());
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_shrink_percent")),
        "{event}"
    );
    assert!(
        event["action"]
            .as_str()
            .is_some_and(|a| a.contains(&format!("backup-cli backup validate {suspect}"))),
        "{event}"
    );
    assert!(all.contains("1 alert(s) sent"), "{all}");

    // Kept and listed as suspect; the manifest says why.
    let list = env.run_json(&["backup", "list"]);
    let listed = list
        .as_array()
        .expect("list")
        .iter()
        .find(|b| b["id"] == suspect.as_str())
        .unwrap_or_else(|| panic!("suspect backup listed: {list}"));
    assert_eq!(listed["status"], "suspect");
    assert!(
        listed["suspect_because"]
            .as_str()
            .is_some_and(|w| w.contains("public.contacts")),
        "{listed}"
    );
    let manifest = env
        .repo()
        .await
        .read_manifest(&suspect)
        .await
        .expect("suspect manifest kept");
    assert!(manifest.is_suspect());
    let human = text(&env.run_ok(&["backup", "list"]));
    assert!(
        human.contains(&format!("backup {suspect} is SUSPECT")),
        "{human}"
    );

    // `backup validate` re-reads the rows through the validators: the good backup passes,
    // the suspect one fails again with the same finding.
    let validated = env.run_json(&["backup", "validate", &good]);
    assert_eq!(validated["ok"], true, "{validated}");
    assert_eq!(
        validated["validators"][0]["findings"],
        serde_json::json!([]),
        "{validated}"
    );
    let out = env.run(&["--json", "backup", "validate", &suspect]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("Backup Validation Failed"), "{said}");
    let printed = envelope(&out);
    assert_eq!(printed["status"], "failed", "{printed}");
    assert_eq!(printed["kind"], "backup_suspect", "{printed}");
    let revalidated = data(&printed);
    assert_eq!(
        revalidated["validators"][0]["findings"][0]["rule"], "max_shrink_percent",
        "{revalidated}"
    );
    assert_eq!(revalidated["ok"], true, "every chunk intact: {revalidated}");

    // `latest` passes over it, saying why.
    let resolved = env
        .repo()
        .await
        .select("latest", &env.dbname)
        .await
        .expect("latest");
    assert_eq!(resolved.manifest.id, good);
    assert!(
        resolved.passed_over[0].contains("suspect: validator 'rules'"),
        "{:?}",
        resolved.passed_over
    );

    // The rows are back: the next backup passes its validators and resolves the alert.
    env.client()
        .await
        .batch_execute(
            "INSERT INTO contacts SELECT g, 'contact ' || g FROM generate_series(101, 500) g",
        )
        .await
        .expect("rows back");
    env.run_ok(&["backup", "create", "-n", "fixed"]);
    let sent = hooks.requests("/dba");
    assert_eq!(sent.len(), 2);
    let resolve = sent[1].json();
    assert_eq!(resolve["state"], "resolved", "{resolve}");
    assert_eq!(resolve["id"], event["id"]);
}

#[tokio::test]
async fn not_null_unique_pattern_and_null_share_rules_catch_purpose_made_data() {
    let env = TestEnv::start("validators_columns").await;
    env.client()
        .await
        .batch_execute(
            r#"CREATE TABLE users (id int, email text, "Nick Name" text, note text);
             INSERT INTO users VALUES
               (1, 'ann@example.com', 'ann', NULL),
               (2, 'bob@example.com', E'tab\there', NULL),
               (3, NULL, 'nobody', NULL),
               (4, 'ann@example.com', 'twin', 'x'),
               (5, 'not-an-address', E'line\nbreak', NULL);"#,
        )
        .await
        .expect("purpose-made data");
    env.write_config(&config_with_rules(
        &env,
        r#"[
  { table = "users", column = "email", not_null = true, unique = true, pattern = '^[^@\s]+@[^@\s]+$' },
  { table = "public.users", column = "Nick Name", pattern = '^\S+$', severity = "warning" },
  { table = "public.users", column = "note", max_null_percent = 50 },
  { table = "public.users", column = "missing", not_null = true }
]"#,
    ));
    let (report, all) = suspect_backup(&env, "columns");
    let findings = report["validators"][0]["findings"]
        .as_array()
        .expect("findings");
    let find = |rule: &str, column: &str| {
        findings
            .iter()
            .find(|f| f["rule"] == rule && f["column"] == column)
            .unwrap_or_else(|| panic!("no {rule} finding on {column}:\n{all}"))
    };
    assert_eq!(find("not_null", "email")["count"], 1);
    assert_eq!(find("unique", "email")["count"], 1, "ann@ twice");
    assert_eq!(find("pattern", "email")["count"], 1, "NULL is not checked");
    // Decoded values: the tab and the line break inside values are seen as such.
    let nick = find("pattern", "Nick Name");
    assert_eq!(nick["count"], 2);
    assert_eq!(nick["severity"], "warning");
    let nulls = find("max_null_percent", "note");
    assert_eq!(nulls["count"], 4);
    assert!(
        nulls["message"]
            .as_str()
            .is_some_and(|m| m.contains("80.0%")),
        "{nulls}"
    );
    let missing = find("column", "missing");
    assert_eq!(missing["severity"], "warning");
    assert!(all.contains("Backup Validation Failed"), "{all}");
    assert!(
        all.contains("validator 'rules', rule not_null: public.users.email is NULL in 1 of 5 rows"),
        "{all}"
    );
}

#[test]
fn plugin_inspect_and_list_show_the_validator_and_notifier_worlds_and_their_grants() {
    let work = tempfile::tempdir().expect("temporary folder");
    let config = work.path().join("larder.toml");
    let plugin = plugin_path("rules_validator.wasm");
    let notifier_entry = format!(
        "[[notifiers]]\nname = \"ops\"\npath = \"{}\"\nconfig = {{ url = \"https://hooks.example/larder\" }}\nallow_hosts = [\"hooks.example\"]\n",
        plugin_path("webhook_notifier.wasm").display()
    );
    std::fs::write(
        &config,
        format!(
            "[repository]\npath = \"{repo}\"\n[plugins]\ncache_dir = \"{cache}\"\n\n[[validators]]\nname = \"rules\"\npath = \"{plugin}\"\nconfig = {{ rules = [ {{ table = \"*\", min_rows = 1 }} ] }}\n\n{notifier}",
            repo = work.path().join("repo").display(),
            cache = work.path().join("cache").display(),
            plugin = plugin.display(),
            notifier = notifier_entry,
        ),
    )
    .expect("config");
    let run = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_backup-cli"))
            .env("BACKUP_CLI_CONFIG", &config)
            .env_remove("BACKUP_CLI_REPO")
            .arg("--json")
            .args(args)
            .output()
            .expect("run backup-cli");
        assert!(out.status.success(), "{args:?}:\n{}", text(&out));
        reported(&out)
    };
    let inspected = run(&["plugin", "inspect", plugin.to_str().expect("path")]);
    assert_eq!(inspected["world"], "larder:plugin/validator", "{inspected}");
    assert!(
        !inspected["asks_for"]
            .as_array()
            .expect("asks_for")
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.contains("HTTP"))),
        "the rules validator asks for no network: {inspected}"
    );
    let listed = run(&["plugin", "list"]);
    let notifier = &listed[0];
    assert_eq!(notifier["target"], "ops");
    assert_eq!(notifier["world"], "larder:plugin/notifier@1.1.0");
    assert_eq!(notifier["name"], "webhook-notifier");
    assert_eq!(
        notifier["granted"],
        serde_json::json!(["http hooks.example", "config url"])
    );
    let entry = &listed[1];
    assert_eq!(entry["target"], "rules");
    assert_eq!(entry["world"], "larder:plugin/validator@1.1.0");
    assert_eq!(entry["name"], "rules-validator");
    assert_eq!(entry["pinned"], false);
    assert_eq!(entry["granted"], serde_json::json!(["config rules"]));

    // A route to a channel nobody configured is refused when the configuration loads.
    let current = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{current}\n[alerts]\nlevels = [[\"ops\"], [\"pager\"]]\n"),
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backup-cli"))
        .env("BACKUP_CLI_CONFIG", &config)
        .args(["plugin", "list"])
        .output()
        .expect("run backup-cli");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("level 2 names the channel 'pager', which is not configured"),
        "{}",
        text(&out)
    );
}
