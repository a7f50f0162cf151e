//! `latest` is the newest backup a recovery may trust: a full backup of this database, not the
//! pre-migration schema-only one, not the emergency snapshot of the broken state, not another
//! database's; the plan and the confirmation say which backup that is, and hints never point a
//! drill at the live database.

use crate::support::{TestEnv, backup_rows, live_rows, reported, scalar, text};

#[tokio::test(flavor = "multi_thread")]
async fn latest_after_a_schema_only_backup_restores_the_full_one_and_says_so() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.002).await;
    let full = env.backup("nightly").await;
    let schema = env.run_json(&[
        "backup",
        "create",
        "--type",
        "schema-only",
        "-n",
        "pre-migration",
    ]);
    let schema_id = schema["backup"]["id"].as_str().expect("id").to_string();
    let emergency = env.backup("emergency-20261201-0300").await;
    env.client()
        .await
        .batch_execute("DELETE FROM order_items; DELETE FROM interactions WHERE id % 3 = 0")
        .await
        .expect("the incident");

    let plan = env.run_json(&["recovery", "plan", "latest", "-s", "replace"]);
    assert_eq!(plan["backup_id"], full.id.as_str(), "{plan}");
    assert_eq!(plan["requested"], "latest");
    assert_eq!(plan["backup_type"], "full");
    assert_eq!(plan["backup_database"], "pantry");
    let passed = plan["passed_over"].to_string();
    assert!(
        passed.contains(&format!("{schema_id} (schema-only backup)"))
            && passed.contains(&emergency.id)
            && passed.contains("emergency backup"),
        "{plan}"
    );
    let human = text(&env.run_ok(&["recovery", "plan", "latest", "-s", "replace"]));
    assert!(
        human.contains(&format!(
            "Recovery plan: latest = backup {} ('nightly', full, of database pantry, taken",
            full.id
        )) && human.contains(" ago)"),
        "the plan names what latest resolved to, its type, database and age:\n{human}"
    );
    assert!(human.contains("newer, passed over"), "{human}");

    // No terminal to confirm on: the refusal names the backup that would be restored.
    let unconfirmed = env.run(&["recovery", "execute", "latest", "-s", "replace"]);
    assert_eq!(unconfirmed.status.code(), Some(2), "{}", text(&unconfirmed));
    assert!(
        text(&unconfirmed).contains(&format!(
            "overwrites every object of the backup's schemas in database pantry with backup {} ('nightly', full, of database pantry",
            full.id
        )),
        "{}",
        text(&unconfirmed)
    );

    let restored = env.run_json(&["recovery", "execute", "latest", "-s", "replace", "--yes"]);
    assert_eq!(restored["backup_id"], full.id.as_str());
    let repo = env.repo().await;
    let db = env.client().await;
    for table in ["order_items", "interactions"] {
        let entry = full.find_table(table).expect("table");
        assert!(entry.rows > 0);
        assert_eq!(
            live_rows(&db, &entry.qualified(), &entry.columns).await,
            backup_rows(&repo, &full, table).await,
            "{table} is back with every row"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_from_a_schema_only_backup_needs_schema_only() {
    let env = TestEnv::start("migrating").await;
    env.load_kitchen_pantry(0.002).await;
    env.backup("nightly").await;
    env.run_json(&["backup", "create", "--type", "schema-only"]);
    let before = env.pg_dump("migrating", &[]);

    let refused = env.run(&[
        "recovery",
        "execute",
        "latest-schema",
        "-s",
        "replace",
        "--yes",
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused)
            .contains("is schema-only: -s replace would leave every table of migrating empty")
            && text(&refused).contains("--schema-only"),
        "{}",
        text(&refused)
    );
    let subset = env.run(&[
        "recovery",
        "plan",
        "latest-schema",
        "-s",
        "replace",
        "-t",
        "contacts",
        "--schema-only",
    ]);
    assert_eq!(subset.status.code(), Some(2));
    assert!(
        text(&subset).contains("holds no table data to restore"),
        "{}",
        text(&subset)
    );
    let full_with_flag = env.run(&[
        "recovery",
        "execute",
        "latest",
        "-s",
        "replace",
        "--schema-only",
        "--yes",
    ]);
    assert_eq!(full_with_flag.status.code(), Some(2));
    assert!(
        text(&full_with_flag).contains("--schema-only confirms restoring a schema-only backup"),
        "{}",
        text(&full_with_flag)
    );
    assert_eq!(env.pg_dump("migrating", &[]), before, "nothing was changed");

    env.run_json(&[
        "recovery",
        "execute",
        "latest-schema",
        "-s",
        "replace",
        "--schema-only",
        "--yes",
    ]);
    let db = env.client().await;
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM contacts").await,
        0,
        "explicitly asked: the structure without data"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_ignores_another_databases_backups_and_replacing_from_one_needs_a_flag() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.002).await;
    let ours = env.backup("nightly").await;
    env.admin()
        .await
        .batch_execute("CREATE DATABASE billing")
        .await
        .expect("second database");
    let billing = env.client_for("billing").await;
    billing
        .batch_execute("CREATE TABLE invoices (id int PRIMARY KEY); INSERT INTO invoices SELECT generate_series(1, 5)")
        .await
        .expect("billing data");
    let billing_url = env.url().replace("/pantry?", "/billing?");
    let out = env
        .cli()
        .env("DATABASE_URL", &billing_url)
        .args(["--json", "backup", "create"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let theirs = reported(&out);
    let theirs = theirs["backup"]["id"].as_str().expect("id").to_string();

    let plan = env.run_json(&["recovery", "plan", "latest", "-s", "replace"]);
    assert_eq!(plan["backup_id"], ours.id.as_str());
    assert!(
        plan["passed_over"]
            .to_string()
            .contains(&format!("{theirs} (a backup of database billing)")),
        "{plan}"
    );

    let before = env.pg_dump("pantry", &[]);
    let refused = env.run(&["recovery", "execute", &theirs, "-s", "replace", "--yes"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!(
            "backup {theirs} is of database billing, and -s replace would overwrite database pantry with it"
        )) && text(&refused).contains("--from-other-database"),
        "{}",
        text(&refused)
    );
    assert_eq!(env.pg_dump("pantry", &[]), before, "nothing was changed");
    let beside = env.run_json(&["recovery", "plan", &theirs]);
    assert_eq!(
        beside["blockers"],
        serde_json::json!([]),
        "a new database beside the others replaces nothing"
    );

    // A database with no backup of its own: latest names none and lists what it passed over.
    let nobody = env
        .cli()
        .env("DATABASE_URL", env.url().replace("/pantry?", "/nobody?"))
        .args(["recovery", "plan", "latest"])
        .output()
        .expect("run");
    assert_eq!(nobody.status.code(), Some(2));
    assert!(
        text(&nobody).contains("newest full or incremental backup of database nobody")
            && text(&nobody).contains(&format!("{theirs} (a backup of database billing)")),
        "{}",
        text(&nobody)
    );

    env.run_json(&[
        "recovery",
        "execute",
        &theirs,
        "-s",
        "replace",
        "--from-other-database",
        "--yes",
    ]);
    assert_eq!(
        scalar(&env.client().await, "SELECT count(*) FROM invoices").await,
        5,
        "explicitly asked: pantry now holds billing's backup"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_partial_drill_is_pointed_at_a_new_name_never_at_the_live_database() {
    let env = TestEnv::start("drill").await;
    env.load_kitchen_pantry(0.002).await;
    let manifest = env.backup("nightly").await;
    let tables = "organizations,users,contacts";
    env.run_json(&["recovery", "execute", "latest", "-t", tables]);
    let copy = format!("drill_restored_{}", manifest.id.replace('-', "_"));
    assert!(env.databases().await.contains(&copy));

    let again = env.run(&["recovery", "execute", "latest", "-t", tables]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    let said = text(&again);
    assert!(
        said.contains(&format!("database {copy} already exists")),
        "{said}"
    );
    let rename = said.find("--dest-db NAME").expect("the safe option");
    let drop = said
        .find(&format!("DROP DATABASE {copy};"))
        .expect("dropping the old copy");
    assert!(rename < drop, "the safe option comes first: {said}");
    assert!(
        !said.contains("-s replace"),
        "never a hint to overwrite: {said}"
    );

    // The destination's old flag, from when "target" also meant the database restored into,
    // is still taken, and no longer shown.
    let old = env.run_json(&[
        "recovery",
        "plan",
        "latest",
        "-t",
        tables,
        "--target-db",
        "drill_2",
    ]);
    assert_eq!(old["destination"]["database"], "drill_2", "{old}");
    let help = text(&env.run(&["recovery", "plan", "--help"]));
    assert!(
        help.contains("--dest-db") && !help.contains("target-db"),
        "{help}"
    );
}
