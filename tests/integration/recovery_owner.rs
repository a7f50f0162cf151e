//! The runbook's database user, `kitchen_pantry_user` (owner of the database, not a
//! superuser), runs every recovery strategy itself; a role lacking a privilege learns it from
//! the plan and the dry run, with the statement to grant it, before anything is touched.

use crate::support::{TestEnv, backup_rows, live_rows, scalar, text};

const OWNER: &str = "kitchen_pantry_user";

/// Kitchen Pantry owned by the runbook's user, with an audit trigger on contacts that must
/// not fire for restored rows, and a backup taken by that user.
async fn owned_kitchen(name: &str) -> (TestEnv, larder::repository::manifest::Manifest) {
    let env = TestEnv::start(name).await;
    env.create_runbook_owner().await;
    env.load_kitchen_pantry_as(OWNER, 0.002).await;
    env.client()
        .await
        .batch_execute(
            "SET ROLE kitchen_pantry_user;
             CREATE TABLE contact_audit (contact_id bigint, at timestamptz DEFAULT now());
             CREATE FUNCTION audit_contact() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO contact_audit (contact_id) VALUES (NEW.id); RETURN NEW; END $$;
             CREATE TRIGGER contacts_audit AFTER INSERT ON contacts FOR EACH ROW EXECUTE FUNCTION audit_contact();",
        )
        .await
        .expect("audit trigger");
    let out = env.run_json_as(OWNER, &["backup", "create", "-n", "nightly"]);
    let id = out["backup"]["id"].as_str().expect("id").to_string();
    let manifest = env.repo().await.read_manifest(&id).await.expect("manifest");
    (env, manifest)
}

async fn assert_restored(
    env: &TestEnv,
    manifest: &larder::repository::manifest::Manifest,
    tables: &[&str],
) {
    let repo = env.repo().await;
    let db = env.client().await;
    for table in tables {
        let entry = manifest.find_table(table).expect("table in backup");
        assert_eq!(
            live_rows(&db, &entry.qualified(), &entry.columns).await,
            backup_rows(&repo, manifest, table).await,
            "{table} is exactly as in the backup"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_owner_replaces_its_database_whole_and_by_table_without_superuser() {
    let (env, manifest) = owned_kitchen("kitchen_pantry").await;
    let db = env.client().await;
    assert!(
        !manifest.globals.passwords_included,
        "the owner may not read pg_authid"
    );
    db.batch_execute("DELETE FROM order_items; DELETE FROM interactions WHERE id % 2 = 0")
        .await
        .expect("the incident");

    let plan = env.run_json_as(OWNER, &["recovery", "plan", "latest", "-s", "replace"]);
    assert_eq!(plan["blockers"], serde_json::json!([]), "{plan}");
    assert!(
        plan["globals"]["passwords"]
            .as_str()
            .is_some_and(|p| p.contains("no password hashes") && p.contains("not a superuser")),
        "the plan says why passwords are not in the backup: {plan}"
    );
    env.run_json_as(
        OWNER,
        &[
            "recovery",
            "execute",
            "latest",
            "-s",
            "replace",
            "--dry-run",
        ],
    );
    let out = env.run_json_as(
        OWNER,
        &["recovery", "execute", "latest", "-s", "replace", "--yes"],
    );
    assert_eq!(out["ok"], true, "{out}");
    assert_restored(
        &env,
        &manifest,
        &["order_items", "interactions", "contact_audit"],
    )
    .await;
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> 'kitchen_pantry_user'").await,
        0,
        "every table still belongs to the owner"
    );

    // By table: the audit trigger does not fire for restored rows, and is on again afterwards.
    db.batch_execute("UPDATE contacts SET notes = 'changed' WHERE id <= 10")
        .await
        .expect("change");
    let audited = scalar(&db, "SELECT count(*) FROM contact_audit").await;
    let subset = ["-s", "replace", "-t", "contacts", "--cascade"];
    let plan = env.run_json_as(
        OWNER,
        &[&["recovery", "plan", "latest"][..], &subset].concat(),
    );
    assert_eq!(plan["blockers"], serde_json::json!([]), "{plan}");
    assert_eq!(plan["triggers_suppressed"], true);
    env.run_json_as(
        OWNER,
        &[
            &["recovery", "execute", "latest"][..],
            &subset,
            &["--dry-run"],
        ]
        .concat(),
    );
    env.run_json_as(
        OWNER,
        &[&["recovery", "execute", "latest"][..], &subset, &["--yes"]].concat(),
    );
    assert_restored(
        &env,
        &manifest,
        &["contacts", "interactions", "orders", "order_items"],
    )
    .await;
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM contact_audit").await,
        audited,
        "user triggers stay off for restored rows"
    );
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM pg_trigger WHERE tgname IN ('contacts_audit', 'contacts_touch') AND tgenabled = 'O'").await,
        2,
        "and are on again afterwards"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_restores_missing_rows_and_with_createdb_a_new_database() {
    let (env, _) = owned_kitchen("kitchen_pantry").await;
    let db = env.client().await;
    // organizations and contacts made big enough to load frozen (a table under 1 MiB is not
    // worth the TRUNCATE), and the owner may not truncate organizations: a new-database
    // restore cannot load it frozen (FREEZE empties it first, in the loading transaction) and
    // loads it as before.
    db.batch_execute(
        "SET ROLE kitchen_pantry_user;
         INSERT INTO organizations (name, industry, city)
           SELECT 'organization ' || g || ' ' || md5(g::text), 'wholesale', 'Lyon' FROM generate_series(1, 20000) g;
         INSERT INTO contacts (organization_id, first_name, last_name, notes)
           SELECT (SELECT min(id) FROM organizations), 'first ' || g, 'last ' || g, md5(g::text)
           FROM generate_series(1, 20000) g;
         RESET ROLE;
         REVOKE TRUNCATE ON organizations FROM kitchen_pantry_user",
    )
    .await
    .expect("big tables, one the owner may not truncate");
    let out = env.run_json_as(OWNER, &["backup", "create", "-n", "no-truncate"]);
    let id = out["backup"]["id"].as_str().expect("id");
    let stored = env.repo().await.read_manifest(id).await.expect("manifest");
    for table in ["organizations", "contacts"] {
        let bytes = stored.find_table(table).expect("table").logical_bytes;
        assert!(
            bytes >= 1 << 20,
            "{table} is big enough to load frozen: {bytes} bytes"
        );
    }
    let manifest = env.repo().await.read_manifest(id).await.expect("manifest");
    db.batch_execute("DELETE FROM order_items WHERE order_id % 4 = 0")
        .await
        .expect("lost rows");
    env.run_json_as(
        OWNER,
        &[
            "recovery",
            "execute",
            "latest",
            "-s",
            "missing-rows",
            "-t",
            "order_items",
            "--yes",
        ],
    );
    assert_restored(&env, &manifest, &["order_items"]).await;

    // The runbook's partial recovery into a new database: the owner needs CREATEDB, and the
    // plan and the dry run say so with the statement.
    let partial = ["-t", "organizations,users,contacts"];
    let plan = env.run_json_as(
        OWNER,
        &[&["recovery", "plan", "latest"][..], &partial].concat(),
    );
    let blockers = plan["blockers"].to_string();
    assert!(
        blockers.contains("kitchen_pantry_user lacks CREATEDB")
            && blockers.contains("ALTER ROLE kitchen_pantry_user CREATEDB;"),
        "{plan}"
    );
    let dry = env.run_as(
        OWNER,
        &[
            &["recovery", "execute", "latest"][..],
            &partial,
            &["--dry-run"],
        ]
        .concat(),
    );
    assert_eq!(dry.status.code(), Some(2), "{}", text(&dry));
    assert!(
        text(&dry).contains("ALTER ROLE kitchen_pantry_user CREATEDB;"),
        "{}",
        text(&dry)
    );
    env.admin()
        .await
        .batch_execute("ALTER ROLE kitchen_pantry_user CREATEDB")
        .await
        .expect("grant CREATEDB");
    let out = env.run_json_as(
        OWNER,
        &[&["recovery", "execute", "latest"][..], &partial].concat(),
    );
    let copy = out["destination_database"]
        .as_str()
        .expect("name")
        .to_string();
    let restored = env.client_for(&copy).await;
    for table in ["organizations", "contacts"] {
        assert_eq!(
            scalar(&restored, &format!("SELECT count(*) FROM {table}")).await,
            manifest.find_table(table).expect("table").rows as i64,
            "{table}"
        );
    }
    restored
        .batch_execute("CREATE EXTENSION pg_visibility")
        .await
        .expect("pg_visibility");
    for (table, frozen) in [("organizations", 0), ("contacts", 1)] {
        assert_eq!(
            scalar(
                &restored,
                &format!(
                    "SELECT count(*) FROM pg_visibility_map_summary('{table}') WHERE all_frozen > 0"
                )
            )
            .await,
            frozen,
            "{table} loaded frozen: {frozen}"
        );
    }
    assert_eq!(
        scalar(&restored, "SELECT count(*) FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = current_database() AND r.rolname = 'kitchen_pantry_user'").await,
        1,
        "the owner's new database is its own"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_without_the_privileges_learns_from_the_plan_exactly_what_to_grant() {
    let (env, _) = owned_kitchen("kitchen_pantry").await;
    env.admin()
        .await
        .batch_execute("CREATE ROLE pantry_clerk LOGIN")
        .await
        .expect("clerk");
    env.client()
        .await
        .batch_execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO pantry_clerk")
        .await
        .expect("grants");
    let before = env.pg_dump("kitchen_pantry", &[]);

    let subset = env.run_as(
        "pantry_clerk",
        &[
            "recovery",
            "execute",
            "latest",
            "-s",
            "replace",
            "-t",
            "contacts",
            "--cascade",
            "--dry-run",
        ],
    );
    assert_eq!(subset.status.code(), Some(2), "{}", text(&subset));
    let said = text(&subset);
    for needed in [
        "pantry_clerk lacks TRUNCATE on public.contacts: GRANT TRUNCATE ON public.contacts TO pantry_clerk;",
        "pantry_clerk lacks ownership of public.contacts (owned by kitchen_pantry_user), to switch off its user triggers for the restored rows: GRANT kitchen_pantry_user TO pantry_clerk;",
        "GRANT UPDATE ON SEQUENCE public.interactions_id_seq TO pantry_clerk;",
    ] {
        assert!(said.contains(needed), "missing «{needed}» in:\n{said}");
    }
    let whole = env.run_as(
        "pantry_clerk",
        &["recovery", "plan", "latest", "-s", "replace"],
    );
    assert!(
        text(&whole).contains("pantry_clerk lacks ownership of schema public (owned by pg_database_owner), to drop and recreate it: ALTER SCHEMA public OWNER TO pantry_clerk;")
            && text(&whole).contains("FAIL privileges"),
        "{}",
        text(&whole)
    );
    let rows = env.run_as(
        "pantry_clerk",
        &[
            "recovery",
            "plan",
            "latest",
            "-s",
            "missing-rows",
            "-t",
            "contacts",
        ],
    );
    assert!(
        text(&rows).contains("lacks ownership of public.contacts"),
        "{}",
        text(&rows)
    );
    assert_eq!(
        env.pg_dump("kitchen_pantry", &[]),
        before,
        "nothing was changed"
    );

    // With INSERT and SELECT a clerk may bring back missing rows of a table without triggers.
    env.client()
        .await
        .batch_execute("DELETE FROM order_items WHERE order_id % 5 = 0")
        .await
        .expect("lost rows");
    let out = env.run_json_as(
        "pantry_clerk",
        &[
            "recovery",
            "execute",
            "latest",
            "-s",
            "missing-rows",
            "-t",
            "order_items",
            "--yes",
        ],
    );
    assert_eq!(out["ok"], true, "{out}");
}
