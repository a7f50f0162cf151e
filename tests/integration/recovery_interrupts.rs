//! SIGINT, SIGTERM and SIGKILL during a new-database restore: the half-built database is
//! dropped (or, after SIGKILL, left only under its temporary name and dropped by the rerun),
//! the message is in recovery words, and the exit code is 130 / 143. A replace stopped by
//! SIGINT is rolled back.

use crate::support::{TestEnv, finish, reported, send, text};
use larder::engine::recovery::restore::partial_name;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A function that blocks (60 s) when called inside a partial restore database while the
/// test's gate is closed, and returns its argument otherwise: the restore stops exactly where
/// the test wants to signal it.
const GATE: &str = "
CREATE FUNCTION public.gate(x integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF pg_catalog.current_database() LIKE '%larder_partial'
       AND pg_catalog.current_setting('larder_test.gate', true) = 'closed' THEN
        PERFORM pg_catalog.pg_sleep(60);
    END IF;
    RETURN x;
END $$;";

/// Closes (or opens) the gate for the restore's sessions, which all connect as `postgres`.
async fn set_gate(env: &TestEnv, closed: bool) {
    let sql = if closed {
        "ALTER ROLE postgres SET larder_test.gate = 'closed'"
    } else {
        "ALTER ROLE postgres RESET larder_test.gate"
    };
    env.admin().await.batch_execute(sql).await.expect("gate");
}

/// Starts `recovery execute latest -s new-database` in the background.
fn start_restore(env: &TestEnv) -> Child {
    env.cli()
        .args(["recovery", "execute", "latest", "-s", "new-database"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start backup-cli")
}

/// Waits until a session on database `db` is running a statement containing `statement`.
async fn wait_for_statement(env: &TestEnv, db: &str, statement: &str) {
    let admin = env.admin().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' \
                 AND position($2 in query) > 0",
                &[&db, &statement],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if running > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no session on {db} ever ran {statement}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Signals the restore once a session on the partial database runs `statement`, then checks
/// the exit code, the message (naming `phase`) and that nothing of the restore is left.
async fn interrupt_at(env: &TestEnv, target: &str, statement: &str, signal: &str, phase: &str) {
    let before = env.databases().await;
    let child = start_restore(env);
    wait_for_statement(env, &partial_name(target), statement).await;
    send(&child, signal);
    let out = finish(child).await;
    let said = text(&out);
    let (code, name) = match signal {
        "INT" => (130, "SIGINT (Ctrl-C)"),
        _ => (143, "SIGTERM"),
    };
    assert_eq!(out.status.code(), Some(code), "{said}");
    let id = env.repo().await.manifests().await.expect("manifests")[0]
        .id
        .clone();
    assert!(
        said.contains(&format!(
            "interrupted by {name}: the restore of backup {id} stopped while {phase}"
        )),
        "{said}"
    );
    assert!(
        !said.contains("garbage collection"),
        "a restore is not told in backup words: {said}"
    );
    env.assert_half_built_dropped(&said, target).await;
    assert_eq!(
        env.databases().await,
        before,
        "the restore left no database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_during_the_schema_drops_the_half_built_database() {
    let env = TestEnv::start("shop").await;
    // 300,000 enum labels: creating the schema takes seconds, long enough to be caught at it.
    env.client()
        .await
        .batch_execute(
            "DO $$ BEGIN EXECUTE 'CREATE TYPE big AS ENUM (' || (SELECT string_agg(quote_literal('l' || g), ',') \
             FROM generate_series(1, 300000) g) || ')'; END $$; \
             CREATE TABLE t (id integer PRIMARY KEY, b big); INSERT INTO t VALUES (1, 'l7')",
        )
        .await
        .expect("schema");
    let manifest = env.backup("baseline").await;
    let target = format!("shop_restored_{}", manifest.id.replace('-', "_"));
    interrupt_at(
        &env,
        &target,
        "CREATE TYPE",
        "INT",
        "creating the schema (pre-data)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_during_the_load_into_the_production_name_never_creates_it() {
    let env = gated_load_with_the_source_gone().await;
    interrupt_at(&env, "shop", "COPY", "INT", "loading the data").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_an_index_build_drops_the_half_built_database() {
    let env = TestEnv::start("shop").await;
    env.client()
        .await
        .batch_execute(&format!(
            "{GATE} CREATE TABLE t (id integer PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100); \
             CREATE INDEX t_gate ON t (public.gate(id))"
        ))
        .await
        .expect("schema");
    let manifest = env.backup("baseline").await;
    set_gate(&env, true).await;
    let target = format!("shop_restored_{}", manifest.id.replace('-', "_"));
    interrupt_at(
        &env,
        &target,
        "CREATE INDEX t_gate",
        "TERM",
        // A new database builds each table's indexes in the load step, once its rows are in.
        "loading the data",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_sigkill_the_production_name_is_absent_and_the_rerun_replaces_the_leftover() {
    let env = gated_load_with_the_source_gone().await;
    let partial = partial_name("shop");
    let child = start_restore(&env);
    wait_for_statement(&env, &partial, "COPY").await;
    send(&child, "KILL");
    finish(child).await;
    let databases = env.databases().await;
    assert!(
        !databases.iter().any(|d| d == "shop"),
        "a killed restore must not leave a database under the production name: {databases:?}"
    );
    assert!(databases.contains(&partial), "{databases:?}");

    // Its sessions outlive it (the COPY sleeps in the gate): the rerun refuses to drop a
    // database that may still be being built, and says how to tell.
    let refused = env.run(&["recovery", "execute", "latest", "-s", "new-database"]);
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("another restore is building shop (as {partial}")),
        "{said}"
    );

    // Once they are gone, the rerun drops the leftover and restores under the production name.
    env.admin()
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&partial],
        )
        .await
        .expect("end the orphaned sessions");
    set_gate(&env, false).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = env.run(&[
            "--json",
            "recovery",
            "execute",
            "latest",
            "-s",
            "new-database",
        ]);
        // pg_terminate_backend only signals: the sessions leave a moment later.
        if out.status.code() == Some(2) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        break out;
    };
    assert!(out.status.success(), "{}", text(&out));
    let report = reported(&out);
    assert_eq!(report["destination_database"], "shop");
    let dropped = report["leftover_dropped"].as_str().unwrap_or_default();
    assert!(
        dropped.starts_with(&format!(
            "dropped {partial}, left by an interrupted restore"
        )),
        "{report}"
    );
    let databases = env.databases().await;
    assert!(databases.contains(&"shop".to_string()), "{databases:?}");
    assert!(
        !databases
            .iter()
            .any(|d| d.contains("_restored_") || d.contains("larder_partial")),
        "nothing beside the restored database: {databases:?}"
    );
    let rows: i64 = env
        .client_for("shop")
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_superuser_owner_is_interrupted_and_cleaned_up_and_then_restores() {
    let env = TestEnv::start("shop").await;
    env.admin()
        .await
        .batch_execute("CREATE ROLE owner LOGIN CREATEDB; ALTER DATABASE shop OWNER TO owner")
        .await
        .expect("owner");
    env.client()
        .await
        .batch_execute(&format!(
            "SET ROLE owner; {GATE} CREATE TABLE t (id integer PRIMARY KEY CHECK (public.gate(id) = id)); \
             INSERT INTO t SELECT generate_series(1, 100)"
        ))
        .await
        .expect("schema");
    let manifest = env.backup("baseline").await;
    let target = format!("shop_restored_{}", manifest.id.replace('-', "_"));
    let as_owner = env.url().replace("postgres@", "owner@");
    env.admin()
        .await
        .batch_execute("ALTER ROLE owner SET larder_test.gate = 'closed'")
        .await
        .expect("gate");
    let child = env
        .cli()
        .env("DATABASE_URL", &as_owner)
        .args(["recovery", "execute", "latest", "-s", "new-database"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start backup-cli");
    wait_for_statement(&env, &partial_name(&target), "COPY").await;
    send(&child, "INT");
    let out = finish(child).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(130), "{said}");
    env.assert_half_built_dropped(&said, &target).await;

    env.admin()
        .await
        .batch_execute("ALTER ROLE owner RESET larder_test.gate")
        .await
        .expect("gate");
    let out = env
        .cli()
        .env("DATABASE_URL", &as_owner)
        .args(["recovery", "execute", "latest", "-s", "new-database"])
        .output()
        .expect("run backup-cli");
    assert!(out.status.success(), "{}", text(&out));
    let owner: String = env
        .admin()
        .await
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
            &[&target],
        )
        .await
        .expect("restored database")
        .get(0);
    assert_eq!(owner, "owner");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_during_a_replace_rolls_it_back() {
    let env = TestEnv::start("shop").await;
    // The gate here blocks in any database: replace loads into the live one.
    env.client()
        .await
        .batch_execute(
            "CREATE FUNCTION public.gate(x integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
             BEGIN
                 IF pg_catalog.current_setting('larder_test.gate', true) = 'closed' THEN
                     PERFORM pg_catalog.pg_sleep(60);
                 END IF;
                 RETURN x;
             END $$;
             CREATE TABLE t (id integer PRIMARY KEY CHECK (public.gate(id) = id));
             INSERT INTO t SELECT generate_series(1, 100)",
        )
        .await
        .expect("schema");
    env.backup("baseline").await;
    env.client()
        .await
        .batch_execute("DELETE FROM t WHERE id > 50")
        .await
        .expect("change");
    let before = env.pg_dump("shop", &[]);
    set_gate(&env, true).await;
    let child = env
        .cli()
        .args(["recovery", "execute", "latest", "-s", "replace", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start backup-cli");
    wait_for_statement(&env, "shop", "COPY").await;
    send(&child, "INT");
    let out = finish(child).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(130), "{said}");
    assert!(
        said.contains("interrupted by SIGINT (Ctrl-C): the replace restore of backup")
            && said.contains("stopped before commit")
            && (said.contains("the transaction was rolled back")
                || said.contains("PostgreSQL discarded the changes")),
        "{said}"
    );
    set_gate(&env, false).await;
    // The stopped COPY's session may still be sleeping in the gate until it notices.
    env.admin()
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'shop' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("end the stopped session");
    assert_eq!(env.pg_dump("shop", &[]), before, "the target is as it was");
}

/// A backed-up database `shop` whose load stops at the gate, dropped afterwards: the
/// restore then targets the production name itself.
async fn gated_load_with_the_source_gone() -> TestEnv {
    let env = TestEnv::start("shop").await;
    env.client()
        .await
        .batch_execute(&format!(
            "{GATE} CREATE TABLE t (id integer PRIMARY KEY CHECK (public.gate(id) = id)); \
             INSERT INTO t SELECT generate_series(1, 100)"
        ))
        .await
        .expect("schema");
    env.backup("baseline").await;
    // The source database is gone: the restore targets its name.
    env.admin()
        .await
        .batch_execute("DROP DATABASE shop")
        .await
        .expect("drop the source");
    set_gate(&env, true).await;
    env
}
