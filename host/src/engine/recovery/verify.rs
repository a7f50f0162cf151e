//! The verify step: chunks before an existing database is touched; afterwards each restored
//! table's row count (and, with `--verify checksums`, the checksum of its rows), the large
//! objects, and that no constraint is left NOT VALID that was not so in the backup.

use super::job::Replayed;
use super::job::{Job, LargeObjectResult, Outcome, TableResult};
use super::plan::{RecoveryPlan, Verification};
use crate::engine::Progress;
use crate::error::{Error, Result};
use crate::pg::catalog;
use crate::pg::ddl::Script;
use crate::repository::Repository;
use crate::repository::chunker::RowChecksum;
use crate::repository::manifest::{Manifest, TableEntry};
use crate::repository::verify::Check;
use std::borrow::Cow;
use std::collections::HashSet;
use tokio_postgres::Client;

/// Checks every chunk the plan reads (SHA-256, decompression): the backup's selected tables
/// and DDL, and a chain's change sets; the count checked.
pub(super) async fn chunks(
    repo: &Repository,
    manifest: &Manifest,
    plan: &RecoveryPlan,
    jobs: usize,
    progress: &Progress,
) -> Result<usize> {
    let links = plan.replay.iter().flat_map(|r| &r.links);
    let checks = std::iter::once(Check::new(manifest, Some(&plan.selected)))
        .chain(links.map(|link| Check::new(link, Some(&[]))));
    let mut checked = 0;
    for check in checks {
        let bar = progress.overall("validate", check.bytes());
        let verified = repo
            .verify(&check, jobs, |bytes| Progress::advance(&bar, bytes))
            .await;
        bar.finish_and_clear();
        if let Some(first) = verified.first_error() {
            return Err(Error::ValidationFailed {
                backup_id: check.backup_id().to_string(),
                first: format!("{first}\n  nothing was changed on the destination"),
                problems: verified.problems(),
            });
        }
        checked += verified.chunks_checked;
    }
    Ok(checked)
}

/// Checks a restored table as `verification` asks: its row count, and with `checksums` an
/// order-independent checksum of its rows, against the backup's. `loaded`: the rows the
/// server reported storing with COPY when the table was created empty by this restore (then
/// they are its row count, and counting again would only re-read the table).
pub(super) async fn table(
    client: &Client,
    table: &TableEntry,
    verification: Verification,
    loaded: Option<u64>,
) -> Result<TableResult> {
    let (rows, checksum_ok) = match (verification, loaded) {
        // A replayed table has no recorded checksum to compare with ([`after_replay`]): it is
        // counted.
        (Verification::Checksums, _) if !table.checksum.is_empty() => {
            let (rows, sum) = table_state(client, table).await?;
            (rows, Some(sum.encode() == table.checksum))
        }
        (_, Some(rows)) => (rows as i64, None),
        (_, None) => {
            let rows: i64 = client
                .query_one(&table.count_sql(), &[])
                .await
                .map_err(Error::db(format!("counting {}", table.display_name())))?
                .get(0);
            (rows, None)
        }
    };
    Ok(TableResult {
        name: table.display_name(),
        backup_rows: table.rows,
        destination_rows: rows,
        inserted_rows: None,
        checksum_ok,
        ok: checksum_ok != Some(false) && rows as u64 == table.rows,
    })
}

/// Row count and order-independent checksum of a table as it is now.
async fn table_state(client: &Client, table: &TableEntry) -> Result<(i64, RowChecksum)> {
    let sum = catalog::copy_checksum(
        client,
        &table.copy_out_sql(),
        &format!("verifying {}", table.display_name()),
    )
    .await?;
    Ok((sum.rows as i64, sum))
}

/// Checks every selected table on one connection (`replace`: none was created by the restore).
pub(super) async fn tables_in(
    job: &Job,
    client: &Client,
    replayed: Option<&Replayed>,
) -> Result<Vec<TableResult>> {
    let mut results = Vec::new();
    for &t in &job.plan.selected {
        let expected = after_replay(&job.manifest.tables[t], t, replayed);
        results.push(table(client, &expected, job.plan.verification, None).await?);
    }
    Ok(results)
}

/// The table as the restore should leave it: after a replay that changed it, with the rows the
/// replay left it with, and no checksum (the recorded one is the base's).
pub(super) fn after_replay<'a>(
    table: &'a TableEntry,
    t: usize,
    replayed: Option<&Replayed>,
) -> Cow<'a, TableEntry> {
    match replayed
        .filter(|r| r.changed.contains(&t))
        .and_then(|r| r.rows.get(&t))
    {
        Some(&rows) => Cow::Owned(TableEntry {
            rows: rows.max(0) as u64,
            checksum: String::new(),
            ..table.clone()
        }),
        None => Cow::Borrowed(table),
    }
}

/// Checks the large objects a restore wrote as tables are checked: their number and size, and
/// with `--verify checksums` their content, re-read the way the backup read it.
pub(super) async fn large_objects(job: &Job, client: &Client) -> Result<Option<LargeObjectResult>> {
    let Some(lo) = &job.manifest.large_objects else {
        return Ok(None);
    };
    let (found, bytes) = catalog::large_objects(client, Some(&lo.oids)).await?;
    let checksum_ok = match job.plan.verification {
        Verification::Rows => None,
        Verification::Checksums => {
            let sum = catalog::large_object_checksum(client, &lo.oids).await?;
            Some(sum.encode() == lo.data.checksum && sum.rows == lo.data.rows)
        }
    };
    Ok(Some(LargeObjectResult {
        backup_count: lo.oids.len() as u64,
        destination_count: found.len() as u64,
        backup_bytes: lo.content_bytes,
        destination_bytes: bytes.max(0) as u64,
        ok: found.len() == lo.oids.len()
            && bytes.max(0) as u64 == lo.content_bytes
            && checksum_ok != Some(false),
        checksum_ok,
    }))
}

/// Completes an outcome with the NOT VALID constraints on `tables` (all when empty), split by
/// whether `before` (pg_dump tags, `table constraint`) lists them as NOT VALID already.
pub(super) async fn outcome(
    client: &Client,
    results: Vec<TableResult>,
    tables: &[String],
    before: &HashSet<String>,
) -> Result<Outcome> {
    let (as_before, unvalidated): (Vec<_>, Vec<_>) =
        catalog::unvalidated_constraints(client, tables)
            .await?
            .into_iter()
            .partition(|c| c.tags.iter().any(|t| before.contains(t)));
    Ok(Outcome {
        tables: results,
        large_objects: None,
        unvalidated: unvalidated.into_iter().map(|c| c.name).collect(),
        not_valid_as_before: as_before.into_iter().map(|c| c.name).collect(),
        leftover_dropped: None,
        by_hand: Vec::new(),
        replayed: None,
    })
}

/// Tags of the constraints a backup's DDL adds NOT VALID.
pub(super) fn not_valid_in(sections: &[&Script]) -> HashSet<String> {
    sections
        .iter()
        .flat_map(|s| s.not_valid_tags())
        .map(str::to_string)
        .collect()
}

/// Tags of the constraints on `tables` that are NOT VALID in the destination before the restore
/// touches it (`replace -t` and `missing-rows` keep the destination's constraints).
pub(super) async fn not_valid_now(client: &Client, tables: &[String]) -> Result<HashSet<String>> {
    Ok(catalog::unvalidated_constraints(client, tables)
        .await?
        .into_iter()
        .flat_map(|c| c.tags)
        .collect())
}

/// Turns failed verification into an error, so the caller undoes the restore.
pub(super) fn checked(outcome: Outcome) -> Result<Outcome> {
    let failed: Vec<String> = outcome
        .tables
        .iter()
        .filter(|t| !t.ok)
        .map(|t| {
            format!(
                "{} ({} rows in the backup, {} restored, checksum {})",
                t.name,
                t.backup_rows,
                t.destination_rows,
                match t.checksum_ok {
                    Some(true) => "ok",
                    Some(false) => "MISMATCH",
                    None => "n/a",
                }
            )
        })
        .collect();
    if let Some(lo) = outcome.large_objects.as_ref().filter(|lo| !lo.ok) {
        return Err(Error::Verification(format!(
            "verification failed for the large objects ({} in the backup with {} bytes, {} restored with {} bytes, checksum {})",
            lo.backup_count,
            lo.backup_bytes,
            lo.destination_count,
            lo.destination_bytes,
            match lo.checksum_ok {
                Some(true) => "ok",
                Some(false) => "MISMATCH",
                None => "n/a",
            }
        )));
    }
    if !failed.is_empty() {
        return Err(Error::Verification(format!(
            "verification failed for {}",
            failed.join(", ")
        )));
    }
    if !outcome.unvalidated.is_empty() {
        return Err(Error::Verification(format!(
            "constraints left NOT VALID: {}",
            outcome.unvalidated.join(", ")
        )));
    }
    Ok(outcome)
}
