//! The missing-rows strategy, inside the recovery transaction: each table's backup rows go
//! into a temporary table, and those whose primary key the destination lacks are inserted; rows
//! that still exist keep their current values.

use super::job::{Job, Outcome, TableResult};
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

/// Re-inserts rows whose primary key is missing from the destination.
pub(super) async fn run(job: &Job, client: &Client, steps: &Progression) -> Result<Outcome> {
    let names = job.selected_names();
    let (before, triggers_on, inserted) = steps
        .run(Step::Load, async {
            let before = verify::not_valid_now(client, &names).await?;
            let triggers_on = post_data::user_triggers_off(client, &names).await?;
            let order = load::parents_first(&job.manifest, &job.plan.selected);
            let overall = job.overall();
            let mut inserted = Vec::new();
            for t in order {
                inserted.push(insert_missing(job, client, t, &overall).await?);
            }
            overall.finish_and_clear();
            Ok((before, triggers_on, inserted))
        })
        .await?;
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
                results.push(still_missing(job, client, done).await?);
            }
            results.sort_by(|a, b| a.name.cmp(&b.name));
            verify::checked(verify::outcome(client, results, &names, &before).await?)
        })
        .await
}

/// Loads table `t`'s backup rows into a temporary table and inserts those the destination lacks.
async fn insert_missing(
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
    let matches = key
        .iter()
        .map(|k| format!("x.{k} = m.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let cols = table.columns.join(", ");
    let rows = client
        .execute(
            &format!(
                "INSERT INTO {destination} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {scratch} m \
                 WHERE NOT EXISTS (SELECT 1 FROM ONLY {destination} x WHERE {matches})",
                destination = table.qualified()
            ),
            &[],
        )
        .await
        .map_err(Error::db(format!(
            "re-inserting missing rows of {}",
            table.display_name()
        )))?;
    Ok(Inserted {
        table: t,
        scratch,
        matches,
        rows,
    })
}

/// Checks that no backup row of a table is still missing from the destination.
async fn still_missing(job: &Job, client: &Client, done: &Inserted) -> Result<TableResult> {
    let table = &job.manifest.tables[done.table];
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
