//! The post-data step: indexes, constraints, foreign keys, triggers and the rest of pg_dump's
//! post-data (in a new database the expensive parts in parallel, foreign keys added NOT VALID
//! for the vacuum step to validate), event triggers last, and for existing tables the check
//! of restored rows against their foreign keys and the user triggers switched off and on.

use super::job::Job;
use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::pg::catalog;
use crate::pg::ddl::{Entry, Script, builds_in_parallel};
use tokio_postgres::Client;

/// One table's share of the vacuum step in a new database.
pub(super) struct TableWork {
    /// The restored table (None: foreign keys of a table outside the selection).
    pub table: Option<usize>,
    pub bytes: u64,
    /// `VALIDATE CONSTRAINT` statements of the foreign keys on this table.
    pub validations: Vec<Entry>,
}

/// Builds a new database's post-data (event triggers aside: `post` no longer holds them) in
/// pg_dump's dependency order but with the expensive parts in parallel: indexes and plain
/// constraints; index attachments; foreign keys added NOT VALID; then triggers, rules and the
/// rest. Returns per table the foreign keys still to validate, biggest table first.
pub(super) async fn build(
    job: &Job,
    main: &Client,
    destination: &ConnectionSettings,
    post: &Script,
) -> Result<Vec<TableWork>> {
    let started = std::time::Instant::now();
    let (parallel, ordered): (Vec<_>, Vec<_>) = post
        .entries
        .iter()
        .cloned()
        .partition(|e| builds_in_parallel(&e.kind));
    job.in_parallel(destination, parallel, {
        let preamble = post.preamble.clone();
        move |client, entry| {
            let preamble = preamble.clone();
            async move { run_entry(&client, &preamble, &entry).await }
        }
    })
    .await?;
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
        })
        .collect();
    let partitioned = catalog::partitioned_tables(main).await?;
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
    work.sort_by_key(|w| std::cmp::Reverse(w.bytes));
    Ok(work)
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
