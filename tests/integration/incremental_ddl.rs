//! Schema changes between a chain's full backup and an incremental (#15): each kind of DDL is
//! either carried into the chain (the restore of the incremental has the source's schema, as
//! `pg_dump --schema-only` shows it) or makes the incremental fail, naming the object, with
//! nothing written: never a restore with the base full's schema presented as the database.
//! `--until` inside an interval whose incremental changed the schema restores the schema of
//! before it, and the plan says so. One cluster per test, one database per case.

use crate::support::{TestEnv, data, envelope, text};
use futures_util::StreamExt;
use larder::pg::ephemeral::ClusterSetup;
use larder::repository::Repository;
use larder::targets::fs::FsTarget;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

/// The tables every case starts from (after its full backup, the case's DDL runs along with a
/// row change). `t` holds a duplicate `v` ('v1', id 21) that a case deletes before adding a
/// unique constraint: the base's rows break it, the replayed ones do not.
const BASE: &str = "
    CREATE TABLE p (id int PRIMARY KEY);
    INSERT INTO p SELECT generate_series(1, 30);
    CREATE TABLE t (id int PRIMARY KEY, v text DEFAULT 'none', n int);
    INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 20) g;
    INSERT INTO t VALUES (21, 'v1', 21);
    CREATE INDEX t_n_idx ON t (n);
    ALTER TABLE p ADD CONSTRAINT p_id_key UNIQUE (id);
    CREATE SEQUENCE s0;
    CREATE DOMAIN small AS int;
    CREATE TYPE mood AS ENUM ('sad', 'ok');
    CREATE TABLE d (id int PRIMARY KEY, s small, m mood);
    INSERT INTO d VALUES (1, 5, 'ok'), (2, 50, 'sad');
    GRANT SELECT ON p TO ddl_reader;
    CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.n := NEW.n; RETURN NEW; END$$;";

/// Carried: the restore of the incremental has the source's schema.
const CARRIED: &[(&str, &str)] = &[
    ("CREATE INDEX", "CREATE INDEX t_v_idx ON t (v)"),
    ("DROP INDEX", "DROP INDEX t_n_idx"),
    (
        "ADD CONSTRAINT UNIQUE after the duplicate's delete",
        "DELETE FROM t WHERE id = 21; ALTER TABLE t ADD CONSTRAINT t_v_key UNIQUE (v)",
    ),
    (
        "ADD CONSTRAINT FOREIGN KEY",
        "ALTER TABLE t ADD CONSTRAINT t_n_fkey FOREIGN KEY (n) REFERENCES p (id)",
    ),
    (
        "ADD CONSTRAINT CHECK NOT VALID",
        "ALTER TABLE t ADD CONSTRAINT t_n_check CHECK (n > 0) NOT VALID",
    ),
    (
        "DROP CONSTRAINT (unique)",
        "ALTER TABLE p DROP CONSTRAINT p_id_key",
    ),
    (
        "CREATE TRIGGER",
        "CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch()",
    ),
    ("GRANT", "GRANT SELECT, UPDATE ON t TO ddl_reader"),
    ("REVOKE", "REVOKE SELECT ON p FROM ddl_reader"),
    (
        "COMMENT",
        "COMMENT ON TABLE t IS 'the things'; COMMENT ON COLUMN t.v IS 'a value'",
    ),
    ("ALTER TABLE OWNER", "ALTER TABLE t OWNER TO ddl_owner"),
    (
        "row level security and a policy",
        "ALTER TABLE t ENABLE ROW LEVEL SECURITY; CREATE POLICY t_positive ON t USING (n > 0)",
    ),
    (
        "CREATE VIEW",
        "CREATE VIEW tv AS SELECT id, v FROM t WHERE n > 3",
    ),
    (
        "CREATE MATERIALIZED VIEW",
        "CREATE MATERIALIZED VIEW tm AS SELECT count(*) AS c FROM t",
    ),
    (
        "CREATE FUNCTION",
        "CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42'",
    ),
    (
        "CREATE SEQUENCE",
        "CREATE SEQUENCE s1 START 100; SELECT nextval('s1')",
    ),
    ("DROP SEQUENCE", "DROP SEQUENCE s0"),
    ("CREATE SCHEMA", "CREATE SCHEMA extra"),
    (
        "CREATE TYPE and CREATE DOMAIN",
        "CREATE TYPE size AS ENUM ('s', 'm'); CREATE DOMAIN tiny AS int CHECK (VALUE < 3)",
    ),
];

/// Refused: the incremental fails, naming the object (the message holds the text given).
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "ADD CONSTRAINT CHECK (validated: the base's rows may break it)",
        "DELETE FROM t WHERE n > 20; ALTER TABLE t ADD CONSTRAINT t_small CHECK (n <= 20)",
        "TABLE t was changed",
    ),
    (
        "ALTER DOMAIN ADD CONSTRAINT",
        "DELETE FROM d WHERE id = 2; ALTER DOMAIN small ADD CONSTRAINT small_lt CHECK (VALUE < 10)",
        "DOMAIN small was changed",
    ),
    (
        "ALTER TYPE RENAME VALUE",
        "ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'",
        "TYPE mood was changed",
    ),
    (
        "SET NOT NULL",
        "ALTER TABLE t ALTER COLUMN v SET NOT NULL",
        "t ",
    ),
    (
        "ALTER COLUMN SET DEFAULT",
        "ALTER TABLE t ALTER COLUMN n SET DEFAULT 42",
        "table public.t had its columns",
    ),
    (
        "ALTER COLUMN SET DEFAULT (a column that had one)",
        "ALTER TABLE t ALTER COLUMN v SET DEFAULT 'other'",
        "table public.t had its columns",
    ),
    (
        "GRANT on a column",
        "GRANT UPDATE (v) ON t TO ddl_reader",
        "table public.t had its columns",
    ),
    (
        "CREATE TABLE",
        "CREATE TABLE c (id int PRIMARY KEY)",
        "table public.c was created",
    ),
];

fn setup() -> ClusterSetup {
    ClusterSetup {
        // A chain slot per case database, and room for the full backups' bridge slots.
        settings: vec![("max_replication_slots".into(), "64".into())],
        ..ClusterSetup::default()
    }
}

/// One case: its own database of the shared cluster, and its own repository.
struct Case<'a> {
    env: &'a TestEnv,
    db: String,
    config: PathBuf,
}

impl<'a> Case<'a> {
    async fn new(env: &'a TestEnv, db: &str, user: &str) -> Case<'a> {
        env.admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {db} OWNER {user}"))
            .await
            .expect("create the case's database");
        let config = env.work.path().join(format!("{db}.toml"));
        std::fs::write(
            &config,
            format!(
                "[repository]\npath = '{}'\n\n[incremental]\nenabled = true\n",
                Case::repo_dir(env, db).display()
            ),
        )
        .expect("the case's configuration");
        Case {
            env,
            db: db.to_string(),
            config,
        }
    }

    fn repo_dir(env: &TestEnv, db: &str) -> PathBuf {
        env.work.path().join(format!("{db}-repo"))
    }

    async fn repo(&self) -> Repository {
        let target = FsTarget::open("local", &Case::repo_dir(self.env, &self.db))
            .expect("open the case's repository folder");
        Repository::open(Arc::new(target))
            .await
            .expect("open the case's repository")
    }

    /// The backups in this case's repository.
    async fn backups(&self) -> Vec<String> {
        self.repo()
            .await
            .backup_ids()
            .await
            .expect("list the backups")
    }

    async fn manifest(&self, id: &str) -> larder::repository::manifest::Manifest {
        self.repo().await.read_manifest(id).await.expect("manifest")
    }

    /// `backup-cli --json args` on this case's database and repository, as `user`.
    async fn run(&self, user: &str, args: &[&str]) -> Output {
        let mut cmd = self.env.cli();
        let url = self
            .env
            .url_as(user)
            .replace(&format!("/{}?", self.env.dbname), &format!("/{}?", self.db));
        cmd.env("DATABASE_URL", url)
            .env("BACKUP_CLI_CONFIG", &self.config)
            .env_remove("BACKUP_CLI_REPO")
            .arg("--json")
            .args(args);
        tokio::process::Command::from(cmd)
            .output()
            .await
            .expect("run backup-cli")
    }

    /// Like [`Case::run`], asserting success; the envelope's data.
    async fn ok(&self, user: &str, args: &[&str]) -> serde_json::Value {
        let out = self.run(user, args).await;
        assert!(
            out.status.success(),
            "{}: backup-cli {} failed:\n{}",
            self.db,
            args.join(" "),
            text(&out)
        );
        data(&envelope(&out))
    }

    async fn sql(&self, sql: &str) {
        self.env
            .client_for(&self.db)
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.db));
    }

    /// `pg_dump --schema-only` of `db`, without its comments, blank lines and the chain's
    /// publication (change tracking's, not the database's own).
    fn schema(&self, db: &str) -> String {
        self.env
            .pg_dump(db, &["--schema-only", "--no-publications"])
            .lines()
            .filter(|l| !l.starts_with("--") && !l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect()
    }

    async fn rows(&self, db: &str) -> String {
        let client = self.env.client_for(db).await;
        let row = client
            .query_one(
                "SELECT (SELECT string_agg(format('%s:%s:%s', id, v, n), ',' ORDER BY id) FROM t) || '|' || \
                 (SELECT count(*) FROM p)::text",
                &[],
            )
            .await
            .expect("read the rows");
        row.get(0)
    }

    /// Restores backup `id` into a new database (`-s new-database`, `extra` flags) and returns
    /// that database's name.
    async fn restore(&self, id: &str, suffix: &str, extra: &[&str]) -> String {
        let dest = format!("{}_{suffix}", self.db);
        let mut args = vec![
            "recovery",
            "execute",
            id,
            "-s",
            "new-database",
            "--dest-db",
            &dest,
        ];
        args.extend_from_slice(extra);
        self.ok("postgres", &args).await;
        dest
    }
}

fn id(data: &serde_json::Value) -> String {
    data["backup"]["id"]
        .as_str()
        .expect("backup id")
        .to_string()
}

/// A carried case: full, DDL and row changes, incremental, restore, compare.
async fn carried(env: &TestEnv, n: usize, what: &str, ddl: &str) {
    let case = Case::new(env, &format!("carried_{n}"), "postgres").await;
    case.sql(BASE).await;
    case.ok("postgres", &["backup", "create"]).await;
    case.sql(&format!(
        "UPDATE t SET v = 'x' || v WHERE id = 2; INSERT INTO t VALUES (22, 'v22', 5); {ddl}"
    ))
    .await;
    let inc = case
        .ok("postgres", &["backup", "create", "--type", "incremental"])
        .await;
    let inc_id = id(&inc);
    let restored = case.restore(&inc_id, "r", &[]).await;
    assert_eq!(
        case.schema(&restored),
        case.schema(&case.db),
        "{what}: the restore of the incremental has the source's schema"
    );
    assert_eq!(
        case.rows(&restored).await,
        case.rows(&case.db).await,
        "{what}: and its rows"
    );
    let plan = case
        .ok(
            "postgres",
            &[
                "recovery",
                "plan",
                &inc_id,
                "-s",
                "new-database",
                "--dest-db",
                "plan_only",
            ],
        )
        .await;
    let schema = plan["replay"]["schema"].as_str().unwrap_or_default();
    assert!(
        schema.contains(&format!("the schema recorded by incremental {inc_id}"))
            && schema.contains("schema change(s) since the base"),
        "{what}: the plan says which schema: {plan}"
    );
}

/// A refused case: the incremental fails clearly, nothing is written.
async fn refused(env: &TestEnv, n: usize, what: &str, ddl: &str, named: &str) {
    let case = Case::new(env, &format!("refused_{n}"), "postgres").await;
    case.sql(BASE).await;
    case.ok("postgres", &["backup", "create"]).await;
    let backups = case.backups().await;
    case.sql(&format!("UPDATE t SET v = 'x' || v WHERE id = 2; {ddl}"))
        .await;
    let out = case
        .run("postgres", &["backup", "create", "--type", "incremental"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
    let e = envelope(&out);
    assert_eq!(e["kind"], "change_tracking", "{what}: {e}");
    let message = e["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(named) && message.contains("take a new full backup"),
        "{what}: {message}"
    );
    assert_eq!(case.backups().await, backups, "{what}: nothing written");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_kind_of_ddl_after_the_full_is_carried_into_the_restore_or_refused_by_name() {
    let env = TestEnv::start_with("ddl_corpus", setup(), "disable").await;
    env.admin()
        .await
        .batch_execute("CREATE ROLE ddl_reader; CREATE ROLE ddl_owner")
        .await
        .expect("roles");
    let mut cases: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>> = Vec::new();
    for (n, (what, ddl)) in CARRIED.iter().enumerate() {
        cases.push(Box::pin(carried(&env, n, what, ddl)));
    }
    for (n, (what, ddl, named)) in REFUSED.iter().enumerate() {
        cases.push(Box::pin(refused(&env, n, what, ddl, named)));
    }
    // A few at a time: each runs backups, restores and pg_dump.
    let mut cases = futures_util::stream::iter(cases).buffer_unordered(8);
    while cases.next().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread")]
async fn until_inside_an_interval_that_changed_the_schema_restores_the_schema_before_it() {
    let env = TestEnv::start_with("ddl_until", setup(), "disable").await;
    env.admin()
        .await
        .batch_execute("CREATE ROLE ddl_reader")
        .await
        .expect("roles");
    let case = Case::new(&env, "until", "postgres").await;
    case.sql(BASE).await;
    case.ok("postgres", &["backup", "create"]).await;
    case.sql("INSERT INTO t VALUES (100, 'first', 1)").await;
    let first = id(&case
        .ok("postgres", &["backup", "create", "--type", "incremental"])
        .await);
    let before = case.schema(&case.db);
    let rows_before = case.rows(&case.db).await;
    // A point after the first incremental completed and before the schema change.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let point: String = env
        .client_for(&case.db)
        .await
        .query_one("SELECT clock_timestamp()::text", &[])
        .await
        .expect("now")
        .get(0);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    case.sql(
        "INSERT INTO t VALUES (101, 'second', 2); CREATE INDEX t_v_idx ON t (v); COMMENT ON TABLE t IS 'later'",
    )
    .await;
    let second = id(&case
        .ok("postgres", &["backup", "create", "--type", "incremental"])
        .await);

    // Rows, VACUUM and ANALYZE are not DDL: the next incremental keeps the schema it had,
    // without reading it again (same catalog fingerprint, same sections).
    for sql in [
        "UPDATE t SET n = n + 1 WHERE id = 3",
        "VACUUM t",
        "ANALYZE t",
    ] {
        case.sql(sql).await;
    }
    let third = id(&case
        .ok("postgres", &["backup", "create", "--type", "incremental"])
        .await);
    let (second_m, third_m) = (case.manifest(&second).await, case.manifest(&third).await);
    let (i2, i3) = (second_m.incremental.unwrap(), third_m.incremental.unwrap());
    assert!(i2.schema_fingerprint.is_some());
    assert_eq!(i3.schema_fingerprint, i2.schema_fingerprint);
    assert!(i3.schema_changes.is_empty(), "{:?}", i3.schema_changes);
    assert_eq!(third_m.pre_data, second_m.pre_data);
    assert_eq!(third_m.post_data, second_m.post_data);
    assert_eq!(
        i2.schema_changes,
        ["COMMENT TABLE t: created", "INDEX t_v_idx: created"]
    );

    let plan = case
        .ok(
            "postgres",
            &[
                "recovery",
                "plan",
                &second,
                "-s",
                "new-database",
                "--dest-db",
                "plan_only",
                "--until",
                &point,
            ],
        )
        .await;
    let schema = plan["replay"]["schema"].as_str().unwrap_or_default();
    assert!(
        schema.contains(&format!("the schema recorded by incremental {first}"))
            && schema.contains(&format!(
                "Not applied: the 2 schema change(s) incremental {second} recorded"
            ))
            && schema.contains("INDEX t_v_idx: created"),
        "{plan}"
    );
    let at_point = case.restore(&second, "point", &["--until", &point]).await;
    assert_eq!(
        case.schema(&at_point),
        before,
        "the schema of before the change"
    );
    assert_eq!(
        case.rows(&at_point).await,
        rows_before,
        "the rows at the point"
    );

    let whole = case.restore(&third, "whole", &[]).await;
    assert_eq!(case.schema(&whole), case.schema(&case.db));
    assert!(case.schema(&whole).contains("CREATE INDEX t_v_idx"));
    assert_eq!(case.rows(&whole).await, case.rows(&case.db).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runbooks_database_owner_runs_incrementals_that_carry_its_ddl() {
    let env = TestEnv::start_with("ddl_owner", setup(), "disable").await;
    env.admin()
        .await
        .batch_execute("CREATE ROLE kitchen_pantry_user LOGIN REPLICATION; CREATE ROLE ddl_reader")
        .await
        .expect("the runbook's owner");
    let owner = "kitchen_pantry_user";
    let case = Case::new(&env, "owned", owner).await;
    case.sql(&format!("SET ROLE {owner}; {BASE}")).await;
    case.ok(owner, &["backup", "create"]).await;
    case.sql(&format!(
        "SET ROLE {owner}; INSERT INTO t VALUES (30, 'v30', 3);
         CREATE INDEX t_v_idx ON t (v); GRANT SELECT ON t TO ddl_reader; COMMENT ON TABLE t IS 'owned'"
    ))
    .await;
    let inc = id(&case
        .ok(owner, &["backup", "create", "--type", "incremental"])
        .await);
    let restored = case.restore(&inc, "r", &[]).await;
    assert_eq!(case.schema(&restored), case.schema(&case.db));
    assert_eq!(case.rows(&restored).await, case.rows(&case.db).await);

    case.sql(&format!(
        "SET ROLE {owner}; ALTER TABLE t ADD CONSTRAINT t_n_pos CHECK (n > 0)"
    ))
    .await;
    let out = case
        .run(owner, &["backup", "create", "--type", "incremental"])
        .await;
    let e = envelope(&out);
    assert_eq!(e["kind"], "change_tracking", "{e}");
    assert!(
        e["error"].as_str().is_some_and(
            |m| m.contains("TABLE t was changed") && m.contains("take a new full backup")
        ),
        "{e}"
    );
}
