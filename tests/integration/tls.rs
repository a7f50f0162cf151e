//! Connecting securely: TLS as the sslmode asks (`require` encrypts, `verify-full` also checks
//! the server's certificate against the CA, a TLS-only server refuses `disable`), and
//! passwords from the libpq password file for both backup-cli and pg_dump. Incremental
//! backups stream their changes over a replication connection of their own: it keeps the
//! sslmode (a TLS-only server) and authenticates with SCRAM.

use crate::support::{TestEnv, data, envelope, text};
use larder::config::DatabaseConfig;
use larder::pg::ConnectionSettings;
use larder::pg::ephemeral::ClusterSetup;
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the TLS test needs the openssl command");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=larder-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_modes_encrypt_and_verify_the_server() {
    let certs = tempfile::tempdir().expect("tempdir");
    certificates(certs.path());
    let read = |name: &str| std::fs::read(certs.path().join(name)).expect("certificate file");
    let setup = ClusterSetup {
        files: vec![
            ("server.crt".into(), read("server.crt")),
            ("server.key".into(), read("server.key")),
            (
                "pg_hba.conf".into(),
                b"local all all trust\nhostssl all all 127.0.0.1/32 trust\n".to_vec(),
            ),
        ],
        settings: vec![("ssl".into(), "on".into())],
    };
    let env = TestEnv::start_with("tlsdb", setup, "require").await;
    env.load_kitchen_pantry(0.001).await;

    let ssl: bool = env
        .client()
        .await
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "sslmode=require must encrypt the connection");
    env.write_config(&format!(
        "[repository]\npath = '{}'\n\n[incremental]\nenabled = true\n",
        env.repo_dir().display()
    ));
    env.run_ok(&["backup", "create", "-n", "over-tls"]);
    env.run_ok(&["backup", "validate", "latest"]);
    // pg_hba.conf admits only TLS from 127.0.0.1: the replication stream is encrypted too.
    env.client()
        .await
        .batch_execute(
            "UPDATE contacts SET notes = 'over tls' WHERE id = (SELECT min(id) FROM contacts)",
        )
        .await
        .expect("change rows");
    let incremental = env.run_json(&["backup", "create", "--type", "incremental"]);
    let id = incremental["backup"]["id"].as_str().expect("backup id");
    let manifest = env.repo().await.read_manifest(id).await.expect("manifest");
    let info = manifest.incremental.expect("an incremental");
    let contacts = info
        .tables
        .iter()
        .find(|t| t.table == "public.contacts")
        .expect("contacts changed");
    assert_eq!(contacts.updates, 1, "{contacts:?}");

    let base = format!("postgres://postgres@127.0.0.1:{}/tlsdb", env.cluster.port());
    let disabled = env
        .cli()
        .env("DATABASE_URL", format!("{base}?sslmode=disable"))
        .args(["backup", "create"])
        .output()
        .expect("run");
    assert_eq!(disabled.status.code(), Some(1));
    assert!(
        text(&disabled).contains("Database connection failed: host=127.0.0.1"),
        "{}",
        text(&disabled)
    );

    let ca = certs.path().join("ca.crt");
    let verified = env
        .cli()
        .env("DATABASE_URL", format!("{base}?sslmode=verify-full"))
        .env("PGSSLROOTCERT", &ca)
        .args(["backup", "create", "-n", "verified"])
        .output()
        .expect("run");
    assert!(
        verified.status.success(),
        "verify-full against the right CA: {}",
        text(&verified)
    );

    let settings = ConnectionSettings::resolve(
        Some(&format!("{base}?sslmode=verify-full")),
        &DatabaseConfig {
            sslrootcert: None,
            ..DatabaseConfig::default()
        },
    )
    .expect("settings");
    let settings = ConnectionSettings {
        sslrootcert: None,
        ..settings
    };
    let refused = match settings.connect().await {
        Ok(_) => panic!("a server signed by an unknown CA must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.starts_with("Database connection failed: host=127.0.0.1"),
        "{refused}"
    );
    assert!(
        refused.to_lowercase().contains("certificate"),
        "the reason names the certificate: {refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_from_pgpass_serves_backup_cli_and_pg_dump_alike() {
    let setup = ClusterSetup {
        files: vec![(
            "pg_hba.conf".into(),
            b"local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all app 127.0.0.1/32 scram-sha-256\n".to_vec(),
        )],
        settings: vec![],
    };
    let env = TestEnv::start_with("secured", setup, "disable").await;
    env.client()
        .await
        .batch_execute(
            "CREATE ROLE app LOGIN REPLICATION PASSWORD 'pantry-secret'; ALTER DATABASE secured OWNER TO app;
             SET ROLE app; CREATE TABLE pantry (id int PRIMARY KEY, item text);
             INSERT INTO pantry SELECT g, 'item ' || g FROM generate_series(1, 100) g;",
        )
        .await
        .expect("app role and data");
    let url = format!(
        "postgres://app@127.0.0.1:{}/secured?sslmode=disable",
        env.cluster.port()
    );
    let denied = env
        .cli()
        .env("DATABASE_URL", &url)
        .env("PGPASSFILE", "/nonexistent")
        .args(["backup", "create"])
        .output()
        .expect("run");
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        text(&denied).contains("Database connection failed: host=127.0.0.1"),
        "{}",
        text(&denied)
    );

    let pgpass = env.work.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "# libpq password file\n127.0.0.1:{}:*:app:pantry-secret\n",
            env.cluster.port()
        ),
    )
    .expect("pgpass");
    let mut perms = std::fs::metadata(&pgpass).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&pgpass, perms).expect("chmod");
    let out = env
        .cli()
        .env("DATABASE_URL", &url)
        .env("PGPASSFILE", &pgpass)
        .args(["--json", "backup", "create"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "backup with the password from PGPASSFILE: {}",
        text(&out)
    );
    assert!(
        !text(&out).contains("pantry-secret"),
        "the password is never printed"
    );

    // With change tracking, an incremental's replication connection takes the same password
    // through SCRAM.
    std::fs::write(
        env.work.path().join("larder-test.toml"),
        format!(
            "[repository]\npath = '{}'\n\n[incremental]\nenabled = true\n",
            env.repo_dir().display()
        ),
    )
    .expect("configuration");
    let tracked = |args: &[&str]| {
        env.cli()
            .env("DATABASE_URL", &url)
            .env("PGPASSFILE", &pgpass)
            .args(args)
            .output()
            .expect("run")
    };
    let full = tracked(&["backup", "create", "-n", "chain"]);
    assert!(full.status.success(), "full with tracking: {}", text(&full));
    env.client()
        .await
        .batch_execute("SET ROLE app; INSERT INTO pantry VALUES (101, 'scram')")
        .await
        .expect("insert");
    let out = tracked(&["--json", "backup", "create", "--type", "incremental"]);
    assert!(
        out.status.success(),
        "incremental over SCRAM: {}",
        text(&out)
    );
    let said = data(&envelope(&out));
    let id = said["backup"]["id"].as_str().expect("backup id");
    let manifest = env.repo().await.read_manifest(id).await.expect("manifest");
    let pantry = manifest
        .incremental
        .expect("an incremental")
        .tables
        .into_iter()
        .find(|t| t.table == "public.pantry")
        .expect("pantry changed");
    assert_eq!((pantry.inserts, pantry.updates), (1, 0), "{pantry:?}");
}
