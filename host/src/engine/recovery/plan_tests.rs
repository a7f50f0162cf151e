//! The plan's rules without PostgreSQL: a small backup (organizations ← users, contacts ←
//! interactions, a partitioned `events` referencing contacts and referenced by `audit`, an
//! extension's configuration table) judged against hand-written destination facts.

use super::facts::{DatabaseFacts, DestinationServer, Facts, TableFacts};
use super::plan::*;
use super::step::{Step, steps};
use crate::pg::ConnectionSettings;
use crate::pg::connect::SslMode;
use crate::repository::manifest::{
    Extension, ForeignKey, Manifest, RoleDefinition, Stream, TableEntry, sample_manifest,
    sample_table,
};

const ID: &str = "20260310-070000-abcd";

fn table(name: &str, rows: u64, bytes: u64) -> TableEntry {
    sample_table(name, (rows, bytes), Stream::default())
}

fn fk(name: &str, table: &str, references: &str) -> ForeignKey {
    ForeignKey {
        name: name.into(),
        table: format!("public.{table}"),
        references: format!("public.{references}"),
    }
}

fn backup() -> Manifest {
    let mut m = sample_manifest(ID);
    m.tables = vec![
        table("audit", 5, 500),
        table("contacts", 40, 4_000),
        TableEntry {
            partition_of: Some("public.events".into()),
            ..table("events_2025", 70, 7_000)
        },
        TableEntry {
            partition_of: Some("public.events".into()),
            ..table("events_2026", 30, 3_000)
        },
        table("interactions", 200, 20_000),
        table("organizations", 10, 1_000),
        TableEntry {
            filter: Some("WHERE srid > 900000".into()),
            ..table("spatial_ref_sys", 2, 200)
        },
        table("users", 20, 2_000),
    ];
    m.foreign_keys = vec![
        fk("audit_event_fkey", "audit", "events"),
        fk("contacts_org_fkey", "contacts", "organizations"),
        fk("events_contact_fkey", "events", "contacts"),
        fk("interactions_contact_fkey", "interactions", "contacts"),
        fk("users_org_fkey", "users", "organizations"),
    ];
    m.roles = vec!["app_owner".into()];
    m
}

fn request(strategy: Strategy, tables: Option<&str>) -> PlanRequest {
    PlanRequest {
        strategy,
        tables: tables.map(|t| t.split(',').map(str::to_string).collect()),
        cascade: false,
        no_owner: false,
        verification: Verification::Rows,
        destination: ConnectionSettings {
            host: "db.example".into(),
            hostaddr: None,
            port: 5432,
            more_endpoints: Vec::new(),
            user: "app_owner".into(),
            dbname: "app".into(),
            password: None,
            password_source: None,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
        },
        destination_named: false,
        requested: "latest".into(),
        passed_over: Vec::new(),
        schema_only: false,
        from_other_database: false,
        create_roles: false,
        until: None,
    }
}

/// The destination as the database's owner (not a superuser) sees it: database `app` with
/// every table of the backup, all privileges, a primary key everywhere.
fn destination(manifest: &Manifest) -> Facts {
    let tables = manifest
        .tables
        .iter()
        .map(|t| {
            let facts = TableFacts {
                rows: t.rows as i64,
                primary_key: true,
                owner: "app_owner".into(),
                owned: true,
                ..TableFacts::default()
            };
            (t.display_name(), facts)
        })
        .collect();
    Facts {
        server: DestinationServer {
            version: "16.4".into(),
            version_num: 160004,
            user: "app_owner".into(),
            createdb: true,
            ..DestinationServer::default()
        },
        databases: ["app".to_string(), "postgres".to_string()].into(),
        roles: [("app_owner".to_string(), true)].into(),
        source_locale_available: true,
        database: Some(DatabaseFacts {
            owner: "app_owner".into(),
            may_create: true,
            may_create_temporary: true,
            tables,
            ..DatabaseFacts::default()
        }),
        ..Facts::default()
    }
}

fn plan_with(manifest: &Manifest, req: &PlanRequest, facts: &Facts) -> RecoveryPlan {
    let selection = select(manifest, req).expect("selection");
    judge(
        manifest,
        req,
        selection,
        facts,
        None,
        manifest.created_at,
        None,
    )
}

fn plan(req: &PlanRequest) -> RecoveryPlan {
    let m = backup();
    let facts = destination(&m);
    plan_with(&m, req, &facts)
}

fn blocked(plan: &RecoveryPlan, words: &str) -> bool {
    plan.blockers.iter().any(|b| b.contains(words))
}

#[test]
fn replacing_a_table_others_reference_is_blocked_naming_what_to_add() {
    let p = plan(&request(Strategy::Replace, Some("contacts")));
    let crossing: Vec<(&str, &str)> = p
        .foreign_keys_crossing
        .iter()
        .map(|c| (c.constraint.as_str(), c.table.as_str()))
        .collect();
    assert_eq!(
        crossing,
        [
            ("events_contact_fkey", "public.events_2025"),
            ("events_contact_fkey", "public.events_2026"),
            ("interactions_contact_fkey", "public.interactions"),
        ],
        "a key declared on a partitioned table holds for each of its partitions"
    );
    assert!(
        blocked(
            &p,
            "Add public.events_2025, public.events_2026, public.interactions to -t, or pass --cascade"
        ),
        "{:?}",
        p.blockers
    );
    assert!(
        !p.blockers.iter().any(|b| b.contains("organizations")),
        "contacts referencing organizations is no reason to refuse a replace: {:?}",
        p.blockers
    );
}

#[test]
fn a_key_to_a_partitioned_table_crosses_for_every_partition_it_references() {
    // Replacing the partitioned table: audit references it and would be left dangling.
    let p = plan(&request(
        Strategy::Replace,
        Some("events,contacts,interactions"),
    ));
    assert_eq!(
        p.tables.len(),
        4,
        "events means both partitions: {:?}",
        p.tables
    );
    assert!(blocked(
        &p,
        "public.audit references public.events_2025 (audit_event_fkey)"
    ));
    assert!(blocked(&p, "Add public.audit to -t"), "{:?}", p.blockers);

    // A new database with audit alone lacks the partitions it references.
    let p = plan(&request(Strategy::NewDatabase, Some("audit")));
    assert!(
        blocked(&p, "Add public.events_2025, public.events_2026 to -t"),
        "{:?}",
        p.blockers
    );
}

#[test]
fn cascade_widens_the_subset_along_the_keys_instead_of_refusing() {
    let mut req = request(Strategy::Replace, Some("organizations"));
    req.cascade = true;
    let p = plan(&req);
    assert!(p.foreign_keys_crossing.is_empty() && !blocked(&p, "cross the subset"));
    let restored: Vec<&str> = p.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        restored,
        [
            "public.audit",
            "public.contacts",
            "public.events_2025",
            "public.events_2026",
            "public.interactions",
            "public.organizations",
            "public.users",
        ],
        "everything that references organizations, directly or not"
    );
    assert!(p.cascade_added.contains(&"public.audit".to_string()));

    let mut req = request(Strategy::NewDatabase, Some("interactions"));
    req.cascade = true;
    let p = plan(&req);
    assert_eq!(p.cascade_added, ["public.contacts", "public.organizations"]);
}

#[test]
fn restored_rows_referencing_tables_left_alone_are_a_risk_not_a_blocker() {
    let p = plan(&request(Strategy::Replace, Some("interactions")));
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    assert!(
        p.risks.iter().any(|r| r.starts_with(
            "public.interactions references public.contacts (interactions_contact_fkey), which is not restored"
        )),
        "{:?}",
        p.risks
    );
    // missing-rows keeps every existing row, so neither side of a key needs to come along.
    let p = plan(&request(Strategy::MissingRows, Some("contacts")));
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
}

#[test]
fn an_unknown_table_is_refused_listing_what_the_backup_holds() {
    let m = backup();
    let err = select(&m, &request(Strategy::Replace, Some("contcats")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table 'contcats' is not in backup 20260310-070000-abcd")
            && err.contains("public.contacts"),
        "{err}"
    );
}

#[test]
fn replace_of_an_extensions_configuration_table_needs_delete_not_truncate() {
    let m = backup();
    let mut facts = destination(&m);
    let tables = &mut facts.database.as_mut().expect("database").tables;
    let grants = |missing: &[&'static str]| TableFacts {
        rows: 2,
        primary_key: true,
        owner: "app_owner".into(),
        owned: true,
        missing: missing.to_vec(),
        ..TableFacts::default()
    };
    // Its rows are emptied with DELETE … WHERE <the extension's filter>.
    tables.insert("public.spatial_ref_sys".into(), grants(&["TRUNCATE"]));
    tables.insert("public.organizations".into(), grants(&["DELETE"]));
    let mut req = request(Strategy::Replace, Some("spatial_ref_sys,organizations"));
    req.cascade = true;
    let p = plan_with(&m, &req, &facts);
    assert!(
        !blocked(&p, "TRUNCATE on public.spatial_ref_sys")
            && !blocked(&p, "DELETE on public.organizations"),
        "{:?}",
        p.blockers
    );

    tables_of(&mut facts).insert("public.spatial_ref_sys".into(), grants(&["DELETE"]));
    tables_of(&mut facts).insert("public.organizations".into(), grants(&["TRUNCATE"]));
    let p = plan_with(&m, &req, &facts);
    assert!(
        blocked(
            &p,
            "app_owner lacks DELETE on public.spatial_ref_sys: GRANT DELETE ON public.spatial_ref_sys TO app_owner;"
        ),
        "{:?}",
        p.blockers
    );
    assert!(
        blocked(
            &p,
            "app_owner lacks TRUNCATE on public.organizations: GRANT TRUNCATE ON public.organizations TO app_owner;"
        ),
        "{:?}",
        p.blockers
    );
    let empty = p
        .steps
        .iter()
        .find(|s| s.name == Step::EmptyTables)
        .expect("step");
    assert!(
        empty
            .detail
            .contains("public.spatial_ref_sys, only the rows"),
        "{}",
        empty.detail
    );
    assert!(!p.triggers_suppressed, "a privilege is missing");
}

fn tables_of(facts: &mut Facts) -> &mut std::collections::BTreeMap<String, TableFacts> {
    &mut facts.database.as_mut().expect("database").tables
}

#[test]
fn each_strategy_asks_for_the_privileges_its_statements_need() {
    let m = backup();
    let mut facts = destination(&m);
    tables_of(&mut facts).insert(
        "public.contacts".into(),
        TableFacts {
            rows: 40,
            primary_key: true,
            owner: "crm".into(),
            owned: false,
            missing: vec!["INSERT"],
            user_triggers: true,
            sequences_without_update: vec!["public.contacts_id_seq".into()],
        },
    );
    let db = facts.database.as_mut().expect("database");
    db.may_create_temporary = false;

    let p = plan_with(
        &m,
        &request(Strategy::Replace, Some("contacts,interactions,events")),
        &facts,
    );
    for lack in [
        "INSERT on public.contacts: GRANT INSERT ON public.contacts TO app_owner;",
        "ownership of public.contacts (owned by crm), to switch off its user triggers",
        "UPDATE on sequence public.contacts_id_seq",
    ] {
        assert!(blocked(&p, lack), "{lack}: {:?}", p.blockers);
    }
    let privileges = p
        .requirements
        .iter()
        .find(|r| r.name == "privileges")
        .expect("privileges");
    assert!(!privileges.ok && privileges.detail.starts_with("app_owner lacks: "));

    // missing-rows sets no sequence, but stages rows in a temporary table.
    let p = plan_with(
        &m,
        &request(Strategy::MissingRows, Some("contacts")),
        &facts,
    );
    assert!(!blocked(&p, "UPDATE on sequence"), "{:?}", p.blockers);
    assert!(blocked(
        &p,
        "TEMPORARY on database app, to stage the backup's rows"
    ));

    // A superuser needs no ownership to switch triggers off.
    facts.server.superuser = true;
    let p = plan_with(
        &m,
        &request(Strategy::MissingRows, Some("contacts")),
        &facts,
    );
    assert!(
        !blocked(&p, "ownership of public.contacts"),
        "{:?}",
        p.blockers
    );
    assert!(p.skip_foreign_key_triggers);
}

#[test]
fn a_new_database_needs_createdb_and_a_superuser_for_untrusted_extensions() {
    let mut m = backup();
    m.extensions = vec![
        Extension {
            name: "pgcrypto".into(),
            version: "1.3".into(),
        },
        Extension {
            name: "plpython3u".into(),
            version: "1.0".into(),
        },
    ];
    let mut facts = destination(&m);
    facts.server.createdb = false;
    facts.extensions = [
        ("pgcrypto".to_string(), false),
        ("plpython3u".to_string(), true),
    ]
    .into();
    facts.database = None;
    let p = plan_with(&m, &request(Strategy::NewDatabase, None), &facts);
    assert!(blocked(
        &p,
        "CREATEDB, to create database app_restored_20260310_070000_abcd: ALTER ROLE app_owner CREATEDB;"
    ));
    assert!(blocked(
        &p,
        "superuser, to create extension plpython3u (not a trusted extension)"
    ));
    assert!(
        !blocked(&p, "extension pgcrypto"),
        "trusted: {:?}",
        p.blockers
    );

    facts.server.superuser = true;
    let p = plan_with(&m, &request(Strategy::NewDatabase, None), &facts);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
}

#[test]
fn an_extension_the_server_lacks_blocks_every_restore_that_creates_it() {
    let mut m = backup();
    m.extensions = vec![Extension {
        name: "postgis".into(),
        version: "3.4.2".into(),
    }];
    let mut facts = destination(&m);
    let ext = |p: &RecoveryPlan| {
        p.requirements
            .iter()
            .find(|r| r.name == "extension postgis")
            .map(|r| (r.ok, r.detail.clone()))
    };
    let p = plan_with(&m, &request(Strategy::Replace, None), &facts);
    assert_eq!(
        ext(&p),
        Some((false, "not installed on the destination server".into()))
    );
    assert!(blocked(
        &p,
        "extension postgis is not available on the destination server: install its package"
    ));
    // Reloading existing tables creates no extension.
    let p = plan_with(
        &m,
        &request(
            Strategy::Replace,
            Some("contacts,interactions,events,audit"),
        ),
        &facts,
    );
    assert!(!blocked(&p, "postgis"), "{:?}", p.blockers);

    // An untrusted one matters to a whole replace only where dropping the schemas drops it.
    facts.extensions = [("postgis".to_string(), true)].into();
    facts.database.as_mut().expect("db").extensions =
        [("postgis".to_string(), "gis".to_string())].into();
    let p = plan_with(&m, &request(Strategy::Replace, None), &facts);
    assert!(
        !blocked(&p, "postgis"),
        "it lives in gis, which stays: {:?}",
        p.blockers
    );
    facts.database.as_mut().expect("db").extensions =
        [("postgis".to_string(), "public".to_string())].into();
    let p = plan_with(&m, &request(Strategy::Replace, None), &facts);
    assert!(
        blocked(&p, "superuser, to create extension postgis"),
        "{:?}",
        p.blockers
    );
}

#[test]
fn roles_the_backup_needs_are_created_assumed_or_left_out() {
    let mut m = backup();
    m.roles = vec!["app_owner".into(), "crm".into(), "reporting".into()];
    m.globals.read_by = "postgres".into();
    m.globals.roles = ["app_owner", "crm", "reporting"]
        .iter()
        .map(|name| RoleDefinition {
            name: name.to_string(),
            superuser: false,
            inherit: true,
            createrole: false,
            createdb: false,
            login: false,
            replication: false,
            bypassrls: false,
            connection_limit: -1,
            valid_until: None,
            password: None,
            member_of: Vec::new(),
        })
        .collect();
    let mut facts = destination(&m);
    // crm exists, but the restoring role is no member of it; reporting does not exist.
    facts.roles.insert("crm".into(), false);

    let p = plan_with(&m, &request(Strategy::Replace, None), &facts);
    assert!(blocked(
        &p,
        "membership in role crm, to make it the owner of the objects it owns in the backup: GRANT crm TO app_owner;"
    ));
    assert!(
        blocked(
            &p,
            "roles reporting do not exist on the destination server and this restore cannot create them"
        ),
        "no CREATEROLE: {:?}",
        p.blockers
    );
    let roles = p
        .requirements
        .iter()
        .find(|r| r.name == "roles")
        .expect("roles");
    assert!(
        !roles.ok && roles.detail.starts_with("exist: app_owner, crm"),
        "{}",
        roles.detail
    );

    facts.server.createrole = true;
    let p = plan_with(&m, &request(Strategy::Replace, None), &facts);
    assert!(blocked(
        &p,
        "roles reporting do not exist on the destination server: pass --create-roles"
    ));
    let mut req = request(Strategy::Replace, None);
    req.create_roles = true;
    let p = plan_with(&m, &req, &facts);
    assert!(!blocked(&p, "reporting"), "{:?}", p.blockers);
    assert_eq!(p.globals.roles_to_create, ["reporting"]);
    let schema = p
        .steps
        .iter()
        .find(|s| s.name == Step::Schema)
        .expect("schema step");
    assert!(
        schema
            .detail
            .contains("create the missing roles and their memberships: CREATE ROLE reporting"),
        "{}",
        schema.detail
    );

    // --no-owner: objects end up owned by the restoring role, so no role matters.
    let mut req = request(Strategy::Replace, None);
    req.no_owner = true;
    facts.server.createrole = false;
    let p = plan_with(&m, &req, &facts);
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
    // Reloading tables in place changes no owner either.
    let p = plan_with(
        &m,
        &request(Strategy::Replace, Some("interactions")),
        &facts,
    );
    assert!(p.blockers.is_empty(), "{:?}", p.blockers);
}

#[test]
fn space_and_duration_come_from_the_chosen_tables_bytes() {
    let m = backup();
    let facts = destination(&m);
    let req = request(Strategy::Replace, Some("interactions,users"));
    let p = judge(
        &m,
        &req,
        select(&m, &req).expect("selection"),
        &facts,
        Some((1_000.0, 3)),
        m.created_at,
        None,
    );
    let space = p
        .requirements
        .iter()
        .find(|r| r.name == "space")
        .expect("space");
    assert_eq!(
        space.detail,
        "about 21.48 KiB on the database server for table data, plus its indexes"
    );
    assert_eq!(p.estimated_seconds, 22.0);
    assert!(
        p.estimate_basis
            .starts_with("median of 3 measured restore(s)"),
        "{}",
        p.estimate_basis
    );
    let p = plan(&request(Strategy::Replace, Some("audit,users")));
    assert_eq!(p.estimated_seconds, 1.0, "never less than a second");
    assert!(
        p.estimate_basis
            .starts_with("no restore measured in this repository yet")
    );
}

#[test]
fn a_new_database_goes_beside_the_live_one_and_never_over_an_existing_one() {
    let m = backup();
    let mut facts = destination(&m);
    facts.database = None;
    let p = plan_with(&m, &request(Strategy::NewDatabase, None), &facts);
    assert_eq!(p.destination.database, "app_restored_20260310_070000_abcd");
    assert!(
        !p.destination.exists && p.blockers.is_empty(),
        "{:?}",
        p.blockers
    );

    facts.databases.remove("app");
    let p = plan_with(&m, &request(Strategy::NewDatabase, None), &facts);
    assert_eq!(
        p.destination.database, "app",
        "the lost database comes back under its name"
    );

    let mut req = request(Strategy::NewDatabase, None);
    req.destination.dbname = "postgres".into();
    req.destination_named = true;
    let p = plan_with(&m, &req, &facts);
    assert!(blocked(
        &p,
        "database postgres already exists and new-database never touches an existing database: choose another name with --dest-db NAME"
    ));
    assert!(!blocked(&p, "-s replace"));
}

#[test]
fn the_plan_lists_the_strategys_steps_in_the_order_execute_runs_them() {
    for (strategy, tables) in [
        (Strategy::NewDatabase, None),
        (Strategy::Replace, None),
        (Strategy::Replace, Some("interactions")),
        (Strategy::MissingRows, Some("interactions")),
    ] {
        let p = plan(&request(strategy, tables));
        let names: Vec<Step> = p.steps.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            steps(strategy, tables.is_some(), false),
            "{strategy}"
        );
        assert!(p.steps.iter().all(|s| !s.detail.is_empty()));
    }
    let p = plan(&request(Strategy::NewDatabase, None));
    assert_eq!(p.steps[0].name, Step::CreateDatabase);
    assert!(
        p.steps[0]
            .detail
            .contains("from template0, encoding UTF8, the destination server's default locale"),
        "{}",
        p.steps[0].detail
    );
    let json = serde_json::to_value(&p.steps[0]).expect("json");
    assert_eq!(json["name"], "create-database");

    let detail = |p: &RecoveryPlan, step: Step| {
        p.steps
            .iter()
            .find(|s| s.name == step)
            .map(|s| s.detail.clone())
            .unwrap_or_default()
    };
    let beside = plan(&request(
        Strategy::NewDatabase,
        Some("interactions,contacts,organizations"),
    ));
    assert!(detail(&beside, Step::Load).starts_with("load 3 table(s) in parallel with COPY"));
    assert_eq!(
        detail(&beside, Step::Sequences),
        "set the values of the backup's 0 sequence(s)"
    );
    let reload = plan(&request(Strategy::Replace, Some("interactions")));
    assert_eq!(
        detail(&reload, Step::Load),
        "reload public.interactions from the backup, referenced tables first"
    );
    assert_eq!(
        detail(&reload, Step::Sequences),
        "set the values of the sequences the restored tables own"
    );
}

#[test]
fn refusals_for_the_backup_and_the_destination() {
    // An older server.
    let m = backup();
    let mut facts = destination(&m);
    facts.server.version_num = 150008;
    let p = plan_with(&m, &request(Strategy::Replace, None), &facts);
    assert!(blocked(
        &p,
        "the destination server (major 15) is older than the backup's (major 16)"
    ));

    // Another database's backup over this one.
    let mut req = request(Strategy::Replace, None);
    req.destination.dbname = "postgres".into();
    let p = plan(&req);
    assert!(blocked(
        &p,
        "backup 20260310-070000-abcd is of database app, and -s replace would overwrite database postgres"
    ));
    req.from_other_database = true;
    assert!(!blocked(&plan(&req), "would overwrite"));

    // missing-rows matches by primary key.
    let mut facts = destination(&m);
    tables_of(&mut facts)
        .get_mut("public.audit")
        .expect("audit")
        .primary_key = false;
    let p = plan_with(
        &m,
        &request(Strategy::MissingRows, Some("audit,users")),
        &facts,
    );
    assert!(blocked(
        &p,
        "missing-rows matches rows by primary key, and public.audit have none"
    ));

    // replace -t reloads tables that exist.
    tables_of(&mut facts).remove("public.users");
    let p = plan_with(&m, &request(Strategy::Replace, Some("users")), &facts);
    assert!(blocked(
        &p,
        "public.users do not exist in app: -s replace -t reloads existing tables"
    ));

    // A schema-only backup holds no rows to put back.
    let mut schema = backup();
    schema.backup_type = crate::repository::manifest::BackupType::SchemaOnly;
    let err = select(&schema, &request(Strategy::MissingRows, None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is schema-only: it holds no table data"),
        "{err}"
    );
    let p = plan_with(
        &schema,
        &request(Strategy::Replace, None),
        &destination(&schema),
    );
    assert!(blocked(
        &p,
        "-s replace would leave every table of app empty"
    ));
}

mod chains {
    use super::*;
    use crate::engine::recovery::chain::{Chain, Lsn, Until};
    use crate::engine::recovery::replay_plan::ReplayPlan;
    use crate::repository::manifest::{
        BackupType, Chain as Link, IncrementalInfo, NotExact, TableChanges,
    };

    fn info(start: u64, end: u64, changes: u64, tables: Vec<TableChanges>) -> IncrementalInfo {
        IncrementalInfo {
            slot: "larder_app".into(),
            start_lsn: Lsn(start),
            end_lsn: Lsn(end),
            first_commit: None,
            last_commit: None,
            transactions: changes / 2,
            changes: Stream {
                rows: changes,
                ..Stream::default()
            },
            tables,
            not_exact: Vec::new(),
            snapshot: None,
            schema_changes: Vec::new(),
            schema_fingerprint: None,
        }
    }

    fn incremental(id: &str, parent: &str, start: u64, end: u64) -> Manifest {
        let mut m = backup();
        m.id = id.into();
        m.backup_type = BackupType::Incremental;
        m.chain = Some(Link {
            parent: parent.into(),
            base: ID.into(),
        });
        m.incremental = Some(info(
            start,
            end,
            40_000,
            vec![TableChanges {
                table: "public.contacts".into(),
                inserts: 10,
                updates: 5,
                deletes: 1,
                truncates: 0,
            }],
        ));
        m
    }

    fn chain(until: Option<Until>) -> (Chain, Manifest) {
        let mut base = backup();
        base.incremental = Some(info(100, 100, 0, Vec::new()));
        let first = incremental("20260310-080000-aaaa", ID, 100, 200);
        let mut second = incremental("20260310-090000-bbbb", &first.id, 200, 300);
        if let Some(i) = second.incremental.as_mut() {
            i.not_exact.push(NotExact {
                table: "public.contacts".into(),
                reason: "no primary key or replica identity".into(),
                fix: "ALTER TABLE public.contacts REPLICA IDENTITY FULL".into(),
            });
        }
        second.sequences = vec![crate::repository::manifest::SequenceValue {
            schema: "public".into(),
            name: "contacts_id_seq".into(),
            last_value: 99,
            is_called: true,
        }];
        let requested = second.clone();
        (
            Chain {
                base,
                links: vec![first, second],
                until,
                requested: requested.id.clone(),
            },
            requested,
        )
    }

    #[test]
    fn a_chain_is_replayed_after_the_load_and_its_risks_and_time_are_in_the_plan() {
        let (chain, requested) = chain(None);
        let restored = chain.restored(&requested);
        assert_eq!(
            restored.id, requested.id,
            "restored under the incremental's identity"
        );
        assert_eq!(restored.tables, chain.base.tables, "with the base's data");
        assert_eq!(
            restored.sequences[0].last_value, 99,
            "sequences at the chain's end"
        );
        let req = request(Strategy::NewDatabase, None);
        let selection = select(&restored, &req).expect("selection");
        let replay = ReplayPlan::new(&chain, restored.clone(), &selection.chosen);
        assert_eq!(replay.changes, 80_000);
        assert_eq!(
            replay.describe(),
            format!("full {ID} → 20260310-080000-aaaa → 20260310-090000-bbbb")
        );
        let contacts = &replay.tables[0];
        assert_eq!(
            (contacts.inserts, contacts.updates, contacts.exact),
            (20, 10, false)
        );
        let facts = destination(&restored);
        let without = judge(
            &restored,
            &req,
            selection.clone(),
            &facts,
            None,
            restored.created_at,
            None,
        );
        let p = judge(
            &restored,
            &req,
            selection,
            &facts,
            None,
            restored.created_at,
            Some(replay),
        );
        let names: Vec<Step> = p.steps.iter().map(|s| s.name).collect();
        assert_eq!(names, steps(Strategy::NewDatabase, false, true));
        let at = |s: Step| names.iter().position(|&n| n == s).expect("step");
        assert_eq!(at(Step::Replay), at(Step::Load) + 1);
        assert!(
            p.steps[at(Step::Replay)].detail.contains("80000 change(s)"),
            "{:?}",
            p.steps
        );
        assert!(
            p.risks
                .iter()
                .any(|r| r.contains("public.contacts cannot be replayed exactly")
                    && r.contains("REPLICA IDENTITY FULL")),
            "{:?}",
            p.risks
        );
        assert!(
            p.estimated_seconds >= without.estimated_seconds + 3.9,
            "{}",
            p.estimated_seconds
        );
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(json["replay"]["chain"][1]["start_lsn"], "0/C8");
        assert_eq!(json["replay"]["not_exact"][0]["table"], "public.contacts");
    }

    #[test]
    fn a_point_inside_an_incremental_takes_the_sequences_recorded_at_its_end() {
        let seq = |value: i64| {
            vec![crate::repository::manifest::SequenceValue {
                schema: "public".into(),
                name: "contacts_id_seq".into(),
                last_value: value,
                is_called: true,
            }]
        };
        let (mut chain, requested) = chain(None);
        chain.base.sequences = seq(10);
        chain.links[0].sequences = seq(50);
        let value = |c: &Chain| c.restored(&requested).sequences[0].last_value;
        assert_eq!(value(&chain), 99, "the chain's end");
        for (until, want) in [
            (Until::Lsn(Lsn(150)), 50),
            (Until::Lsn(Lsn(200)), 99),
            (Until::Lsn(Lsn(5_000)), 99),
        ] {
            chain.until = Some(until);
            assert_eq!(value(&chain), want, "{until}");
        }
        let at = |text: &str| text.parse::<chrono::DateTime<chrono::Utc>>().expect("time");
        for (i, last) in ["2026-03-10T08:00:00Z", "2026-03-10T09:00:00Z"]
            .iter()
            .enumerate()
        {
            if let Some(info) = chain.links[i].incremental.as_mut() {
                info.last_commit = Some(at(last));
            }
        }
        for (until, want) in [
            ("2026-03-10T07:59:00Z", 50),
            ("2026-03-10T08:00:00Z", 99),
            ("2026-03-10T10:00:00Z", 99),
        ] {
            chain.until = Some(Until::Time(at(until)));
            assert_eq!(value(&chain), want, "{until}");
        }
        chain.links.clear();
        assert_eq!(value(&chain), 10, "no link: the base's");
    }

    #[test]
    fn a_replace_of_tables_with_live_foreign_keys_keeps_the_commit_order() {
        let (chain, requested) = chain(Some(Until::Lsn(Lsn(250))));
        let restored = chain.restored(&requested);
        let req = request(
            Strategy::Replace,
            Some("contacts,interactions,events,audit"),
        );
        let selection = select(&restored, &req).expect("selection");
        let replay = ReplayPlan::new(&chain, restored.clone(), &selection.chosen);
        assert!(replay.point.contains("LSN 0/FA"), "{}", replay.point);
        let p = judge(
            &restored,
            &req,
            selection,
            &destination(&restored),
            None,
            restored.created_at,
            Some(replay),
        );
        let detail = &p
            .steps
            .iter()
            .find(|s| s.name == Step::Replay)
            .expect("replay")
            .detail;
        assert!(detail.contains("foreign keys are live"), "{detail}");
    }
}

#[test]
fn the_estimate_prefers_the_last_passed_drill_of_the_same_size_class() {
    use crate::repository::history::{DrillOutcome, DrillRecord, Scratch};
    let m = backup();
    let drill = |id: &str, outcome: DrillOutcome, bytes: u64, seconds: f64| DrillRecord {
        drill_id: id.into(),
        started_at: m.created_at,
        finished_at: m.created_at,
        outcome,
        backup_id: ID.into(),
        backup_name: "nightly".into(),
        database: "app".into(),
        point_in_time: m.created_at,
        chosen: "latest".into(),
        scratch: Scratch {
            kind: "throwaway-cluster".into(),
            server: "127.0.0.1:5433".into(),
            database: "app".into(),
            data_dir: None,
            kept: false,
            removed: true,
            note: None,
        },
        steps: Vec::new(),
        restore_seconds: seconds,
        recovery_seconds: seconds + 1.0,
        rto_seconds: 7200.0,
        rto_met: true,
        point_age_seconds: 60,
        rpo_seconds: 3600.0,
        rpo_met: true,
        tables: 8,
        rows: 377,
        bytes,
        verification: "checksums".into(),
        validators: Vec::new(),
        checks: Vec::new(),
        error: None,
    };
    // The whole backup is 37,700 bytes: the 10 kB–100 kB class.
    let mut p = plan(&request(Strategy::NewDatabase, None));
    let before = p.estimate_basis.clone();
    estimate_from_drills(
        &mut p,
        &[drill("other-class", DrillOutcome::Passed, 5_000_000, 50.0)],
    );
    assert_eq!(
        p.estimate_basis, before,
        "a drill of another size class is no measure"
    );
    let drills = [
        drill("measured", DrillOutcome::Passed, 50_000, 10.0),
        drill("broken", DrillOutcome::Failed, 40_000, 2.0),
        drill("bigger", DrillOutcome::Passed, 5_000_000, 50.0),
    ];
    estimate_from_drills(&mut p, &drills);
    assert!(
        (p.estimated_seconds - 7.54).abs() < 1e-9,
        "{}",
        p.estimated_seconds
    );
    assert!(
        p.estimate_basis.starts_with(
            "the last restore drill in this size class (10 kB–100 kB): drill measured restored"
        ),
        "{}",
        p.estimate_basis
    );
    assert_eq!(size_class(999), 2);
    assert_eq!(size_class(0), 0);
}
