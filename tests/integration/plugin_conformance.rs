//! `backup-cli plugin test FILE`, the plugin author's kit: every shipped plugin passes the
//! conformance suite of its world (storage in a scratch folder and on S3, the notifiers against
//! the suite's own loopback receiver, the validator on the sample table), and a plugin that
//! breaks the contract fails naming the check it broke.

use crate::support::{S3Server, envelope, plugin_path, text};
use std::path::Path;
use std::process::Output;

/// `backup-cli --json plugin test FILE args…` with a plugin cache of its own and no other
/// configuration; `envs` are set for the run (secrets are read from the environment).
fn plugin_test(file: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let work = tempfile::tempdir().expect("temporary folder");
    let config = work.path().join("larder.toml");
    // One compiled-plugin cache for the module's tests: each plugin is compiled once.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-test-cache");
    std::fs::write(
        &config,
        format!("[plugins]\ncache_dir = \"{}\"\n", cache.display()),
    )
    .expect("config");
    std::process::Command::new(env!("CARGO_BIN_EXE_backup-cli"))
        .env("BACKUP_CLI_CONFIG", &config)
        .env_remove("BACKUP_CLI_REPO")
        .envs(envs.iter().copied())
        .args(["plugin", "test"])
        .arg(plugin_path(file))
        .args(args)
        .output()
        .expect("run backup-cli")
}

/// The suite's report from `--json`, asserting every check passed.
fn passes(file: &str, args: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let out = plugin_test(file, &with_json, envs);
    let envelope = envelope(&out);
    assert!(
        out.status.success() && envelope["status"] == "ok",
        "plugin test {file} should pass:\n{}",
        text(&out)
    );
    let report = envelope["plugin_test"].clone();
    let checks = report["checks"].as_array().expect("checks");
    assert!(
        checks.len() >= 4 && checks.iter().all(|c| c["passed"] == true),
        "{report}"
    );
    report
}

/// The detail of check `name` in a report.
fn detail(report: &serde_json::Value, name: &str) -> String {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))["detail"]
        .as_str()
        .expect("detail")
        .to_string()
}

fn names(report: &serde_json::Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["check"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn the_offsite_directory_plugin_passes_in_a_scratch_folder() {
    let offsite = passes("offsite_dir_target.wasm", &[], &[]);
    assert_eq!(offsite["world"], "larder:plugin/storage-target");
    assert_eq!(offsite["plugin"], "offsite-dir-target");
    assert_eq!(
        names(&offsite),
        [
            "describe",
            "put-get",
            "stat",
            "overwrite",
            "empty-object",
            "large-object",
            "missing-object",
            "list-pages",
            "list-prefix",
            "delete",
            "flush",
            "cleanup"
        ]
    );
    assert!(
        offsite["setup"].to_string().contains("scratch folder"),
        "{offsite}"
    );
    assert!(
        detail(&offsite, "missing-object").contains("not-found"),
        "{offsite}"
    );
}

#[test]
fn the_s3_plugin_passes_against_an_s3_server_and_leaves_nothing_behind() {
    let s3 = S3Server::start("plugin-test");
    let config = format!(
        r#"{{"endpoint": "{}", "bucket": "plugin-test", "region": "us-east-1", "prefix": "kit/"}}"#,
        s3.endpoint()
    );
    let allow = format!("127.0.0.1:{}", s3.port);
    let report = passes(
        "s3_target.wasm",
        &[
            "--plugin-config",
            &config,
            "--secret",
            "access_key_id=env:KIT_S3_KEY",
            "--secret",
            "secret_access_key=env:KIT_S3_SECRET",
            "--allow-host",
            &allow,
        ],
        &[("KIT_S3_KEY", "testing"), ("KIT_S3_SECRET", "testing")],
    );
    assert_eq!(report["plugin"], "s3-target");
    // 1,100 keys are more than one page of S3's 1,000: the cursor was followed.
    assert!(
        detail(&report, "list-pages").contains("in 2 page(s)"),
        "{report}"
    );
    assert!(
        s3.keys("kit/").is_empty(),
        "the suite leaves nothing behind: {:?}",
        s3.keys("kit/")
    );
}

#[test]
fn the_shipped_notifiers_pass_against_the_suites_own_receiver() {
    for (file, plugin, args, envs) in [
        (
            "webhook_notifier.wasm",
            "webhook-notifier",
            vec!["--secret", "hmac_key=env:KIT_HMAC"],
            vec![("KIT_HMAC", "kit-key")],
        ),
        ("slack_notifier.wasm", "slack-notifier", vec![], vec![]),
        (
            "pagerduty_notifier.wasm",
            "pagerduty-notifier",
            vec!["--secret", "routing_key=env:KIT_ROUTING"],
            vec![("KIT_ROUTING", "R0UT1NG")],
        ),
    ] {
        let report = passes(file, &args, &envs);
        assert_eq!(report["world"], "larder:plugin/notifier", "{report}");
        assert_eq!(report["plugin"], plugin, "{report}");
        assert_eq!(
            names(&report),
            [
                "describe",
                "test-event",
                "received",
                "event-id",
                "resolved-event",
                "unavailable-on-503"
            ],
            "{report}"
        );
        assert!(
            report["setup"]
                .to_string()
                .contains("loopback HTTP receiver"),
            "{report}"
        );
        assert!(detail(&report, "received").starts_with("POST /larder-plugin-test"));
    }
    // Without the routing key it needs, PagerDuty's notifier fails the test event, by name.
    let out = plugin_test("pagerduty_notifier.wasm", &[], &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("FAIL  test-event"), "{all}");
    assert!(
        all.contains("routing_key"),
        "the failure says what is missing: {all}"
    );
}

#[test]
fn the_rules_validator_passes_on_the_sample_table_and_its_findings_are_shown() {
    let rules = r#"rules = [
        { table = "public.larder_plugin_test", max_shrink_percent = 5 },
        { table = "public.larder_plugin_test", column = "email", not_null = true, pattern = "^[^@]+@[^@]+$" },
        { table = "larder_plugin_test", column = "id", unique = true },
    ]"#;
    let report = passes("rules_validator.wasm", &["--plugin-config", rules], &[]);
    assert_eq!(report["world"], "larder:plugin/validator");
    assert_eq!(
        names(&report),
        [
            "describe",
            "begin-table",
            "rows",
            "end-table",
            "findings",
            "repeatable"
        ]
    );
    assert!(detail(&report, "rows").contains("100 rows in 3 batches"));
    let findings = detail(&report, "findings");
    for rule in ["max_shrink_percent", "not_null", "pattern"] {
        assert!(findings.contains(rule), "{rule} caught: {findings}");
    }
    assert!(!findings.contains("unique"), "ids are unique: {findings}");
    assert!(
        detail(&report, "end-table").contains("3 finding(s)"),
        "{report}"
    );

    // Without rules the validator refuses the table: the check is named, exit 1.
    let out = plugin_test("rules_validator.wasm", &["--json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let envelope = envelope(&out);
    assert_eq!(envelope["kind"], "plugin_test_failed", "{envelope}");
    let error = envelope["error"].as_str().expect("error");
    assert!(
        error.contains("begin-table") && error.contains("no rules"),
        "{error}"
    );
}

#[test]
fn a_plugin_that_breaks_the_contract_fails_naming_the_check() {
    // test-misbehaving in `garbage` mode answers `list` with a key outside the prefix.
    let out = plugin_test(
        "test_misbehaving.wasm",
        &["--plugin-config", r#"{"mode": "garbage"}"#],
        &[],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("PASS  put-get"), "{all}");
    assert!(all.contains("FAIL  list-pages"), "{all}");
    assert!(
        all.contains("../../etc/shadow"),
        "the failure shows the bad key: {all}"
    );
    let last = String::from_utf8_lossy(&out.stderr);
    assert!(
        last.contains("failed") && last.contains("list-pages"),
        "the error names the failed check: {last}"
    );

    let out = plugin_test(
        "test_misbehaving.wasm",
        &["--json", "--plugin-config", "mode = \"garbage\""],
        &[],
    );
    let envelope = envelope(&out);
    assert_eq!(envelope["status"], "failed", "{envelope}");
    assert_eq!(envelope["kind"], "plugin_test_failed", "{envelope}");
    let failed: Vec<&str> = envelope["plugin_test"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["check"].as_str().expect("name"))
        .collect();
    assert!(failed.contains(&"list-pages"), "{envelope}");
    assert!(!failed.contains(&"put-get"), "{envelope}");
}

#[test]
fn bad_input_to_plugin_test_is_refused_clearly() {
    let out = plugin_test(
        "offsite_dir_target.wasm",
        &["--plugin-config", "not = [valid"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--plugin-config"), "{}", text(&out));
    let out = plugin_test("webhook_notifier.wasm", &["--secret", "hmac_key"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("NAME=env:"), "{}", text(&out));
    let work = tempfile::tempdir().expect("temporary folder");
    let bogus = work.path().join("bogus.wasm");
    std::fs::write(&bogus, b"not a component").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backup-cli"))
        .env_remove("BACKUP_CLI_CONFIG")
        .env("HOME", work.path())
        .current_dir(work.path())
        .args(["plugin", "test"])
        .arg(&bogus)
        .output()
        .expect("run backup-cli");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not a valid WebAssembly component"),
        "{}",
        text(&out)
    );
}
