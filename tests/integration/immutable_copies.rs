//! Copies that cannot be deleted (issue #18): an `append_only` target keeps every object
//! through `backup prune` and `backup delete` while the primary is pruned, and only
//! `--allow-delete` deletes there; on a real S3-compatible server (moto) with Object Lock,
//! locked backups survive `backup delete --force` and `backup prune` with a clear refusal, a
//! direct delete of a locked object version with the same credentials fails, and a bucket
//! with default retention takes backups that restore. With `object_lock = { mode }` each
//! backup's objects are locked until its own retention ends (creation + the `keep_within`
//! of its type's policy), a chunk a newer backup shares is locked for the newer one, and
//! prune deletes a backup once that date has passed.

use crate::support::{S3Server, TestEnv, fs_entry, s3_builtin_entry, text};
use larder::targets::Target;
use larder::targets::s3::{S3Settings, S3Target};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A database whose every backup differs from the last (new rows), so pruning one leaves
/// chunks only it used.
async fn database(name: &str) -> TestEnv {
    let env = TestEnv::start(name).await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE ledger (id int PRIMARY KEY, entry text);
             INSERT INTO ledger SELECT g, 'entry ' || g FROM generate_series(1, 500) g;",
        )
        .await
        .expect("seed table");
    env
}

async fn add_rows(env: &TestEnv, from: i32) {
    env.client()
        .await
        .execute(
            "INSERT INTO ledger SELECT g, md5(g::text) FROM generate_series($1::int, $1::int + 300) g",
            &[&from],
        )
        .await
        .expect("more rows");
}

fn backup(env: &TestEnv, name: &str) -> String {
    env.run_json(&["backup", "create", "-n", name])["backup"]["id"]
        .as_str()
        .expect("backup id")
        .to_string()
}

/// Every object file under `dir` except locks (which come and go with each run).
fn objects(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.retain(|p| !p.starts_with(dir.join("locks")));
    out.sort();
    out
}

fn backups_in(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("backups"))
        .map(|d| d.flatten().count())
        .unwrap_or(0)
}

/// Runs `backup-cli args`, asserting it is refused (exit code 2); returns what it said.
fn refused(env: &TestEnv, args: &[&str]) -> String {
    let out = env.run(args);
    let said = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "backup-cli {} should be refused:\n{said}",
        args.join(" ")
    );
    said
}

fn target<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["targets"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["target"] == name))
        .unwrap_or_else(|| panic!("no target {name} in {report:#}"))
}

#[tokio::test]
async fn an_append_only_target_keeps_everything_until_a_maintenance_host_allows_delete() {
    let env = database("vault").await;
    let primary = env.work.path().join("primary");
    let vault = env.work.path().join("vault");
    env.write_config(&format!(
        "[retention]\nfull = {{ keep_last = 1 }}\n{}{}append_only = true\n",
        fs_entry("primary", &primary),
        fs_entry("vault", &vault)
    ));
    let first = backup(&env, "first");
    add_rows(&env, 1000).await;
    backup(&env, "second");
    add_rows(&env, 2000).await;
    let third = backup(&env, "third");
    let kept = objects(&vault);
    assert_eq!(backups_in(&vault), 3, "every backup copied to the vault");
    let shown = text(&env.run_ok(&["config", "show"]));
    assert!(shown.contains("append-only"), "{shown}");
    let primary_before = objects(&primary).len();

    let pruned = env.run_json(&["backup", "prune"]);
    let on_primary = target(&pruned, "primary");
    assert_eq!(
        on_primary["backups_deleted"].as_array().map(Vec::len),
        Some(2),
        "{pruned:#}"
    );
    assert!(
        on_primary["chunks_deleted"].as_u64() > Some(0),
        "{pruned:#}"
    );
    let on_vault = target(&pruned, "vault");
    assert_eq!(on_vault["append_only"], true, "{pruned:#}");
    assert_eq!(on_vault["backups_deleted"], serde_json::json!([]));
    assert_eq!(on_vault["chunks_deleted"], 0, "{pruned:#}");
    assert_eq!(
        on_vault["backups_kept"].as_array().map(Vec::len),
        Some(2),
        "{pruned:#}"
    );
    assert!(
        objects(&primary).len() < primary_before,
        "the primary is pruned"
    );
    assert_eq!(backups_in(&primary), 1);
    assert_eq!(objects(&vault), kept, "prune changed nothing in the vault");

    // Deleting by hand: the primary's copy goes, the vault's stays, and the output says so.
    let out = env.run_ok(&["backup", "delete", &third, "--force"]);
    let said = text(&out);
    assert!(
        said.contains("append_only") && said.contains("vault") && said.contains("--allow-delete"),
        "{said}"
    );
    assert_eq!(backups_in(&primary), 0);
    assert_eq!(objects(&vault), kept, "delete changed nothing in the vault");
    // Asked to delete there: refused, naming the way forward; nothing changes.
    let said = refused(
        &env,
        &["backup", "delete", &first, "--force", "--target", "vault"],
    );
    assert!(
        said.contains("append_only") && said.contains("--allow-delete"),
        "{said}"
    );
    assert_eq!(objects(&vault), kept);
    // The vault's copy of the backup deleted from the primary is whole.
    env.run_ok(&["backup", "validate", &third, "--target", "vault"]);

    // A maintenance host with delete rights prunes the vault like any target.
    let maintained = env.run_json(&["--allow-delete", "backup", "prune"]);
    let on_vault = target(&maintained, "vault");
    assert_eq!(on_vault["append_only"], false, "{maintained:#}");
    assert_eq!(
        on_vault["backups_deleted"].as_array().map(Vec::len),
        Some(2),
        "{maintained:#}"
    );
    assert!(
        on_vault["chunks_deleted"].as_u64() > Some(0),
        "{maintained:#}"
    );
    assert_eq!(backups_in(&vault), 1, "the newest backup stays");
    assert!(objects(&vault).len() < kept.len());
    env.run_ok(&["backup", "validate", &third, "--target", "vault"]);
}

/// A bucket on `s3` with Object Lock enabled (and versioning, which Object Lock implies);
/// with `default_days`, a default retention in governance mode.
fn locked_bucket(s3: &S3Server, bucket: &str, default_days: Option<u32>) {
    let made = s3.request_with(
        "PUT",
        &format!("/{bucket}"),
        &["x-amz-bucket-object-lock-enabled: true"],
        b"",
    );
    assert!(made.starts_with("HTTP/1.1 200"), "create {bucket}: {made}");
    if let Some(days) = default_days {
        let rule = format!(
            "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule>\
             <DefaultRetention><Mode>GOVERNANCE</Mode><Days>{days}</Days></DefaultRetention>\
             </Rule></ObjectLockConfiguration>"
        );
        let set = s3.request("PUT", &format!("/{bucket}?object-lock"), rule.as_bytes());
        assert!(set.starts_with("HTTP/1.1 200"), "default retention: {set}");
    }
}

/// The built-in S3 target on `bucket` (keys under `builtin/`, as the configured one).
fn s3_target(s3: &S3Server, bucket: &str) -> S3Target {
    S3Target::new(
        "check",
        &S3Settings {
            bucket,
            endpoint: Some(&s3.endpoint()),
            region: "us-east-1",
            root: "builtin",
            access_key_id: "testing",
            secret_access_key: "testing",
            session_token: None,
            object_lock: None,
        },
    )
    .expect("s3 settings")
}

/// An S3 client of `bucket` with the backup host's credentials (opendal, signed requests).
fn operator(s3: &S3Server, bucket: &str) -> opendal::Operator {
    let builder = opendal::services::S3::default()
        .bucket(bucket)
        .endpoint(&s3.endpoint())
        .region("us-east-1")
        .access_key_id("testing")
        .secret_access_key("testing")
        .disable_config_load()
        .disable_ec2_metadata();
    opendal::Operator::new(builder).expect("s3 client").finish()
}

/// The S3 target's entry pointed at `bucket`, with `extra` lines.
fn s3_entry(s3: &S3Server, bucket: &str, extra: &str) -> String {
    format!(
        "{}{extra}\n",
        s3_builtin_entry("s3", s3).replace(
            &format!("bucket = \"{}\"", s3.bucket),
            &format!("bucket = \"{bucket}\"")
        )
    )
}

#[tokio::test]
async fn object_locked_backups_survive_delete_and_prune_and_a_direct_delete_of_a_version() {
    let env = database("locked").await;
    let s3 = S3Server::start("plain");
    locked_bucket(&s3, "locked", None);
    env.write_config(&format!(
        "[retention]\nfull = {{ keep_last = 1 }}\n{}",
        s3_entry(
            &s3,
            "locked",
            "object_lock = { mode = \"governance\", days = 1 }"
        )
    ));
    let first = backup(&env, "first");
    let stored = s3.keys_in("locked", "builtin/");
    let manifest = format!("builtin/backups/{first}.json");
    assert!(stored.contains(&manifest), "{stored:?}");
    assert!(stored.iter().any(|k| k.starts_with("builtin/chunks/")));
    // Every backup object carries the retention, as the store reports it (HEAD).
    let check = s3_target(&s3, "locked");
    for key in stored.iter().filter_map(|k| k.strip_prefix("builtin/")) {
        let retention = check.retention(key).await.expect("HEAD");
        if key.starts_with("locks/") {
            continue;
        }
        let retention = retention.unwrap_or_else(|| panic!("{key} is not locked"));
        assert_eq!(retention.mode, "GOVERNANCE", "{key}");
        assert!(retention.until > chrono::Utc::now() + chrono::Duration::hours(23));
    }

    let said = refused(&env, &["backup", "delete", &first, "--force"]);
    assert!(
        said.contains("S3 Object Lock")
            && said.contains("governance")
            && said.contains("until")
            && said.contains("nothing was deleted"),
        "{said}"
    );
    assert_eq!(s3.keys_in("locked", "builtin/"), stored, "nothing deleted");

    // Retention would delete the first backup; the lock keeps it, and prune says so.
    add_rows(&env, 1000).await;
    let second = backup(&env, "second");
    let pruned = env.run_json(&["backup", "prune"]);
    let on_s3 = target(&pruned, "s3");
    assert_eq!(
        on_s3["backups_deleted"],
        serde_json::json!([]),
        "{pruned:#}"
    );
    assert_eq!(on_s3["backups_kept"][0]["backup_id"], first, "{pruned:#}");
    assert_eq!(
        on_s3["backups_kept"][0]["locked"]["mode"], "GOVERNANCE",
        "{pruned:#}"
    );
    let now = s3.keys_in("locked", "builtin/");
    assert!(
        stored.iter().all(|k| now.contains(k)),
        "the first backup's objects stay"
    );

    // The same credentials cannot remove the locked version directly either (a signed
    // DELETE of the version, as any S3 client would send it).
    let store = operator(&s3, "locked");
    let version = store
        .stat(&manifest)
        .await
        .expect("HEAD the manifest")
        .version()
        .expect("a versioned object")
        .to_string();
    let deleted = store.delete_with(&manifest).version(&version).await;
    let error = deleted.expect_err("a locked version was deleted");
    assert_eq!(
        error.kind(),
        opendal::ErrorKind::PermissionDenied,
        "{error}"
    );
    assert!(error.to_string().contains("AccessDenied"), "{error}");
    store
        .stat_with(&manifest)
        .version(&version)
        .await
        .expect("the locked version is still there");
    for id in [&first, &second] {
        env.run_ok(&["backup", "validate", id]);
    }
}

#[tokio::test]
async fn a_bucket_with_default_retention_takes_backups_that_restore() {
    let env = database("retained").await;
    let s3 = S3Server::start("plain");
    locked_bucket(&s3, "retained", Some(1));
    // Without object_lock the bucket refuses the writes; the error says what to set.
    env.write_config(&s3_entry(&s3, "retained", ""));
    let failed = env.run_failing(&["backup", "create", "-n", "unsettled"]);
    assert!(
        failed.contains("object_lock = \"bucket-default\""),
        "{failed}"
    );
    // The bucket locks for a day; full backups are kept (and so locked) for 30.
    env.write_config(&format!(
        "[retention]\nfull = \"30d\"\n{}",
        s3_entry(&s3, "retained", "object_lock = \"bucket-default\"")
    ));
    let id = backup(&env, "retained");
    let check = s3_target(&s3, "retained");
    let manifest = manifest_of(&check, &id).await;
    let until = whole_seconds(date(&manifest["retain_until"]));
    assert!(until > chrono::Utc::now() + chrono::Duration::days(29));
    for key in chunk_ids(&manifest)
        .iter()
        .map(|c| format!("chunks/{}/{c}", &c[..2]))
        .chain([format!("backups/{id}.json")])
    {
        assert!(
            locked_until(&check, &key).await >= until,
            "{key} is locked for the backup's 30 days, not the bucket's one"
        );
    }
    env.run_ok(&[
        "recovery",
        "execute",
        &id,
        "-s",
        "new-database",
        "--dest-db",
        "retained_restored",
    ]);
    let restored = env.client_for("retained_restored").await;
    let rows: i64 = restored
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .expect("restored rows")
        .get(0);
    assert_eq!(rows, 500);
    // The bucket's default retention locked the backup: delete says so and keeps it.
    let said = refused(&env, &["backup", "delete", &id, "--force"]);
    assert!(
        said.contains("S3 Object Lock") && said.contains("governance"),
        "{said}"
    );
    assert!(
        s3.keys_in("retained", "builtin/backups/")
            .contains(&format!("builtin/backups/{id}.json"))
    );
}

/// A backup's manifest as stored on `target` (a plain repository: JSON).
async fn manifest_of(target: &S3Target, id: &str) -> serde_json::Value {
    let body = target
        .get(&format!("backups/{id}.json"))
        .await
        .expect("GET the manifest");
    serde_json::from_slice(&body).expect("manifest JSON")
}

/// The chunk ids a manifest refers to (every `chunks` list in it).
fn chunk_ids(manifest: &serde_json::Value) -> BTreeSet<String> {
    fn walk(value: &serde_json::Value, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    if key == "chunks"
                        && let Some(list) = inner.as_array()
                    {
                        out.extend(
                            list.iter()
                                .filter_map(|c| c["id"].as_str().map(String::from)),
                        );
                    } else {
                        walk(inner, out);
                    }
                }
            }
            serde_json::Value::Array(list) => list.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(manifest, &mut out);
    out
}

fn date(value: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    value
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("not a date: {value}"))
        .with_timezone(&chrono::Utc)
}

/// The retain-until date S3 reports for `key` (HEAD).
async fn locked_until(target: &S3Target, key: &str) -> chrono::DateTime<chrono::Utc> {
    target
        .retention(key)
        .await
        .expect("HEAD")
        .unwrap_or_else(|| panic!("{key} is not locked"))
        .until
}

/// `until` as S3 keeps it: whole seconds, a fraction rounded up.
fn whole_seconds(until: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{SubsecRound, Timelike};
    let floor = until.trunc_subsecs(0);
    if until.nanosecond() > 0 {
        floor + chrono::Duration::seconds(1)
    } else {
        floor
    }
}

#[tokio::test]
async fn object_lock_dates_follow_each_backups_retention_and_prune_deletes_once_they_pass() {
    let env = database("dated").await;
    let s3 = S3Server::start("plain");
    locked_bucket(&s3, "dated", None);
    // No `days`: the lock is each backup's own retention, by its type's policy.
    let keep = chrono::Duration::seconds(8);
    env.write_config(&format!(
        "[retention]\nfull = \"8s\"\nschema-only = \"90d\"\n{}",
        s3_entry(&s3, "dated", "object_lock = { mode = \"compliance\" }")
    ));
    let shown = text(&env.run_ok(&["config", "show"]));
    let words: Vec<&str> = shown.split_whitespace().collect();
    assert!(
        words
            .join(" ")
            .contains("compliance mode, until each backup's"),
        "{shown}"
    );
    let check = s3_target(&s3, "dated");

    let first = backup(&env, "first");
    let first_manifest = manifest_of(&check, &first).await;
    let first_until = date(&first_manifest["retain_until"]);
    assert_eq!(
        first_until,
        date(&first_manifest["created_at"]) + keep,
        "the manifest records the backup's retention date"
    );
    let first_chunks = chunk_ids(&first_manifest);
    assert!(!first_chunks.is_empty());
    for key in first_chunks
        .iter()
        .map(|id| format!("chunks/{}/{id}", &id[..2]))
        .chain([format!("backups/{first}.json")])
    {
        let retention = check.retention(&key).await.expect("HEAD").expect("locked");
        assert_eq!(retention.mode, "COMPLIANCE", "{key}");
        assert_eq!(retention.until, whole_seconds(first_until), "{key}");
    }
    assert!(locked_until(&check, "larder-repository.json").await >= whole_seconds(first_until));
    // Delete names the date it is locked until.
    let said = refused(&env, &["backup", "delete", &first, "--force"]);
    let named = whole_seconds(first_until)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    assert!(
        said.contains("compliance") && said.contains(&named),
        "{said}\n(expected {named})"
    );

    // A newer backup shares the data's chunks (a new table, still empty, changes only the
    // DDL; small tables' rows share chunks, so new rows would give them new ones): their
    // lock now covers it.
    env.client()
        .await
        .batch_execute("CREATE TABLE notes (id int PRIMARY KEY, body text);")
        .await
        .expect("new table");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = backup(&env, "second");
    let second_manifest = manifest_of(&check, &second).await;
    let second_until = date(&second_manifest["retain_until"]);
    assert!(second_until > first_until);
    let second_chunks = chunk_ids(&second_manifest);
    let shared: Vec<&String> = first_chunks.intersection(&second_chunks).collect();
    let only_first: Vec<&String> = first_chunks.difference(&second_chunks).collect();
    assert!(!shared.is_empty(), "the unchanged rows are deduplicated");
    assert!(!only_first.is_empty(), "the first backup's DDL is its own");
    for id in &shared {
        let key = format!("chunks/{}/{id}", &id[..2]);
        assert_eq!(
            locked_until(&check, &key).await,
            whole_seconds(second_until),
            "shared {key} extended to the newer backup's retention"
        );
    }
    for id in &only_first {
        let key = format!("chunks/{}/{id}", &id[..2]);
        assert_eq!(
            locked_until(&check, &key).await,
            whole_seconds(first_until),
            "{key}"
        );
    }

    // Once the first backup's retention (and so its lock) has passed, prune deletes it;
    // the chunks the second one shares stay, and it still validates.
    let passed = whole_seconds(first_until) + chrono::Duration::milliseconds(500);
    if let Ok(wait) = (passed - chrono::Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let pruned = env.run_json(&["backup", "prune"]);
    let on_s3 = target(&pruned, "s3");
    assert_eq!(
        on_s3["backups_deleted"],
        serde_json::json!([first]),
        "{pruned:#}"
    );
    assert_eq!(on_s3["backups_kept"], serde_json::json!([]), "{pruned:#}");
    let listed = s3.keys_in("dated", "builtin/backups/");
    assert_eq!(
        listed,
        vec![format!("builtin/backups/{second}.json")],
        "{listed:?}"
    );
    env.run_ok(&["backup", "validate", &second]);

    // A schema-only backup is locked by its own type's retention (90 days).
    let schema = env.run_json(&["backup", "create", "-n", "schema", "--type", "schema-only"])
        ["backup"]["id"]
        .as_str()
        .expect("backup id")
        .to_string();
    let schema_manifest = manifest_of(&check, &schema).await;
    let schema_until = date(&schema_manifest["retain_until"]);
    assert_eq!(
        schema_until,
        date(&schema_manifest["created_at"]) + chrono::Duration::days(90)
    );
    assert_eq!(
        locked_until(&check, &format!("backups/{schema}.json")).await,
        whole_seconds(schema_until)
    );
}

#[tokio::test]
async fn an_incrementals_lock_covers_the_full_and_the_links_it_is_built_on() {
    let env = database("chained").await;
    let s3 = S3Server::start("plain");
    locked_bucket(&s3, "chained", None);
    // Incrementals kept longer than their base full (a finer schedule's policy): the
    // full's objects must stay locked as long as an incremental needs them.
    env.write_config(&format!(
        "[incremental]\nenabled = true\n\n[retention]\nfull = \"30s\"\nincremental = \"2h\"\n{}",
        s3_entry(&s3, "chained", "object_lock = { mode = \"governance\" }")
    ));
    let check = s3_target(&s3, "chained");
    let full = backup(&env, "base");
    let full_manifest = manifest_of(&check, &full).await;
    let full_until = whole_seconds(date(&full_manifest["retain_until"]));
    add_rows(&env, 1000).await;
    let first = env.run_json(&["backup", "create", "-n", "one", "--type", "incremental"])["backup"]
        ["id"]
        .as_str()
        .expect("backup id")
        .to_string();
    add_rows(&env, 2000).await;
    let second =
        env.run_json(&["backup", "create", "-n", "two", "--type", "incremental"])["backup"]["id"]
            .as_str()
            .expect("backup id")
            .to_string();
    let second_manifest = manifest_of(&check, &second).await;
    assert_eq!(second_manifest["chain"]["parent"], first.as_str());
    assert_eq!(second_manifest["chain"]["base"], full.as_str());
    let second_until = whole_seconds(date(&second_manifest["retain_until"]));
    assert!(
        second_until > full_until + chrono::Duration::minutes(100),
        "{second_until} vs {full_until}"
    );

    // The base's manifest, the parent's manifest and every chunk of the base full are
    // locked at least as long as the newest incremental.
    let mut keys: Vec<String> = chunk_ids(&full_manifest)
        .iter()
        .map(|id| format!("chunks/{}/{id}", &id[..2]))
        .collect();
    keys.push(format!("backups/{full}.json"));
    keys.push(format!("backups/{first}.json"));
    assert!(keys.len() > 2, "the full has chunks");
    for key in &keys {
        let until = locked_until(&check, key).await;
        assert!(until >= second_until, "{key}: {until} < {second_until}");
    }
    // So delete cannot take the base away while the chain is locked, and names the date.
    let said = refused(&env, &["backup", "delete", &full, "--force"]);
    assert!(said.contains("governance"), "{said}");
    env.run_ok(&["backup", "validate", &second]);
}
