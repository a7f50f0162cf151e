//! The alert room end to end with real receivers on loopback: notifier plugins (webhook with
//! HMAC, Slack, PagerDuty) get an alert once, level 2 gets it after the escalation time, a
//! resolve when the database is back; a receiver answering 500 sends the event to the
//! dead-letter list until it recovers; a destination off the allow-list is denied and logged.

use crate::support::*;

// The channels that are not HTTP: e-mail over SMTP, and a notifier written in Python.
mod email;
mod python_notifier;

fn notifier_entry(name: &str, file: &str, config: &str, extra: &str) -> String {
    format!(
        "[[notifiers]]\nname = \"{name}\"\npath = \"{}\"\nconfig = {{ {config} }}\n{extra}\n",
        plugin_path(file).display()
    )
}

/// `backup-cli args` with the database at `url` and the notifiers' secrets.
fn run_with(env: &TestEnv, url: &str, args: &[&str]) -> std::process::Output {
    env.cli()
        .env("DATABASE_URL", url)
        .env("LARDER_TEST_HOOK_KEY", "s3cret-hook-key")
        .env("LARDER_TEST_PD_KEY", "pd-routing-key")
        .args(args)
        .output()
        .expect("run backup-cli")
}

/// `monitor health --alert-on-failure` with the database at `url`.
fn health_run(env: &TestEnv, url: &str) -> std::process::Output {
    run_with(env, url, &["monitor", "health", "--alert-on-failure"])
}

fn alerts_in(requests: &[Received]) -> Vec<(String, String)> {
    requests
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["alert"].as_str().unwrap_or_default().to_string(),
                body["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_alert_is_delivered_once_escalates_resolves_and_survives_a_receiver_outage() {
    let env = TestEnv::start("alerts").await;
    let hooks = HttpReceiver::start();
    let allow = format!("allow_hosts = [\"127.0.0.1:{}\"]", hooks.port);
    let config = format!(
        "[repository]\npath = \"{repo}\"\n[monitor]\nmin_free_space = \"1MB\"\n\
         [alerts]\nstate_dir = \"{state}\"\nretry_for = \"1s\"\nlevels = [[\"dba\", \"pager\"], [\"sysadmin\"]]\n\
         escalate_after = {{ \"Database connection failed\" = \"4s\" }}\n\n{}{}{}",
        notifier_entry(
            "dba",
            "webhook_notifier.wasm",
            &format!(
                "url = \"{}\", headers = '{{\"X-Team\": \"dba\"}}'",
                hooks.url("/dba")
            ),
            &format!("secrets = {{ hmac_key = \"env:LARDER_TEST_HOOK_KEY\" }}\n{allow}"),
        ),
        notifier_entry(
            "pager",
            "pagerduty_notifier.wasm",
            &format!("url = \"{}\"", hooks.url("/pd")),
            &format!("secrets = {{ routing_key = \"env:LARDER_TEST_PD_KEY\" }}\n{allow}"),
        ),
        notifier_entry(
            "sysadmin",
            "slack_notifier.wasm",
            &format!("url = \"{}\"", hooks.url("/slack")),
            &allow,
        ),
        repo = env.repo_dir().display(),
        state = env.work.path().join("alert-state").display(),
    );
    env.write_config(&config);
    env.run_ok(&["backup", "create", "--name", "before"]);
    let down = "postgres://postgres@127.0.0.1:1/alerts?sslmode=disable&connect_timeout=2";

    // notify test: a test event through every channel, or through the one named.
    let out = run_with(&env, &env.url(), &["notify", "test"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for path in ["/dba", "/pd", "/slack"] {
        let got = hooks.requests(path);
        assert_eq!(got.len(), 1, "{path}: {}", text(&out));
    }
    assert_eq!(hooks.requests("/dba")[0].json()["state"], "test");
    let out = run_with(
        &env,
        &env.url(),
        &["--json", "notify", "test", "--notifier", "sysadmin"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(hooks.requests("/slack").len(), 2);
    assert_eq!(hooks.requests("/dba").len(), 1);
    let tests = (
        hooks.requests("/dba").len(),
        hooks.requests("/pd").len(),
        hooks.requests("/slack").len(),
    );
    let real = |path: &str| {
        let skip = match path {
            "/dba" => tests.0,
            "/pd" => tests.1,
            _ => tests.2,
        };
        hooks
            .requests(path)
            .into_iter()
            .skip(skip)
            .collect::<Vec<_>>()
    };

    // The database is unreachable: level 1 (webhook and PagerDuty) hears of it once.
    let out = health_run(&env, down);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let dba = real("/dba");
    assert_eq!(
        alerts_in(&dba),
        [(
            "Database connection failed".to_string(),
            "firing".to_string()
        )],
        "{}",
        text(&out)
    );
    let first = &dba[0];
    assert_eq!(first.method, "POST");
    let signature = first.header("x-larder-signature").expect("signed");
    assert_eq!(
        signature,
        format!(
            "sha256={}",
            hmac_sha256_hex(b"s3cret-hook-key", &first.body)
        )
    );
    assert_eq!(first.header("x-team"), Some("dba"));
    let id = first.json()["id"].as_str().expect("id").to_string();
    assert_eq!(first.header("x-larder-event-id"), Some(id.as_str()));
    assert_eq!(first.json()["level"], 1);
    let pd = real("/pd");
    assert_eq!(pd.len(), 1);
    assert_eq!(pd[0].json()["event_action"], "trigger");
    assert_eq!(pd[0].json()["dedup_key"], id.as_str());
    assert_eq!(pd[0].json()["routing_key"], "pd-routing-key");
    assert_eq!(pd[0].json()["payload"]["severity"], "critical");
    assert!(real("/slack").is_empty());

    // A second run sends nothing new.
    health_run(&env, down);
    assert_eq!(real("/dba").len(), 1);
    assert_eq!(real("/pd").len(), 1);

    // Past the escalation time, level 2 (Slack) gets it, with the same id.
    std::thread::sleep(std::time::Duration::from_secs(4));
    health_run(&env, down);
    let slack = real("/slack");
    assert_eq!(slack.len(), 1, "{:?}", alerts_in(&real("/dba")));
    let message = slack[0].json();
    assert!(
        message["text"]
            .as_str()
            .is_some_and(|t| t.contains("[ESCALATED] Database connection failed")),
        "{message}"
    );
    assert!(message["blocks"].to_string().contains(&id), "{message}");
    assert_eq!(real("/dba").len(), 1);

    // The database is back: every level that heard of it gets "resolved", same id.
    let out = health_run(&env, &env.url());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dba = real("/dba");
    assert_eq!(
        alerts_in(&dba).last().map(|a| a.1.as_str()),
        Some("resolved")
    );
    assert_eq!(
        dba.last().map(|r| r.json()["id"].clone()),
        Some(id.clone().into())
    );
    assert_eq!(
        hooks
            .requests("/pd")
            .last()
            .map(|r| r.json()["event_action"].clone()),
        Some("resolve".into())
    );
    assert_eq!(real("/slack").len(), 2);

    // The receivers answer 500: retried, then kept in the dead-letter list; the health run
    // itself is not failed by it.
    hooks.answer(500);
    let out = health_run(&env, down);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out);
    assert!(said.contains("was not delivered through 'dba'"), "{said}");
    assert!(said.contains("kept for the next run"), "{said}");
    let attempts = real("/dba").len() - dba.len();
    assert!(attempts >= 2, "retried only {attempts} time(s)");
    let state = std::fs::read_dir(env.work.path().join("alert-state"))
        .expect("state folder")
        .flatten()
        .find(|f| f.path().extension().is_some_and(|e| e == "json"))
        .expect("state file");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path()).expect("state")).expect("json");
    let letters = state["dead_letters"].as_array().expect("dead letters");
    assert_eq!(letters.len(), 2, "{state}");
    assert!(
        letters
            .iter()
            .all(|l| l["event"]["alert"] == "Database connection failed")
    );

    // It recovers: the next run delivers what was waiting, and nothing twice.
    hooks.answer(200);
    let before = real("/dba").len();
    let out = health_run(&env, down);
    let said = text(&out);
    assert!(said.contains("0 waiting in the dead-letter list"), "{said}");
    assert_eq!(real("/dba").len(), before + 1);
    assert_eq!(
        alerts_in(&real("/dba")).last().map(|a| a.1.clone()),
        Some("firing".to_string())
    );
}

#[tokio::test]
async fn a_notifier_is_denied_what_its_entry_does_not_grant_and_a_hanging_one_costs_only_its_deadline()
 {
    let env = TestEnv::start("alerts_sandbox").await;
    let hooks = HttpReceiver::start();
    let config = format!(
        "[repository]\npath = \"{repo}\"\n[monitor]\nmin_free_space = \"1MB\"\n\
         [alerts]\nstate_dir = \"{state}\"\nretry_for = \"1s\"\n\n{}{}",
        // The URL is on loopback, but only the default HTTP port of localhost is allowed.
        notifier_entry(
            "sneaky",
            "webhook_notifier.wasm",
            &format!("url = \"{}\"", hooks.url("/sneaky")),
            "allow_hosts = [\"localhost\"]",
        ),
        notifier_entry(
            "slow",
            "webhook_notifier.wasm",
            &format!("url = \"{}\"", hooks.url("/slow")),
            &format!(
                "allow_hosts = [\"127.0.0.1:{}\"]\ntimeout = \"2s\"",
                hooks.port
            ),
        ),
        repo = env.repo_dir().display(),
        state = env.work.path().join("alert-state").display(),
    );
    env.write_config(&config);
    hooks.answer(0);
    let down = "postgres://postgres@127.0.0.1:1/alerts?sslmode=disable&connect_timeout=2";
    let started = std::time::Instant::now();
    let out = health_run(&env, down);
    let elapsed = started.elapsed();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(hooks.requests("/sneaky").is_empty());
    assert!(
        said.contains("sneaky (webhook_notifier.wasm)")
            && said.contains("denied an outbound request"),
        "{said}"
    );
    assert!(
        said.contains("was not delivered through 'sneaky'"),
        "{said}"
    );
    // The hanging receiver got the request and never answered: stopped at the deadline.
    assert!(!hooks.requests("/slow").is_empty());
    assert!(
        said.contains("did not answer `notify` within its 2s deadline"),
        "{said}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(20),
        "took {elapsed:?}"
    );
}
