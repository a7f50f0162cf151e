//! Connection strings mean what they mean to libpq: the same URL reaches the same server with
//! backup-cli (and the pg_dump it runs) as with psql, for query parameters that override the
//! authority, host and port lists, and hostaddr.

use crate::support::TestEnv;
use larder::config::DatabaseConfig;
use larder::pg::ConnectionSettings;

/// The port of the server `url` reaches through Larder's connection code.
async fn port_reached_by_larder(url: &str) -> String {
    let settings = ConnectionSettings::resolve(Some(url), &DatabaseConfig::default())
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let client = settings
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    client
        .query_one("SELECT current_setting('port')", &[])
        .await
        .expect("port")
        .get(0)
}

/// The port of the server `url` reaches through psql.
fn port_reached_by_psql(url: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-XAtc", "SELECT current_setting('port')"])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGHOSTADDR")
        .output()
        .expect("run psql (install postgresql-client)");
    assert!(
        out.status.success(),
        "psql {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_url_reaches_the_same_server_as_psql() {
    let a = TestEnv::start("shop").await;
    let b = TestEnv::start("shop").await;
    a.client()
        .await
        .batch_execute("CREATE TABLE only_in_a (id int)")
        .await
        .expect("a");
    b.client()
        .await
        .batch_execute("CREATE TABLE only_in_b (id int)")
        .await
        .expect("b");
    let (pa, pb) = (a.cluster.port(), b.cluster.port());
    let (sa, sb) = (
        a.cluster.socket_dir().display().to_string(),
        b.cluster.socket_dir().display().to_string(),
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    for (url, expected) in [
        // The case: ?host= names B's socket, the authority's port is B's.
        (
            format!("postgres://postgres@localhost:{pb}/shop?host={sb}"),
            pb,
        ),
        (
            format!("postgres://postgres@127.0.0.1:{pa}/shop?host={sb}&port={pb}&sslmode=disable"),
            pb,
        ),
        (
            format!("postgres://postgres@127.0.0.1:{pa}/shop?port={pb}&sslmode=disable"),
            pb,
        ),
        (
            format!("postgres:///shop?host={sa}&port={pa}&user=postgres"),
            pa,
        ),
        // Host lists: the first that answers.
        (
            format!("postgres://postgres@127.0.0.1:{dead},127.0.0.1:{pb}/shop?sslmode=disable"),
            pb,
        ),
        (
            format!(
                "host=127.0.0.1,127.0.0.1 port={dead},{pa} dbname=shop user=postgres sslmode=disable"
            ),
            pa,
        ),
        // hostaddr: connect there, without resolving the name.
        (
            format!(
                "host=db.invalid hostaddr=127.0.0.1 port={pb} dbname=shop user=postgres sslmode=disable"
            ),
            pb,
        ),
        (
            format!("postgres://postgres@db.invalid:{pa}/shop?hostaddr=127.0.0.1&sslmode=disable"),
            pa,
        ),
    ] {
        let psql = port_reached_by_psql(&url);
        assert_eq!(psql, expected.to_string(), "psql with {url}");
        assert_eq!(
            port_reached_by_larder(&url).await,
            psql,
            "backup-cli with {url}"
        );
    }

    // End to end: a backup through a URL whose authority names A and whose query names B
    // reads B, its tables and pg_dump's DDL alike.
    let url = format!("postgres://postgres@127.0.0.1:{pa}/shop?host={sb}&port={pb}");
    let out = a.run_json(&["--database-url", &url, "backup", "create"]);
    let id = out["backup"]["id"].as_str().expect("id");
    let repo = a.repo().await;
    let manifest = repo.read_manifest(id).await.expect("manifest");
    let tables: Vec<String> = manifest.tables.iter().map(|t| t.display_name()).collect();
    assert_eq!(tables, vec!["public.only_in_b".to_string()]);
    let ddl = repo
        .read_stream(&manifest.pre_data, "pre-data")
        .await
        .expect("pre-data");
    let ddl = String::from_utf8_lossy(&ddl);
    assert!(
        ddl.contains("only_in_b") && !ddl.contains("only_in_a"),
        "{ddl}"
    );
}
