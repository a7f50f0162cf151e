//! Each recovery strategy does what the runbook promises, on real data.

use crate::support::{TestEnv, backup_rows, live_rows, reported, scalar, text};

async fn kitchen(name: &str) -> (TestEnv, larder::repository::manifest::Manifest) {
    let env = TestEnv::start(name).await;
    env.load_kitchen_pantry(0.002).await;
    let manifest = env.backup("baseline").await;
    (env, manifest)
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_contacts_alone_is_refused_while_interactions_references_it() {
    let (env, manifest) = kitchen("subsetreplace").await;
    let db = env.client().await;
    db.batch_execute(
        "UPDATE contacts SET notes = 'changed after the backup' WHERE id <= 20;
         UPDATE users SET full_name = 'Renamed After Backup' WHERE id = 1;",
    )
    .await
    .expect("changes");

    let plan = env.run_json(&[
        "recovery", "plan", "latest", "-s", "replace", "-t", "contacts",
    ]);
    let blockers = plan["blockers"].to_string();
    assert!(
        blockers.contains("public.interactions") && blockers.contains("public.orders"),
        "{plan}"
    );
    assert_eq!(plan["tables"][0]["name"], "public.contacts");
    assert!(
        plan["tables"][0]["destination_rows"].as_i64().is_some(),
        "the plan shows the rows the destination has now"
    );
    for field in [
        "backup_id",
        "strategy",
        "destination",
        "tables",
        "estimated_seconds",
        "requirements",
        "risks",
    ] {
        assert!(
            plan.get(field).is_some(),
            "recovery plan --json lacks {field}"
        );
    }
    let refused = env.run(&[
        "recovery", "execute", "latest", "-s", "replace", "-t", "contacts", "--yes",
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("public.interactions"),
        "the refusal names the table to add: {}",
        text(&refused)
    );

    let cascade = env.run_json(&[
        "recovery",
        "plan",
        "latest",
        "-s",
        "replace",
        "-t",
        "contacts",
        "--cascade",
    ]);
    let added = cascade["cascade_added"].to_string();
    assert!(
        added.contains("public.interactions") && added.contains("public.order_items"),
        "{cascade}"
    );

    env.run_ok(&[
        "recovery",
        "execute",
        "latest",
        "-s",
        "replace",
        "-t",
        "contacts,interactions,orders,order_items",
        "--yes",
    ]);
    let repo = env.repo().await;
    let contacts = manifest.find_table("contacts").expect("contacts");
    assert_eq!(
        backup_rows(&repo, &manifest, "contacts").await,
        live_rows(&db, "contacts", &contacts.columns).await
    );
    let user: String = db
        .query_one("SELECT full_name FROM users WHERE id = 1", &[])
        .await
        .expect("user")
        .get(0);
    assert_eq!(
        user, "Renamed After Backup",
        "tables outside the subset are untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_rows_restores_exactly_the_deleted_rows_and_keeps_newer_work() {
    let (env, manifest) = kitchen("missingrows").await;
    let db = env.client().await;
    let deleted = db
        .execute("DELETE FROM interactions WHERE id % 10 = 3", &[])
        .await
        .expect("accidental delete");
    db.batch_execute(
        "INSERT INTO interactions (contact_id, kind, occurred_at, summary) VALUES (1, 'call', now(), 'written after the backup');
         UPDATE interactions SET summary = 'edited after the backup' WHERE id = 1;",
    )
    .await
    .expect("newer work");
    let out = env.run_json(&[
        "recovery",
        "execute",
        "latest",
        "-s",
        "missing-rows",
        "-t",
        "interactions",
    ]);
    let table = &out["tables"][0];
    assert_eq!(
        table["inserted_rows"].as_u64(),
        Some(deleted),
        "exactly the deleted rows come back"
    );
    let interactions = manifest.find_table("interactions").expect("interactions");
    assert_eq!(
        table["destination_rows"].as_i64(),
        Some(interactions.rows as i64 + 1)
    );
    let kept: i64 = scalar(
        &db,
        "SELECT count(*) FROM interactions WHERE summary = 'written after the backup'",
    )
    .await;
    assert_eq!(kept, 1, "rows added after the backup stay");
    let edited: String = db
        .query_one("SELECT summary FROM interactions WHERE id = 1", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(
        edited, "edited after the backup",
        "existing rows keep their current values"
    );

    db.batch_execute("CREATE TABLE audit_log (at timestamptz, line text); INSERT INTO audit_log VALUES (now(), 'x');").await.expect("table");
    env.backup("with-audit").await;
    let refused = env.run(&[
        "recovery",
        "execute",
        "latest",
        "-s",
        "missing-rows",
        "-t",
        "audit_log",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused).contains("primary key"), "{}", text(&refused));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_database_is_loaded_frozen_and_analyzed_with_every_row_restored() {
    let env = TestEnv::start("frozenload").await;
    env.load_kitchen_pantry(0.002).await;
    // One table big enough to load frozen; the sample's are smaller than that at this scale.
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE ledger (id int PRIMARY KEY, entry text);
             INSERT INTO ledger SELECT g, repeat(md5(g::text), 2) FROM generate_series(1, 25000) g",
        )
        .await
        .expect("a big table");
    let manifest = env.backup("baseline").await;
    let before = env.all_rows("frozenload", &manifest).await;
    env.run_ok(&[
        "recovery",
        "execute",
        manifest.id.as_str(),
        "-s",
        "new-database",
        "--dest-db",
        "frozenload_copy",
        "--jobs",
        "2",
        "--yes",
    ]);
    assert_eq!(env.all_rows("frozenload_copy", &manifest).await, before);
    let restored = env.client_for("frozenload_copy").await;
    restored
        .batch_execute("CREATE EXTENSION pg_visibility")
        .await
        .expect("pg_visibility");
    let loaded: Vec<_> = manifest.tables.iter().filter(|t| t.rows > 0).collect();
    assert!(loaded.len() >= 4, "the sample has data in several tables");
    // A table of less than 1 MiB is loaded as it is (its new files would cost more than its
    // vacuum and hint bits), analyzed all the same.
    let (big, small): (Vec<_>, Vec<_>) =
        loaded.into_iter().partition(|t| t.logical_bytes >= 1 << 20);
    assert!(big.iter().any(|t| t.name == "ledger"), "ledger is big");
    assert!(!small.is_empty());
    for table in &small {
        let regclass = format!("'{}'::regclass", table.qualified().replace('\'', "''"));
        let analyzed = scalar(
            &restored,
            &format!(
                "SELECT count(*) FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
                 WHERE s.relid = {regclass} AND s.last_analyze IS NOT NULL AND c.reltuples = {}",
                table.rows
            ),
        )
        .await;
        assert_eq!(analyzed, 1, "{}: analyzed", table.name);
        let frozen = scalar(
            &restored,
            &format!("SELECT all_frozen FROM pg_visibility_map_summary({regclass})"),
        )
        .await;
        assert_eq!(frozen, 0, "{}: small, not loaded frozen", table.name);
    }
    for table in big {
        assert_eq!(table.parts.len(), 1, "{}: one stored range", table.name);
        let regclass = format!("'{}'::regclass", table.qualified().replace('\'', "''"));
        // COPY … FREEZE wrote every page all-visible and all-frozen (a vacuum of freshly
        // loaded rows marks them all-visible but does not freeze them).
        let pages = scalar(
            &restored,
            &format!("SELECT relpages::int8 FROM pg_class WHERE oid = {regclass}"),
        )
        .await;
        let (visible, frozen): (i64, i64) = {
            let row = restored
                .query_one(
                    &format!(
                        "SELECT all_visible, all_frozen FROM pg_visibility_map_summary({regclass})"
                    ),
                    &[],
                )
                .await
                .expect("visibility map");
            (row.get(0), row.get(1))
        };
        assert!(pages > 0, "{}: {pages} pages", table.name);
        assert_eq!(
            (visible, frozen),
            (pages, pages),
            "{}: pages all-visible and frozen",
            table.name
        );
        let unfrozen = scalar(
            &restored,
            &format!("SELECT count(*) FROM pg_check_frozen({regclass})"),
        )
        .await;
        assert_eq!(unfrozen, 0, "{}: every row frozen", table.name);
        // Ready to serve: analyzed (the planner knows its size, its all-visible pages and its
        // columns' statistics), and no vacuum was needed for that.
        let ready = scalar(
            &restored,
            &format!(
                "SELECT count(*) FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid \
                 WHERE c.oid = {regclass} AND c.relallvisible = c.relpages AND c.reltuples = {} \
                   AND s.last_analyze IS NOT NULL AND s.last_vacuum IS NULL \
                   AND EXISTS (SELECT 1 FROM pg_stats p WHERE p.schemaname = '{}' AND p.tablename = '{}')",
                table.rows,
                table.schema.replace('\'', "''"),
                table.name.replace('\'', "''"),
            ),
        )
        .await;
        assert_eq!(
            ready, 1,
            "{}: analyzed, not vacuumed, statistics present",
            table.name
        );
    }
    let unvalidated = scalar(
        &restored,
        "SELECT count(*) FROM pg_constraint WHERE NOT convalidated",
    )
    .await;
    assert_eq!(unvalidated, 0, "every key validated");
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_the_whole_database_returns_it_to_the_backup() {
    let (env, manifest) = kitchen("wholereplace").await;
    let before_schema = env.pg_dump("wholereplace", &["--schema-only"]);
    let before_rows = env.all_rows("wholereplace", &manifest).await;
    env.client()
        .await
        .batch_execute(
            "DROP TABLE order_items; DELETE FROM interactions WHERE id > 100; UPDATE organizations SET name = 'ransomed';
             CREATE TABLE ransom_note (msg text); ALTER TABLE contacts ADD COLUMN junk int;",
        )
        .await
        .expect("damage");
    let refused = env.run(&["recovery", "execute", "latest", "-s", "replace"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "replace without --yes and without a terminal is refused"
    );
    assert!(text(&refused).contains("--yes"));
    env.run_ok(&["recovery", "execute", "latest", "-s", "replace", "--yes"]);
    assert_eq!(
        env.pg_dump("wholereplace", &["--schema-only"]),
        before_schema
    );
    assert_eq!(env.all_rows("wholereplace", &manifest).await, before_rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runbooks_partial_recovery_restores_three_tables_beside_the_live_database() {
    let (env, manifest) = kitchen("partial").await;
    let out = env.run_json(&[
        "recovery",
        "execute",
        manifest.id.as_str(),
        "-t",
        "organizations,users,contacts",
    ]);
    let target = out["destination_database"]
        .as_str()
        .expect("target")
        .to_string();
    assert!(
        target.starts_with("partial_restored_"),
        "the live database is left alone: {target}"
    );
    // By default every restored table's rows are counted in the target against the backup.
    assert_eq!(out["verification"], "rows");
    let tables = out["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 3, "{out}");
    for table in tables {
        assert_eq!(table["ok"], true, "{table}");
        assert_eq!(table["destination_rows"], table["backup_rows"], "{table}");
        assert!(table["checksum_ok"].is_null(), "not re-read: {table}");
    }
    let restored = env.client_for(&target).await;
    for (table, expected) in [("organizations", 4i64), ("users", 40), ("contacts", 800)] {
        let n: i64 = scalar(&restored, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, expected, "{table}");
    }
    // Each restored table was analyzed by the restore, and the planner has statistics for
    // it. At this size none is big enough to load frozen or to pause autovacuum on (under
    // 1 MiB), so contacts, whose key on organization_id an index holds, was
    // vacuumed as well, for that key's index-only validation; the others were not.
    for (table, vacuumed) in [
        ("organizations", false),
        ("users", false),
        ("contacts", true),
    ] {
        let maintained = scalar(
            &restored,
            &format!("SELECT count(*) FROM pg_stat_user_tables WHERE relname = '{table}' AND last_analyze IS NOT NULL AND (last_vacuum IS NOT NULL) = {vacuumed}"),
        )
        .await;
        assert_eq!(maintained, 1, "{table}: analyzed, vacuumed: {vacuumed}");
        let columns_with_stats = scalar(
            &restored,
            &format!("SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = '{table}'"),
        )
        .await;
        assert!(columns_with_stats > 0, "{table} has no planner statistics");
    }
    let interactions: i64 = scalar(&restored, "SELECT count(*) FROM interactions").await;
    assert_eq!(
        interactions, 0,
        "tables outside the subset are created empty"
    );
    let again = env.run(&[
        "recovery",
        "execute",
        manifest.id.as_str(),
        "-s",
        "new-database",
        "--dest-db",
        &target,
    ]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "new-database refuses an existing database"
    );
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    let outward = env.run(&["recovery", "execute", "latest", "-t", "contacts"]);
    assert_eq!(
        outward.status.code(),
        Some(2),
        "contacts alone would lose its organizations and users"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_runs_logs_and_times_the_steps_the_plan_lists() {
    use larder::engine::recovery::{plan::Strategy, steps};
    let env = TestEnv::start("steps").await;
    env.client()
        .await
        .batch_execute(
            "CREATE TABLE parent (id int PRIMARY KEY); \
             CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent); \
             INSERT INTO parent SELECT generate_series(1, 10); \
             INSERT INTO child SELECT g, g FROM generate_series(1, 10) g",
        )
        .await
        .expect("schema");
    env.backup("baseline").await;
    let names = |strategy, subset| -> Vec<&str> {
        steps(strategy, subset, false)
            .iter()
            .map(|s| s.name())
            .collect()
    };
    let ran = |report: &serde_json::Value| -> Vec<String> {
        let steps = report["steps"].as_array().expect("steps");
        assert!(
            steps
                .iter()
                .all(|s| s["seconds"].as_f64().is_some_and(|t| t >= 0.0)),
            "{report}"
        );
        steps
            .iter()
            .map(|s| s["name"].as_str().expect("name").to_string())
            .collect()
    };

    let out = env.run_ok(&[
        "-v",
        "--json",
        "recovery",
        "execute",
        "latest",
        "--dest-db",
        "steps_copy",
    ]);
    let report = reported(&out);
    assert_eq!(ran(&report), names(Strategy::NewDatabase, false));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("step 4/9: post-data"), "{log}");

    env.client()
        .await
        .batch_execute("DELETE FROM child WHERE id > 5")
        .await
        .expect("delete");
    let report = env.run_json(&["recovery", "execute", "latest", "-s", "missing-rows"]);
    assert_eq!(ran(&report), names(Strategy::MissingRows, false));
    assert_eq!(report["tables"][0]["inserted_rows"], 5, "{report}");
    let out = env.run_ok(&[
        "recovery", "execute", "latest", "-s", "replace", "-t", "parent", "-t", "child", "--yes",
    ]);
    assert!(
        text(&out).contains("Steps: verify-chunks "),
        "the text report times the steps: {}",
        text(&out)
    );
}
