//! The missing-rows strategy, inside the recovery transaction: each table's backup rows go
//! into a temporary table (with a chain, replayed there to the point in time), and those whose
//! primary key the destination lacks are inserted; rows that still exist keep their current
//! values.

use super::job::Replayed;
use super::job::{Job, Outcome, TableResult};
use super::replay;
use super::step::{Progression, Step};
use super::{load, post_data, verify};
use crate::error::{Error, Result};
use crate::pg::catalog;
use tokio_postgres::Client;

/// One table the load step inserted into.
struct Inserted {
    table: usize,
    /// The temporary table its backup rows went into (dropped at commit).
    scratch: String,
    /// The primary-key match between the destination (`x`) and the scratch table (`m`).
    matches: String,
    rows: u64,
}

/// Re-inserts rows whose primary key is missing from the destination; with a chain, the rows
/// as they were at the point in time (the base's rows, replayed in their scratch tables).
pub(super) async fn run(job: &Job, client: &Client, steps: &Progression) -> Result<Outcome> {
    let names = job.selected_names();
    let replaying = job.plan.replay.is_some();
    let (before, triggers_on, loaded) = steps
        .run(Step::Load, async {
            let before = verify::not_valid_now(client, &names).await?;
            let triggers_on = post_data::user_triggers_off(client, &names).await?;
            let order = load::parents_first(&job.manifest, &job.plan.selected);
            let overall = job.overall();
            let mut loaded = Vec::new();
            for t in order {
                let scratch = load_scratch(job, client, t, &overall).await?;
                loaded.push(if replaying {
                    scratch
                } else {
                    insert_missing(job, client, scratch).await?
                });
            }
            overall.finish_and_clear();
            Ok((before, triggers_on, loaded))
        })
        .await?;
    let (inserted, replayed) = if replaying {
        steps
            .run(Step::Replay, async {
                let into = loaded
                    .iter()
                    .map(|s| (s.table, s.scratch.clone()))
                    .collect();
                // Scratch tables have no foreign keys: group the changes by table.
                let replayed =
                    replay::apply(job, client, &[], &into, replay::Order::ByTable, true).await?;
                let mut inserted = Vec::new();
                for scratch in loaded {
                    inserted.push(insert_missing(job, client, scratch).await?);
                }
                Ok((inserted, Some(replayed)))
            })
            .await?
    } else {
        (loaded, None)
    };
    steps
        .run(Step::CheckForeignKeys, async {
            post_data::check_foreign_keys(job, client).await?;
            post_data::restore_triggers(client, &triggers_on).await
        })
        .await?;
    steps
        .run(Step::Verify, async {
            let mut results = Vec::new();
            for done in &inserted {
                results.push(still_missing(job, client, done, replayed.as_ref()).await?);
            }
            results.sort_by(|a, b| a.name.cmp(&b.name));
            let outcome = verify::outcome(client, results, &names, &before).await?;
            verify::checked(Outcome {
                replayed: replayed.clone(),
                ..outcome
            })
        })
        .await
}

/// Loads table `t`'s backup rows into a temporary table, indexed by its primary key.
async fn load_scratch(
    job: &Job,
    client: &Client,
    t: usize,
    overall: &indicatif::ProgressBar,
) -> Result<Inserted> {
    let table = &job.manifest.tables[t];
    let key = catalog::primary_key(client, &table.qualified()).await?;
    let scratch = format!("larder_missing_{t}");
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE {scratch} (LIKE {}) ON COMMIT DROP",
            table.qualified()
        ))
        .await
        .map_err(Error::db(format!("preparing {}", table.display_name())))?;
    load::table(job, client, t, &scratch, overall).await?;
    if job.plan.replay.is_some() && !key.is_empty() {
        // Replayed updates and deletes find their rows by key.
        client
            .batch_execute(&format!("CREATE INDEX ON {scratch} ({})", key.join(", ")))
            .await
            .map_err(Error::db(format!(
                "indexing the rows of {}",
                table.display_name()
            )))?;
    }
    let matches = key
        .iter()
        .map(|k| format!("x.{k} = m.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    Ok(Inserted {
        table: t,
        scratch,
        matches,
        rows: 0,
    })
}

/// Inserts the rows of a scratch table whose primary key the destination lacks.
async fn insert_missing(job: &Job, client: &Client, scratch: Inserted) -> Result<Inserted> {
    let table = &job.manifest.tables[scratch.table];
    let cols = table.columns.join(", ");
    let rows = client
        .execute(
            &format!(
                "INSERT INTO {destination} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {} m \
                 WHERE NOT EXISTS (SELECT 1 FROM ONLY {destination} x WHERE {})",
                scratch.scratch,
                scratch.matches,
                destination = table.qualified()
            ),
            &[],
        )
        .await
        .map_err(Error::db(format!(
            "re-inserting missing rows of {}",
            table.display_name()
        )))?;
    Ok(Inserted { rows, ..scratch })
}

/// Checks that no backup row of a table is still missing from the destination.
async fn still_missing(
    job: &Job,
    client: &Client,
    done: &Inserted,
    replayed: Option<&Replayed>,
) -> Result<TableResult> {
    let table = verify::after_replay(&job.manifest.tables[done.table], done.table, replayed);
    let (scratch, matches) = (&done.scratch, &done.matches);
    let missing: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {scratch} m WHERE NOT EXISTS (SELECT 1 FROM ONLY {} x WHERE {matches})",
                table.qualified()
            ),
            &[],
        )
        .await
        .map_err(Error::db(format!("verifying {}", table.display_name())))?
        .get(0);
    let rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM ONLY {}", table.qualified()),
            &[],
        )
        .await
        .map_err(Error::db(format!("counting {}", table.display_name())))?
        .get(0);
    Ok(TableResult {
        name: table.display_name(),
        backup_rows: table.rows,
        destination_rows: rows,
        inserted_rows: Some(done.rows),
        checksum_ok: None,
        ok: missing == 0,
    })
}
