//! Complete server failure: the backup carries the roles, owner and settings the database
//! needs, so a fresh server gets them back with `--create-roles`, and the plan says what
//! exists, what will be created and what is left by hand.

use crate::support::{TestEnv, reported, scalar, text};

/// Roles, memberships, ownership and settings as a database's server has them.
async fn globals_of(env: &TestEnv, db: &str) -> Vec<String> {
    let client = env.client_for(db).await;
    let queries = [
        "SELECT 'role ' || rolname || ' login=' || rolcanlogin || ' createdb=' || rolcreatedb || ' limit=' || rolconnlimit \
         || ' password=' || coalesce(rolpassword, '-') FROM pg_authid WHERE rolname IN ('kitchen_pantry_user', 'pantry_readers')",
        "SELECT 'member ' || m.rolname || ' of ' || g.rolname FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member \
         JOIN pg_roles g ON g.oid = a.roleid WHERE m.rolname = 'kitchen_pantry_user'",
        "SELECT 'owner ' || r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = current_database()",
        "SELECT 'setting ' || coalesce(r.rolname, '-') || ' ' || array_to_string(s.setconfig, ',') FROM pg_db_role_setting s \
         LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
        "SELECT 'table ' || tablename || ' ' || tableowner FROM pg_tables WHERE schemaname = 'public'",
    ];
    let mut out = Vec::new();
    for sql in queries {
        for row in client
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
        {
            out.push(row.get::<_, String>(0));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_server_gets_the_roles_owner_and_settings_back_with_create_roles() {
    let old = TestEnv::start("kitchen_pantry").await;
    old.admin()
        .await
        .batch_execute(
            "CREATE ROLE pantry_readers NOLOGIN;
             CREATE ROLE kitchen_pantry_user LOGIN PASSWORD 'pantry-secret' CREATEDB CONNECTION LIMIT 20;
             GRANT pantry_readers TO kitchen_pantry_user;
             ALTER DATABASE kitchen_pantry OWNER TO kitchen_pantry_user;
             ALTER DATABASE kitchen_pantry SET work_mem = '8MB';
             ALTER DATABASE kitchen_pantry SET search_path = \"$user\", public;
             ALTER ROLE kitchen_pantry_user IN DATABASE kitchen_pantry SET statement_timeout = '30s';",
        )
        .await
        .expect("the old server's globals");
    old.load_kitchen_pantry_as("kitchen_pantry_user", 0.001)
        .await;
    old.client()
        .await
        .batch_execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO pantry_readers")
        .await
        .expect("grant");
    let manifest = old.backup("nightly").await;
    assert!(
        manifest.globals.passwords_included,
        "a superuser's backup holds the hashes"
    );
    let expected = globals_of(&old, "kitchen_pantry").await;
    assert!(
        expected
            .iter()
            .any(|g| g.starts_with("setting kitchen_pantry_user statement_timeout=30s")),
        "{expected:?}"
    );

    // The new server knows only postgres; the configuration now points at it.
    let new = TestEnv::start("postgres_scratch").await;
    let on_new = || {
        let mut cmd = old.cli();
        cmd.env(
            "DATABASE_URL",
            new.url().replace("/postgres_scratch?", "/kitchen_pantry?"),
        );
        cmd
    };
    let plan = on_new()
        .args(["--json", "recovery", "plan", "latest"])
        .output()
        .expect("plan");
    assert!(plan.status.success(), "{}", text(&plan));
    let plan = reported(&plan);
    assert_eq!(plan["destination"]["database"], "kitchen_pantry");
    assert_eq!(plan["globals"]["existing_roles"], serde_json::json!([]));
    assert_eq!(
        plan["globals"]["roles_to_create"],
        serde_json::json!(["kitchen_pantry_user", "pantry_readers"])
    );
    assert!(
        plan["blockers"].to_string().contains(
            "roles kitchen_pantry_user, pantry_readers do not exist on the destination server: pass --create-roles"
        ),
        "{plan}"
    );
    let shown = plan.to_string();
    assert!(
        !shown.contains("SCRAM-SHA-256"),
        "the plan never shows a password hash: {shown}"
    );
    assert!(shown.contains("PASSWORD '…'"), "{shown}");

    let refused = on_new()
        .args(["recovery", "execute", "latest"])
        .output()
        .expect("execute");
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("--create-roles"),
        "{}",
        text(&refused)
    );

    let human = on_new()
        .args(["recovery", "plan", "latest", "--create-roles"])
        .output()
        .expect("plan");
    let human = text(&human);
    assert!(
        human.contains("to be created (--create-roles): kitchen_pantry_user, pantry_readers")
            && human.contains(
                "after the restore: ALTER DATABASE kitchen_pantry OWNER TO kitchen_pantry_user;"
            )
            && human.contains("passwords: password hashes are in the backup"),
        "{human}"
    );

    let done = on_new()
        .args(["--json", "recovery", "execute", "latest", "--create-roles"])
        .output()
        .expect("execute");
    assert!(done.status.success(), "{}", text(&done));
    let done = reported(&done);
    assert_eq!(
        done["roles_created"],
        serde_json::json!(["kitchen_pantry_user", "pantry_readers"])
    );
    assert_eq!(
        globals_of(&new, "kitchen_pantry").await,
        expected,
        "roles, memberships, owner, settings and table owners as on the old server"
    );
    assert_eq!(
        new.pg_dump("kitchen_pantry", &["--schema-only"]),
        old.pg_dump("kitchen_pantry", &["--schema-only"]),
        "the database's schema is the same"
    );
    // The rows as sets: pg_dump writes them in heap order, which a logical restore need not
    // keep (one updated contact was once written back beside a different neighbour).
    let rows = |env: &TestEnv| {
        let mut lines: Vec<String> = env
            .pg_dump("kitchen_pantry", &["--data-only"])
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(rows(&new), rows(&old), "the database's rows are the same");
    let restored = new.client_for("kitchen_pantry").await;
    assert_eq!(
        scalar(&restored, "SELECT count(*) FROM contacts").await,
        manifest.find_table("contacts").expect("contacts").rows as i64
    );
}
