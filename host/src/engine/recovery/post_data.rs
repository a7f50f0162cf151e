//! The post-data step: indexes, constraints, foreign keys, triggers and the rest of pg_dump's
//! post-data (in a new database the expensive parts in parallel, foreign keys added NOT VALID
//! for the vacuum step to validate), event triggers last, and for existing tables the check
//! of restored rows against their foreign keys and the user triggers switched off and on.

use super::job::Job;
use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::pg::catalog;
use crate::pg::ddl::{Entry, Partitioned, Script, builds_in_parallel};
use std::collections::HashMap;
use tokio_postgres::Client;

/// One table's share of the vacuum step in a new database.
pub(super) struct TableWork {
    /// The restored table (None: foreign keys of a table outside the selection).
    pub table: Option<usize>,
    pub bytes: u64,
    /// `VALIDATE CONSTRAINT` statements of the foreign keys on this table.
    pub validations: Vec<Entry>,
    /// VACUUM (ANALYZE) the table before the validations rather than ANALYZE it: one of its
    /// keys can then be validated from an index alone.
    pub vacuum: bool,
}

/// A new database's post-data split for building: the index and key builds that run in
/// parallel (biggest table first, see [`in_build_order`]), the constraints to add on their
/// indexes once they are built, and the entries to run in pg_dump's order after them.
pub(super) struct Builds {
    /// Taken by [`super::schedule`] when the load step builds them.
    pub parallel: Vec<Build>,
    keys: Vec<Entry>,
    ordered: Vec<Entry>,
    partitioned: Partitioned,
}

/// A parallel build and the table it is on (schema, name; None: not recognised), as
/// [`Entry::builds_on`] reads pg_dump's statement before a key becomes a unique index.
pub(super) type Build = (Option<(String, String)>, Entry);

/// Splits `post` (event triggers aside: `post` no longer holds them) into [`Builds`].
pub(super) async fn builds(job: &Job, main: &Client, post: &Script) -> Result<Builds> {
    let partitioned = catalog::partitioned_tables(main).await?;
    let (parallel, ordered): (Vec<_>, Vec<_>) = post
        .entries
        .iter()
        .cloned()
        .partition(|e| builds_in_parallel(&e.kind));
    let (parallel, keys) = in_build_order(job, parallel, &partitioned);
    Ok(Builds {
        parallel,
        keys,
        ordered,
        partitioned,
    })
}

/// Builds a new database's post-data in pg_dump's dependency order but with the expensive
/// parts in parallel: the indexes and plain constraints `builds` still holds (none when the
/// load step built them); the keys on their indexes; index attachments; foreign keys added
/// NOT VALID; then triggers, rules and the rest. Returns per table the foreign keys still to
/// validate and whether to vacuum it first, biggest table first.
pub(super) async fn build(
    job: &Job,
    main: &Client,
    destination: &ConnectionSettings,
    post: &Script,
    builds: Builds,
) -> Result<Vec<TableWork>> {
    let started = std::time::Instant::now();
    let Builds {
        parallel,
        keys,
        ordered,
        partitioned,
    } = builds;
    if !parallel.is_empty() {
        let entries: Vec<Entry> = parallel.into_iter().map(|(_, e)| e).collect();
        job.in_parallel(destination, entries, {
            let preamble = post.preamble.clone();
            move |client, entry| {
                let preamble = preamble.clone();
                async move { run_entry(&client, &preamble, &entry).await }
            }
        })
        .await?;
    }
    let keys = Script {
        preamble: post.preamble.clone(),
        entries: keys,
    };
    if !keys.entries.is_empty() {
        for batch in keys.batches() {
            main.batch_execute(&batch).await.map_err(Error::db(
                "adding primary keys and unique constraints on their indexes",
            ))?;
        }
    }
    tracing::info!(
        "indexes and constraints built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (attach, ordered): (Vec<_>, Vec<_>) =
        ordered.into_iter().partition(|e| e.kind == "INDEX ATTACH");
    let (foreign, rest): (Vec<_>, Vec<_>) =
        ordered.into_iter().partition(|e| e.kind == "FK CONSTRAINT");
    for entry in &attach {
        run_entry(main, &post.preamble, entry).await?;
    }
    // Foreign keys are added NOT VALID one after the other (catalog changes, no scan); the
    // scans that validate them run in the vacuum step, in parallel. A validation locks only its
    // own table against schema changes, so keys on different tables referencing the same table
    // do not wait for each other the way `ADD … FOREIGN KEY` does.
    let mut work: Vec<TableWork> = job
        .plan
        .selected
        .iter()
        .map(|&t| TableWork {
            table: Some(t),
            bytes: job.manifest.tables[t].logical_bytes,
            validations: Vec::new(),
            vacuum: false,
        })
        .collect();
    for entry in foreign {
        let Some(fk) = entry.foreign_key(&partitioned) else {
            run_entry(main, &post.preamble, &entry).await?;
            continue;
        };
        let add = Entry {
            sql: fk.add_not_valid,
            ..entry.clone()
        };
        run_entry(main, &post.preamble, &add).await?;
        let validate = Entry {
            sql: fk.validate,
            ..entry
        };
        let manifest = &job.manifest;
        match work.iter_mut().find(|w| {
            w.table.is_some_and(|t| {
                let table = &manifest.tables[t];
                (&table.schema, &table.name) == (&fk.table.0, &fk.table.1)
            })
        }) {
            Some(w) => w.validations.push(validate),
            None => work.push(TableWork {
                table: None,
                bytes: 0,
                validations: vec![validate],
                vacuum: false,
            }),
        }
    }
    let rest = Script {
        preamble: post.preamble.clone(),
        entries: rest,
    };
    for batch in rest.batches() {
        main.batch_execute(&batch).await.map_err(Error::db(
            "creating triggers, rules and the rest (post-data)",
        ))?;
    }
    let names: Vec<String> = work
        .iter()
        .filter_map(|w| w.table.map(|t| job.manifest.tables[t].qualified()))
        .collect();
    let indexed = catalog::keys_an_index_holds(main, &names).await?;
    for w in &mut work {
        w.vacuum = w
            .table
            .is_some_and(|t| indexed.contains(&job.manifest.tables[t].qualified()));
    }
    work.sort_by_key(|w| std::cmp::Reverse(w.bytes));
    Ok(work)
}

/// The parallel phase's builds, biggest table first (a table's builds are the longest, and
/// started last they would leave the other sessions idle at the end), and the constraints to
/// add once they are done. A table with more than one build gets its primary key and unique
/// constraints as a unique index first ([`Entry::unique_index_first`]): `ADD CONSTRAINT …
/// PRIMARY KEY (…)` holds the table's ACCESS EXCLUSIVE lock for the whole index build, and the
/// table's other indexes would wait for it instead of building beside it (the dominant-table
/// benchmark: `contact_events_occurred_idx` waited for `contact_events_pkey`, server log).
fn in_build_order(
    job: &Job,
    parallel: Vec<Entry>,
    partitioned: &Partitioned,
) -> (Vec<Build>, Vec<Entry>) {
    let bytes: HashMap<(String, String), u64> = job
        .manifest
        .tables
        .iter()
        .map(|t| ((t.schema.clone(), t.name.clone()), t.logical_bytes))
        .collect();
    let mut builds: HashMap<(String, String), usize> = HashMap::new();
    for table in parallel.iter().filter_map(Entry::builds_on) {
        *builds.entry(table).or_default() += 1;
    }
    let mut keys = Vec::new();
    let mut order: Vec<(u64, Build)> = parallel
        .into_iter()
        .map(|entry| {
            let table = entry.builds_on();
            let size = table.as_ref().and_then(|t| bytes.get(t)).copied();
            let shared = table
                .as_ref()
                .is_some_and(|t| builds.get(t).copied().unwrap_or(0) > 1);
            let entry = match entry.unique_index_first(partitioned).filter(|_| shared) {
                Some(key) => {
                    keys.push(Entry {
                        sql: key.attach,
                        ..entry.clone()
                    });
                    Entry {
                        sql: key.build,
                        ..entry
                    }
                }
                None => entry,
            };
            (size.unwrap_or(0), (table, entry))
        })
        .collect();
    // Stable: pg_dump's order within a table and among tables of the same size.
    order.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    (order.into_iter().map(|(_, build)| build).collect(), keys)
}

/// Runs a whole post-data script (event triggers aside) in order, as a replace does (inside
/// its transaction).
pub(super) async fn apply(client: &Client, post: &Script) -> Result<()> {
    for batch in post.batches() {
        client
            .batch_execute(&batch)
            .await
            .map_err(Error::db("post-data (indexes, constraints, triggers)"))?;
    }
    Ok(())
}

/// Checks the restored rows of existing tables against every foreign key on or to them.
pub(super) async fn check_foreign_keys(job: &Job, client: &Client) -> Result<()> {
    for (constraint, sql) in catalog::foreign_key_checks(client, &job.selected_names()).await? {
        let broken = client
            .query_opt(&sql, &[])
            .await
            .map_err(Error::db(format!("checking {constraint}")))?;
        if broken.is_some() {
            return Err(Error::Verification(format!(
                "foreign key {constraint} would be violated: some restored rows have no matching row (or rows elsewhere lost theirs); \
                 include the related tables with -t or --cascade"
            )));
        }
    }
    Ok(())
}

/// Switches off, for this transaction, the enabled user triggers on `tables` (their owner may;
/// `session_replication_role` would need a superuser), so restored rows fire none of them.
/// Returns the statements that switch each back on exactly as it was.
pub(super) async fn user_triggers_off(client: &Client, tables: &[String]) -> Result<String> {
    let mut off = String::new();
    let mut on = String::new();
    for (table, trigger, mode) in catalog::enabled_user_triggers(client, tables).await? {
        off.push_str(&format!("ALTER TABLE {table} DISABLE TRIGGER {trigger};\n"));
        let enable = match mode.as_str() {
            "R" => "ENABLE REPLICA",
            "A" => "ENABLE ALWAYS",
            _ => "ENABLE",
        };
        on.push_str(&format!(
            "ALTER TABLE {table} {enable} TRIGGER {trigger};\n"
        ));
    }
    if !off.is_empty() {
        client.batch_execute(&off).await.map_err(Error::db(
            "switching off user triggers on the restored tables",
        ))?;
    }
    Ok(on)
}

pub(super) async fn restore_triggers(client: &Client, statements: &str) -> Result<()> {
    if statements.is_empty() {
        return Ok(());
    }
    client
        .batch_execute(statements)
        .await
        .map_err(Error::db("switching user triggers back on"))
}

/// Runs one post-data entry; retries when PostgreSQL picked it as a deadlock victim (two
/// foreign keys locking the same pair of tables in opposite order).
pub(super) async fn run_entry(client: &Client, preamble: &str, entry: &Entry) -> Result<()> {
    let sql = format!("{preamble}{}", entry.sql);
    let mut attempt = 0;
    loop {
        match client.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < 3
                    && e.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                attempt += 1;
            }
            Err(e) => {
                return Err(Error::db(format!(
                    "building {} {}",
                    entry.kind.to_lowercase(),
                    entry.name
                ))(e));
            }
        }
    }
}

/// Creates pg_dump's event triggers: the restore's last DDL, as with pg_restore, so they fire
/// for nothing the restore itself runs.
pub(super) async fn event_triggers(
    client: &Client,
    preamble: &str,
    triggers: &[Entry],
) -> Result<()> {
    for entry in triggers {
        run_entry(client, preamble, entry).await?;
    }
    Ok(())
}
