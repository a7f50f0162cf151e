//! The exported snapshot that makes a backup consistent.
//!
//! A leader transaction (REPEATABLE READ, READ ONLY) exports its snapshot; every worker and
//! pg_dump imports it, so all of them see the database as of one instant: a transaction that
//! commits during the backup is wholly absent from every table. The leader stays open until the
//! last worker is done, as `SET TRANSACTION SNAPSHOT` and `pg_dump --snapshot` require.

use super::ConnectionSettings;
use super::session;
use crate::error::{Error, Result};
use tokio_postgres::Client;

pub struct SnapshotLeader {
    client: Client,
    pub snapshot_id: String,
    pub lsn: Option<String>,
    pub xmin: String,
    /// `pg_current_snapshot()` as text (`xmin:xmax:xip,…`): which transactions it sees.
    pub snapshot: String,
}

impl SnapshotLeader {
    pub async fn begin(settings: &ConnectionSettings) -> Result<SnapshotLeader> {
        let client = session::open(settings, "", "preparing the snapshot session").await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(Error::db("starting the snapshot transaction"))?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(), \
                 CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
                 pg_snapshot_xmin(pg_current_snapshot())::text, pg_current_snapshot()::text",
                &[],
            )
            .await
            .map_err(Error::db("exporting the snapshot"))?;
        Ok(SnapshotLeader {
            client,
            snapshot_id: row.get(0),
            lsn: row.get(1),
            xmin: row.get(2),
            snapshot: row.get(3),
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
    let sql = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot_id.replace('\'', "''")
    );
    session::open(settings, &sql, "importing the backup snapshot").await
}
