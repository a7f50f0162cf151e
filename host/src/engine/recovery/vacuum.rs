//! The vacuum and analyze steps: autovacuum paused on a new database's tables while they are
//! built, then VACUUM (ANALYZE) of each and the validation of its foreign keys; ANALYZE of the
//! tables a restore into an existing database wrote, after its commit.

use super::job::Job;
use super::post_data::{TableWork, run_entry};
use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::pg::ddl::OBJECTS_PER_TRANSACTION;
use tokio_postgres::Client;

/// Per table over `--jobs` connections, biggest first: VACUUM (ANALYZE), then validate its
/// foreign keys. The vacuum marks the freshly loaded pages all-visible, so validating a key
/// whose column is indexed reads that index alone instead of the whole table (the sample's
/// biggest key: 1.3 s → 0.5 s after a 0.4 s vacuum), and the new database starts vacuumed:
/// index-only scans work and autovacuum has little to catch up on (a vacuum leaves pages
/// another session holds at that moment for the next one). A table's vacuum and its own
/// validations never overlap (same connection); neither blocks work on other tables.
pub(super) async fn vacuum_and_validate(
    job: &Job,
    destination: &ConnectionSettings,
    preamble: &str,
    work: Vec<TableWork>,
) -> Result<()> {
    let (worker, preamble) = (job.clone(), preamble.to_string());
    job.in_parallel(destination, work, move |client, work| {
        let (job, preamble) = (worker.clone(), preamble.clone());
        async move {
            if let Some(t) = work.table {
                let table = &job.manifest.tables[t];
                client
                    .batch_execute(&format!("VACUUM (ANALYZE) {}", table.qualified()))
                    .await
                    .map_err(Error::db(format!(
                        "VACUUM (ANALYZE) {}",
                        table.display_name()
                    )))?;
            }
            for entry in &work.validations {
                run_entry(&client, &preamble, entry).await?;
            }
            Ok(())
        }
    })
    .await?;
    Ok(())
}

/// ANALYZE of the restored tables (none: nothing to do).
pub(super) async fn analyze(client: &Client, tables: &[String]) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    client
        .batch_execute(&format!("ANALYZE {}", tables.join(", ")))
        .await
        .map_err(Error::db("ANALYZE"))
}

/// Pauses autovacuum on `tables` (and their TOAST tables), or resets it to the default.
pub(super) async fn set_autovacuum(
    client: &Client,
    tables: &[String],
    enabled: bool,
) -> Result<()> {
    let change = if enabled {
        "RESET (autovacuum_enabled, toast.autovacuum_enabled)"
    } else {
        "SET (autovacuum_enabled = off, toast.autovacuum_enabled = off)"
    };
    // A transaction per batch: one lock per table (and TOAST table) held to the end of it.
    for batch in tables.chunks(OBJECTS_PER_TRANSACTION) {
        let sql: String = batch
            .iter()
            .map(|t| format!("ALTER TABLE {t} {change};\n"))
            .collect();
        client
            .batch_execute(&sql)
            .await
            .map_err(Error::db(if enabled {
                "resetting autovacuum on the restored tables"
            } else {
                "pausing autovacuum on the new tables"
            }))?;
    }
    Ok(())
}
