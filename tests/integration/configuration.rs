//! One precedence for every setting (flags, environment, config file, defaults), shown by
//! `config show` without secrets, and connection errors that say which kind they are.

use crate::support::{TestEnv, reported, text};
use larder::pg::ephemeral::ClusterSetup;

fn setting<'a>(shown: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    shown
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["setting"] == name)
        .unwrap_or_else(|| panic!("no setting {name}: {shown}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_beats_the_config_file_and_connection_errors_name_their_kind() {
    let setup = ClusterSetup {
        files: vec![(
            "pg_hba.conf".into(),
            b"local all all trust\nhost all kitchen_pantry_user 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n".to_vec(),
        )],
        settings: vec![],
    };
    let env = TestEnv::start_with("pantry", setup, "disable").await;
    env.client()
        .await
        .batch_execute(
            "CREATE ROLE kitchen_pantry_user LOGIN PASSWORD 'right-secret';
             ALTER DATABASE pantry OWNER TO kitchen_pantry_user;
             SET ROLE kitchen_pantry_user;
             CREATE TABLE pantry_items (id int PRIMARY KEY, item text);
             INSERT INTO pantry_items SELECT g, 'item ' || g FROM generate_series(1, 50) g;",
        )
        .await
        .expect("owner role and data");
    let port = env.cluster.port();
    let owner_url =
        format!("postgres://kitchen_pantry_user@127.0.0.1:{port}/pantry?sslmode=disable");
    let stale = env.work.path().join("db-password");
    std::fs::write(&stale, "an-old-password\n").expect("password file");
    let home = env.work.path().join("home");
    std::fs::create_dir_all(&home).expect("home without .pgpass");
    env.write_config(&format!(
        "[database]\nurl = \"{owner_url}\"\npassword_file = \"{}\"\n\n[repository]\npath = \"{}\"\n",
        stale.display(),
        env.repo_dir().display()
    ));
    // backup-cli with only the configuration: no DATABASE_URL, no PGPASSWORD, no ~/.pgpass.
    let cli = || {
        let mut cmd = env.cli();
        cmd.env_remove("DATABASE_URL")
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE")
            .env("HOME", &home);
        cmd
    };

    // PGPASSWORD (environment) beats the config's password_file.
    let out = cli()
        .env("PGPASSWORD", "right-secret")
        .args(["backup", "create", "-n", "owner"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let shown = reported(
        &cli()
            .env("PGPASSWORD", "right-secret")
            .args(["--json", "config", "show"])
            .output()
            .expect("run"),
    );
    let password = setting(&shown, "database.password");
    assert_eq!(password["origin"]["kind"], "env", "{shown}");
    assert_eq!(password["origin"]["name"], "PGPASSWORD", "{shown}");
    assert_eq!(
        setting(&shown, "database.url")["origin"]["kind"],
        "config-file"
    );
    assert_eq!(setting(&shown, "config file")["origin"]["kind"], "env");
    assert!(!shown.to_string().contains("right-secret"), "{shown}");

    // Without it the stale password_file applies: a wrong password, and where it came from.
    let out = cli().args(["backup", "create"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("wrong password for role kitchen_pantry_user")
            && text(&out).contains("password_file"),
        "{}",
        text(&out)
    );

    // A DATABASE_URL naming another user replaces the config's URL and its password_file;
    // its own password is shown redacted.
    let superuser =
        format!("postgres://postgres:not-needed@127.0.0.1:{port}/pantry?sslmode=disable");
    let shown = cli()
        .env("DATABASE_URL", &superuser)
        .args(["config", "show"])
        .output()
        .expect("run");
    let table = String::from_utf8_lossy(&shown.stdout);
    assert!(
        table.contains("postgres://postgres:***@")
            && !table.contains("not-needed")
            && table.contains("environment variable DATABASE_URL"),
        "{table}"
    );
    let out = cli()
        .env("DATABASE_URL", &superuser)
        .args(["backup", "create", "-n", "superuser"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    // The flag beats the environment.
    let shown = reported(
        &cli()
            .env("DATABASE_URL", &superuser)
            .args(["--json", "--database-url", &owner_url, "config", "show"])
            .output()
            .expect("run"),
    );
    assert_eq!(
        setting(&shown, "database.url")["origin"],
        serde_json::json!({"kind": "flag", "name": "--database-url"})
    );

    // The other kinds of connection failure, each with its hint.
    let fails = |url: &str, expected: &str| {
        let out = cli()
            .env("DATABASE_URL", url)
            .args(["backup", "create"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("Database connection failed") && text(&out).contains(expected),
            "{url}: expected {expected:?}: {}",
            text(&out)
        );
    };
    // The owner by a URL of its own: the config's password_file is not for it.
    fails(
        &format!("postgres://kitchen_pantry_user@127.0.0.1:{port}/pantry"),
        "the server asks role kitchen_pantry_user for a password and none is set",
    );
    fails(
        &format!("postgres://nobody@127.0.0.1:{port}/pantry?sslmode=disable"),
        "role nobody does not exist",
    );
    fails(
        &format!("postgres://postgres@127.0.0.1:{port}/no_such_db?sslmode=disable"),
        "database no_such_db does not exist",
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    fails(
        &format!("postgres://postgres@127.0.0.1:{closed}/pantry?sslmode=disable"),
        "no server answers at 127.0.0.1",
    );

    // PGSSLMODE (environment) beats [database] sslmode (config file).
    env.write_config(&format!(
        "[database]\nurl = \"postgres://postgres@127.0.0.1:{port}/pantry\"\nsslmode = \"require\"\n"
    ));
    let shown = cli()
        .env("PGSSLMODE", "disable")
        .args(["config", "show"])
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("sslmode=disable"),
        "{}",
        text(&shown)
    );
}
