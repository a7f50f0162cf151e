//! `backup create --type incremental`: the changes since the chain's last backup.
//!
//! Steps: find the chain's newest backup of this database (a full taken with tracking, or an
//! incremental) and check its slot (present, not invalidated, confirmed exactly where that
//! backup ended); check no tracked table changed shape since the chain's base and the large
//! objects are as the base holds them (decoding does not see them); note the current WAL
//! position as the end; stream the slot's changes up to it through `pgoutput` over a
//! replication connection, decoding and storing each as one JSON line through the chunker
//! while the server decodes the next (nothing is held but the current batch); read the
//! sequences; write the manifest; only then confirm the end to the slot. A failure or a kill
//! before the manifest leaves no backup and the slot where it was, so the next incremental
//! reads the same changes again: exactly once.

use super::pgoutput::{Decoder, Message, Relation};
use super::slot::{self, chain_head};
use super::{Visibility, reuse, schema};
use crate::engine::backup_run::{BackupOptions, reclaim_after_failure, stopped};
use crate::engine::interrupt::{CleanupGuard, interruptible};
use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::pg::catalog::{self, DataTable};
use crate::repository::changes::{Change, Lsn};
use crate::repository::chunker::RowChecksum;
use crate::repository::id::new_backup_id;
use crate::repository::lock::RepoLock;
use crate::repository::manifest::{
    BackupType, Chain, Digests, IncrementalInfo, Manifest, SourceInfo, TableChanges, TableEntry,
    quote_ident,
};
use crate::repository::stream::{BATCH_BYTES, Stored, StreamWriter, store_object_list};
use crate::repository::{ChunkIndex, Repository};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio_postgres::Client;

/// What to do about a broken chain.
const NEW_FULL: &str = "take a new full backup (`backup-cli backup create`) to start a new chain";

/// Takes an incremental backup of the database `settings` names into `repo`.
pub(crate) async fn take(
    settings: &ConnectionSettings,
    repo: &Repository,
    opts: &BackupOptions,
) -> Result<Manifest> {
    let created_at = Utc::now();
    let id = new_backup_id(created_at);
    let retain_until = opts.retain_until(created_at);
    let repo = &repo.clone().retaining(retain_until);
    let _undo = CleanupGuard::new();
    let client = slot::open_checked(settings).await?;
    let server = catalog::server_info(&client).await?;
    let manifests = repo.manifests().await?;
    let parent = chain_head(&manifests, &server.database).ok_or_else(|| {
        Error::ChangeTracking(format!(
            "no chain to add an incremental backup to: the repository has no full backup of {} taken with change tracking; \
             set [incremental] enabled = true and take a full backup first",
            server.database
        ))
    })?;
    let (parent_info, base) = match (&parent.incremental, &parent.chain) {
        (Some(info), Some(chain)) => (info, chain.base.clone()),
        (Some(info), None) => (info, parent.id.clone()),
        (None, _) => return Err(Error::Internal("chain head without tracking".into())),
    };
    let slot_name = parent_info.slot.clone();
    let start = check_slot(&client, &slot_name, parent, parent_info.end_lsn).await?;
    let current = catalog::data_tables(&client, server.block_size).await?;
    check_schema(&parent.tables, &current)?;
    let base_manifest = manifests.iter().find(|m| m.id == base).unwrap_or(parent);
    let publication = opts.incremental.publication_for(&server.database);
    check_tracked(&client, base_manifest, &publication).await?;
    check_large_objects(&client, base_manifest).await?;
    // Before the end: DDL committed after the schema is read is the next incremental's.
    let pg_dump = (opts.pg_dump.as_deref(), server.major());
    let current_schema = schema::read(&client, settings, pg_dump, repo, parent).await?;
    let end = slot::flushed_lsn(&client).await?;

    let lock = RepoLock::shared(repo, &id).await?;
    let outcome = async {
        let index = Arc::new(repo.chunk_index().await?);
        let reading = Reading {
            settings,
            slot: &slot_name,
            publication: &publication,
            end,
            schema: &parent.tables,
            // The chain's first incremental leaves out what the full's snapshot saw.
            skip: match &parent_info.snapshot {
                Some(text) => Some(Visibility::parse(text).map_err(Error::Repository)?),
                None => None,
            },
        };
        let (captured, changes) =
            interruptible(reading.capture(repo, index.clone(), opts.compression_level))
                .await
                .map_err(stopped(&id))?;
        let sequences = catalog::sequences(&client).await?;
        let tables = parent.tables.iter().map(schema_only).collect();
        let (schema_changes, schema_fingerprint) = (
            current_schema.changes.clone(),
            Some(current_schema.fingerprint.clone()),
        );
        let sections = current_schema
            .store(repo, index.clone(), opts.compression_level, parent)
            .await?;
        let manifest = Manifest {
            format: crate::repository::FORMAT_VERSION,
            id: id.clone(),
            name: opts
                .name
                .clone()
                .unwrap_or_else(|| format!("incremental-{}", created_at.format("%Y%m%d-%H%M%S"))),
            backup_type: BackupType::Incremental,
            created_at,
            completed_at: Utc::now(),
            tool_version: crate::TOOL_VERSION.to_string(),
            source: SourceInfo {
                server_version: server.version.clone(),
                server_version_num: server.version_num,
                database: server.database.clone(),
                encoding: server.encoding.clone(),
                snapshot_id: String::new(),
                snapshot_lsn: Some(end.to_string()),
                snapshot_xmin: String::new(),
                pg_dump_version: parent.source.pg_dump_version.clone(),
                locale: server.locale.clone(),
                qualified_data: true,
            },
            pre_data: sections.pre_data,
            post_data: sections.post_data,
            sequences,
            tables,
            object_list: None,
            table_chunks: Vec::new(),
            schemas: parent.schemas.clone(),
            extensions: parent.extensions.clone(),
            roles: parent.roles.clone(),
            foreign_keys: parent.foreign_keys.clone(),
            large_objects: None,
            database_properties: parent.database_properties.clone(),
            globals: parent.globals.clone(),
            new_bytes: captured.stored.new_bytes + sections.new_bytes,
            compression_level: opts.compression_level,
            digests: None,
            validators: Vec::new(),
            schedule: opts.schedule.clone(),
            retain_until,
            chain: Some(Chain {
                parent: parent.id.clone(),
                base: base.clone(),
            }),
            incremental: Some(IncrementalInfo {
                slot: slot_name.clone(),
                start_lsn: start,
                end_lsn: end,
                first_commit: captured.first_commit,
                last_commit: captured.last_commit,
                transactions: captured.transactions,
                changes: captured.stored.stream,
                tables: captured.tables.into_values().collect(),
                not_exact: parent_info.not_exact.clone(),
                snapshot: None,
                schema_changes,
                schema_fingerprint,
            }),
            signature: None,
        };
        let digests = parent.digests.as_ref().map(|d| {
            let (pre_data, post_data) = sections
                .digests
                .clone()
                .unwrap_or_else(|| (d.pre_data.clone(), d.post_data.clone()));
            Digests {
                pre_data,
                post_data,
                tables: manifest.tables_digest(),
            }
        });
        let manifest = Manifest {
            digests,
            ..manifest
        };
        let manifest = match store_object_list(
            repo,
            index,
            opts.compression_level,
            (&manifest.tables, &manifest.sequences),
        )
        .await? {
            Some(list) => Manifest {
                new_bytes: manifest.new_bytes + list.new_bytes,
                ..manifest.with_object_list(list.stream)
            },
            None => manifest,
        };
        // Another incremental of this chain finished meanwhile: two with one parent would
        // hold the same changes twice.
        if chain_head(&repo.manifests().await?, &server.database).map(|m| &m.id) != Some(&parent.id) {
            return Err(Error::ChangeTracking(format!(
                "another incremental backup of this chain finished while this one ran (both after {}); this one is discarded, nothing is lost",
                parent.id
            )));
        }
        Ok((repo.write_manifest(&manifest).await?, changes))
    }
    .await;
    match lock.release_with(outcome).await {
        Ok((manifest, changes)) => {
            // The manifest is durable: now, and only now, the slot may forget these changes.
            // If this fails, the next incremental advances it to this one's end first.
            if let Err(e) = changes.confirm(&client).await {
                tracing::warn!(
                    "backup {} is complete, but replication slot {slot_name} could not be advanced yet ({e}); the next incremental does it",
                    manifest.id
                );
            }
            Ok(manifest)
        }
        Err(e) => {
            reclaim_after_failure(repo, &id).await;
            Err(e)
        }
    }
}

/// A table entry with the schema and no rows: an incremental carries its chain's schema.
fn schema_only(table: &TableEntry) -> TableEntry {
    TableEntry {
        rows: 0,
        logical_bytes: 0,
        checksum: RowChecksum::default().encode(),
        parts: Vec::new(),
        tracked: None,
        ..table.clone()
    }
}

/// Checks the slot can continue the chain from `parent`, which ended at `parent_end`, and
/// returns where this incremental starts.
async fn check_slot(
    client: &Client,
    slot_name: &str,
    parent: &Manifest,
    parent_end: Lsn,
) -> Result<Lsn> {
    let state = slot::state(client, slot_name).await?.ok_or_else(|| {
        Error::ChangeTracking(format!(
            "the chain's replication slot {slot_name} does not exist on the server (dropped?), so the changes since backup {} are lost to the chain; {NEW_FULL}",
            parent.id
        ))
    })?;
    if state.wal_status.as_deref() == Some("lost") {
        return Err(Error::ChangeTracking(format!(
            "the chain's replication slot {slot_name} was invalidated by PostgreSQL (wal_status = lost: it retained more WAL than max_slot_wal_keep_size allows), \
             so the changes since backup {} cannot be read; the chain is broken: {NEW_FULL}",
            parent.id
        )));
    }
    // A stream just closed (an incremental killed a moment ago) releases it within moments.
    let state = if state.active {
        slot::released(client, slot_name, std::time::Duration::from_secs(2))
            .await?
            .unwrap_or(state)
    } else {
        state
    };
    if state.active {
        return Err(Error::ChangeTracking(format!(
            "replication slot {slot_name} is in use by another session (another incremental backup running?); try again when it is done"
        )));
    }
    match state.confirmed {
        Some(confirmed) if confirmed == parent_end => Ok(parent_end),
        // The parent's manifest was written but the slot not advanced (killed in between).
        Some(confirmed) if confirmed < parent_end => {
            slot::advance(client, slot_name, parent_end).await?;
            Ok(parent_end)
        }
        confirmed => Err(Error::ChangeTracking(format!(
            "replication slot {slot_name} is at {}, past where the chain's last backup {} ended ({parent_end}): \
             it was re-created or advanced outside this chain, and changes in between are not in it; {NEW_FULL}",
            confirmed.map_or_else(|| "no position".to_string(), |c| c.to_string()),
            parent.id
        ))),
    }
}

/// Refuses when a table was added, dropped or changed columns since the chain's base.
fn check_schema(chain: &[TableEntry], current: &[DataTable]) -> Result<()> {
    let before: BTreeMap<String, (&[String], &[String])> = chain
        .iter()
        .map(|t| {
            (
                t.display_name(),
                (t.columns.as_slice(), t.column_types.as_slice()),
            )
        })
        .collect();
    let now: BTreeMap<String, (&[String], &[String])> = current
        .iter()
        .map(|t| {
            (
                format!("{}.{}", t.schema, t.name),
                (t.columns.as_slice(), t.column_types.as_slice()),
            )
        })
        .collect();
    for (name, (columns, types)) in &now {
        match before.get(name) {
            None => return Err(ddl(name, "was created")),
            Some((c, t)) if c != columns || (!t.is_empty() && t != types) => {
                return Err(ddl(
                    name,
                    &format!(
                        "now has columns ({}) of types ({}), where the chain has ({}) of types ({})",
                        columns.join(", "),
                        types.join(", "),
                        c.join(", "),
                        t.join(", ")
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(name) = before.keys().find(|name| !now.contains_key(*name)) {
        return Err(ddl(name, "was dropped"));
    }
    Ok(())
}

/// Refuses when DDL the comparison of columns cannot see touched a table the chain's full
/// tracked: its columns or replica identity were altered (a column dropped and added again
/// under its name, retyped in place with `USING`, a replica identity set), it was dropped and
/// created again, or the publication no longer publishes it as at the full (`ALTER
/// PUBLICATION`: changes since may be missing).
async fn check_tracked(client: &Client, base: &Manifest, publication: &str) -> Result<()> {
    let now = reuse::relations(client, publication).await?;
    let inexact: HashSet<&str> = base
        .incremental
        .iter()
        .flat_map(|i| &i.not_exact)
        .map(|n| n.table.as_str())
        .collect();
    for entry in &base.tables {
        let name = entry.display_name();
        let Some(then) = &entry.tracked else {
            continue;
        };
        if inexact.contains(name.as_str()) {
            continue;
        }
        let Some(rel) = now.get(&name) else {
            return Err(ddl(&name, "was dropped"));
        };
        if then.relation.split(':').next() != Some(rel.oid.to_string().as_str()) {
            return Err(ddl(&name, "was dropped and created again"));
        }
        if then.shape.as_ref().is_some_and(|shape| *shape != rel.shape) {
            return Err(ddl(
                &name,
                "had its columns or replica identity altered (ALTER TABLE … ADD/DROP/ALTER/RENAME COLUMN, a column's default added or dropped, \
                 its privileges or NOT NULL changed, REPLICA IDENTITY, …)",
            ));
        }
        if then.published.is_some() && then.published != rel.published {
            return Err(ddl(
                &name,
                &format!(
                    "is no longer published by publication {publication} as it was (ALTER PUBLICATION, or the publication re-created: changes to it may be missing)"
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses when the large objects are not as the chain's full backup holds them: logical
/// decoding does not see them, so a chain restores them as its base full holds them (the
/// check re-reads their content when their number and size are unchanged).
async fn check_large_objects(client: &Client, base: &Manifest) -> Result<()> {
    let (oids, bytes) = catalog::large_objects(client, None).await?;
    let bytes = bytes.max(0) as u64;
    let unchanged = match &base.large_objects {
        None => oids.is_empty(),
        Some(lo) if lo.oids != oids || lo.content_bytes != bytes => false,
        Some(lo) => {
            let sum = catalog::large_object_checksum(client, &oids).await?;
            sum.encode() == lo.data.checksum && sum.rows == lo.data.rows
        }
    };
    if unchanged {
        return Ok(());
    }
    let then = base
        .large_objects
        .as_ref()
        .map_or((0, 0), |lo| (lo.oids.len(), lo.content_bytes));
    Err(Error::ChangeTracking(format!(
        "the large objects changed since the chain's full backup {} ({} with {} byte(s) there, {} with {bytes} byte(s) now): \
         incremental backups do not carry large objects (logical decoding does not see them), and a chain restores them \
         as its full backup holds them; {NEW_FULL}",
        base.id,
        then.0,
        then.1,
        oids.len()
    )))
}

fn ddl(table: &str, what: &str) -> Error {
    Error::ChangeTracking(format!(
        "table {table} {what} since the chain's full backup: incremental backups do not carry DDL; {NEW_FULL}"
    ))
}

/// One capture's inputs.
struct Reading<'a> {
    settings: &'a ConnectionSettings,
    slot: &'a str,
    publication: &'a str,
    end: Lsn,
    /// The chain's tables, whose columns each Relation message must match.
    schema: &'a [TableEntry],
    /// Transactions to leave out (those the chain's full already holds).
    skip: Option<Visibility>,
}

/// What a capture stored and counted.
struct Captured {
    stored: Stored,
    transactions: u64,
    first_commit: Option<DateTime<Utc>>,
    last_commit: Option<DateTime<Utc>>,
    tables: BTreeMap<String, TableChanges>,
}

impl Reading<'_> {
    async fn capture(
        &self,
        repo: &Repository,
        index: Arc<ChunkIndex>,
        level: i32,
    ) -> Result<(Captured, slot::ChangeStream)> {
        let mut changes =
            slot::changes(self.settings, self.slot, self.end, self.publication).await?;
        let writer = StreamWriter::start(repo.clone(), index, level, Box::new(|_, _| {}));
        let mut state = Capture::new(self);
        let mut batch = Vec::with_capacity(BATCH_BYTES + 4096);
        while let Some(message) = changes.next().await? {
            if let Some(change) = state.take(message)? {
                batch.extend_from_slice(&change.to_line());
                if batch.len() >= BATCH_BYTES {
                    let full =
                        std::mem::replace(&mut batch, Vec::with_capacity(BATCH_BYTES + 4096));
                    if writer.send(vec![Bytes::from(full)]).await.is_err() {
                        return Err(writer.abort().await);
                    }
                }
            }
        }
        if !batch.is_empty() && writer.send(vec![Bytes::from(batch)]).await.is_err() {
            return Err(writer.abort().await);
        }
        let stored = writer.finish().await?;
        let captured = Captured {
            stored,
            transactions: state.transactions,
            first_commit: state.first_commit,
            last_commit: state.last_commit,
            tables: state.tables,
        };
        Ok((captured, changes))
    }
}

/// The decoding state of one capture.
struct Capture<'a> {
    reading: &'a Reading<'a>,
    decoder: Decoder,
    /// Relations whose columns were checked against the chain since their last description.
    checked: HashSet<u32>,
    columns: HashMap<String, &'a [String]>,
    /// Inside a transaction the full already holds.
    skipping: bool,
    transactions: u64,
    first_commit: Option<DateTime<Utc>>,
    last_commit: Option<DateTime<Utc>>,
    tables: BTreeMap<String, TableChanges>,
}

impl<'a> Capture<'a> {
    fn new(reading: &'a Reading<'a>) -> Capture<'a> {
        Capture {
            reading,
            decoder: Decoder::default(),
            checked: HashSet::new(),
            columns: reading
                .schema
                .iter()
                .map(|t| (t.display_name(), t.columns.as_slice()))
                .collect(),
            skipping: false,
            transactions: 0,
            first_commit: None,
            last_commit: None,
            tables: BTreeMap::new(),
        }
    }

    /// The change record to store for a message, if any.
    fn take(&mut self, message: Message) -> Result<Option<Change>> {
        match &message {
            Message::Begin {
                xid, commit_time, ..
            } => {
                self.skipping = self.reading.skip.as_ref().is_some_and(|v| v.sees(*xid));
                if !self.skipping {
                    self.first_commit.get_or_insert(*commit_time);
                    self.last_commit = Some(*commit_time);
                }
            }
            Message::Relation(relation) => {
                self.checked.remove(&relation.oid);
            }
            Message::Insert { relation, .. }
            | Message::Update { relation, .. }
            | Message::Delete { relation, .. } => {
                if !self.skipping {
                    self.check(*relation)?;
                }
            }
            Message::Truncate { relations, .. } => {
                if !self.skipping {
                    for relation in relations {
                        self.check(*relation)?;
                    }
                }
            }
            Message::Commit { .. } | Message::Ignored => {}
        }
        let is_relation = matches!(message, Message::Relation(_));
        let change = self.decoder.change(message).map_err(|e| {
            Error::ChangeTracking(format!(
                "undecodable change from slot {}: {e}",
                self.reading.slot
            ))
        })?;
        if self.skipping && !is_relation {
            return Ok(None);
        }
        if let Some(change) = &change {
            self.count(change);
        }
        Ok(change)
    }

    /// The relation's columns are the chain's: else a DDL happened mid-chain.
    fn check(&mut self, oid: u32) -> Result<()> {
        if self.checked.contains(&oid) {
            return Ok(());
        }
        let relation: &Relation = self
            .decoder
            .relation(oid)
            .map_err(|e| Error::ChangeTracking(format!("undecodable change: {e}")))?;
        let name = relation.display_name();
        let columns: Vec<String> = relation
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        match self.columns.get(&name) {
            None => {
                return Err(ddl(
                    &name,
                    "has changes but is not in the chain (created after its full backup)",
                ));
            }
            Some(chain) if *chain != columns.as_slice() => {
                return Err(ddl(
                    &name,
                    &format!(
                        "changed columns to ({}) where the chain has ({})",
                        columns.join(", "),
                        chain.join(", ")
                    ),
                ));
            }
            Some(_) => {}
        }
        self.checked.insert(oid);
        Ok(())
    }

    fn count(&mut self, change: &Change) {
        let tables = &mut self.tables;
        let mut add = |table: &str, counter: fn(&mut TableChanges) -> &mut u64| {
            let entry = tables
                .entry(table.to_string())
                .or_insert_with(|| TableChanges {
                    table: table.to_string(),
                    ..TableChanges::default()
                });
            *counter(entry) += 1;
        };
        match change {
            Change::Insert { table, .. } => add(table, |t| &mut t.inserts),
            Change::Update { table, .. } => add(table, |t| &mut t.updates),
            Change::Delete { table, .. } => add(table, |t| &mut t.deletes),
            Change::Truncate { tables, .. } => {
                for table in tables {
                    add(table, |t| &mut t.truncates);
                }
            }
            Change::Commit { .. } => self.transactions += 1,
            Change::Begin { .. } | Change::Schema { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, columns: &[&str]) -> TableEntry {
        TableEntry {
            schema: "public".into(),
            name: name.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            column_types: columns.iter().map(|_| "text".to_string()).collect(),
            partition_of: None,
            filter: None,
            rows: 5,
            logical_bytes: 50,
            checksum: "x".into(),
            parts: Vec::new(),
            tracked: None,
        }
    }

    fn table(name: &str, columns: &[&str]) -> DataTable {
        DataTable {
            schema: "public".into(),
            name: name.into(),
            filter: None,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            column_types: columns.iter().map(|_| "text".to_string()).collect(),
            partition_of: None,
            bytes: 0,
            pages: 0,
        }
    }

    #[test]
    fn ddl_since_the_chains_full_is_refused_with_what_changed() {
        let chain = [entry("a", &["id", "v"]), entry("b", &["id"])];
        check_schema(&chain, &[table("a", &["id", "v"]), table("b", &["id"])]).unwrap();
        let e = check_schema(
            &chain,
            &[table("a", &["id", "v", "w"]), table("b", &["id"])],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("public.a now has columns (id, v, w)"), "{e}");
        assert!(e.contains("take a new full backup"), "{e}");
        let e = check_schema(&chain, &[table("a", &["id", "v"])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("public.b was dropped"), "{e}");
        let e = check_schema(
            &chain,
            &[
                table("a", &["id", "v"]),
                table("b", &["id"]),
                table("c", &["x"]),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("public.c was created"), "{e}");
    }

    #[test]
    fn an_incremental_carries_the_schema_without_rows() {
        let t = schema_only(&entry("a", &["id"]));
        assert_eq!((t.rows, t.logical_bytes, t.parts.len()), (0, 0, 0));
        assert_eq!(t.columns, ["id"]);
        assert_eq!(t.checksum, RowChecksum::default().encode());
    }
}
