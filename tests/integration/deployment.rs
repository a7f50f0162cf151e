//! The deployment pieces in examples/ are checked by the tools that will read them: the
//! Prometheus rules by `promtool check rules` and `promtool test rules` (each alert fires on
//! its series, absent() included), the systemd units (the daemon's, and timers for backups,
//! drills and health) by `systemd-analyze verify`, the Kubernetes manifests parsed as YAML and
//! checked for what they promise (probes on /health, the metrics port, non-root, a CronJob per
//! schedule of the ConfigMap at its time), the ConfigMap's configuration read by backup-cli itself, the
//! Grafana dashboard's queries against the metrics backup-cli declares, and the container
//! image definition for its stages and user.

use crate::support::text;
use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn run(program: &str, args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is missing ({e}); scripts/ensure-prerequisites installs it")
        })
}

#[test]
fn the_alert_rules_pass_promtool_and_fire_on_their_series() {
    let dir = examples().join("prometheus");
    let checked = run("promtool", &["check", "rules", "larder-rules.yml"], &dir);
    assert!(checked.status.success(), "{}", text(&checked));
    let tested = run(
        "promtool",
        &["test", "rules", "larder-rules.test.yml"],
        &dir,
    );
    assert!(tested.status.success(), "{}", text(&tested));
    let rules = std::fs::read_to_string(dir.join("larder-rules.yml")).expect("rules");
    for needed in [
        "absent(larder_up)",
        "larder_rpo_objective_seconds",
        "larder_drill_last_success_timestamp_seconds",
        "larder_backup_last_success_timestamp_seconds",
    ] {
        assert!(rules.contains(needed), "the rules use {needed}");
    }
}

#[test]
fn the_systemd_units_verify() {
    let dir = tempfile::tempdir().expect("unit folder");
    let binary = env!("CARGO_BIN_EXE_backup-cli");
    let source = examples().join("systemd");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&source).expect("examples/systemd") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        // verify checks that ExecStart's program exists: point it at the one just built.
        let unit = std::fs::read_to_string(&path)
            .expect("unit")
            .replace("/usr/local/bin/backup-cli", binary);
        // A template is verified as one of its instances.
        let file = name.replace("@.", "@kitchen_pantry.");
        std::fs::write(dir.path().join(&file), unit).expect("write unit");
        units.push(name);
    }
    units.sort();
    assert_eq!(
        units,
        [
            "backup-cli-backup.service",
            "backup-cli-backup.timer",
            "backup-cli-daemon.service",
            "backup-cli-daemon@.service",
            "backup-cli-drill.service",
            "backup-cli-drill.timer",
            "backup-cli-health.service",
            "backup-cli-health.timer"
        ]
    );
    let daemon = std::fs::read_to_string(source.join("backup-cli-daemon.service")).expect("unit");
    for hardening in [
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "NoNewPrivileges=yes",
        "User=backup",
        "ProtectHome=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(
            daemon.contains(hardening),
            "the daemon unit has {hardening:?}"
        );
    }
    let args: Vec<String> = std::iter::once("verify".to_string())
        .chain(units.iter().map(|u| {
            dir.path()
                .join(u.replace("@.", "@kitchen_pantry."))
                .display()
                .to_string()
        }))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let verified = run("systemd-analyze", &args, dir.path());
    let said = text(&verified);
    // Without systemd as PID 1 (a container), verify still loads and checks every unit; what
    // it cannot do is look at the running system, which it says with these words.
    let complaints: Vec<&str> = said
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !l.contains("System has not been booted with systemd")
                && !l.contains("Failed to connect to bus")
                && !l.contains("Unit dbus.socket not found")
        })
        .collect();
    assert!(
        verified.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// Every document of a YAML file, through python's yaml parser, as JSON.
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let script = "import sys, json, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))";
    let out = Command::new("python3")
        .args(["-c", script, &path.display().to_string()])
        .output()
        .expect("python3 with yaml (scripts/ensure-prerequisites installs pyyaml)");
    assert!(
        out.status.success(),
        "{} does not parse as YAML: {}",
        path.display(),
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("documents")
}

#[test]
fn the_kubernetes_manifests_parse_and_probe_health() {
    let dir = examples().join("kubernetes");
    let daemon = yaml_documents(&dir.join("daemon.yaml"));
    let kinds: Vec<&str> = daemon.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Deployment", "Service", "PersistentVolumeClaim"]);
    let pod = &daemon[0]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"], 9187);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        daemon[0]["spec"]["replicas"], 1,
        "one daemon per repository and database"
    );

    // A CronJob per [[schedules]] entry of the ConfigMap (every kind: full, incremental,
    // schema-only, drill), at the entry's time in its time zone, running it by name; and
    // retention and health beside them.
    let cronjobs = yaml_documents(&dir.join("cronjobs.yaml"));
    assert!(
        cronjobs
            .iter()
            .all(|d| d["kind"] == "CronJob" && d["apiVersion"] == "batch/v1")
    );
    let command = |job: &serde_json::Value| -> String {
        job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let commands: Vec<String> = cronjobs.iter().map(command).collect();
    let configmap = yaml_documents(&dir.join("configmap.yaml"));
    let config = configmap[0]["data"]["config.toml"]
        .as_str()
        .expect("config.toml");
    let table: toml::Table = toml::from_str(config).expect("the ConfigMap's TOML");
    let schedules = table["schedules"].as_array().expect("[[schedules]]");
    let mut types = Vec::new();
    for schedule in schedules {
        let name = schedule["name"].as_str().expect("name");
        let kind = schedule["type"].as_str().expect("type");
        types.push(kind);
        let verb = if kind == "drill" {
            "recovery drill"
        } else {
            "backup create"
        };
        let wanted = format!("{verb} --schedule {name} ");
        let job = cronjobs
            .iter()
            .find(|job| command(job).starts_with(&wanted))
            .unwrap_or_else(|| panic!("no CronJob runs `{wanted}`: {commands:?}"));
        assert_eq!(
            job["spec"]["schedule"].as_str(),
            schedule["cron"].as_str(),
            "{name}: the CronJob runs at the schedule's time"
        );
        assert_eq!(
            job["spec"]["timeZone"].as_str(),
            schedule.get("timezone").and_then(|z| z.as_str()),
            "{name}: in the schedule's time zone"
        );
    }
    types.sort();
    assert_eq!(types, ["drill", "full", "incremental", "schema-only"]);
    for wanted in ["backup prune", "monitor health --alert-on-failure"] {
        assert!(
            commands.iter().any(|c| c.starts_with(wanted)),
            "a CronJob runs `{wanted}`: {commands:?}"
        );
    }
    for job in &cronjobs {
        assert_eq!(job["spec"]["concurrencyPolicy"], "Forbid");
        let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["restartPolicy"], "Never");
    }

    // The ConfigMap's configuration is one backup-cli reads.
    let work = tempfile::tempdir().expect("folder");
    let path = work.path().join("config.toml");
    std::fs::write(&path, config).expect("write config");
    let shown = Command::new(env!("CARGO_BIN_EXE_backup-cli"))
        .args([
            "--config",
            &path.display().to_string(),
            "--json",
            "config",
            "show",
        ])
        .env_remove("BACKUP_CLI_REPO")
        .output()
        .expect("backup-cli");
    assert!(
        shown.status.success(),
        "backup-cli does not accept the ConfigMap's config: {}",
        text(&shown)
    );
    assert!(String::from_utf8_lossy(&shown.stdout).contains("0.0.0.0:9187"));
}

#[test]
fn the_dashboard_queries_only_metrics_backup_cli_declares() {
    // The families `monitor metrics` declares, read from its HELP lines (no database needed).
    let work = tempfile::tempdir().expect("folder");
    let out = Command::new(env!("CARGO_BIN_EXE_backup-cli"))
        .args(["monitor", "metrics"])
        .env("BACKUP_CLI_REPO", work.path().join("repo"))
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("XDG_STATE_HOME", work.path().join("state"))
        .env_remove("BACKUP_CLI_CONFIG")
        .output()
        .expect("backup-cli");
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        metrics.contains("larder_up 0"),
        "no repository there: {}",
        text(&out)
    );
    let declared: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_slice(
        &std::fs::read(examples().join("grafana/larder-dashboard.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut used = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("larder_") {
                    used += 1;
                    assert!(
                        declared.contains(&word),
                        "panel '{}' queries {word}, which backup-cli does not declare",
                        panel["title"]
                    );
                }
            }
        }
    }
    assert!(used >= 15, "the dashboard uses the metrics");
    for rule_metric in std::fs::read_to_string(examples().join("prometheus/larder-rules.yml"))
        .expect("rules")
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("larder_"))
    {
        assert!(
            declared.contains(&rule_metric),
            "the alert rules use {rule_metric}, which backup-cli does not declare"
        );
    }
}

#[test]
fn the_container_image_is_multi_stage_with_plugins_and_not_root() {
    let file =
        std::fs::read_to_string(examples().join("container/Containerfile")).expect("Containerfile");
    let stages: Vec<&str> = file.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a build stage and a run stage: {stages:?}");
    assert!(stages[0].ends_with(" AS build"));
    assert!(
        file.contains("--target wasm32-wasip2"),
        "the plugins are built"
    );
    assert!(file.contains("COPY --from=build /out/plugins/ /usr/local/lib/larder/plugins/"));
    let user = file
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(
        file.contains("postgresql-client"),
        "pg_dump is in the image"
    );
}
