//! Storage targets beyond the local folder: WebAssembly plugins (offsite directory, S3 over
//! wasi:http), the built-in S3 target, the sandbox around plugins, and backups kept on several
//! targets at once.

use crate::support::{
    S3Server, TestEnv, data, envelope, flip_a_bit, fs_entry, plugin_path, reported,
    s3_builtin_entry, text,
};
use larder::repository::Repository;
use larder::repository::manifest::Manifest;
use larder::targets::fs::FsTarget;
use std::path::Path;
use std::sync::Arc;

/// A `[[targets]]` entry for the offsite-directory plugin writing into `dir`.
fn offsite_entry(name: &str, dir: &Path, extra: &str) -> String {
    format!(
        r#"
[[targets]]
name = "{name}"
type = "plugin"
path = "{plugin}"
config = {{ dir = "/offsite" }}
dirs = [{{ host = "{dir}", guest = "/offsite", mode = "read-write" }}]
{extra}
"#,
        plugin = plugin_path("offsite_dir_target.wasm").display(),
        dir = dir.display()
    )
}

/// A `[[targets]]` entry for the test plugin that misbehaves (config `mode`) once a chunk is
/// written, storing objects in `dir` until then.
fn misbehaving_entry(name: &str, dir: &Path, mode: &str, extra: &str) -> String {
    format!(
        r#"
[[targets]]
name = "{name}"
type = "plugin"
path = "{plugin}"
config = {{ dir = "/data", mode = "{mode}" }}
dirs = [{{ host = "{dir}", guest = "/data", mode = "read-write" }}]
{extra}
"#,
        plugin = plugin_path("test_misbehaving.wasm").display(),
        dir = dir.display()
    )
}

fn s3_plugin_entry(name: &str, s3: &S3Server, allow: &str) -> String {
    format!(
        r#"
[[targets]]
name = "{name}"
type = "plugin"
path = "{plugin}"
config = {{ endpoint = "{endpoint}", bucket = "{bucket}", region = "us-east-1", prefix = "larder" }}
secrets = {{ access_key_id = "env:TEST_S3_KEY", secret_access_key = "env:TEST_S3_SECRET" }}
allow_hosts = ["{allow}"]
"#,
        plugin = plugin_path("s3_target.wasm").display(),
        endpoint = s3.endpoint(),
        bucket = s3.bucket,
    )
}

fn plugin_cache(env: &TestEnv) -> String {
    format!(
        "[plugins]\ncache_dir = \"{}\"\n",
        env.work.path().join("plugin-cache").display()
    )
}

/// Runs `backup-cli` with the S3 test credentials in the environment.
fn run(env: &TestEnv, args: &[&str]) -> std::process::Output {
    env.cli()
        .env("TEST_S3_KEY", "testing")
        .env("TEST_S3_SECRET", "testing")
        .args(args)
        .output()
        .expect("run backup-cli")
}

fn run_ok(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let out = run(env, args);
    assert!(
        out.status.success(),
        "backup-cli {} failed:\n{}",
        args.join(" "),
        text(&out)
    );
    out
}

fn run_json(env: &TestEnv, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    reported(&run_ok(env, &all))
}

/// The manifest of a backup kept in a directory with the repository layout.
async fn manifest_in(dir: &Path, id: &str) -> Manifest {
    let target = FsTarget::open("check", dir).expect("open directory");
    manifest_on(Arc::new(target), id).await
}

/// The manifest of a backup kept in the S3 bucket under `root`, read with the built-in target.
async fn manifest_on_s3(s3: &S3Server, root: &str, id: &str) -> Manifest {
    let target = larder::targets::s3::S3Target::new(
        "check",
        &larder::targets::s3::S3Settings {
            bucket: &s3.bucket,
            endpoint: Some(&s3.endpoint()),
            region: "us-east-1",
            root,
            access_key_id: "testing",
            secret_access_key: "testing",
            session_token: None,
            object_lock: None,
        },
    )
    .expect("s3 settings");
    manifest_on(Arc::new(target), id).await
}

async fn manifest_on(target: Arc<dyn larder::targets::Target>, id: &str) -> Manifest {
    Repository::open(target)
        .await
        .expect("a Larder repository on the target")
        .read_manifest(id)
        .await
        .expect("manifest")
}

/// Every table of the backup has the same rows in `restored` as in the source database.
async fn assert_same_rows(env: &TestEnv, restored: &str, manifest: &Manifest) {
    assert_eq!(
        env.all_rows(restored, manifest).await,
        env.all_rows(&env.dbname, manifest).await,
        "rows restored into {restored}"
    );
}

/// Backs up, validates, restores into `restored` and checks every row came back.
async fn round_trip(
    env: &TestEnv,
    restored: &str,
    manifest_of: impl AsyncFnOnce(&str) -> Manifest,
) -> String {
    let created = run_json(env, &["backup", "create", "-n", "plugin round trip"]);
    let id = created["backup"]["id"]
        .as_str()
        .expect("backup id")
        .to_string();
    run_ok(env, &["backup", "validate", &id]);
    run_ok(
        env,
        &["recovery", "execute", &id, "--dest-db", restored, "--yes"],
    );
    let manifest = manifest_of(&id).await;
    assert!(manifest.rows() > 0, "the sample has rows");
    assert_same_rows(env, restored, &manifest).await;
    id
}

#[tokio::test]
async fn a_backup_through_the_offsite_plugin_validates_restores_and_reuses_the_compiled_plugin() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.002).await;
    let offsite = env.work.path().join("offsite-mount");
    std::fs::create_dir_all(&offsite).expect("offsite folder");
    let sha = larder::plugin::inspect::hash(&plugin_path("offsite_dir_target.wasm")).expect("hash");
    env.write_config(&format!(
        "{}{}",
        plugin_cache(&env),
        offsite_entry("offsite", &offsite, &format!("sha256 = \"{sha}\""))
    ));

    let listed = run_json(&env, &["plugin", "list"]);
    assert_eq!(listed[0]["target"], "offsite");
    assert_eq!(listed[0]["name"], "offsite-dir-target");
    assert_eq!(listed[0]["world"], "larder:plugin/storage-target@1.0.0");
    assert_eq!(listed[0]["pinned"], true);
    assert_eq!(listed[0]["sha256"], sha.as_str());
    assert_eq!(listed[0]["cache"], "compiled", "first use compiles");
    let granted = listed[0]["granted"].to_string();
    assert!(
        granted.contains("/offsite (rw)") && granted.contains("config dir"),
        "{granted}"
    );
    let again = run_json(&env, &["plugin", "list"]);
    assert_eq!(
        again[0]["cache"], "hit",
        "the second run reuses the compiled component"
    );
    // A cached artifact others could have written is never loaded: it is compiled afresh.
    for entry in std::fs::read_dir(env.work.path().join("plugin-cache")).expect("cache folder") {
        let path = entry.expect("entry").path();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("chmod");
    }
    let tampered = run(&env, &["--json", "plugin", "list"]);
    let listed = reported(&tampered);
    assert_eq!(listed[0]["cache"], "compiled", "{}", text(&tampered));
    assert!(
        text(&tampered).contains("writable by others"),
        "{}",
        text(&tampered)
    );

    let id = round_trip(&env, "pantry_from_offsite", async |id| {
        manifest_in(&offsite, id).await
    })
    .await;
    // The plugin wrote the same layout as the built-in target, with no temporary files left.
    let manifest = manifest_in(&offsite, &id).await;
    for chunk in manifest.chunks() {
        assert!(
            offsite
                .join(larder::repository::chunk_key(&chunk.id))
                .is_file()
        );
    }
    let leftovers: Vec<_> = walk(&offsite)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_backup_to_s3_through_the_plugin_validates_and_restores() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.002).await;
    let s3 = S3Server::start("pantry-backups");
    env.write_config(&format!(
        "{}{}",
        plugin_cache(&env),
        s3_plugin_entry("s3", &s3, &format!("127.0.0.1:{}", s3.port))
    ));
    let id = round_trip(&env, "pantry_from_s3", async |id| {
        // Read back through the built-in S3 target: same bucket, same layout.
        manifest_on_s3(&s3, "larder", id).await
    })
    .await;
    let keys = s3.keys("larder/backups/");
    assert_eq!(keys, vec![format!("larder/backups/{id}.json")]);
    assert!(
        s3.keys("larder/chunks/").len() >= 2,
        "chunks are in the bucket"
    );
}

#[tokio::test]
async fn a_backup_to_s3_through_the_builtin_target_validates_and_restores() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.002).await;
    let s3 = S3Server::start("pantry-builtin");
    env.write_config(&s3_builtin_entry("s3", &s3));
    let id = round_trip(&env, "pantry_from_builtin_s3", async |id| {
        manifest_on_s3(&s3, "builtin", id).await
    })
    .await;
    assert_eq!(
        s3.keys("builtin/backups/"),
        vec![format!("builtin/backups/{id}.json")]
    );
}

#[tokio::test]
async fn a_request_to_a_host_not_on_the_allow_list_is_denied_and_logged() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.001).await;
    let s3 = S3Server::start("pantry-denied");
    env.write_config(&format!(
        "{}{}",
        plugin_cache(&env),
        s3_plugin_entry("s3", &s3, "s3.example.com")
    ));
    let out = run(&env, &["backup", "create"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("denied"), "{all}");
    assert!(
        all.contains("s3 (s3_target.wasm)") && all.contains(&format!("127.0.0.1:{}", s3.port)),
        "the denial names the plugin and the host: {all}"
    );
    assert!(s3.keys("larder/").is_empty(), "nothing reached the server");
}

#[tokio::test]
async fn a_plugin_cannot_reach_outside_its_preopened_directory() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.001).await;
    let granted = env.work.path().join("granted");
    std::fs::create_dir_all(&granted).expect("folder");
    env.write_config(&format!(
        "{}{}",
        plugin_cache(&env),
        misbehaving_entry("evil", &granted, "escape", "")
    ));
    let out = run(&env, &["backup", "create"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("sandbox held"),
        "the plugin's own report of what failed: {all}"
    );
    assert!(
        !env.work.path().join("escaped").exists(),
        "nothing was written beside the granted folder"
    );

    // The real offsite plugin pointed at a folder it was not granted cannot store anything.
    env.write_config(&format!(
        r#"{cache}
[[targets]]
name = "offsite"
type = "plugin"
path = "{plugin}"
config = {{ dir = "/elsewhere" }}
dirs = [{{ host = "{dir}", guest = "/offsite", mode = "read-write" }}]
"#,
        cache = plugin_cache(&env),
        plugin = plugin_path("offsite_dir_target.wasm").display(),
        dir = granted.display()
    ));
    let out = run(&env, &["backup", "create"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("/elsewhere"), "{}", text(&out));

    // A read-only grant cannot be written to.
    let read_only = env.work.path().join("read-only");
    std::fs::create_dir_all(&read_only).expect("folder");
    env.write_config(&offsite_entry("offsite", &read_only, "").replace("read-write", "read-only"));
    let out = run(&env, &["backup", "create"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        walk(&read_only).is_empty(),
        "nothing was written through a read-only grant"
    );
}

#[tokio::test]
async fn a_plugin_that_does_not_match_its_pin_is_refused_and_pins_can_be_required() {
    let env = TestEnv::start("pantry").await;
    let dir = env.work.path().join("offsite");
    std::fs::create_dir_all(&dir).expect("folder");
    let wrong = "0".repeat(64);
    env.write_config(&format!(
        "{}{}",
        plugin_cache(&env),
        offsite_entry("offsite", &dir, &format!("sha256 = \"{wrong}\""))
    ));
    let out = run(&env, &["plugin", "list"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let actual =
        larder::plugin::inspect::hash(&plugin_path("offsite_dir_target.wasm")).expect("hash");
    assert!(
        all.contains(&wrong) && all.contains(&actual),
        "expected and actual digests shown: {all}"
    );

    env.write_config(&format!(
        "[plugins]\nrequire_pinned_plugins = true\ncache_dir = \"{}\"\n{}",
        env.work.path().join("plugin-cache").display(),
        offsite_entry("offsite", &dir, "")
    ));
    let out = run(&env, &["plugin", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("require_pinned_plugins"),
        "{}",
        text(&out)
    );

    let hashed = run_json(
        &env,
        &[
            "plugin",
            "hash",
            &plugin_path("offsite_dir_target.wasm").display().to_string(),
        ],
    );
    assert_eq!(hashed["sha256"], actual.as_str());
    let inspected = run_json(
        &env,
        &[
            "plugin",
            "inspect",
            &plugin_path("s3_target.wasm").display().to_string(),
        ],
    );
    assert_eq!(inspected["world"], "larder:plugin/storage-target");
    let imports = inspected["imports"].to_string();
    assert!(
        imports.contains("wasi:http/outgoing-handler") && imports.contains("larder:plugin/host"),
        "{imports}"
    );
}

#[tokio::test]
async fn misbehaving_plugins_fail_the_backup_naming_the_plugin_and_the_call() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.001).await;
    for (mode, limits, expected) in [
        ("trap", "", "trapped (the plugin panicked) during `put`"),
        ("loop", "timeout = \"2s\"", "deadline"),
        ("oom", "memory = \"64MiB\"", "memory limit of 64 MiB"),
        ("garbage", "", "invalid answer to `list`"),
    ] {
        let dir = env.work.path().join(format!("store-{mode}"));
        std::fs::create_dir_all(&dir).expect("folder");
        env.write_config(&format!(
            "{}{}",
            plugin_cache(&env),
            misbehaving_entry("evil", &dir, mode, limits)
        ));
        let started = std::time::Instant::now();
        let out = run(&env, &["backup", "create"]);
        let all = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{mode}: the host exits with a failure, not a crash: {all}"
        );
        assert!(
            all.contains("evil (test_misbehaving.wasm)"),
            "{mode}: names the plugin: {all}"
        );
        assert!(
            all.contains(expected),
            "{mode}: says what happened ({expected}): {all}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{mode}: stopped in time"
        );
        let manifests: Vec<_> = walk(&dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("/backups/"))
            .collect();
        assert!(
            manifests.is_empty(),
            "{mode}: no backup became visible: {manifests:?}"
        );
    }
}

#[tokio::test]
async fn three_targets_keep_copies_and_a_corrupt_copy_is_restored_from_another() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.002).await;
    let s3 = S3Server::start("pantry-three");
    let local = env.work.path().join("primary");
    let offsite = env.work.path().join("offsite");
    std::fs::create_dir_all(&offsite).expect("folder");
    env.write_config(&format!(
        "{}{}{}{}",
        plugin_cache(&env),
        fs_entry("local", &local),
        s3_builtin_entry("s3", &s3),
        offsite_entry("offsite", &offsite, "")
    ));
    let created = run_json(&env, &["backup", "create", "-n", "three copies"]);
    let id = created["backup"]["id"].as_str().expect("id").to_string();
    let copies: Vec<&str> = created["copies"]
        .as_array()
        .expect("copies")
        .iter()
        .map(|c| c["to"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(copies, ["s3", "offsite"]);

    let listed = run_json(&env, &["backup", "list"]);
    for target in ["local", "s3", "offsite"] {
        assert_eq!(listed[0]["targets"][target], "complete", "{listed}");
    }

    // Corrupt one chunk of the primary copy.
    let manifest = manifest_in(&local, &id).await;
    let chunk = manifest
        .tables
        .iter()
        .flat_map(|t| t.parts.iter())
        .flat_map(|p| p.chunks.iter())
        .next()
        .expect("a data chunk");
    flip_a_bit(&local.join(larder::repository::chunk_key(&chunk.id)));

    // That copy alone fails validation, naming the chunk...
    let out = run(&env, &["backup", "validate", &id, "--target", "local"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("Checksum verification failed"),
        "{}",
        text(&out)
    );
    // ...the default validation checks every copy and names the damaged one, accepting
    // one intact copy only with --any-copy; the restore reads the good copy and says so.
    let out = run(&env, &["--json", "backup", "validate", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("Backup Corruption") && text(&out).contains("target 'local'"),
        "{}",
        text(&out)
    );
    let validated = run_json(&env, &["backup", "validate", &id, "--any-copy"]);
    assert_eq!(validated["ok"], true);
    let statuses: Vec<(&str, &str)> = validated["copies"]
        .as_array()
        .expect("copies")
        .iter()
        .map(|c| {
            (
                c["target"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("local", "damaged"),
            ("s3", "intact"),
            ("offsite", "intact")
        ],
        "{validated}"
    );
    let restored = run_json(
        &env,
        &[
            "recovery",
            "execute",
            &id,
            "--dest-db",
            "pantry_fallback",
            "--yes",
        ],
    );
    assert!(
        restored["fallbacks"].to_string().contains(&chunk.id),
        "{restored}"
    );
    assert_same_rows(&env, "pantry_fallback", &manifest).await;

    // A chunk lost on the offsite copy shows as incomplete until `backup sync` repairs it.
    std::fs::remove_file(offsite.join(larder::repository::chunk_key(&chunk.id)))
        .expect("remove offsite chunk");
    let listed = run_json(&env, &["backup", "list"]);
    assert_eq!(listed[0]["targets"]["offsite"], "incomplete", "{listed}");
    let synced = run_json(&env, &["backup", "sync"]);
    let to: Vec<&str> = synced
        .as_array()
        .expect("copies")
        .iter()
        .map(|c| c["to"].as_str().unwrap_or(""))
        .collect();
    assert!(to.contains(&"offsite"), "{synced}");
    let listed = run_json(&env, &["backup", "list"]);
    assert_eq!(listed[0]["targets"]["offsite"], "complete", "{listed}");
    run_ok(&env, &["backup", "validate", &id, "--target", "offsite"]);

    // Complete loss of the primary storage: the copies still list and restore.
    std::fs::remove_dir_all(&local).expect("lose the primary");
    let listed = run_json(&env, &["backup", "list"]);
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed[0]["targets"]["s3"], "complete", "{listed}");
    assert!(listed[0]["targets"].get("local").is_none(), "{listed}");
    run_ok(
        &env,
        &[
            "recovery",
            "execute",
            "latest",
            "--from",
            "offsite",
            "--dest-db",
            "pantry_offsite",
            "--yes",
        ],
    );
    assert_same_rows(&env, "pantry_offsite", &manifest).await;
}

#[tokio::test]
async fn a_failed_copy_keeps_the_backup_on_the_primary_and_sync_finishes_it() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.001).await;
    let local = env.work.path().join("primary");
    let second = env.work.path().join("second");
    std::fs::create_dir_all(&second).expect("folder");
    let secondary = |mode: &str| misbehaving_entry("second", &second, mode, "");
    env.write_config(&format!(
        "{}{}{}",
        plugin_cache(&env),
        fs_entry("local", &local),
        secondary("trap")
    ));
    let out = run(&env, &["--json", "backup", "create", "-n", "half copied"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let envelope = envelope(&out);
    assert_eq!(envelope["status"], "failed", "{envelope}");
    assert_eq!(envelope["kind"], "copies_incomplete", "{envelope}");
    let reported = data(&envelope);
    let id = reported["backup"]["id"].as_str().expect("id").to_string();
    assert!(
        text(&out).contains("backup-cli backup sync"),
        "says how to finish: {}",
        text(&out)
    );

    let listed = run_json(&env, &["backup", "list"]);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["targets"]["local"], "complete", "{listed}");
    assert!(
        listed[0]["targets"].get("second").is_none(),
        "no copy is visible on the failed target: {listed}"
    );

    // The target recovers: sync copies the backup from the primary.
    env.write_config(&format!(
        "{}{}{}",
        plugin_cache(&env),
        fs_entry("local", &local),
        secondary("behave")
    ));
    let synced = run_json(&env, &["backup", "sync"]);
    assert_eq!(synced[0]["to"], "second", "{synced}");
    assert_eq!(synced[0]["from"], "local", "{synced}");
    run_ok(&env, &["backup", "validate", &id, "--target", "second"]);
    let again = run_json(&env, &["backup", "sync"]);
    assert_eq!(
        again.as_array().map(Vec::len),
        Some(0),
        "nothing left to copy: {again}"
    );
}

#[tokio::test]
async fn the_s3_plugin_pages_through_long_listings_when_garbage_collecting() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.001).await;
    let s3 = S3Server::start("pantry-pages");
    env.write_config(&format!(
        "{}{}",
        plugin_cache(&env),
        s3_plugin_entry("s3", &s3, &format!("127.0.0.1:{}", s3.port))
    ));
    let created = run_json(&env, &["backup", "create"]);
    let id = created["backup"]["id"].as_str().expect("id").to_string();
    // 1,100 unreferenced chunks: more than one ListObjectsV2 page (1,000 keys).
    for n in 0..1100 {
        let key = format!("{n:064x}");
        let put = s3.request(
            "PUT",
            &format!("/{}/larder/chunks/{}/{key}", s3.bucket, &key[..2]),
            b"junk",
        );
        assert!(put.starts_with("HTTP/1.1 200"), "{put}");
    }
    assert!(s3.keys("larder/chunks/").len() > 1100);
    let deleted = run_json(&env, &["backup", "delete", &id, "--force"]);
    assert!(
        deleted["chunks_deleted"].as_u64().unwrap_or(0) > 1100,
        "{deleted}"
    );
    assert!(
        s3.keys("larder/chunks/").is_empty(),
        "every page was listed and collected"
    );
}

#[tokio::test]
async fn no_verbosity_prints_a_credential() {
    let env = TestEnv::start("pantry").await;
    env.client()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
        .await
        .expect("data");
    let s3 = S3Server::start("pantry-secrets");
    let (builtin_secret, plugin_secret, db_password) = (
        "BuiltinS3Secret/7xK+q9",
        "PluginS3Secret-Qz81mW",
        "DbPassw0rd-Zq7tY",
    );
    // The built-in S3 target is the primary; the S3 plugin, with secrets of its own, the copy.
    env.write_config(&format!(
        "{}{}{}",
        plugin_cache(&env),
        s3_builtin_entry("s3", &s3),
        s3_plugin_entry("s3p", &s3, &format!("127.0.0.1:{}", s3.port))
            .replace("env:TEST_S3_SECRET", "env:TEST_S3P_SECRET")
    ));
    let url = env
        .url()
        .replace("postgres@", &format!("postgres:{db_password}@"));
    for (verbosity, rust_log) in [
        ("-v", None),
        ("-vv", None),
        ("-vvv", None),
        ("-v", Some("debug")),
        ("-v", Some("trace")),
    ] {
        for args in [
            &["backup", "create"][..],
            &["backup", "list"],
            &["recovery", "plan", "latest"],
        ] {
            let mut cmd = env.cli();
            cmd.env("TEST_S3_KEY", "testing")
                .env("TEST_S3_SECRET", builtin_secret)
                .env("TEST_S3P_SECRET", plugin_secret)
                .env("DATABASE_URL", &url)
                .arg(verbosity)
                .args(args);
            match rust_log {
                Some(filter) => cmd.env("RUST_LOG", filter),
                None => cmd.env_remove("RUST_LOG"),
            };
            let out = cmd.output().expect("run backup-cli");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let what = format!("{verbosity} RUST_LOG={rust_log:?} {}", args.join(" "));
            assert!(out.status.success(), "{what}:\n{}", text(&out));
            for secret in [builtin_secret, plugin_secret, db_password] {
                assert!(
                    !stderr.contains(secret),
                    "{what} printed the secret {secret}:\n{stderr}"
                );
            }
            // With RUST_LOG=debug the S3 client logs its configuration, key included: the
            // line is kept, the key is not.
            if args[1] == "create" && rust_log.is_some() {
                assert!(stderr.contains("[REDACTED]"), "{what}:\n{stderr}");
            }
            if args[0] == "backup"
                && args[1] == "create"
                && (verbosity != "-v" || rust_log.is_some())
            {
                assert!(stderr.contains("DEBUG"), "{what} logs at debug:\n{stderr}");
            }
        }
    }
}

#[tokio::test]
async fn allow_hosts_localhost_does_not_reach_other_loopback_ports() {
    let env = TestEnv::start("pantry").await;
    let s3 = S3Server::start("pantry-loopback");
    let pg_port = env.cluster.port();
    let pointed_at = |endpoint: &str, allow: &str, extra: &str| {
        format!(
            "{}{}{extra}",
            plugin_cache(&env),
            s3_plugin_entry("s3", &s3, allow).replace(&s3.endpoint(), endpoint)
        )
    };
    // A bare `localhost` is the default port only: PostgreSQL's port is refused before any
    // connection is made; `localhost:*` names the port but still not a loopback grant.
    for (allow, why) in [
        (
            "localhost",
            format!("port {pg_port} is not allowed by the allow_hosts entry \"localhost\""),
        ),
        (
            "localhost:*",
            "a loopback address; allow it with an allow_hosts entry naming the address".into(),
        ),
    ] {
        env.write_config(&pointed_at(
            &format!("http://localhost:{pg_port}"),
            allow,
            "",
        ));
        let out = run(&env, &["backup", "create"]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(
            all.contains(&format!(
                "denied an outbound request to localhost:{pg_port}"
            )) && all.contains("s3 (s3_target.wasm)")
                && all.contains(&why),
            "allow_hosts = [{allow:?}]: the denial names the plugin, the destination and why:\n{all}"
        );
    }
    // An explicit `localhost:PORT`, or `allow_private = true`, reaches the S3 server there.
    let moto = format!("http://localhost:{}", s3.port);
    for (allow, extra) in [
        (format!("localhost:{}", s3.port), ""),
        ("localhost:*".to_string(), "allow_private = true\n"),
    ] {
        env.write_config(&pointed_at(&moto, &allow, extra));
        run_ok(&env, &["backup", "create"]);
    }
    assert!(!s3.keys("larder/backups/").is_empty());
}

#[tokio::test]
async fn an_endless_listing_or_a_huge_answer_is_stopped_naming_the_plugin() {
    let env = TestEnv::start("pantry").await;
    let dir = env.work.path().join("store-endless");
    std::fs::create_dir_all(&dir).expect("folder");
    // A repository the plugin serves honestly, except for its listings.
    Repository::open_or_init(Arc::new(FsTarget::open("prep", &dir).expect("folder")))
        .await
        .expect("repository");
    for (limits, expected) in [
        ("", "more than 2000000 keys (max_list_keys)"),
        (
            "max_list_keys = 5000",
            "more than 5000 keys (max_list_keys)",
        ),
        (
            "max_list_keys = 1000000000\nmax_list_pages = 30",
            "more than 30 pages (max_list_pages)",
        ),
        (
            "max_list_keys = 1000000000\nmax_list_pages = 1000000000\nlist_timeout = \"2s\"",
            "more than 2s (list_timeout)",
        ),
    ] {
        env.write_config(&format!(
            "{}{}",
            plugin_cache(&env),
            misbehaving_entry("evil", &dir, "endless-list", limits)
        ));
        let started = std::time::Instant::now();
        let out = run(&env, &["recovery", "plan", "latest"]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{limits}: {all}");
        assert!(
            all.contains("plugin evil (test_misbehaving.wasm) kept listing \"backups/\"")
                && all.contains(expected)
                && all.contains("[[targets]] entry of 'evil'"),
            "{limits}: names the plugin, the limit and where to raise it: {all}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{limits}: stopped in time"
        );
    }

    env.write_config(&format!(
        "{}{}",
        plugin_cache(&env),
        misbehaving_entry("evil", &dir, "huge-answers", "")
    ));
    let out = run(&env, &["plugin", "list"]);
    let all = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        &all[..all.len().min(2000)]
    );
    assert!(
        all.contains(
            "returned an invalid answer to `describe`: its name is 1048576 bytes, more than 128"
        ),
        "{}",
        &all[..all.len().min(2000)]
    );
    let longest = all.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 5000,
        "the plugin's 1 MiB log line is cut: a line of {longest} bytes"
    );
}
