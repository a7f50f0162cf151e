//! The sequences step: each sequence's value as the backup recorded it (every sequence of a
//! whole-database restore; a table restore only the sequences its tables own).

use super::job::Job;
use crate::error::{Error, Result};
use crate::pg::catalog;
use crate::repository::manifest::{SequenceValue, quote_ident};
use tokio_postgres::Client;

/// Sets every sequence of the backup.
pub(super) async fn all(job: &Job, client: &Client) -> Result<()> {
    let sequences: Vec<&SequenceValue> = job.manifest.sequences.iter().collect();
    set(client, &sequences).await
}

/// Sets the sequences the restored `tables` own.
pub(super) async fn owned_by(job: &Job, client: &Client, tables: &[String]) -> Result<()> {
    let owned = catalog::owned_sequences(client, tables).await?;
    let sequences: Vec<&SequenceValue> = job
        .manifest
        .sequences
        .iter()
        .filter(|s| owned.contains(&(s.schema.clone(), s.name.clone())))
        .collect();
    set(client, &sequences).await
}

async fn set(client: &Client, sequences: &[&SequenceValue]) -> Result<()> {
    for seq in sequences {
        let name = format!("{}.{}", quote_ident(&seq.schema), quote_ident(&seq.name));
        client
            .execute(
                "SELECT pg_catalog.setval($1::text::regclass, $2, $3)",
                &[&name, &seq.last_value, &seq.is_called],
            )
            .await
            .map_err(Error::db(format!("setting sequence {name}")))?;
    }
    Ok(())
}
