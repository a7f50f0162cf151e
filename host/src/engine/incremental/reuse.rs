//! A full backup that costs what changed: with change tracking on, a full reuses the entry
//! (chunk lists, row count, checksum) of every table the change stream proves unchanged since
//! the snapshot that read it, and reads only the other tables.
//!
//! The proof covers the whole interval, with no gap, from the chain's base full (whose
//! snapshot the entries hold) to the new full's snapshot:
//! - the chain's incrementals recorded no change to the table;
//! - the previous chain's slot's pending changes (after the chain's last backup) hold none:
//!   read before the new chain's slot is created (the previous slot is dropped only once
//!   the new full is durable);
//! - a temporary "bridge" slot, created before that read, covers what commits from then on:
//!   of its transactions, those the new snapshot sees hold none;
//! - the table is the same relation with no DDL since ([`Tracked::relation`]), with the same
//!   columns, types and filter, and was published throughout ([`Tracked::published`]: by
//!   the same publication entry from the chain's full until this full re-creates it, and by
//!   the new one), with every kind of change (inserts, updates, deletes and TRUNCATE);
//! - every chunk of the entry is in the repository as the backup's chunk index sees it under
//!   its shared lock (garbage collection, under the exclusive lock, cannot remove them before
//!   the new manifest refers to them).
//!
//! Statistics counters are never evidence. Whatever is uncertain (a link of the chain
//! missing, the slot not where the chain left it, an error while reading it) reads the table.

use super::Visibility;
use super::pgoutput::{self, Message};
use super::slot::{self, Preparing, chain_head};
use crate::error::{Error, Result};
use crate::pg::catalog::DataTable;
use crate::pg::{ConnectionSettings, session};
use crate::repository::changes::Lsn;
use crate::repository::manifest::{BackupType, Manifest, TableEntry, Tracked};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use tokio_postgres::Client;

/// A table as the new full's snapshot sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// See [`Tracked::relation`].
    pub stamp: String,
    /// See [`Tracked::published`]; None when the chain's publication does not publish it.
    pub published: Option<String>,
    /// See [`Tracked::shape`].
    pub shape: String,
}

impl Relation {
    /// What a full records of the table for the next backups of its chain.
    pub fn tracked(&self, reused_from: Option<String>) -> Tracked {
        Tracked {
            relation: self.stamp.clone(),
            published: self.published.clone(),
            shape: Some(self.shape.clone()),
            reused_from,
        }
    }
}

/// The tables of the snapshot by `schema.name`.
pub type Relations = HashMap<String, Relation>;

/// Reads every table's identity and whether its changes are published, inside the snapshot.
pub async fn relations(client: &Client, publication: &str) -> Result<Relations> {
    let mut published = slot::published(client, publication).await?;
    let rows = client
        .query(
            "SELECT n.nspname::text || '.' || c.relname::text, c.oid::int8, c.xmin::text, \
               c.relreplident::text || ':' || coalesce((SELECT min(i.indexrelid::int8)::text FROM pg_index i \
                 WHERE i.indrelid = c.oid AND (i.indisreplident OR (c.relreplident = 'd' AND i.indisprimary))), '') \
               || '|' || coalesce((SELECT string_agg(a.attnum || ':' || a.attname || ':' || a.atttypid::int8 || ':' \
                 || a.atttypmod || ':' || a.xmin::text, ',' ORDER BY a.attnum) FROM pg_attribute a \
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'",
            &[],
        )
        .await
        .map_err(Error::db(
            "reading the tables' identity for change tracking",
        ))?;
    Ok(rows
        .iter()
        .map(|row| {
            let (name, oid, xmin, shape): (String, i64, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let relation = Relation {
                oid: oid as u32,
                stamp: format!("{oid}:{xmin}"),
                published: published.remove(&name),
                shape,
            };
            (name, relation)
        })
        .collect())
}

/// The evidence gathered before the new chain starts; the bridge slot goes on watching
/// until [`Watch::finish`].
pub struct Watch {
    /// The session that owns the bridge slot (a temporary slot dies with it).
    client: Client,
    bridge: String,
    publication: String,
    evidence: Evidence,
}

/// What the proof rests on: the chain's base full, and what changed since its snapshot.
#[derive(Debug)]
pub struct Evidence {
    base: Manifest,
    /// Tables (`schema.name`) the chain's incrementals hold changes of.
    changed: HashSet<String>,
    /// Relations (OIDs) changed in what the slots held.
    touched: HashSet<u32>,
    /// The publication's stamps as the chain left it, before this full re-created it.
    published: HashMap<String, String>,
}

/// Starts the proof for the full about to start the chain `preparing` describes. None
/// (every table is read) when there is no chain yet or the evidence is incomplete; why is
/// logged.
pub async fn watch(
    settings: &ConnectionSettings,
    preparing: &Preparing,
    manifests: &[Manifest],
) -> Option<Watch> {
    match gather(settings, preparing, manifests).await {
        Ok(watch) => watch,
        Err(why) => {
            tracing::warn!("every table is read, none reused from the previous backup: {why}");
            None
        }
    }
}

async fn gather(
    settings: &ConnectionSettings,
    preparing: &Preparing,
    manifests: &[Manifest],
) -> Result<Option<Watch>> {
    let Some(head) = chain_head(manifests, &settings.dbname) else {
        return Ok(None);
    };
    let (base, changed) = chain_since_base(manifests, head).map_err(uncertain)?;
    let Some(info) = &head.incremental else {
        return Ok(None);
    };
    let client = session::open(settings, "", "reading what changed since the last backup").await?;
    let state = slot::state(&client, &info.slot).await?;
    match state.as_ref().and_then(|s| s.confirmed) {
        Some(confirmed) if confirmed <= info.end_lsn => {}
        _ => {
            return Err(uncertain(format!(
                "replication slot {} is not where backup {} left it (missing, or advanced outside the chain)",
                info.slot, head.id
            )));
        }
    }
    if state.as_ref().and_then(|s| s.wal_status.as_deref()) == Some("lost") {
        return Err(uncertain(format!(
            "replication slot {} was invalidated by PostgreSQL",
            info.slot
        )));
    }
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(Error::db("reading the session's process id"))?
        .get(0);
    let bridge = format!("larder_reuse_{pid}");
    let from = slot::create(&client, &bridge, true).await?;
    let upto = slot::flushed_lsn(&client).await?;
    if from > upto {
        return Err(uncertain(format!(
            "the bridge slot starts at {from}, after the WAL flushed ({upto})"
        )));
    }
    // The chain's first incremental leaves out what its full's snapshot saw: so does this.
    let skip = match (&head.chain, &info.snapshot) {
        (None, Some(text)) => Some(Visibility::parse(text).map_err(uncertain)?),
        _ => None,
    };
    let mut evidence = Evidence {
        base: base.clone(),
        changed,
        touched: HashSet::new(),
        published: preparing.published.clone(),
    };
    let counted = |xid: u32| skip.as_ref().is_none_or(|s| !s.sees(xid));
    touched(
        &client,
        &info.slot,
        upto,
        &preparing.publication,
        counted,
        &mut evidence.touched,
    )
    .await?;
    Ok(Some(Watch {
        client,
        bridge,
        publication: preparing.publication.clone(),
        evidence,
    }))
}

impl Watch {
    /// Completes the proof once the new full's snapshot (`pg_current_snapshot()` text) is
    /// taken: adds what the bridge slot saw of the transactions that snapshot sees, then
    /// drops the bridge. None (every table is read) on any error, logged.
    pub async fn finish(self, snapshot: &str) -> Option<Evidence> {
        let Watch {
            client,
            bridge,
            publication,
            mut evidence,
        } = self;
        let done = async {
            let sees = Visibility::parse(snapshot).map_err(uncertain)?;
            // Every transaction the snapshot sees committed before this flush.
            let upto = slot::flushed_lsn(&client).await?;
            touched(
                &client,
                &bridge,
                upto,
                &publication,
                |xid| sees.sees(xid),
                &mut evidence.touched,
            )
            .await
        }
        .await;
        // The session's end drops it too; dropping it now frees the WAL it holds sooner.
        let _ = client
            .execute("SELECT pg_drop_replication_slot($1)", &[&bridge])
            .await;
        match done {
            Ok(()) => Some(evidence),
            Err(why) => {
                tracing::warn!("every table is read, none reused from the previous backup: {why}");
                None
            }
        }
    }
}

impl Evidence {
    /// The base full's entries to reuse, by `schema.name`, for the tables of the new
    /// snapshot the evidence proves unchanged; `stored` says whether a chunk is in the
    /// repository.
    pub fn entries(
        &self,
        tables: &[DataTable],
        relations: &Relations,
        stored: impl Fn(&str) -> bool,
    ) -> HashMap<String, TableEntry> {
        let inexact: HashSet<&str> = self
            .base
            .incremental
            .iter()
            .flat_map(|i| &i.not_exact)
            .map(|n| n.table.as_str())
            .collect();
        let before: HashMap<String, &TableEntry> = self
            .base
            .tables
            .iter()
            .map(|t| (t.display_name(), t))
            .collect();
        let mut out = HashMap::new();
        for table in tables {
            let name = table.display_name();
            let (Some(now), Some(entry)) = (relations.get(&name), before.get(&name)) else {
                continue;
            };
            let Some(tracked) = &entry.tracked else {
                continue;
            };
            // Published throughout: as the chain's full left it until this full re-created
            // it (same publication, same entry for the table), and in the new one.
            let published = now.published.is_some()
                && tracked.published.is_some()
                && tracked.published.as_ref() == self.published.get(&name);
            let unchanged = published
                && tracked.relation == now.stamp
                && !self.changed.contains(&name)
                && !self.touched.contains(&now.oid)
                && !inexact.contains(name.as_str());
            let same_shape = entry.columns == table.columns
                && entry.column_types == table.column_types
                && entry.filter == table.filter
                && entry.partition_of == table.partition_of;
            let present = !entry.parts.is_empty()
                && entry
                    .parts
                    .iter()
                    .flat_map(|p| &p.chunks)
                    .all(|c| stored(&c.id));
            if unchanged && same_shape && present {
                let reused = TableEntry {
                    tracked: Some(
                        now.tracked(Some(
                            tracked
                                .reused_from
                                .clone()
                                .unwrap_or_else(|| self.base.id.clone()),
                        )),
                    ),
                    ..(*entry).clone()
                };
                out.insert(name, reused);
            }
        }
        out
    }
}

fn uncertain(why: impl Into<String>) -> Error {
    Error::ChangeTracking(why.into())
}

/// The chain's base full and the tables its incrementals changed, walking from `head` back
/// through each parent; an error when a link is missing or does not belong to the chain.
fn chain_since_base<'a>(
    manifests: &'a [Manifest],
    head: &'a Manifest,
) -> std::result::Result<(&'a Manifest, HashSet<String>), String> {
    let mut changed = HashSet::new();
    let mut link = head;
    let mut bases = HashSet::new();
    let mut steps = 0;
    while let Some(chain) = &link.chain {
        let info = link
            .incremental
            .as_ref()
            .ok_or_else(|| format!("backup {} has a chain but no changes", link.id))?;
        changed.extend(info.tables.iter().map(|t| t.table.clone()));
        bases.insert(chain.base.as_str());
        // More steps than manifests: the parents go round in a circle.
        steps += 1;
        if steps > manifests.len() {
            return Err(format!("the chain of backup {} loops", head.id));
        }
        link = manifests
            .iter()
            .find(|m| m.id == chain.parent)
            .ok_or_else(|| {
                format!(
                    "backup {}, a link of the chain of backup {}, is missing",
                    chain.parent, head.id
                )
            })?;
    }
    let base_ok = link.backup_type == BackupType::Full
        && link.chain.is_none()
        && link.incremental.is_some()
        && bases.iter().all(|b| *b == link.id);
    if !base_ok {
        return Err(format!(
            "backup {} is not the full backup the chain of backup {} starts from",
            link.id, head.id
        ));
    }
    Ok((link, changed))
}

/// Adds to `touched` the relations changed by the transactions `counted` (by xid) among those
/// `slot` holds up to `end`.
async fn touched(
    client: &Client,
    slot_name: &str,
    end: Lsn,
    publication: &str,
    counted: impl Fn(u32) -> bool,
    touched: &mut HashSet<u32>,
) -> Result<()> {
    let rows = slot::peek(client, slot_name, end, publication).await?;
    let mut rows = std::pin::pin!(rows);
    let mut counting = true;
    while let Some(row) = rows.next().await {
        let row = row.map_err(Error::db(format!(
            "reading the changes of replication slot {slot_name}"
        )))?;
        let data: &[u8] = row.get(0);
        let message = pgoutput::parse(data).map_err(|e| {
            Error::ChangeTracking(format!("undecodable change from slot {slot_name}: {e}"))
        })?;
        match message {
            Message::Begin { xid, .. } => counting = counted(xid),
            Message::Insert { relation, .. }
            | Message::Update { relation, .. }
            | Message::Delete { relation, .. } => {
                if counting {
                    touched.insert(relation);
                }
            }
            Message::Truncate { relations, .. } => {
                if counting {
                    touched.extend(relations);
                }
            }
            Message::Commit { .. } | Message::Relation(_) | Message::Ignored => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::manifest::{
        Chain, ChunkRef, IncrementalInfo, NotExact, Stream, TableChanges, sample_manifest,
    };

    const PUBLISHED: &str = "16500:650:650";
    const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

    /// The publication as the chain left it: table h was removed from it and added again.
    fn published_before() -> HashMap<String, String> {
        NAMES
            .iter()
            .map(|n| {
                let stamp = if *n == "h" {
                    "16500:650:800"
                } else {
                    PUBLISHED
                };
                (format!("public.{n}"), stamp.to_string())
            })
            .collect()
    }

    fn tracking() -> IncrementalInfo {
        IncrementalInfo {
            slot: "larder_app".into(),
            start_lsn: Lsn(100),
            end_lsn: Lsn(100),
            first_commit: None,
            last_commit: None,
            transactions: 0,
            changes: Stream::default(),
            tables: Vec::new(),
            not_exact: Vec::new(),
            snapshot: Some("10:10:".into()),
            schema_changes: Vec::new(),
            schema_fingerprint: None,
        }
    }

    fn entry(name: &str, oid: u32, chunk: &str) -> TableEntry {
        TableEntry {
            schema: "public".into(),
            name: name.into(),
            columns: vec!["id".into()],
            column_types: vec!["integer".into()],
            partition_of: None,
            filter: None,
            rows: 3,
            logical_bytes: 6,
            checksum: "sum".into(),
            parts: vec![Stream {
                rows: 3,
                bytes: 6,
                checksum: "sum".into(),
                chunks: vec![ChunkRef {
                    id: chunk.into(),
                    len: 6,
                    stored: 5,
                }],
                skip: None,
            }],
            tracked: Some(Tracked {
                relation: format!("{oid}:700"),
                published: Some(PUBLISHED.into()),
                shape: Some("d:1|1:id:23:-1:700".into()),
                reused_from: None,
            }),
        }
    }

    fn table(name: &str) -> DataTable {
        DataTable {
            schema: "public".into(),
            name: name.into(),
            filter: None,
            columns: vec!["id".into()],
            column_types: vec!["integer".into()],
            partition_of: None,
            bytes: 8192,
            pages: 1,
        }
    }

    fn full() -> Manifest {
        let mut m = sample_manifest("20260101-000000-000");
        m.incremental = Some(tracking());
        m.tables = NAMES
            .iter()
            .zip(1..)
            .map(|(name, oid)| entry(name, oid, &format!("chunk{name}")))
            .collect();
        m.tables[6].tracked = None; // taken before identities were recorded
        m
    }

    fn incremental(id: &str, parent: &str, base: &str, changed: &[&str]) -> Manifest {
        let mut m = sample_manifest(id);
        m.backup_type = BackupType::Incremental;
        m.chain = Some(Chain {
            parent: parent.into(),
            base: base.into(),
        });
        m.incremental = Some(IncrementalInfo {
            tables: changed
                .iter()
                .map(|t| TableChanges {
                    table: t.to_string(),
                    updates: 1,
                    ..TableChanges::default()
                })
                .collect(),
            snapshot: None,
            schema_changes: Vec::new(),
            schema_fingerprint: None,
            ..tracking()
        });
        m
    }

    #[test]
    fn only_tables_unchanged_and_of_the_same_shape_and_identity_are_reused() {
        let mut base = full();
        if let Some(info) = &mut base.incremental {
            info.not_exact.push(NotExact {
                table: "public.e".into(),
                reason: "no key".into(),
                fix: "…".into(),
            });
        }
        // b changed in an incremental, c in what the slots held, d had DDL (another pg_class
        // row), e cannot be followed, f is not in the new publication, g has no identity
        // recorded, h left the publication meanwhile; "new" was created since.
        let evidence = Evidence {
            base,
            changed: HashSet::from(["public.b".to_string()]),
            touched: HashSet::from([3]),
            published: published_before(),
        };
        let relations: Relations = (1..)
            .zip(NAMES)
            .map(|(oid, name)| {
                let stamp = match name {
                    "d" => format!("{oid}:900"),
                    _ => format!("{oid}:700"),
                };
                let relation = Relation {
                    oid,
                    stamp,
                    published: (name != "f").then(|| "16600:990:990".to_string()),
                    shape: "d:1|1:id:23:-1:700".into(),
                };
                (format!("public.{name}"), relation)
            })
            .collect();
        let mut tables: Vec<DataTable> = NAMES.iter().chain(&["new"]).map(|n| table(n)).collect();
        let reused = evidence.entries(&tables, &relations, |_| true);
        assert_eq!(reused.keys().collect::<Vec<_>>(), ["public.a"]);
        let a = &reused["public.a"];
        assert_eq!(
            a.tracked.as_ref().and_then(|t| t.reused_from.as_deref()),
            Some("20260101-000000-000")
        );
        assert_eq!(a.parts, evidence.base.tables[0].parts);
        assert_eq!(
            a.tracked.as_ref().and_then(|t| t.published.as_deref()),
            Some("16600:990:990"),
            "the new publication's stamp, for the next full"
        );

        // A column retyped, or a chunk gone from the repository: read.
        tables[0].column_types = vec!["bigint".into()];
        assert!(evidence.entries(&tables, &relations, |_| true).is_empty());
        tables[0].column_types = vec!["integer".into()];
        assert!(
            evidence
                .entries(&tables, &relations, |id| id != "chunka")
                .is_empty()
        );
    }

    #[test]
    fn an_entry_reused_again_keeps_the_backup_that_read_it() {
        let mut base = full();
        base.tables[0].tracked.as_mut().unwrap().reused_from = Some("20250101-000000-000".into());
        let evidence = Evidence {
            base,
            changed: HashSet::new(),
            touched: HashSet::new(),
            published: published_before(),
        };
        let relations: Relations = [(
            "public.a".to_string(),
            Relation {
                oid: 1,
                stamp: "1:700".into(),
                published: Some("16600:990:990".into()),
                shape: "d:1|1:id:23:-1:700".into(),
            },
        )]
        .into();
        let reused = evidence.entries(&[table("a")], &relations, |_| true);
        assert_eq!(
            reused["public.a"]
                .tracked
                .as_ref()
                .unwrap()
                .reused_from
                .as_deref(),
            Some("20250101-000000-000")
        );
    }

    #[test]
    fn the_chain_is_walked_back_to_its_full_collecting_what_changed() {
        let base = full();
        let id = base.id.clone();
        let i1 = incremental("20260101-010000-000", &id, &id, &["public.b"]);
        let i2 = incremental("20260101-020000-000", &i1.id, &id, &["public.c"]);
        let manifests = vec![base, i1.clone(), i2.clone()];
        let (found, changed) = chain_since_base(&manifests, &i2).unwrap();
        assert_eq!(found.id, id);
        assert_eq!(
            changed,
            HashSet::from(["public.b".to_string(), "public.c".to_string()])
        );
        let (found, changed) = chain_since_base(&manifests, &manifests[0]).unwrap();
        assert_eq!((found.id.as_str(), changed.len()), (id.as_str(), 0));

        // A missing link, a link naming another base, a loop: no proof.
        let without_i1 = vec![manifests[0].clone(), i2.clone()];
        let e = chain_since_base(&without_i1, &i2).unwrap_err();
        assert!(
            e.contains("20260101-010000-000") && e.contains("missing"),
            "{e}"
        );
        let other = incremental("20260101-020000-000", &i1.id, "20250101-000000-000", &[]);
        let mixed = vec![manifests[0].clone(), i1.clone(), other.clone()];
        assert!(chain_since_base(&mixed, &other).is_err());
        let a = incremental("20260101-030000-000", "20260101-040000-000", &id, &[]);
        let b = incremental("20260101-040000-000", "20260101-030000-000", &id, &[]);
        let circle = vec![a.clone(), b];
        assert!(chain_since_base(&circle, &a).unwrap_err().contains("loops"));
    }
}
