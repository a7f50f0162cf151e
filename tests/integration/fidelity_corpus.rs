//! The object corpus (corpus/objects.sql): one database with every kind of object pg_dump
//! knows and awkward names, held to pg_restore's standard through new-database, export + psql,
//! replace and missing-rows; and an export that runs nothing hidden in a name.

use crate::support::{TestEnv, text};
use larder::repository::manifest::{Manifest, quote_ident};
use std::path::Path;

const OBJECTS: &str = include_str!("corpus/objects.sql");

/// What a database holds, as far as a restore must reproduce it.
#[derive(Debug, PartialEq)]
struct Contents {
    /// `pg_dump --schema-only`, without its `\restrict` lines.
    schema: String,
    /// Every table's rows, sorted.
    rows: Vec<(String, Vec<String>)>,
    /// (sequence, last_value, is_called) of every sequence.
    sequences: Vec<(String, i64, bool)>,
    /// `ALTER DATABASE … SET` and `ALTER ROLE … IN DATABASE … SET` settings: (role, setting).
    settings: Vec<(String, String)>,
}

async fn contents(env: &TestEnv, db: &str, manifest: &Manifest) -> Contents {
    let client = env.client_for(db).await;
    let names = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' ORDER BY 1",
            &[],
        )
        .await
        .expect("sequences");
    let mut sequences = Vec::new();
    for name in names {
        let name: String = name.get(0);
        let row = client
            .query_one(&format!("SELECT last_value, is_called FROM {name}"), &[])
            .await
            .expect("sequence value");
        sequences.push((name, row.get(0), row.get(1)));
    }
    let settings = env
        .admin()
        .await
        .query(
            "SELECT COALESCE(r.rolname, '')::text, unnest(s.setconfig)::text FROM pg_db_role_setting s \
             JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole \
             WHERE d.datname = $1 ORDER BY 1, 2",
            &[&db],
        )
        .await
        .expect("database settings")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Contents {
        schema: env.pg_dump(db, &["--schema-only"]),
        rows: env.all_rows(db, manifest).await,
        sequences,
        settings,
    }
}

/// `schema.table.constraint` of every NOT VALID constraint in `db`, sorted.
async fn not_valid(env: &TestEnv, db: &str) -> Vec<String> {
    let client = env.client_for(db).await;
    client
        .batch_execute("SET search_path = ''")
        .await
        .expect("search_path");
    client
        .query(
            "SELECT conrelid::regclass::text || '.' || conname FROM pg_constraint WHERE NOT convalidated ORDER BY 1",
            &[],
        )
        .await
        .expect("NOT VALID constraints")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The lines of `a` that `b` lacks, and those `b` has that `a` lacks.
fn line_difference<'a>(a: &'a str, b: &'a str) -> (Vec<&'a str>, Vec<&'a str>) {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    (
        a.iter().filter(|l| !b.contains(l)).copied().collect(),
        b.iter().filter(|l| !a.contains(l)).copied().collect(),
    )
}

/// [`line_difference`], for readable failures.
fn difference(a: &str, b: &str) -> String {
    let (only_a, only_b) = line_difference(a, b);
    format!("only in the first: {only_a:#?}\nonly in the second: {only_b:#?}")
}

/// The tables whose rows differ, with the differing rows.
fn row_difference(a: &[(String, Vec<String>)], b: &[(String, Vec<String>)]) -> String {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x != y)
        .map(|((name, x), (_, y))| format!("{name}: {}", difference(&x.join("\n"), &y.join("\n"))))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Holds `got` (a Larder restore) to pg_restore's standard: wherever it differs from the
/// source, `reference` (pg_restore of the same database) must show the same difference.
fn assert_like_pg_restore(what: &str, got: &Contents, reference: &Contents, source: &Contents) {
    assert!(
        got.schema == source.schema || got.schema == reference.schema,
        "{what}: the schema differs from the source's, and not as pg_restore's does:\n{}",
        difference(&source.schema, &got.schema)
    );
    for ((table, rows), ((_, from_source), (_, from_pg_restore))) in
        got.rows.iter().zip(source.rows.iter().zip(&reference.rows))
    {
        assert!(
            rows == from_source || rows == from_pg_restore,
            "{what}: the rows of {table} differ from the source's, and not as pg_restore's do: {}",
            difference(&from_source.join("\n"), &rows.join("\n"))
        );
    }
    assert_eq!(got.rows.len(), source.rows.len());
    for ((name, value, called), (source_seq, reference_seq)) in got
        .sequences
        .iter()
        .zip(source.sequences.iter().zip(&reference.sequences))
    {
        let got = (name, value, called);
        assert!(
            got == (&source_seq.0, &source_seq.1, &source_seq.2)
                || got == (&reference_seq.0, &reference_seq.1, &reference_seq.2),
            "{what}: sequence {name} is at {value} (called {called}); the source's {source_seq:?}, pg_restore's {reference_seq:?}"
        );
    }
    assert_eq!(
        got.sequences.len(),
        source.sequences.len(),
        "{what}: sequences"
    );
}

fn export_into(env: &TestEnv, db: &str, file: &Path) {
    env.export_latest(file);
    let out = env.psql_file(db, file);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("bad"),
        "psql ran a meta-command from the backup: {}",
        text(&out)
    );
}

async fn corpus() -> (TestEnv, Manifest) {
    let env = TestEnv::start("corpus").await;
    env.client()
        .await
        .batch_execute(OBJECTS)
        .await
        .expect("the object corpus");
    let manifest = env.backup("corpus").await;
    (env, manifest)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_object_corpus_comes_back_from_restore_and_export_as_from_pg_restore() {
    let (env, manifest) = corpus().await;
    let validated = env.run_json(&["backup", "validate", "latest"]);
    assert_eq!(validated["ok"], true, "{validated}");
    env.pg_restore_copy("corpus", "corpus_pgr").await;
    let source = contents(&env, "corpus", &manifest).await;
    let reference = contents(&env, "corpus_pgr", &manifest).await;
    // Where pg_restore itself differs from the source, case by case:
    // - pg_restore refreshes materialized views after it has created the event triggers, so
    //   the audit trigger adds a row for its REFRESH (and takes a value of the audit sequence).
    //   Larder creates event triggers last and matches the source here.
    assert!(
        reference.schema == source.schema,
        "pg_restore: schema as the source's"
    );
    let differing: Vec<&String> = source
        .rows
        .iter()
        .zip(&reference.rows)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| &a.0)
        .collect();
    assert_eq!(
        differing,
        ["public.ddl_audit"],
        "pg_restore: rows as the source's but the audit"
    );
    let audit = |c: &Contents| {
        c.rows
            .iter()
            .find(|(t, _)| t == "public.ddl_audit")
            .map(|(_, r)| r.len())
    };
    assert_eq!(audit(&reference), audit(&source).map(|n| n + 1));
    let moved: Vec<&String> = source
        .sequences
        .iter()
        .zip(&reference.sequences)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| &a.0)
        .collect();
    assert_eq!(
        moved,
        ["public.ddl_audit_id_seq"],
        "pg_restore: sequences as the source's but the audit's"
    );

    let report = env.run_json(&[
        "recovery",
        "execute",
        "latest",
        "-s",
        "new-database",
        "--dest-db",
        "corpus_new",
        "--verify",
        "checksums",
    ]);
    assert_eq!(report["ok"], true, "{report}");
    // NOT VALID at the source, and so after pg_restore: the checks (one inherited by the
    // inheritance children) and the keys (one referencing a partitioned table, with the copies
    // PostgreSQL keeps per referenced partition). The report names exactly those, and the new
    // database has exactly those NOT VALID, like pg_restore's.
    let mut as_before: Vec<String> = report["not_valid_as_before"]
        .as_array()
        .expect("not_valid_as_before")
        .iter()
        .map(|v| v.as_str().expect("name").to_string())
        .collect();
    as_before.sort();
    let source_not_valid = not_valid(&env, "corpus").await;
    assert_eq!(as_before, source_not_valid, "{report}");
    assert!(source_not_valid.contains(&"public.car.vehicle_wheels_check".to_string()));
    assert_eq!(not_valid(&env, "corpus_pgr").await, source_not_valid);
    assert_eq!(not_valid(&env, "corpus_new").await, source_not_valid);
    let new_database = contents(&env, "corpus_new", &manifest).await;
    assert_like_pg_restore("new-database", &new_database, &reference, &source);

    let export = env.work.path().join("corpus.sql");
    env.admin()
        .await
        .batch_execute("CREATE DATABASE corpus_sql")
        .await
        .expect("create");
    export_into(&env, "corpus_sql", &export);
    let exported = contents(&env, "corpus_sql", &manifest).await;
    assert_like_pg_restore("export + psql", &exported, &reference, &source);

    // Database-level settings are pg_dump's only with --create: pg_restore into a new
    // database does not carry them, and neither does an export. A new-database restore
    // creates the database itself and carries them, as `pg_restore --create` does.
    assert_eq!(
        source.settings,
        [
            ("".to_string(), "default_statistics_target=150".to_string()),
            ("".to_string(), "work_mem=7MB".to_string()),
            (
                "corpus_reader".to_string(),
                "statement_timeout=1min".to_string()
            ),
        ]
    );
    assert_eq!(reference.settings, []);
    assert_eq!(exported.settings, []);
    assert_eq!(new_database.settings, source.settings);

    // The event triggers, created last, fired for nothing the restore ran: the audit table
    // holds the source's rows and no more, its sequence where the source's was.
    assert_eq!(
        audit(&new_database),
        audit(&source),
        "new-database: audit rows"
    );
    assert_eq!(audit(&exported), audit(&source), "export: audit rows");
    assert_eq!(new_database.sequences, source.sequences);
    let restored = env.client_for("corpus_new").await;
    restored
        .batch_execute("CREATE TABLE public.after_restore (id int)")
        .await
        .expect("DDL after the restore");
    let audited: i64 = restored
        .query_one(
            "SELECT count(*) FROM public.ddl_audit WHERE obj = 'public.after_restore'",
            &[],
        )
        .await
        .expect("audit")
        .get(0);
    assert_eq!(audited, 1, "the restored event trigger works");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_object_corpus_survives_replace_and_missing_rows_row_for_row() {
    let (env, manifest) = corpus().await;
    let before = contents(&env, "corpus", &manifest).await;
    // The standard for replacing a whole existing database: pg_restore --clean --if-exists of
    // the same archive over a copy of it.
    let archive = env.pg_restore_copy("corpus", "corpus_pgr").await;
    env.pg_restore(&archive, "corpus_pgr", &["--clean", "--if-exists"]);
    let reference = contents(&env, "corpus_pgr", &manifest).await;

    let report = env.run_json(&["recovery", "execute", "latest", "-s", "replace", "--yes"]);
    assert_eq!(report["ok"], true, "{report}");
    let replaced = contents(&env, "corpus", &manifest).await;
    // Functions recreated in a database that keeps its `ALTER DEFAULT PRIVILEGES … REVOKE
    // EXECUTE … FROM PUBLIC` get that default instead of the ACL they had: pg_restore --clean
    // shows the same difference (the same REVOKE lines), and nothing else may differ.
    let (lost, gained) = line_difference(&before.schema, &replaced.schema);
    let (lost_too, gained_too) = line_difference(&before.schema, &reference.schema);
    assert!(
        lost.iter().all(|l| lost_too.contains(l)) && gained.iter().all(|l| gained_too.contains(l)),
        "whole-database replace changed the schema, and not as pg_restore --clean does:\n{}",
        difference(&before.schema, &replaced.schema)
    );
    assert!(
        gained
            .iter()
            .any(|l| l.starts_with("REVOKE ALL ON FUNCTION public.audit_ddl()")),
        "the case above is the one seen"
    );
    assert!(
        replaced.rows == before.rows,
        "whole-database replace changed rows: {}",
        row_difference(&before.rows, &replaced.rows)
    );
    assert_eq!(replaced.sequences, before.sequences);

    let client = env.client().await;
    client
        .batch_execute(
            "DELETE FROM \"select\".\"from\" WHERE \"where\" > 10; UPDATE \"Mixed Case\".\"Tbl\" SET \"ÄÖÜ\" = 'changed'; \
             DELETE FROM public.all_types WHERE id = 1; DELETE FROM public.measure_us WHERE id < 100 AND id % 10 <> 0;",
        )
        .await
        .expect("damage");
    let subset = "select.from,Mixed Case.Tbl,public.all_types,public.measure_us,public.measure_note,public.measure_tag_0,public.measure_tag_1,public.old_refs";
    let report = env.run_json(&[
        "recovery", "execute", "latest", "-s", "replace", "-t", subset, "--yes",
    ]);
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        env.all_rows("corpus", &manifest).await == before.rows,
        "replace -t left rows that differ from the backup"
    );

    client
        .batch_execute(
            "DELETE FROM public.all_types WHERE id = 2; DELETE FROM \"ünïcødé\".\"tαblé\" WHERE id = 1; \
             DELETE FROM public.words WHERE w = 'apple'; DELETE FROM public.ident WHERE a > 120;",
        )
        .await
        .expect("delete rows");
    let report = env.run_json(&[
        "recovery",
        "execute",
        "latest",
        "-s",
        "missing-rows",
        "-t",
        "public.all_types,ünïcødé.tαblé,public.words,public.ident",
        "--yes",
    ]);
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        env.all_rows("corpus", &manifest).await == before.rows,
        "missing-rows did not bring back exactly the deleted rows"
    );
}

/// `postgres://…/name` with every byte of the name percent-encoded.
fn url_with_database(env: &TestEnv, name: &str) -> String {
    let encoded: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
    format!(
        "postgres://postgres@127.0.0.1:{}/{encoded}?sslmode=disable",
        env.cluster.port()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_runs_no_command_hidden_in_a_table_or_database_name() {
    let env = TestEnv::start("plain").await;
    let marker = env.work.path().join("pwned");
    let payload = format!("\n\\! touch {}\n", marker.display());
    let database = format!("db{payload}");
    let table = format!("x{payload}");
    env.admin()
        .await
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&database)))
        .await
        .expect("create the database");
    env.client_for(&database)
        .await
        .batch_execute(&format!(
            "CREATE TABLE public.{t} (id int PRIMARY KEY, note text); \
             INSERT INTO public.{t} VALUES (1, 'one'), (2, E'two\\n\\\\! touch {}');",
            marker.display(),
            t = quote_ident(&table)
        ))
        .await
        .expect("the table");
    let url = url_with_database(&env, &database);
    let backup = env
        .cli()
        .env("DATABASE_URL", &url)
        .args(["--json", "backup", "create", "-n", &format!("n{payload}")])
        .output()
        .expect("backup");
    assert!(backup.status.success(), "{}", text(&backup));
    let file = env.work.path().join("export.sql");
    let export = env
        .cli()
        .env("DATABASE_URL", &url)
        .args(["backup", "export", "latest", "--format", "sql", "-o"])
        .arg(&file)
        .output()
        .expect("export");
    assert!(export.status.success(), "{}", text(&export));
    let script = std::fs::read_to_string(&file).expect("read the export");
    // The name's line breaks became spaces in the comment, as pg_dump 15.14+ writes them.
    assert!(
        script.contains(&format!(
            "-- Data for public.x \\! touch {}  (2 rows)",
            marker.display()
        )),
        "{script}"
    );

    env.admin()
        .await
        .batch_execute("CREATE DATABASE from_psql")
        .await
        .expect("create");
    let out = env.psql_file("from_psql", &file);
    assert!(
        !marker.exists(),
        "psql ran a command hidden in a name: {}",
        text(&out)
    );
    let rows = env
        .client_for("from_psql")
        .await
        .query(
            &format!(
                "SELECT note FROM public.{} ORDER BY id",
                quote_ident(&table)
            ),
            &[],
        )
        .await
        .expect("restored rows");
    let notes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        notes,
        [
            "one".to_string(),
            format!("two\n\\! touch {}", marker.display())
        ]
    );
}
