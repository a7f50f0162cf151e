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
//! worker reads each table, or a group of up to [`READ_GROUP_TABLES`] small ones, in a short
//! transaction of its own: it imports the snapshot, locks the tables (ACCESS SHARE, as pg_dump
//! does), checks that they are still the ones the snapshot saw and copies them; the next
//! read's round trip commits it first, releasing the locks. A group's locks fit in the
//! session's fast-path slots (16 per session, for such weak locks on tables), which take no
//! room in the shared lock table.
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
        let client = session::open(settings, NO_JIT, "preparing the snapshot session").await?;
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
        "{NO_JIT}; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot_id.replace('\'', "''")
    );
    session::open(settings, &sql, "importing the backup snapshot").await
}

/// Starts a short transaction in the snapshot on `client` and locks `tables` (quoted,
/// schema-qualified) for reading them; fails with [`Error::ChangedDuringBackup`], naming the
/// table, when one was dropped, replaced or rewritten since the snapshot. [`end_read`]
/// commits it.
pub async fn begin_read(client: &Client, snapshot_id: &str, tables: &[&str]) -> Result<()> {
    read(client, "", snapshot_id, tables).await
}

/// Commits the read the session holds (a backup worker's previous tables, or the empty
/// transaction it opened with, see [`reader`]) and begins the read of `tables` as
/// [`begin_read`] does, in one round trip (a separate COMMIT per table was a third of a
/// small table's round trips): the previous tables' locks are held until the next read
/// starts, or the session closes, so a worker holds the locks of one group at a time.
pub async fn next_read(client: &Client, snapshot_id: &str, tables: &[&str]) -> Result<()> {
    read(client, "COMMIT; ", snapshot_id, tables).await
}

/// Small tables a backup worker reads in one transaction: one snapshot import, one LOCK and
/// one check for the group instead of one each (on 5,000 tables, the server's per-table
/// transaction was most of a small table's cost). The group's locks stay within a session's
/// 16 fast-path slots (they take no room in the shared lock table, see the module's notes),
/// with room for the check's catalog locks and a TOAST table's two.
pub const READ_GROUP_TABLES: usize = 8;

/// A backup worker's session, for [`next_read`]: it opens with an empty transaction, for its
/// first read to commit.
pub async fn reader(settings: &ConnectionSettings) -> Result<Client> {
    let sql = format!("{NO_JIT}; BEGIN READ ONLY");
    session::open(settings, &sql, "opening a backup worker").await
}

/// The backup's sessions run without JIT compilation, as pg_dump's do: the catalog read and
/// the block ranges' `COPY (SELECT …)` cost enough to be compiled, and compiling them took
/// longer than it saved (70 ms of the 0.6 s catalog read on 5,000 tables).
const NO_JIT: &str = "SET jit = off";

async fn read(client: &Client, before: &str, snapshot_id: &str, tables: &[&str]) -> Result<()> {
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    // The names resolve against the catalog as it is now (to_regclass, the lock); pg_class
    // is read as of the snapshot; pg_relation_filenode is the relation's file now. The check
    // answers one row per table that is no longer the snapshot's.
    let names = tables.iter().map(|t| literal(t)).collect::<Vec<_>>();
    let sql = format!(
        "{before}BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}; \
         LOCK TABLE ONLY {} IN ACCESS SHARE MODE; \
         SELECT r.name FROM unnest(ARRAY[{}]::text[]) r(name) \
          WHERE (SELECT c.relfilenode FROM pg_catalog.pg_class c \
                  WHERE c.oid = pg_catalog.to_regclass(r.name)) \
                IS DISTINCT FROM pg_catalog.pg_relation_filenode(pg_catalog.to_regclass(r.name))",
        literal(snapshot_id),
        tables.join(", "),
        names.join(", ")
    );
    let changed = |table: &str, how: &str| {
        Error::ChangedDuringBackup(format!(
            "table {table} was {how} after the backup's snapshot was taken (by another session, while the backup ran), so its rows as of the snapshot cannot be read; nothing was stored: run the backup again"
        ))
    };
    let dropped = "dropped or renamed";
    let messages = match client.simple_query(&sql).await {
        Ok(messages) => messages,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Err(match tables {
                [table] => changed(table, dropped),
                // Which one: read them one at a time (the failed group's transaction is
                // aborted; the first read's COMMIT ends it).
                _ => Box::pin(dropped_of(client, snapshot_id, tables))
                    .await
                    .unwrap_or_else(|| changed(&tables.join(", "), dropped)),
            });
        }
        Err(e) => {
            return Err(Error::db(format!(
                "reading {} at the snapshot",
                tables.join(", ")
            ))(e));
        }
    };
    let rewritten = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => {
            Some(row.get(0).unwrap_or_default().to_string())
        }
        _ => None,
    });
    match rewritten {
        None => Ok(()),
        Some(table) => Err(changed(
            &table,
            "rewritten (TRUNCATE, VACUUM FULL, CLUSTER, an ALTER TABLE that rewrites) or replaced",
        )),
    }
}

/// The error naming the table of `tables` that is gone (see [`read`]), if one is.
async fn dropped_of(client: &Client, snapshot_id: &str, tables: &[&str]) -> Option<Error> {
    for table in tables {
        if let Err(e @ Error::ChangedDuringBackup(_)) =
            read(client, "COMMIT; ", snapshot_id, &[table]).await
        {
            return Some(e);
        }
    }
    None
}

/// Commits the read [`begin_read`] started, releasing the tables' locks.
pub async fn end_read(client: &Client, table: &str) -> Result<()> {
    client
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db(format!("ending the read of {table}")))
}
