//! The vacuum and analyze steps: autovacuum paused on a new database's big tables while they are
//! built, then ANALYZE (VACUUM (ANALYZE) where it speeds up a key's validation) of each and the
//! validation of its foreign keys; ANALYZE of the tables a restore into an existing database
//! wrote, after its commit.

use super::job::Job;
use super::post_data::{TableWork, run_entry};
use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::pg::ddl::OBJECTS_PER_TRANSACTION;
use tokio_postgres::Client;

/// Per table over `--jobs` connections, biggest first: ANALYZE, then validate its foreign
/// keys. A table with a key whose columns an index holds is vacuumed as well (`VACUUM
/// (ANALYZE)`): the vacuum marks the freshly loaded pages all-visible, so validating that key
/// reads the index alone instead of the whole table (the sample's biggest key: 1.3 s → 0.5 s
/// after a 0.4 s vacuum). Elsewhere a vacuum would only add a pass over the table before the
/// validations' own scans (`contact_events` in the dominant-table benchmark: VACUUM (ANALYZE)
/// 0.43–0.48 s, ANALYZE 0.18 s, the two validations the same after either), so the planner
/// statistics come from ANALYZE and the vacuum is left to autovacuum, switched back on at the
/// end. A table's maintenance and its own validations never overlap (same connection; they
/// take the same lock); neither blocks work on other tables.
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
                let maintenance = if work.vacuum {
                    "VACUUM (ANALYZE)"
                } else {
                    "ANALYZE"
                };
                client
                    .batch_execute(&format!("{maintenance} {}", table.qualified()))
                    .await
                    .map_err(Error::db(format!("{maintenance} {}", table.display_name())))?;
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
