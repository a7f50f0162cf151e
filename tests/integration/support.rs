//! Shared harness: a throwaway cluster with a database, a repository folder, and helpers to
//! run the real `backup-cli` binary against them.

use larder::config::DatabaseConfig;
use larder::pg::ConnectionSettings;
use larder::pg::ephemeral::{ClusterSetup, EphemeralCluster};
use larder::repository::Repository;
use larder::repository::manifest::Manifest;
use larder::targets::fs::FsTarget;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

pub const SCHEMA: &str = include_str!("../../examples/kitchen-pantry/schema.sql");
pub const GENERATE: &str = include_str!("../../examples/kitchen-pantry/generate.sql");

/// One test's world: its own PostgreSQL cluster, database and repository folder.
pub struct TestEnv {
    pub cluster: EphemeralCluster,
    pub dbname: String,
    pub work: tempfile::TempDir,
    /// The sslmode of every connection the test makes.
    pub sslmode: &'static str,
}

impl TestEnv {
    /// Starts a cluster and creates database `dbname` in it.
    pub async fn start(dbname: &str) -> TestEnv {
        TestEnv::start_with(dbname, ClusterSetup::default(), "disable").await
    }

    /// Starts a cluster with extra files/settings, connecting with `sslmode`.
    pub async fn start_with(dbname: &str, setup: ClusterSetup, sslmode: &'static str) -> TestEnv {
        let cluster = tokio::task::spawn_blocking(move || EphemeralCluster::start_with(setup))
            .await
            .expect("cluster start task")
            .unwrap_or_else(|e| panic!("cannot start a throwaway PostgreSQL for this test: {e}"));
        let env = TestEnv {
            cluster,
            dbname: dbname.to_string(),
            work: tempfile::tempdir().expect("temporary folder"),
            sslmode,
        };
        env.admin()
            .await
            .batch_execute(&format!("CREATE DATABASE \"{dbname}\""))
            .await
            .expect("create database");
        env
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode={}",
            self.cluster.port(),
            self.dbname,
            self.sslmode
        )
    }

    pub fn settings(&self) -> ConnectionSettings {
        ConnectionSettings::resolve(Some(&self.url()), &DatabaseConfig::default())
            .expect("settings")
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        self.settings()
            .connect()
            .await
            .expect("connect to the test database")
    }

    pub async fn admin(&self) -> tokio_postgres::Client {
        self.settings()
            .connect_to("postgres")
            .await
            .expect("connect to postgres")
    }

    pub fn repo_dir(&self) -> PathBuf {
        self.work.path().join("repo")
    }

    pub async fn repo(&self) -> Repository {
        let target = FsTarget::open("local", &self.repo_dir()).expect("open repository folder");
        Repository::open(Arc::new(target))
            .await
            .expect("open repository")
    }

    /// Loads the Kitchen Pantry sample at `scale`.
    pub async fn load_kitchen_pantry(&self, scale: f64) {
        self.load_kitchen_pantry_as("postgres", scale).await
    }

    /// Loads the Kitchen Pantry sample at `scale` as `role`, which owns its objects.
    pub async fn load_kitchen_pantry_as(&self, role: &str, scale: f64) {
        let db = self.client().await;
        db.batch_execute(&format!("SET ROLE \"{role}\";\n{SCHEMA}"))
            .await
            .expect("kitchen pantry schema");
        db.batch_execute(&format!("SET larder.scale = '{scale}';\n{GENERATE}"))
            .await
            .expect("kitchen pantry data");
    }

    /// The runbook's database user: `kitchen_pantry_user`, LOGIN, not a superuser, the owner
    /// of this test's database (and of what is loaded as it afterwards).
    pub async fn create_runbook_owner(&self) {
        self.admin()
            .await
            .batch_execute(&format!(
                "CREATE ROLE kitchen_pantry_user LOGIN; ALTER DATABASE \"{}\" OWNER TO kitchen_pantry_user",
                self.dbname
            ))
            .await
            .expect("the runbook's database owner");
    }

    /// This test's database URL for another user (`url()` connects as postgres).
    pub fn url_as(&self, user: &str) -> String {
        self.url()
            .replace("postgres://postgres@", &format!("postgres://{user}@"))
    }

    /// `backup-cli args` connecting as `user`; returns its output (whatever the exit code).
    pub fn run_as(&self, user: &str, args: &[&str]) -> Output {
        self.cli()
            .env("DATABASE_URL", self.url_as(user))
            .args(args)
            .output()
            .expect("run backup-cli")
    }

    /// `backup-cli` with this test's database and repository, and no stray configuration.
    /// With a configuration written by [`TestEnv::write_config`], that file is used instead
    /// of the repository folder.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backup-cli"));
        cmd.env("DATABASE_URL", self.url())
            // The S3 test server's credentials, for configurations with S3 targets.
            .env("TEST_S3_KEY", "testing")
            .env("TEST_S3_SECRET", "testing")
            .env_remove("BACKUP_CLI_CONFIG")
            .env_remove("BACKUP_CLI_REPO")
            .current_dir(self.work.path());
        let config = self.config_path();
        if config.exists() {
            cmd.env("BACKUP_CLI_CONFIG", config);
        } else {
            cmd.env("BACKUP_CLI_REPO", self.repo_dir());
        }
        cmd
    }

    fn config_path(&self) -> PathBuf {
        self.work.path().join("larder-test.toml")
    }

    /// Writes the configuration every later `backup-cli` run of this test uses.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).expect("write test configuration");
    }

    /// Runs `backup-cli args` and returns its output (whatever the exit code).
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().expect("run backup-cli")
    }

    /// Runs `backup-cli args`, asserting success.
    pub fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "backup-cli {} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `backup-cli args`, asserting it fails with exit code 1; returns stdout and stderr.
    pub fn run_failing(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let all = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "backup-cli {} should fail with exit code 1:\n{all}",
            args.join(" ")
        );
        all
    }

    /// `backup-cli backup export latest --format sql -o FILE`, asserting success.
    pub fn export_latest(&self, file: &Path) -> Output {
        self.run_ok(&[
            "backup",
            "export",
            "latest",
            "--format",
            "sql",
            "-o",
            file.to_str().expect("export path"),
        ])
    }

    /// Runs `backup-cli --json args`, asserting success, and parses stdout.
    pub fn run_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        ok_data(args, &self.run_ok(&all))
    }

    /// [`TestEnv::run_json`] connecting as `user`.
    pub fn run_json_as(&self, user: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run_as(user, &all);
        assert!(
            out.status.success(),
            "backup-cli {} as {user} failed ({}):\n{}",
            args.join(" "),
            out.status,
            text(&out)
        );
        ok_data(args, &out)
    }

    /// Creates a full backup through the CLI and returns its manifest.
    pub async fn backup(&self, name: &str) -> Manifest {
        let out = self.run_json(&["backup", "create", "-n", name]);
        let id = out["backup"]["id"]
            .as_str()
            .expect("backup id in JSON")
            .to_string();
        self.repo()
            .await
            .read_manifest(&id)
            .await
            .expect("manifest of the new backup")
    }
}

/// The data of a successful `backup-cli --json args`, asserting its envelope says `ok`.
fn ok_data(args: &[&str], out: &Output) -> serde_json::Value {
    let envelope = envelope(out);
    assert_eq!(
        envelope["status"],
        "ok",
        "backup-cli {} printed a JSON envelope that is not ok: {envelope}",
        args.join(" ")
    );
    data(&envelope)
}

/// The JSON envelope `backup-cli --json` printed on stdout: `{"status", "kind", "error",
/// KEY: data}` (kind and error when it failed; data unless it failed before reporting).
pub fn envelope(out: &Output) -> serde_json::Value {
    let envelope: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("backup-cli printed invalid JSON ({e}): {}", text(out)));
    assert!(
        envelope["status"].is_string(),
        "no status in the JSON envelope: {envelope}"
    );
    envelope
}

/// A command's data out of its envelope: the value of the one key beside status, kind and
/// error (`Null` when there is none, as for an error).
pub fn data(envelope: &serde_json::Value) -> serde_json::Value {
    let data: Vec<&serde_json::Value> = envelope
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| !["status", "kind", "error"].contains(&key.as_str()))
        .map(|(_, value)| value)
        .collect();
    assert!(data.len() <= 1, "more than one data key: {envelope}");
    data.first().copied().cloned().unwrap_or_default()
}

/// The report a `backup-cli --json` run printed, whether it succeeded or failed.
pub fn reported(out: &Output) -> serde_json::Value {
    data(&envelope(out))
}

/// stdout and stderr together, for message assertions.
/// Flips one bit in the middle of a stored object, as silent disk corruption would.
pub fn flip_a_bit(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read the object to corrupt");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).expect("write the corrupted object");
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The rows of `table` as stored in the backup, sorted.
pub async fn backup_rows(repo: &Repository, manifest: &Manifest, table: &str) -> Vec<String> {
    let entry = manifest
        .find_table(table)
        .unwrap_or_else(|| panic!("table {table} not in backup {}", manifest.id));
    let mut rows = Vec::new();
    for part in &entry.parts {
        let data = repo
            .read_stream(part, table)
            .await
            .expect("read table data");
        rows.extend(
            String::from_utf8(data)
                .expect("utf-8 COPY text")
                .lines()
                .map(str::to_string),
        );
    }
    rows.sort();
    rows
}

/// The rows of `table` as the database has them now (same COPY settings as backups), sorted.
pub async fn live_rows(
    client: &tokio_postgres::Client,
    table: &str,
    columns: &[String],
) -> Vec<String> {
    use futures_util::StreamExt;
    client
        .batch_execute(larder::pg::session::SESSION_SETTINGS)
        .await
        .expect("session settings");
    // Read with the backup's settings, empty search_path included: unqualified names are
    // the sample's public tables.
    let table = if table.contains('.') {
        table.to_string()
    } else {
        format!("public.{table}")
    };
    let sql = if columns.is_empty() {
        format!("COPY {table} TO STDOUT")
    } else {
        format!("COPY {table} ({}) TO STDOUT", columns.join(", "))
    };
    let stream = client.copy_out(sql.as_str()).await.expect("copy out");
    let mut stream = std::pin::pin!(stream);
    let mut data = Vec::new();
    while let Some(piece) = stream.next().await {
        data.extend_from_slice(&piece.expect("copy data"));
    }
    // The caller's later queries name the sample's tables unqualified.
    client
        .batch_execute("RESET search_path")
        .await
        .expect("reset search_path");
    let mut rows: Vec<String> = String::from_utf8(data)
        .expect("utf-8")
        .lines()
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// Every chunk file in a repository folder.
pub fn chunk_files(repo_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(repo_dir.join("chunks")) else {
        return out;
    };
    for dir in dirs.flatten() {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(file.path());
        }
    }
    out.sort();
    out
}

impl TestEnv {
    /// A client on another database of this test's cluster.
    pub async fn client_for(&self, dbname: &str) -> tokio_postgres::Client {
        self.settings()
            .connect_to(dbname)
            .await
            .unwrap_or_else(|e| panic!("connect to {dbname}: {e}"))
    }

    /// `pg_dump` of a database of this cluster (`extra` adds flags), without psql's
    /// `\restrict` lines, whose keys are random per run.
    pub fn pg_dump(&self, dbname: &str, extra: &[&str]) -> String {
        let out = Command::new(self.cluster.bindir().join("pg_dump"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.cluster.port().to_string(),
                "-U",
                "postgres",
                "-d",
                dbname,
            ])
            .args(extra)
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump {dbname} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 dump")
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// `psql -v ON_ERROR_STOP=1 -f file` into database `dbname` of this cluster, asserting it
    /// succeeds (how an operator restores a `backup export`).
    pub fn psql_file(&self, dbname: &str, file: &Path) -> Output {
        let out = Command::new(self.cluster.bindir().join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(self.cluster.port().to_string())
            .args(["-U", "postgres", "-d", dbname, "-f"])
            .arg(file)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql could not restore {} into {dbname}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The standard a restore is held to: `pg_dump -Fc source | pg_restore -d target` (target
    /// created by pg_restore `--create` would take the source's name, so it is created here
    /// from template0 with the source's encoding and locale).
    /// Returns the archive.
    pub async fn pg_restore_copy(&self, source: &str, target: &str) -> PathBuf {
        let settings = self
            .client_for(source)
            .await
            .query_one(
                "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text \
                 FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .expect("source database settings");
        let (encoding, collate, ctype): (String, String, String) =
            (settings.get(0), settings.get(1), settings.get(2));
        self.admin()
            .await
            .batch_execute(&format!(
                "CREATE DATABASE \"{target}\" TEMPLATE template0 ENCODING '{encoding}' LC_COLLATE '{collate}' LC_CTYPE '{ctype}'"
            ))
            .await
            .expect("create the pg_restore target");
        let archive = self.work.path().join(format!("{source}.dump"));
        let out = Command::new(self.cluster.bindir().join("pg_dump"))
            .args(self.connection_args())
            .args(["-Fc", "-d", source, "-f"])
            .arg(&archive)
            .output()
            .expect("run pg_dump");
        assert!(out.status.success(), "pg_dump -Fc {source}: {}", text(&out));
        let out = self.pg_restore(&archive, target, &["--exit-on-error"]);
        assert!(
            out.status.success(),
            "pg_restore into {target}: {}",
            text(&out)
        );
        archive
    }

    /// A failed new-database restore said it dropped `dbname`, and it is gone.
    pub async fn assert_half_built_dropped(&self, said: &str, dbname: &str) {
        assert!(
            said.contains(&format!("half-built database {dbname} was dropped")),
            "{said}"
        );
        let partial = larder::engine::recovery::restore::partial_name(dbname);
        assert!(
            !self
                .databases()
                .await
                .iter()
                .any(|d| d == dbname || *d == partial),
            "the half-built database {dbname} (built as {partial}) is left behind"
        );
    }

    pub async fn databases(&self) -> Vec<String> {
        let rows = self
            .admin()
            .await
            .query("SELECT datname::text FROM pg_database ORDER BY 1", &[])
            .await
            .expect("databases");
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Sorted rows of every table in `manifest`, as database `dbname` has them now.
    pub async fn all_rows(&self, dbname: &str, manifest: &Manifest) -> Vec<(String, Vec<String>)> {
        let client = self.client_for(dbname).await;
        let mut out = Vec::new();
        for table in &manifest.tables {
            out.push((
                table.display_name(),
                live_rows(&client, &table.qualified(), &table.columns).await,
            ));
        }
        out
    }
}

/// Waits until some session waits for a lock on `table` (a backup blocked behind a test's
/// exclusive lock, i.e. past the point the test wants to observe).
pub async fn wait_for_lock_waiter(client: &tokio_postgres::Client, table: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE relation = $1::text::regclass AND NOT granted",
                &[&table],
            )
            .await
            .expect("pg_locks")
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing ever waited for a lock on {table}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends `signal` (`TERM`, `INT`, `HUP`, …) to a background `backup-cli`.
pub fn send(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {signal} failed");
}

/// Waits for a background `backup-cli` to exit and collects what it printed.
pub async fn finish(child: std::process::Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("wait task")
        .expect("wait for backup-cli")
}

/// The single integer a query returns (counts, sequence values).
pub async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// A plugin built by `scripts/test` (cargo build --release --target wasm32-wasip2 in plugins/).
pub fn plugin_path(file: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(file);
    assert!(
        path.is_file(),
        "{} is missing: build the plugins first (scripts/test does, or: cargo build --release \
         --target wasm32-wasip2 --manifest-path plugins/Cargo.toml)",
        path.display()
    );
    path
}

/// An S3-compatible server (moto) on a free loopback port, with one bucket; stopped on drop.
pub struct S3Server {
    child: std::process::Child,
    pub port: u16,
    pub bucket: String,
}

impl S3Server {
    pub fn start(bucket: &str) -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the S3 test server (python3 -m moto.server): {e}; install it with: pip install 'moto[server]' (scripts/ensure-prerequisites does)")
            });
        let mut server = S3Server {
            child,
            port,
            bucket: bucket.to_string(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait().expect("moto status") {
                panic!(
                    "the S3 test server (moto) exited at start ({status}); is `pip install 'moto[server]'` complete?"
                );
            }
            if server
                .request("PUT", &format!("/{bucket}"), b"")
                .starts_with("HTTP/1.1 200")
            {
                return server;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the S3 test server did not answer on port {port} within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One raw HTTP/1.1 request (moto does not check signatures); returns the whole response.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> String {
        self.request_with(method, path, &[], body)
    }

    /// [`S3Server::request`] with extra headers (`name: value` lines).
    pub fn request_with(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> String {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            self.port,
            body.len()
        );
        if stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(body))
            .is_err()
        {
            return String::new();
        }
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }

    /// Object keys in the bucket under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.keys_in(&self.bucket, prefix)
    }

    /// Object keys in `bucket` under `prefix`.
    pub fn keys_in(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let listing = self.request(
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}&max-keys=100000"),
            b"",
        );
        listing
            .split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

/// A `[[targets]]` entry for the built-in S3 target on `s3` (keys under `builtin/`), with the
/// credentials [`TestEnv::cli`] puts in the environment.
pub fn s3_builtin_entry(name: &str, s3: &S3Server) -> String {
    format!(
        r#"
[[targets]]
name = "{name}"
type = "s3"
endpoint = "{endpoint}"
bucket = "{bucket}"
root = "builtin"
secrets = {{ access_key_id = "env:TEST_S3_KEY", secret_access_key = "env:TEST_S3_SECRET" }}
"#,
        endpoint = s3.endpoint(),
        bucket = s3.bucket,
    )
}

/// A `[[targets]]` entry for a folder.
pub fn fs_entry(name: &str, dir: &Path) -> String {
    format!(
        "\n[[targets]]\nname = \"{name}\"\ntype = \"fs\"\npath = \"{}\"\n",
        dir.display()
    )
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestEnv {
    /// `pg_restore extra… -d into archive`; its output, whatever the exit code.
    pub fn pg_restore(&self, archive: &Path, into: &str, extra: &[&str]) -> Output {
        Command::new(self.cluster.bindir().join("pg_restore"))
            .args(self.connection_args())
            .args(extra)
            .args(["-d", into])
            .arg(archive)
            .output()
            .expect("run pg_restore")
    }

    fn connection_args(&self) -> Vec<String> {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &self.cluster.port().to_string(),
            "-U",
            "postgres",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// One HTTP request as the [`HttpReceiver`] got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A real HTTP server on loopback that records every request (webhooks, Slack, PagerDuty) and
/// answers with the status set by [`HttpReceiver::answer`] (0: accept the connection and never
/// answer, a receiver that hangs).
pub struct HttpReceiver {
    pub port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl HttpReceiver {
    pub fn start() -> HttpReceiver {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the HTTP receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
        let (log, answer) = (received.clone(), status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, answer) = (log.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || line.is_empty() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_string();
                    let path = parts.next().unwrap_or_default().to_string();
                    let mut headers = Vec::new();
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).is_err() {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            headers
                                .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                        }
                    }
                    let length = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let status = answer.load(Ordering::SeqCst);
                    log.lock().expect("receiver log").push(Received {
                        method,
                        path,
                        headers,
                        body,
                    });
                    if status == 0 {
                        std::thread::sleep(std::time::Duration::from_secs(120));
                        return;
                    }
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                });
            }
        });
        HttpReceiver {
            port,
            received,
            status,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The status later requests get (0: no answer at all).
    pub fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request so far to `path`, in order.
    pub fn requests(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .expect("receiver log")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// HMAC-SHA256 (RFC 2104) in hex, to check the signatures notifiers send.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}
