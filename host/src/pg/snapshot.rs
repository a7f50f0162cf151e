//! The exported snapshot that makes a backup consistent.
//!
//! A leader transaction (REPEATABLE READ, READ ONLY) exports its snapshot; every worker and
//! pg_dump imports it, so all of them see the database as of one instant: a transaction that
//! commits during the backup is wholly absent from every table. The leader stays open until the
//! last worker is done, as `SET TRANSACTION SNAPSHOT` and `pg_dump --snapshot` require.

use super::ConnectionSettings;
use crate::error::{Error, Result};
use tokio_postgres::Client;

/// Session settings that make COPY text deterministic and complete (the same set pg_dump uses,
/// plus UTC so timestamps print the same whatever the server's time zone). The empty
/// `search_path` is pg_dump's too: values that name objects (`regclass`, `regproc`, …) then
/// print schema-qualified, so they read back the same under pg_dump's empty path in an export.
pub const SESSION_SETTINGS: &str = "SET DateStyle = ISO; SET IntervalStyle = postgres; \
    SET extra_float_digits = 3; SET TimeZone = 'UTC'; SET synchronize_seqscans = off; \
    SET row_security = off; SET statement_timeout = 0; SET lock_timeout = 0; \
    SET idle_in_transaction_session_timeout = 0; SET bytea_output = hex; \
    SET search_path = ''";

pub struct SnapshotLeader {
    client: Client,
    pub snapshot_id: String,
    pub lsn: Option<String>,
    pub xmin: String,
}

impl SnapshotLeader {
    pub async fn begin(settings: &ConnectionSettings) -> Result<SnapshotLeader> {
        let client = settings.connect().await?;
        client
            .batch_execute(SESSION_SETTINGS)
            .await
            .map_err(Error::db("preparing the snapshot session"))?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(Error::db("starting the snapshot transaction"))?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(), \
                 CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
                 pg_snapshot_xmin(pg_current_snapshot())::text",
                &[],
            )
            .await
            .map_err(Error::db("exporting the snapshot"))?;
        Ok(SnapshotLeader {
            client,
            snapshot_id: row.get(0),
            lsn: row.get(1),
            xmin: row.get(2),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Takes ACCESS SHARE locks on the tables (as pg_dump does) so none is dropped or
    /// rewritten under the backup.
    pub async fn lock_tables(&self, qualified: &[String]) -> Result<()> {
        for batch in qualified.chunks(1000) {
            let sql = format!("LOCK TABLE {} IN ACCESS SHARE MODE", batch.join(", "));
            self.client
                .batch_execute(&sql)
                .await
                .map_err(Error::db("locking the tables to back up"))?;
        }
        Ok(())
    }

    pub async fn finish(self) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db("closing the snapshot transaction"))
    }
}

/// A worker connection inside the leader's snapshot.
pub async fn worker(settings: &ConnectionSettings, snapshot_id: &str) -> Result<Client> {
    let client = settings.connect().await?;
    let sql = format!(
        "{SESSION_SETTINGS}; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot_id.replace('\'', "''")
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(Error::db("importing the backup snapshot"))?;
    Ok(client)
}
