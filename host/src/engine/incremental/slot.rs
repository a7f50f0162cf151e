//! The logical replication slot and publication a chain of incremental backups reads from.
//!
//! A full backup taken with `[incremental] enabled` checks the server can track changes
//! (`wal_level = logical`, the REPLICATION attribute, a UTF8 database), sets up the
//! publication (every table whose changes can be captured exactly, unless an existing one
//! publishes `FOR ALL TABLES`), then drops and creates the slot just before its own snapshot
//! (in between, `reuse` reads what the old slot still holds). Incrementals read the slot and
//! advance it; health reports the WAL it retains.

use crate::config::IncrementalConfig;
use crate::error::{Error, Result};
use crate::pg::catalog::USER_RELATION;
use crate::pg::{ConnectionSettings, session};
use crate::repository::changes::Lsn;
use crate::repository::manifest::{Manifest, NotExact, quote_ident};
use std::collections::HashMap;
use tokio_postgres::Client;

/// A slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    pub confirmed: Option<Lsn>,
    /// `reserved`, `extended`, `unreserving` or `lost` (PostgreSQL invalidated it).
    pub wal_status: Option<String>,
    /// Bytes of WAL the slot keeps on the server (`pg_current_wal_lsn() - restart_lsn`).
    pub retained: Option<u64>,
    pub active: bool,
}

/// Where a new chain starts: the slot's consistent point, and the tables it cannot follow.
#[derive(Debug, Clone)]
pub struct ChainStart {
    pub slot: String,
    pub consistent: Lsn,
    pub not_exact: Vec<NotExact>,
}

fn parse_lsn(text: &str) -> Result<Lsn> {
    text.parse()
        .map_err(|e| Error::Internal(format!("the server returned {e}")))
}

/// Opens a session for change tracking and checks the server allows it: `wal_level =
/// logical`, a role with REPLICATION, a UTF8 database.
pub async fn open_checked(settings: &ConnectionSettings) -> Result<Client> {
    let client = session::open(settings, "", "preparing change tracking").await?;
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_user::text, \
               (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
               pg_encoding_to_char(d.encoding)::text \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(Error::db("checking change tracking's prerequisites"))?;
    let (wal_level, user, replication, encoding): (String, String, Option<bool>, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if wal_level != "logical" {
        return Err(Error::ChangeTracking(format!(
            "change tracking ([incremental] enabled) needs wal_level = logical, and the server has wal_level = {wal_level}; \
             as a superuser run `ALTER SYSTEM SET wal_level = logical` and restart PostgreSQL, or set [incremental] enabled = false"
        )));
    }
    if replication != Some(true) {
        return Err(Error::ChangeTracking(format!(
            "change tracking needs a role with the REPLICATION attribute to manage its replication slot, and {user} has none; \
             as a superuser run `ALTER ROLE {} REPLICATION`",
            quote_ident(&user)
        )));
    }
    if encoding != "UTF8" {
        return Err(Error::ChangeTracking(format!(
            "change tracking stores changes as UTF-8 JSON and needs a UTF8 database; this one is {encoding}"
        )));
    }
    Ok(client)
}

/// The tables whose changes logical decoding cannot give exactly, and what fixes each.
async fn not_exact(client: &Client) -> Result<(Vec<String>, Vec<NotExact>)> {
    let sql = format!(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname::text || '.' || c.relname::text, \
           c.relpersistence = 'u', \
           c.relreplident = 'f' OR c.relreplident = 'i' OR (c.relreplident = 'd' AND EXISTS \
             (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND {USER_RELATION} ORDER BY 1"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(Error::db("reading the tables' replica identity"))?;
    let (mut tracked, mut inexact) = (Vec::new(), Vec::new());
    for row in rows {
        let (qualified, table, unlogged, identity): (String, String, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if unlogged {
            inexact.push(NotExact {
                table,
                reason: "it is UNLOGGED: logical decoding does not see its changes".into(),
                fix: format!("ALTER TABLE {qualified} SET LOGGED"),
            });
        } else if !identity {
            inexact.push(NotExact {
                table,
                reason: "it has no primary key or replica identity: its changes are not captured"
                    .into(),
                fix: format!("ALTER TABLE {qualified} REPLICA IDENTITY FULL"),
            });
        } else {
            tracked.push(qualified);
        }
    }
    Ok((tracked, inexact))
}

/// The publication `pgoutput` reads: created or re-created for the tables it can follow,
/// unless one of that name publishes `FOR ALL TABLES` (kept as it is).
async fn publish(client: &Client, publication: &str, tables: &[String]) -> Result<()> {
    let all = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(Error::db("reading the publication"))?
        .map(|r| r.get::<_, bool>(0));
    if all == Some(true) {
        return Ok(());
    }
    let name = quote_ident(publication);
    let create = if tables.is_empty() {
        format!("CREATE PUBLICATION {name}")
    } else {
        format!("CREATE PUBLICATION {name} FOR TABLE {}", tables.join(", "))
    };
    let sql = format!("BEGIN; DROP PUBLICATION IF EXISTS {name}; {create}; COMMIT");
    if let Err(e) = client.batch_execute(&sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(Error::ChangeTracking(format!(
            "could not create publication {name} for change tracking ({}); the role needs CREATE on the database and \
             ownership of the tables (or create it as a superuser: `CREATE PUBLICATION {name} FOR ALL TABLES`)",
            crate::error::error_chain(&e)
        )));
    }
    Ok(())
}

/// A chain about to start: the server checked, the publication set up, the old slot (if
/// any) not yet dropped, so what it still holds can be read first (see `reuse::watch`).
pub struct Preparing {
    client: Client,
    pub slot: String,
    pub publication: String,
    pub not_exact: Vec<NotExact>,
    /// What the publication published before it was re-created (`reuse::published`).
    pub published: HashMap<String, String>,
}

/// Prepares a chain: checks the server, sets up the publication, and checks no session uses
/// the slot. [`Preparing::start`] then re-creates the slot.
pub async fn prepare_chain(
    settings: &ConnectionSettings,
    config: &IncrementalConfig,
    database: &str,
) -> Result<Preparing> {
    let client = open_checked(settings).await?;
    let slot = config.slot_for(database);
    let publication = config.publication_for(database);
    let (tracked, not_exact) = not_exact(&client).await?;
    let published = super::reuse::published(&client, &publication).await?;
    publish(&client, &publication, &tracked).await?;
    if let Some(state) = state(&client, &slot).await?
        && state.active
    {
        return Err(Error::ChangeTracking(format!(
            "replication slot {slot} is in use (an incremental backup running?); try again when it is done"
        )));
    }
    Ok(Preparing {
        client,
        slot,
        publication,
        not_exact,
        published,
    })
}

impl Preparing {
    /// Starts the chain: drops the slot if it exists and creates it. Call just before the
    /// full backup's snapshot: every transaction committed after the returned consistent
    /// point is decoded, and the first incremental leaves out those the snapshot sees.
    pub async fn start(self) -> Result<ChainStart> {
        let Preparing {
            client,
            slot,
            not_exact,
            ..
        } = self;
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(Error::db(format!("dropping the old replication slot {slot}")))?;
        let consistent = create(&client, &slot, false).await?;
        Ok(ChainStart {
            slot,
            consistent,
            not_exact,
        })
    }
}

/// Creates a logical slot decoding through `pgoutput` (a temporary one lives as long as the
/// session); returns its consistent point.
pub async fn create(client: &Client, slot: &str, temporary: bool) -> Result<Lsn> {
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', $2)",
            &[&slot, &temporary],
        )
        .await
        .map_err(Error::db(format!(
            "creating replication slot {slot} (see max_replication_slots)"
        )))?;
    parse_lsn(row.get(0))
}

/// The changes a slot holds up to `end`, one `pgoutput` message per row, without consuming
/// them (the slot stays where it is).
pub async fn peek(
    client: &Client,
    slot: &str,
    end: Lsn,
    publication: &str,
) -> Result<tokio_postgres::RowStream> {
    let end = end.to_string();
    let names = quote_ident(publication);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&slot, &end, &names];
    client
        .query_raw(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, NULL, \
             'proto_version', '1', 'publication_names', $3)",
            params,
        )
        .await
        .map_err(Error::db(format!(
            "reading the changes of replication slot {slot}"
        )))
}

/// The slot's state; None when it does not exist.
pub async fn state(client: &Client, slot: &str) -> Result<Option<SlotState>> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, wal_status, \
               CASE WHEN restart_lsn IS NULL THEN NULL \
                    ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 END, active \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(Error::db(format!("reading replication slot {slot}")))?;
    row.map(|r| {
        let confirmed: Option<String> = r.get(0);
        let retained: Option<i64> = r.get(2);
        Ok(SlotState {
            confirmed: confirmed.as_deref().map(parse_lsn).transpose()?,
            wal_status: r.get(1),
            retained: retained.map(|b| b.max(0) as u64),
            active: r.get(3),
        })
    })
    .transpose()
}

/// Moves the slot's confirmed position to `lsn`: the changes before it are in the chain.
pub async fn advance(client: &Client, slot: &str, lsn: Lsn) -> Result<()> {
    client
        .execute(
            "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&slot, &lsn.to_string()],
        )
        .await
        .map_err(Error::db(format!(
            "advancing replication slot {slot} to {lsn}"
        )))?;
    Ok(())
}

/// Drops `database`'s slot, so a retired chain no longer holds WAL on the server. Returns
/// whether there was one.
pub async fn retire(
    settings: &ConnectionSettings,
    config: &IncrementalConfig,
    database: &str,
) -> Result<bool> {
    let client = session::open(settings, "", "retiring change tracking").await?;
    let slot = config.slot_for(database);
    let dropped = client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await
        .map_err(Error::db(format!("dropping replication slot {slot}")))?;
    Ok(dropped > 0)
}

/// After backups were deleted (`backup delete`, `backup prune`, the daemon's retention): with
/// change tracking on, drops the database's slot once no backup of its chain is left (it would
/// keep WAL on the server for nobody). A failure is only logged: the deletion stands.
pub async fn retire_after_deleting(
    database: &ConnectionSettings,
    config: &IncrementalConfig,
    targets: &[std::sync::Arc<dyn crate::targets::Target>],
) {
    if !config.enabled {
        return;
    }
    let retired = async {
        let manifests = crate::repository::Repository::open_for_reading(targets)
            .await?
            .manifests()
            .await?;
        retire_orphaned(database, config, &manifests).await
    }
    .await;
    match retired {
        Ok(Some(slot)) => tracing::warn!(
            "no backup of its chain is left: dropped replication slot {slot}; the next full backup starts a new chain"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!("could not check the replication slot of incremental backups: {e}")
        }
    }
}

/// After backups were deleted (`backup prune`, `backup delete`): drops the database's slot
/// when no backup left in `manifests` belongs to its chain. Returns the slot dropped.
pub async fn retire_orphaned(
    settings: &ConnectionSettings,
    config: &IncrementalConfig,
    manifests: &[Manifest],
) -> Result<Option<String>> {
    let slot = config.slot_for(&settings.dbname);
    let needed = manifests.iter().any(|m| {
        m.source.database == settings.dbname
            && m.incremental.as_ref().is_some_and(|i| i.slot == slot)
    });
    if needed {
        return Ok(None);
    }
    Ok(retire(settings, config, &settings.dbname)
        .await?
        .then_some(slot))
}
