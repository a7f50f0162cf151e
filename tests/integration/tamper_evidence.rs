//! Tamper evidence (#18): manifests signed by the writing host, checked against
//! `[repository] trusted_signers` by restores, exports and validation, and chained per
//! database so that `backup verify-history` names a backup deleted from the middle, and every
//! restore and export checks the backup's links to its neighbours and reports the signer.

use crate::support::{TestEnv, envelope, reported, text};
use larder::repository::manifest::Manifest;
use larder::repository::signing::{SigningKey, sign};
use std::path::Path;

fn signer(env: &TestEnv, file: &Path) -> String {
    env.run_json(&["key", "signer", "-o", file.to_str().expect("path")])["public"]
        .as_str()
        .expect("signer")
        .to_string()
}

fn configure(env: &TestEnv, key: &Path, trusted: &str) {
    env.write_config(&format!(
        "[repository]\npath = \"{}\"\nsigning_key_file = \"{}\"\ntrusted_signers = [\"{trusted}\"]\n",
        env.repo_dir().display(),
        key.display()
    ));
}

fn backup(env: &TestEnv, name: &str) -> String {
    env.run_json(&["backup", "create", "-n", name])["backup"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Runs `args` (with --json), expecting a refusal of kind `signature_refused` saying `why`.
fn refused(env: &TestEnv, args: &[&str], why: &str) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = envelope(&out);
    assert_eq!(failed["kind"], "signature_refused", "{failed}");
    assert!(
        failed["error"].as_str().is_some_and(|e| e.contains(why)),
        "expected '{why}': {failed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_manifests_refuse_edits_and_untrusted_signers_and_history_names_a_gap() {
    let env = TestEnv::start("pantry").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE jars (id int PRIMARY KEY, label text);
             INSERT INTO jars SELECT g, 'jar ' || g FROM generate_series(1, 100) g;",
        )
        .await
        .expect("table");
    let host = env.work.path().join("backup-host.signing");
    let stranger = env.work.path().join("stranger.signing");
    let trusted = signer(&env, &host);
    signer(&env, &stranger);
    configure(&env, &host, &trusted);
    let monday = backup(&env, "monday");
    let tuesday = backup(&env, "tuesday");
    let wednesday = backup(&env, "wednesday");

    let history = env.run_json(&["backup", "verify-history"]);
    assert_eq!(history["signed"], 3, "{history}");
    assert_eq!(history["problems"], serde_json::json!([]), "{history}");
    // The restore report is the auditor's evidence: the signer, and both links verified.
    let report = env.run_json(&["recovery", "execute", &tuesday, "--dest-db", "jars_tuesday"]);
    let signature = &report["signature"];
    assert_eq!(signature["signer"], trusted.as_str(), "{report}");
    assert_eq!(signature["signature_verified"], true, "{signature}");
    assert_eq!(signature["chain_verified"], true, "{signature}");
    let chain = &signature["chain"];
    assert_eq!(chain["previous"]["backup_id"], monday.as_str(), "{chain}");
    assert_eq!(chain["previous"]["state"], "verified", "{chain}");
    assert_eq!(chain["next"]["backup_id"], wednesday.as_str(), "{chain}");
    assert_eq!(chain["next"]["state"], "verified", "{chain}");
    let sql = env.work.path().join("wednesday.sql");
    let sql = sql.to_str().expect("path");
    let out = env.run_ok(&["backup", "export", &wednesday, "-o", sql]);
    let said = text(&out);
    assert!(
        said.contains(&format!(
            "signed by {trusted}: signature and chain verified"
        )) && said.contains("next: none, the newest backup"),
        "{said}"
    );

    // Monday's manifest rewritten and signed again with the trusted key (an attacker holding
    // the backup host's key): its own signature holds, but Tuesday's link gives it away, so
    // restoring either is refused unless the risk is taken.
    let monday_path = env
        .repo_dir()
        .join("backups")
        .join(format!("{monday}.json"));
    let honest = std::fs::read(&monday_path).expect("manifest");
    let mut rewritten: Manifest = serde_json::from_slice(&honest).expect("manifest");
    rewritten.name = "monday (rewritten)".into();
    rewritten.signature = None;
    sign(
        &mut rewritten,
        None,
        &SigningKey::read(&host).expect("signing key"),
    )
    .expect("sign");
    std::fs::write(
        &monday_path,
        serde_json::to_vec_pretty(&rewritten).expect("json"),
    )
    .expect("write");
    refused(
        &env,
        &["recovery", "execute", &tuesday, "--dest-db", "x"],
        &format!("its previous backup {monday} was altered after this one was written"),
    );
    refused(
        &env,
        &["backup", "export", &monday, "-o", sql],
        &format!("its manifest was replaced after backup {tuesday} was written"),
    );
    let risked = env.run_json(&["backup", "export", &tuesday, "-o", sql, "--allow-unsigned"]);
    let signature = &risked["signature"];
    assert_eq!(signature["chain_verified"], false, "{signature}");
    assert_eq!(
        signature["chain"]["previous"]["state"], "altered",
        "{signature}"
    );
    assert!(
        signature["risks"]
            .to_string()
            .contains("the history was rewritten"),
        "{signature}"
    );
    std::fs::write(&monday_path, &honest).expect("restore the manifest");

    // A row count edited by hand: the signature no longer holds, even with --allow-unsigned.
    let path = env
        .repo_dir()
        .join("backups")
        .join(format!("{wednesday}.json"));
    let original = std::fs::read(&path).expect("manifest");
    let mut edited: serde_json::Value = serde_json::from_slice(&original).expect("json");
    let rows = edited["tables"][0]["rows"].as_u64().expect("rows");
    edited["tables"][0]["rows"] = (rows + 1).into();
    std::fs::write(&path, serde_json::to_vec(&edited).expect("json")).expect("write");
    let edited_why = "was edited after it was written";
    refused(
        &env,
        &["recovery", "execute", &wednesday, "--dest-db", "x"],
        edited_why,
    );
    refused(&env, &["backup", "validate", &wednesday], edited_why);
    refused(
        &env,
        &["backup", "validate", &wednesday, "--allow-unsigned"],
        edited_why,
    );
    let out = env.run(&["--json", "backup", "verify-history"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        reported(&out)["problems"].to_string().contains(&wednesday),
        "{}",
        text(&out)
    );
    std::fs::write(&path, &original).expect("restore the manifest");

    // Tuesday's manifest deleted from the middle: Wednesday's link names the gap.
    std::fs::remove_file(
        env.repo_dir()
            .join("backups")
            .join(format!("{tuesday}.json")),
    )
    .expect("delete manifest");
    let out = env.run(&["--json", "backup", "verify-history"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let problems = reported(&out)["problems"].clone();
    assert_eq!(problems.as_array().map(Vec::len), Some(1), "{problems}");
    assert_eq!(problems[0]["backup_id"], wednesday.as_str(), "{problems}");
    let problem = problems[0]["problem"].as_str().expect("problem");
    assert!(
        problem.contains("gap") && problem.contains(&tuesday),
        "{problem}"
    );
    assert!(!problems.to_string().contains(&monday), "{problems}");
    // A restore of Wednesday says so, without refusing (pruning leaves such gaps too).
    let exported = env.run_json(&["backup", "export", &wednesday, "-o", sql]);
    let signature = &exported["signature"];
    assert_eq!(signature["signature_verified"], true, "{signature}");
    assert_eq!(signature["chain_verified"], false, "{signature}");
    assert_eq!(
        signature["chain"]["previous"]["backup_id"],
        tuesday.as_str(),
        "{signature}"
    );
    assert_eq!(
        signature["chain"]["previous"]["state"], "missing",
        "{signature}"
    );

    // A backup signed by a key that is not trusted: refused, unless the risk is taken (and
    // then the plan says so).
    configure(&env, &stranger, &trusted);
    let forged = backup(&env, "forged");
    refused(
        &env,
        &["recovery", "plan", &forged, "--dest-db", "x"],
        "not in [repository] trusted_signers",
    );
    let plan = env.run_json(&[
        "recovery",
        "plan",
        &forged,
        "--dest-db",
        "x",
        "--allow-unsigned",
    ]);
    assert!(
        plan["risks"].to_string().contains("--allow-unsigned"),
        "{plan}"
    );
}

/// `backup verify-history` with `--json`: its exit code and report.
fn history(env: &TestEnv) -> (Option<i32>, serde_json::Value) {
    let out = env.run(&["--json", "backup", "verify-history"]);
    (out.status.code(), reported(&out))
}

#[tokio::test(flavor = "multi_thread")]
async fn removals_by_retention_and_delete_leave_signed_evidence_and_others_stay_gaps() {
    let env = TestEnv::start("pantry").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE jars (id int PRIMARY KEY, label text);
             INSERT INTO jars SELECT g, 'jar ' || g FROM generate_series(1, 50) g;",
        )
        .await
        .expect("table");
    let host = env.work.path().join("backup-host.signing");
    let stranger = env.work.path().join("stranger.signing");
    let trusted = signer(&env, &host);
    let untrusted = signer(&env, &stranger);
    configure(&env, &host, &trusted);
    let ids: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| backup(&env, n))
        .collect();
    let [a, b, c, d, e] = &ids[..] else {
        panic!("five backups")
    };

    // Retention removes the oldest: signed evidence, no gap.
    env.write_config(&format!(
        "[repository]\npath = \"{}\"\nsigning_key_file = \"{}\"\ntrusted_signers = [\"{trusted}\"]\n[retention]\nfull = {{ keep_last = 4 }}\n",
        env.repo_dir().display(),
        host.display()
    ));
    let pruned = env.run_json(&["backup", "prune"]);
    let deleted: Vec<&str> = pruned["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter(|b| b["decision"] == "delete")
        .filter_map(|b| b["backup_id"].as_str())
        .collect();
    assert_eq!(deleted, [a.as_str()], "{pruned}");
    // `backup delete` removes one from the middle: signed evidence, no gap.
    configure(&env, &host, &trusted);
    env.run_ok(&["backup", "delete", c, "--force"]);
    let (code, report) = history(&env);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let retired = report["retired"].as_array().expect("retired");
    assert_eq!(retired.len(), 2, "{report}");
    // Listed by backup id: two backups taken in one second sort by their random part, so
    // each retirement is found by its id rather than by its place.
    let retirement = |id: &str| {
        retired
            .iter()
            .find(|r| r["backup_id"] == id)
            .unwrap_or_else(|| panic!("no retirement of {id}: {report}"))
    };
    assert_eq!(retirement(a)["reason"], "retention", "{report}");
    let statement = retirement(a)["statement"].as_str().expect("statement");
    assert!(
        statement.starts_with("retired by retention on ")
            && statement.contains(&format!("by signer {trusted}"))
            && statement.contains("keep_last"),
        "{statement}"
    );
    assert_eq!(retirement(c)["reason"], "backup delete", "{report}");
    // A restore of the backup after the removed one says so, and its chain holds.
    let sql = env.work.path().join("d.sql");
    let exported = env.run_json(&["backup", "export", d, "-o", sql.to_str().expect("path")]);
    let signature = &exported["signature"];
    assert_eq!(
        signature["chain"]["previous"]["state"], "retired",
        "{signature}"
    );
    assert_eq!(signature["chain_verified"], true, "{signature}");
    assert!(
        signature["chain"]["previous"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("retired by backup delete")),
        "{signature}"
    );

    // And the one before it: the next backup links to it through the retired one.
    let exported = env.run_json(&["backup", "export", b, "-o", sql.to_str().expect("path")]);
    let signature = &exported["signature"];
    assert_eq!(
        signature["chain"]["next"]["backup_id"],
        d.as_str(),
        "{signature}"
    );
    assert_eq!(
        signature["chain"]["next"]["state"], "verified",
        "{signature}"
    );
    assert!(
        signature["chain"]["next"]["detail"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("through retired {c}"))),
        "{signature}"
    );
    assert_eq!(
        signature["chain"]["previous"]["state"], "retired",
        "{signature}"
    );
    assert_eq!(signature["chain_verified"], true, "{signature}");

    // A manifest deleted behind the tool's back before the retired one: the chain is
    // followed through the retirement record, so the gap is still named.
    let manifest = |id: &str| env.repo_dir().join("backups").join(format!("{id}.json"));
    let honest = std::fs::read(manifest(b)).expect("manifest");
    std::fs::remove_file(manifest(b)).expect("delete manifest");
    let (code, report) = history(&env);
    assert_eq!(code, Some(1), "{report}");
    let problems = report["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["backup_id"], c.as_str(), "{report}");
    let problem = problems[0]["problem"].as_str().expect("problem");
    assert!(
        problem.contains("gap") && problem.contains(b.as_str()) && problem.contains("no record"),
        "{problem}"
    );
    std::fs::write(manifest(b), honest).expect("put it back");

    // A removal signed by a key that is not trusted covers nothing: still a gap.
    configure(&env, &stranger, &trusted);
    env.run_ok(&["backup", "delete", d, "--force"]);
    configure(&env, &host, &trusted);
    let (code, report) = history(&env);
    assert_eq!(code, Some(1), "{report}");
    let problems = report["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["backup_id"], e.as_str(), "{report}");
    let problem = problems[0]["problem"].as_str().expect("problem");
    assert!(
        problem.contains("gap")
            && problem.contains(d.as_str())
            && problem.contains(&format!("signed by {untrusted}, not a trusted signer")),
        "{problem}"
    );
    let out = env.run(&[
        "--json",
        "backup",
        "export",
        e,
        "-o",
        sql.to_str().expect("path"),
    ]);
    let signature = &reported(&out)["signature"];
    assert_eq!(
        signature["chain"]["previous"]["state"], "missing",
        "{signature}"
    );
    assert_eq!(signature["chain_verified"], false, "{signature}");
}
