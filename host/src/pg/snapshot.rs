//! The exported snapshot that makes a backup consistent.
//!
//! A leader transaction (REPEATABLE READ, READ ONLY) exports its snapshot; every worker and
//! pg_dump imports it, so all of them see the database as of one instant: a transaction that
//! commits during the backup is wholly absent from every table. The leader stays open until the
//! last worker is done, as `SET TRANSACTION SNAPSHOT` and `pg_dump --snapshot` require.
//!
//! Locks: the server's lock table is shared (`max_locks_per_transaction` × connections), so a
//! backup of thousands of tables holds about one lock per table, no more (pg_dump's own, while
//! it writes the schema). The leader reads the catalog in a subtransaction it rolls back, which
//! releases the locks those reads took (a sequence's, for instance) and keeps the snapshot. A
//! worker reads each table in a short transaction of its own: it imports the snapshot, locks
//! the table (ACCESS SHARE, as pg_dump does), checks that the table is still the one the
//! snapshot saw and copies it; the next read's round trip commits it first, releasing the
//! lock.
//!
//! What the lock cannot cover is the time between the snapshot and the lock: a table dropped
//! then, or rewritten (TRUNCATE, VACUUM FULL, CLUSTER, an ALTER TABLE that rewrites), no longer
//! holds its rows as of the snapshot: reading it would find it missing, or silently empty. The
//! check after the lock catches both (the name resolves to no table, or to a relation whose
//! file is not the snapshot's) and the backup fails with [`Error::ChangedDuringBackup`] naming
//! the table, to be run again; it never stores a table that differs from the snapshot. (The
//! leader used to hold every table's lock for the whole backup, making such DDL wait instead;
//! that is one lock per table more, the difference between passing and failing at the default
//! lock table where pg_dump passes.)

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
        client
            .batch_execute("SAVEPOINT catalog_reads")
            .await
            .map_err(Error::db("starting the catalog reads"))?;
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

    /// Rolls back the subtransaction the catalog was read in, releasing the locks those reads
    /// took; the snapshot, exported before it, stays.
    pub async fn release_read_locks(&self) -> Result<()> {
        self.client
            .batch_execute("ROLLBACK TO SAVEPOINT catalog_reads")
            .await
            .map_err(Error::db("releasing the catalog reads' locks"))
    }

    pub async fn finish(self) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db("closing the snapshot transaction"))
    }
}

/// A worker connection inside the leader's snapshot for as long as it lives (the large
/// objects' copy: one read, of `pg_largeobject`).
pub async fn worker(settings: &ConnectionSettings, snapshot_id: &str) -> Result<Client> {
    let sql = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot_id.replace('\'', "''")
    );
    session::open(settings, &sql, "importing the backup snapshot").await
}

/// Starts a short transaction in the snapshot on `client` and locks `table` (quoted,
/// schema-qualified) for reading it; fails with [`Error::ChangedDuringBackup`] when the table
/// was dropped, replaced or rewritten since the snapshot. [`end_read`] commits it.
pub async fn begin_read(client: &Client, snapshot_id: &str, table: &str) -> Result<()> {
    read(client, "", snapshot_id, table).await
}

/// Commits the read the session holds (a backup worker's previous table, or the empty
/// transaction it opened with, see [`READER_START`]) and begins the read of `table` as
/// [`begin_read`] does, in one round trip (a separate COMMIT per table was a third of a
/// small table's round trips): the previous table's lock is held until the next read starts,
/// or the session closes, so a worker holds one table lock at a time.
pub async fn next_read(client: &Client, snapshot_id: &str, table: &str) -> Result<()> {
    read(client, "COMMIT; ", snapshot_id, table).await
}

/// What a backup worker's session runs when it opens: an empty transaction, for its first
/// [`next_read`] to commit.
pub const READER_START: &str = "BEGIN READ ONLY";

async fn read(client: &Client, before: &str, snapshot_id: &str, table: &str) -> Result<()> {
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    // The name resolves against the catalog as it is now (to_regclass, the lock); pg_class is
    // read as of the snapshot; pg_relation_filenode is the relation's file now.
    let sql = format!(
        "{before}BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}; \
         LOCK TABLE ONLY {table} IN ACCESS SHARE MODE; \
         SELECT (SELECT c.relfilenode FROM pg_catalog.pg_class c WHERE c.oid = r.oid) \
                  = pg_catalog.pg_relation_filenode(r.oid) \
           FROM (SELECT pg_catalog.to_regclass({}) AS oid) r",
        literal(snapshot_id),
        literal(table)
    );
    let changed = |how: &str| {
        Error::ChangedDuringBackup(format!(
            "table {table} was {how} after the backup's snapshot was taken (by another session, while the backup ran), so its rows as of the snapshot cannot be read; nothing was stored: run the backup again"
        ))
    };
    let messages = match client.simple_query(&sql).await {
        Ok(messages) => messages,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Err(changed("dropped or renamed"));
        }
        Err(e) => return Err(Error::db(format!("reading {table} at the snapshot"))(e)),
    };
    let same = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0) == Some("t")),
        _ => None,
    });
    match same {
        Some(true) => Ok(()),
        _ => Err(changed(
            "rewritten (TRUNCATE, VACUUM FULL, CLUSTER, an ALTER TABLE that rewrites) or replaced",
        )),
    }
}

/// Commits the read [`begin_read`] started, releasing the table's lock.
pub async fn end_read(client: &Client, table: &str) -> Result<()> {
    client
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db(format!("ending the read of {table}")))
}
