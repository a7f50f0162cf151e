//! The logical replication slots and publication chains of incremental backups read from.
//!
//! A full backup taken with `[incremental] enabled` checks the server can track changes
//! (`wal_level = logical`, the REPLICATION attribute, a UTF8 database), sets up the
//! publication (every table whose changes can be captured exactly, unless an existing one
//! publishes `FOR ALL TABLES`), then creates its own chain's slot ([`chain_slot`]: named
//! after the full) just before its snapshot (in between, `reuse` reads what the previous
//! chain's slot still holds). The previous chain's slot is dropped only once the new full's
//! manifest is durable; a full that fails drops its new slot, and one killed leaves it to the
//! next full, which drops every slot no backup continues. Incrementals stream their chain's
//! slot over a replication connection and confirm what they stored; health reports the WAL
//! it retains.

use super::pgoutput::{self, Message};
use crate::config::IncrementalConfig;
use crate::error::{Error, Result};
use crate::pg::catalog::USER_RELATION;
use crate::pg::replication::{Event, LogicalStream};
use crate::pg::{ConnectionSettings, session};
use crate::repository::changes::Lsn;
use crate::repository::manifest::{IncrementalInfo, Manifest, NotExact, Stream, quote_ident};
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

fn parse_lsn(text: &str) -> Result<Lsn> {
    text.parse()
        .map_err(|e| Error::Internal(format!("the server returned {e}")))
}

/// Opens a session for change tracking and checks the server allows it: `wal_level =
/// logical`, WAL senders for the replication connection, a role with REPLICATION, a UTF8
/// database.
pub async fn open_checked(settings: &ConnectionSettings) -> Result<Client> {
    let client = session::open(settings, "", "preparing change tracking").await?;
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_user::text, \
               (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
               pg_encoding_to_char(d.encoding)::text, current_setting('max_wal_senders')::int \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(Error::db("checking change tracking's prerequisites"))?;
    let (wal_level, user, replication, encoding, senders): (
        String,
        String,
        Option<bool>,
        String,
        i32,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if wal_level != "logical" {
        return Err(Error::ChangeTracking(format!(
            "change tracking ([incremental] enabled) needs wal_level = logical, and the server has wal_level = {wal_level}; \
             as a superuser run `ALTER SYSTEM SET wal_level = logical` and restart PostgreSQL, or set [incremental] enabled = false"
        )));
    }
    if senders == 0 {
        return Err(Error::ChangeTracking(
            "change tracking streams the changes over a replication connection, and the server has max_wal_senders = 0; \
             as a superuser run `ALTER SYSTEM SET max_wal_senders = 10` and restart PostgreSQL, or set [incremental] enabled = false"
                .into(),
        ));
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

/// The tables logical decoding can follow (quoted `schema.name`, and as people type it), and
/// those whose changes it cannot give exactly, with what fixes each.
async fn not_exact(client: &Client) -> Result<(Vec<(String, String)>, Vec<NotExact>)> {
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
            tracked.push((qualified, table));
        }
    }
    Ok((tracked, inexact))
}

/// The publication `pgoutput` reads: created or re-created for the tables it can follow,
/// unless one of that name publishes `FOR ALL TABLES` or already publishes exactly those
/// (`published`; kept as it is, so the previous chain sees it unchanged).
async fn publish(
    client: &Client,
    publication: &str,
    tables: &[(String, String)],
    published: &HashMap<String, String>,
) -> Result<()> {
    let all = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(Error::db("reading the publication"))?
        .map(|r| r.get::<_, bool>(0));
    let same = tables.len() == published.len()
        && tables
            .iter()
            .all(|(_, table)| published.contains_key(table));
    if all == Some(true) || (all == Some(false) && same) {
        return Ok(());
    }
    let name = quote_ident(publication);
    let create = if tables.is_empty() {
        format!("CREATE PUBLICATION {name}")
    } else {
        let list: Vec<&str> = tables.iter().map(|(q, _)| q.as_str()).collect();
        format!("CREATE PUBLICATION {name} FOR TABLE {}", list.join(", "))
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

/// The advisory lock (first key; the second is `hashtext(slot)`) a full backup holds on the
/// slot of the chain it is starting, from creating it until its manifest is written or it
/// failed: clean-ups leave a slot alone while its full runs.
const STARTING: i32 = 0x4c44_5253; // "LDRS"

/// Letters a slot name allows: lower-case, digits, `_`.
fn slot_letter(c: char) -> char {
    match c.to_ascii_lowercase() {
        c @ ('a'..='z' | '0'..='9' | '_') => c,
        _ => '_',
    }
}

/// What a chain's slot adds to `[incremental] slot`: `_` and the full's backup id
/// (`20261202-133500-ab12`), so 21 letters.
const ID_SUFFIX: usize = 21;

/// The slot of the chain whose full backup is `backup_id`: `[incremental] slot` (default
/// `larder_<database>`), `_`, the backup id, in the letters slot names allow, at most 63
/// (the prefix is cut). Each full starts its own slot, so one that fails leaves the previous
/// chain, and its incrementals, as they were.
pub fn chain_slot(config: &IncrementalConfig, database: &str, backup_id: &str) -> String {
    let suffix: String = std::iter::once('_')
        .chain(backup_id.chars().map(slot_letter))
        .collect();
    let prefix: String = config
        .slot_for(database)
        .chars()
        .take(63usize.saturating_sub(suffix.len()))
        .collect();
    format!("{prefix}{suffix}")
}

/// Whether `name` is the slot of one of `database`'s chains: [`chain_slot`]'s form, or the
/// one slot named `[incremental] slot` that every chain shared before.
pub fn is_chain_slot(config: &IncrementalConfig, database: &str, name: &str) -> bool {
    let prefix = config.slot_for(database);
    if name == prefix {
        return true;
    }
    let short: String = prefix.chars().take(63 - ID_SUFFIX).collect();
    let Some(id) = name
        .strip_prefix(&short)
        .and_then(|rest| rest.strip_prefix('_'))
    else {
        return false;
    };
    let shape = id.char_indices().all(|(i, c)| match i {
        8 | 15 => c == '_',
        0..=14 => c.is_ascii_digit(),
        _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
    });
    id.len() == ID_SUFFIX - 1 && shape
}

/// The tables `publication` publishes every kind of change of (inserts, updates, deletes,
/// truncates), by `schema.name`, each with its [`Tracked::published`] stamp.
///
/// [`Tracked::published`]: crate::repository::manifest::Tracked::published
pub async fn published(client: &Client, publication: &str) -> Result<HashMap<String, String>> {
    let rows = client
        .query(
            "SELECT t.schemaname::text || '.' || t.tablename::text, \
               p.oid::text || ':' || p.xmin::text || ':' || \
               CASE WHEN p.puballtables THEN 'all' ELSE r.xmin::text END \
             FROM pg_publication p \
             JOIN pg_publication_tables t ON t.pubname = p.pubname \
             JOIN pg_namespace n ON n.nspname = t.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename \
             LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid AND r.prrelid = c.oid \
             WHERE p.pubname = $1 AND p.pubinsert AND p.pubupdate AND p.pubdelete AND p.pubtruncate",
            &[&publication],
        )
        .await
        .map_err(Error::db(format!("reading publication {publication}")))?;
    Ok(rows
        .iter()
        // A table published some other way (a schema in the publication) has no stamp.
        .filter_map(|row| Some((row.get(0), row.get::<_, Option<String>>(1)?)))
        .collect())
}

/// A chain about to start: the server checked, the publication set up, the previous chain's
/// slot left as it is (its pending changes are read first, see `reuse::watch`).
pub struct Preparing {
    client: Client,
    /// The new chain's slot, created by [`Preparing::start`].
    pub slot: String,
    pub publication: String,
    pub not_exact: Vec<NotExact>,
    /// What the publication published before it was re-created ([`published`]).
    pub published: HashMap<String, String>,
}

/// Prepares the chain the full backup `backup_id` starts: checks the server, drops the slots
/// of chains that never got a manifest (a full killed before its end) or were retired (all
/// but [`live_slot`] of `manifests`; None when the repository cannot be read: nothing is
/// dropped), and sets up the publication. [`Preparing::start`] then
/// creates the new chain's slot.
pub async fn prepare_chain(
    settings: &ConnectionSettings,
    config: &IncrementalConfig,
    backup_id: &str,
    manifests: Option<&[Manifest]>,
) -> Result<Preparing> {
    let database = settings.dbname.as_str();
    let client = open_checked(settings).await?;
    if let Some(manifests) = manifests {
        let live = live_slot(manifests, database);
        for slot in drop_chain_slots(&client, config, database, live).await? {
            tracing::warn!(
                "dropped replication slot {slot}: no backup continues its chain (a full backup stopped before its end, or a retired chain)"
            );
        }
    }
    let slot = chain_slot(config, database, backup_id);
    let publication = config.publication_for(database);
    let (tracked, not_exact) = not_exact(&client).await?;
    let published = published(&client, &publication).await?;
    publish(&client, &publication, &tracked, &published).await?;
    Ok(Preparing {
        client,
        slot,
        publication,
        not_exact,
        published,
    })
}

impl Preparing {
    /// Starts the chain: creates its slot (and holds [`STARTING`] on it until the full
    /// finishes), into `started` before the slot is created, so a full stopped while the
    /// server creates it (waiting for running transactions) still drops it. Call just before
    /// the full backup's snapshot: every transaction committed after the slot's consistent
    /// point is decoded, and the first incremental leaves out those the snapshot sees. The
    /// previous chain's slot stays until [`ChainStart::finished`].
    pub async fn start(self, started: &mut Option<ChainStart>) -> Result<()> {
        let Preparing {
            client,
            slot,
            not_exact,
            ..
        } = self;
        client
            .execute(
                "SELECT pg_advisory_lock($1, hashtext($2))",
                &[&STARTING, &slot],
            )
            .await
            .map_err(Error::db("marking the new chain's slot as starting"))?;
        let chain = started.insert(ChainStart {
            client,
            slot,
            consistent: None,
            not_exact,
        });
        chain.consistent = Some(create(&chain.client, &chain.slot, false).await?);
        Ok(())
    }
}

/// A new chain: its slot (once created, its consistent point) and the tables it cannot
/// follow. The session that creates the slot is kept until [`ChainStart::finished`].
pub struct ChainStart {
    client: Client,
    pub slot: String,
    consistent: Option<Lsn>,
    not_exact: Vec<NotExact>,
}

impl ChainStart {
    /// What the full records of the chain it starts, with its snapshot
    /// (`pg_current_snapshot()` text) and the catalog's fingerprint in it
    /// (`schema::fingerprint`): the chain begins and, for now, ends at the slot's consistent
    /// point.
    pub fn info(&self, snapshot: &str, fingerprint: &str) -> Result<IncrementalInfo> {
        let consistent = self.consistent.ok_or_else(|| {
            Error::Internal(format!("replication slot {} is not created yet", self.slot))
        })?;
        Ok(IncrementalInfo {
            slot: self.slot.clone(),
            start_lsn: consistent,
            end_lsn: consistent,
            first_commit: None,
            last_commit: None,
            transactions: 0,
            changes: Stream::default(),
            tables: Vec::new(),
            not_exact: self.not_exact.clone(),
            snapshot: Some(snapshot.to_string()),
            schema_changes: Vec::new(),
            schema_fingerprint: Some(fingerprint.to_string()),
        })
    }

    /// After the full backup: with its manifest durable (`succeeded`), the previous chains'
    /// slots are dropped (they hold WAL for nobody now); when it failed, its own slot is,
    /// and the previous chain goes on as it was (if the full stopped while the server was
    /// creating it, once the creation is done: the drop waits behind it on the same session).
    /// A failure here is only logged.
    pub async fn finished(self, config: &IncrementalConfig, database: &str, succeeded: bool) {
        let ChainStart { client, slot, .. } = self;
        let dropped = match succeeded {
            true => drop_chain_slots(&client, config, database, Some(&slot)).await,
            false => drop_slot(&client, &slot).await.map(|_| vec![slot.clone()]),
        };
        match (dropped, succeeded) {
            (Ok(slots), true) => {
                for old in slots {
                    tracing::info!("dropped replication slot {old}: its chain is retired");
                }
            }
            (Ok(_), false) => tracing::info!(
                "dropped replication slot {slot} of the failed full backup: the previous chain goes on"
            ),
            (Err(e), true) => tracing::warn!(
                "could not drop the previous chain's replication slot ({e}); the next full backup does"
            ),
            (Err(e), false) => tracing::warn!(
                "could not drop replication slot {slot} of the failed full backup ({e}); the next full backup does"
            ),
        }
    }
}

async fn drop_slot(client: &Client, slot: &str) -> Result<u64> {
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(Error::db(format!("dropping replication slot {slot}")))
}

/// Drops `database`'s chain slots (see [`is_chain_slot`]) other than `keep`, except one a
/// full backup is starting (it holds [`STARTING`]) or a session reads (an incremental
/// running: left for the next clean-up). Returns the slots dropped.
async fn drop_chain_slots(
    client: &Client,
    config: &IncrementalConfig,
    database: &str,
    keep: Option<&str>,
) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT slot_name::text FROM pg_replication_slots \
             WHERE database = current_database() AND slot_type = 'logical' AND NOT active",
            &[],
        )
        .await
        .map_err(Error::db("listing the replication slots"))?;
    let mut dropped = Vec::new();
    for row in rows {
        let slot: String = row.get(0);
        if Some(slot.as_str()) == keep || !is_chain_slot(config, database, &slot) {
            continue;
        }
        let free: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&STARTING, &slot],
            )
            .await
            .map_err(Error::db(
                "checking whether a full backup is starting a chain",
            ))?
            .get(0);
        if !free {
            continue;
        }
        let outcome = drop_slot(client, &slot).await;
        let _ = client
            .execute(
                "SELECT pg_advisory_unlock($1, hashtext($2))",
                &[&STARTING, &slot],
            )
            .await;
        match outcome {
            Ok(n) if n > 0 => dropped.push(slot),
            Ok(_) => {}
            // Taken by an incremental meanwhile: the next clean-up drops it.
            Err(e) => tracing::warn!("{e}"),
        }
    }
    Ok(dropped)
}

/// `database`'s chain slots on the server with their state (see [`is_chain_slot`]).
pub async fn chain_slots(
    client: &Client,
    config: &IncrementalConfig,
    database: &str,
) -> Result<Vec<(String, SlotState)>> {
    let rows = client
        .query(
            "SELECT slot_name::text FROM pg_replication_slots \
             WHERE database = current_database() ORDER BY 1",
            &[],
        )
        .await
        .map_err(Error::db("listing the replication slots"))?;
    let mut slots = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        if is_chain_slot(config, database, &name)
            && let Some(state) = state(client, &name).await?
        {
            slots.push((name, state));
        }
    }
    Ok(slots)
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
/// them (the slot stays where it is). The server decodes them all before the first row leaves
/// it, so an incremental streams instead ([`changes`]); the reuse proof peeks, as its bridge is
/// a temporary slot that only the session that made it can read.
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

/// A slot's changes before `end`, streamed over a replication connection as the server decodes
/// them (decoding and storing overlap). Nothing is consumed: the slot's confirmed position
/// moves only through [`ChangeStream::confirm`], once what was read is safe.
pub struct ChangeStream {
    stream: LogicalStream,
    slot: String,
    end: Lsn,
    done: bool,
}

/// Starts streaming `slot`'s changes from its confirmed position up to `end` through
/// `pgoutput` and `publication`, under the settings every Larder session uses (the values'
/// text depends on them).
pub async fn changes(
    settings: &ConnectionSettings,
    slot: &str,
    end: Lsn,
    publication: &str,
) -> Result<ChangeStream> {
    let connection = settings
        .connect_replication(session::SESSION_SETTINGS)
        .await?;
    let names = quote_ident(publication);
    let options = [
        ("proto_version", "1"),
        ("publication_names", names.as_str()),
    ];
    // 0/0: from where the slot is confirmed.
    let stream = connection
        .start_logical(slot, Lsn(0), &options)
        .await
        .map_err(|e| reading(slot, e))?;
    Ok(ChangeStream {
        stream,
        slot: slot.to_string(),
        end,
        done: false,
    })
}

fn reading(slot: &str, e: String) -> Error {
    Error::ChangeTracking(format!(
        "reading the changes of replication slot {slot}: {e}"
    ))
}

impl ChangeStream {
    /// The next `pgoutput` message of a transaction committed before the end; None once all
    /// are read. Transactions arrive in commit order, so the first one committed at or after
    /// the end, or a keepalive saying everything up to the end was decoded, ends the read.
    pub async fn next(&mut self) -> Result<Option<Message>> {
        while !self.done {
            match self
                .stream
                .next()
                .await
                .map_err(|e| reading(&self.slot, e))?
            {
                Event::Keepalive { wal_end, .. } if wal_end >= self.end => self.done = true,
                // Answering lets the server ping again the next time it has caught up.
                Event::Keepalive { .. } => self
                    .stream
                    .status(Lsn(0), None)
                    .await
                    .map_err(|e| reading(&self.slot, e))?,
                Event::Data { data, .. } => {
                    let message = pgoutput::parse(&data).map_err(|e| {
                        Error::ChangeTracking(format!(
                            "undecodable change from slot {}: {e}",
                            self.slot
                        ))
                    })?;
                    match message {
                        Message::Begin { final_lsn, .. } if final_lsn >= self.end => {
                            self.done = true
                        }
                        message => return Ok(Some(message)),
                    }
                }
            }
        }
        Ok(None)
    }

    /// Moves the slot's confirmed position to the end (the changes before it are in a durable
    /// backup) with a status update on the stream, which costs the server nothing, where
    /// `pg_replication_slot_advance` would decode the WAL again; then closes the stream and
    /// waits until the server has released the slot. Falls back to the advance when the update
    /// did not take.
    pub async fn confirm(mut self, client: &Client) -> Result<()> {
        let (slot, end) = (self.slot.clone(), self.end);
        let sent = self.stream.status(end, Some(end)).await;
        self.stream.close().await;
        let state = released(client, &slot, std::time::Duration::from_secs(10)).await?;
        if sent.is_ok() && state.as_ref().and_then(|s| s.confirmed) == Some(end) {
            return Ok(());
        }
        tracing::debug!("the status update did not confirm {end} to slot {slot}: advancing it");
        advance(client, &slot, end).await
    }
}

/// The slot's state once no session holds it (a closed stream's server process exits within
/// moments), or after `within` whatever it is.
pub async fn released(
    client: &Client,
    slot: &str,
    within: std::time::Duration,
) -> Result<Option<SlotState>> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let state = state(client, slot).await?;
        match &state {
            Some(s) if s.active && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await
            }
            _ => return Ok(state),
        }
    }
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

/// Where the capture ends: the WAL flushed after every transaction committed so far.
/// Decoding reads no further than the flushed WAL, so a commit not yet flushed
/// (`synchronous_commit = off`) would wait for the next incremental; a small logical message
/// committed with `synchronous_commit = on` flushes everything before it first.
pub async fn flushed_lsn(client: &Client) -> Result<Lsn> {
    client
        .batch_execute(
            "SET synchronous_commit = on; \
             SELECT pg_logical_emit_message(true, 'larder', 'incremental backup')",
        )
        .await
        .map_err(Error::db("flushing the WAL up to now"))?;
    let row = client
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .await
        .map_err(Error::db("reading the flushed WAL position"))?;
    parse_lsn(row.get(0))
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

/// The chain's newest backup of `database`: the parent of the next incremental.
pub fn chain_head<'a>(manifests: &'a [Manifest], database: &str) -> Option<&'a Manifest> {
    manifests
        .iter()
        .filter(|m| m.source.database == database && m.incremental.is_some())
        .max_by_key(|m| m.created_at)
}

/// The slot of `database`'s current chain (the one the next incremental reads), if any.
pub fn live_slot<'a>(manifests: &'a [Manifest], database: &str) -> Option<&'a str> {
    chain_head(manifests, database)
        .and_then(|m| m.incremental.as_ref())
        .map(|i| i.slot.as_str())
}

/// Drops every chain slot of `database` (tracking turned off), so no retired chain holds WAL
/// on the server. Returns the slots dropped.
pub async fn retire(
    settings: &ConnectionSettings,
    config: &IncrementalConfig,
) -> Result<Vec<String>> {
    let client = session::open(settings, "", "retiring change tracking").await?;
    drop_chain_slots(&client, config, &settings.dbname, None).await
}

/// After backups were deleted (`backup delete`, `backup prune`, the daemon's retention): with
/// change tracking on, drops the database's chain slots that no backup left continues (it
/// would keep WAL on the server for nobody). A failure is only logged: the deletion stands.
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
        Ok(slots) => {
            for slot in slots {
                tracing::warn!(
                    "no backup continues its chain: dropped replication slot {slot}; the next full backup starts a new chain"
                );
            }
        }
        Err(e) => {
            tracing::warn!("could not check the replication slots of incremental backups: {e}")
        }
    }
}

/// After backups were deleted: drops the database's chain slots other than the one of the
/// chain the newest backup left in `manifests` belongs to. Returns the slots dropped.
async fn retire_orphaned(
    settings: &ConnectionSettings,
    config: &IncrementalConfig,
    manifests: &[Manifest],
) -> Result<Vec<String>> {
    let client = session::open(settings, "", "retiring change tracking").await?;
    let live = live_slot(manifests, &settings.dbname);
    drop_chain_slots(&client, config, &settings.dbname, live).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chain_has_its_own_slot_named_after_its_full() {
        let config = IncrementalConfig::default();
        let slot = chain_slot(&config, "Shop-DB", "20261202-133500-ab12");
        assert_eq!(slot, "larder_shop_db_20261202_133500_ab12");
        assert!(is_chain_slot(&config, "Shop-DB", &slot));
        assert!(
            is_chain_slot(&config, "Shop-DB", "larder_shop_db"),
            "the shared slot of before"
        );
        for other in [
            "larder_shop_db_x",
            "larder_shop_db_20261202_133500_ab12_x",
            "larder_shop_db_2026120a_133500_ab12",
            "larder_reuse_4242",
            "larder_shop",
        ] {
            assert!(!is_chain_slot(&config, "Shop-DB", other), "{other}");
        }
        // A long name is cut so the id fits in 63 letters.
        let long = "d".repeat(80);
        let slot = chain_slot(&config, &long, "20261202-133500-ab12");
        assert_eq!(slot.len(), 63);
        assert!(slot.ends_with("_20261202_133500_ab12"), "{slot}");
        assert!(is_chain_slot(&config, &long, &slot));
        let named = IncrementalConfig {
            slot: Some("ops".into()),
            ..IncrementalConfig::default()
        };
        assert_eq!(
            chain_slot(&named, "x", "20261202-133500-0001"),
            "ops_20261202_133500_0001"
        );
    }
}
