//! `backup create`: a consistent full or schema-only backup into the repository.
//!
//! Steps, in the order an operator would describe them: export a snapshot; read the catalog
//! (and release the locks those reads took); check the target has room; DDL through one
//! pg_dump run (pre-data and post-data; it holds a lock per table while it runs) while N
//! workers COPY the tables (largest first, big ones split into block ranges; each read in a
//! short transaction of its own, see `pg::snapshot`) and one more the large objects' data;
//! write the manifest last. Any failure leaves no visible backup.

use crate::config::IncrementalConfig;
use crate::engine::Progress;
pub use crate::engine::backup_run::BackupOptions;
use crate::engine::backup_run::{reclaim_after_failure, stopped};
use crate::engine::incremental::slot::ChainStart;
use crate::engine::incremental::{self, reuse};
use crate::engine::interrupt::{CleanupGuard, interruptible};
use crate::engine::progress::human_bytes;
use crate::engine::sync::{CopyReport, copy_backup};
use crate::engine::validators::{PreviousFigures, RowChecks, previous_figures, table_info};
use crate::error::{Error, Result};
use crate::pg::catalog::{self, DataTable};
use crate::pg::globals;
use crate::pg::snapshot::{self, SnapshotLeader};
use crate::pg::{ConnectionSettings, ddl, pg_dump, pool};
use crate::repository::chunker::RowChecksum;
use crate::repository::history::Event;
use crate::repository::id::new_backup_id;
use crate::repository::lock::RepoLock;
use crate::repository::manifest::{
    BackupType, DatabaseProperty, Digests, LargeObjects, Manifest, SequenceValue, SourceInfo,
    Stream, TableEntry,
};
use crate::repository::stream::{
    BATCH_BYTES, ChunkObserver, Stored, StreamWriter, store_bytes, store_object_list,
};
use crate::repository::{ChunkIndex, Repository};
use crate::targets::Target;
use chrono::Utc;
use futures_util::StreamExt;
use indicatif::ProgressBar;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Compression ratio assumed for the space estimate when the repository has no history.
const DEFAULT_RATIO: f64 = 0.5;

/// One unit of COPY work: a whole table or a block range of it.
struct PartJob {
    table: usize,
    part: usize,
    /// The table, quoted and schema-qualified (what the worker locks).
    relation: String,
    sql: String,
    label: String,
    estimate: u64,
    /// The part is the whole table (not one of its block ranges).
    whole: bool,
}

/// Takes a backup; a failure is also recorded as an event for `monitor health` and alerts.
pub async fn create(
    settings: &ConnectionSettings,
    repo: &Repository,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<Manifest> {
    let result = take(settings, repo, opts, progress).await;
    if let Err(e) = &result {
        let event = Event {
            at: Utc::now(),
            kind: "backup-failed".into(),
            detail: e.to_string(),
            database: Some(settings.dbname.clone()),
            backup_type: Some(opts.backup_type),
        };
        if let Err(record) = repo.record_event(&event).await {
            tracing::warn!("could not record the failure: {record}");
        }
    }
    result
}

/// A backup written to its primary target and copied to the others.
pub struct Created {
    pub manifest: Manifest,
    /// The primary target's name: the backup is complete there whatever became of the copies.
    pub primary: String,
    pub copies: Vec<CopyReport>,
    /// One line per target the copy failed on (`target 'NAME': why`).
    pub copy_failures: Vec<String>,
    /// The targets that hold the backup now: the primary, then each good copy.
    pub holding: Vec<Arc<dyn Target>>,
}

impl Created {
    /// How the backup fails although it was written: `BackupSuspect` when a validator found
    /// an error in its rows (it is kept, and `latest` passes over it), else `CopiesIncomplete`
    /// when a copy failed (the backup is safe on the primary; the message says how to finish
    /// the job).
    pub fn verdict(&self) -> Option<Error> {
        if let Err(suspect) = crate::engine::validators::verdict(&self.manifest) {
            return Some(suspect);
        }
        self.copies_incomplete()
    }

    /// `CopiesIncomplete` when a copy failed: the backup is safe on the primary, and the
    /// message says how to finish the job.
    pub fn copies_incomplete(&self) -> Option<Error> {
        let first = self.copy_failures.first()?;
        Some(Error::CopiesIncomplete(format!(
            "backup {} is complete on '{}' but copying it failed on {} target(s), first {first}; run `backup-cli backup sync` when the target is back",
            self.manifest.id,
            self.primary,
            self.copy_failures.len()
        )))
    }
}

/// Takes a backup into `repo` (the primary), then copies it to each of `others` (a
/// repository is started there when missing). A failed copy does not fail the backup: it
/// is listed in [`Created::copy_failures`] and [`Created::verdict`] says so.
pub async fn create_with_copies(
    settings: &ConnectionSettings,
    repo: &Repository,
    others: &[Arc<dyn Target>],
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<Created> {
    let manifest = create(settings, repo, opts, progress).await?;
    let mut copies = Vec::new();
    let mut copy_failures = Vec::new();
    let mut holding = vec![repo.target().clone()];
    for target in others {
        let copied = async {
            let dest = Repository::open_or_init_copy(target.clone(), repo).await?;
            copy_backup(repo, &dest, &manifest, opts.jobs, false, progress).await
        }
        .await;
        match copied {
            Ok(report) => {
                copies.push(report);
                holding.push(target.clone());
            }
            Err(e) => copy_failures.push(format!("target '{}': {e}", target.name())),
        }
    }
    Ok(Created {
        manifest,
        primary: repo.target().name().to_string(),
        copies,
        copy_failures,
        holding,
    })
}

async fn take(
    settings: &ConnectionSettings,
    repo: &Repository,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<Manifest> {
    if opts.backup_type == BackupType::Incremental {
        return incremental::capture::take(settings, repo, opts).await;
    }
    // With tracking on, the new chain's slot is dropped again if the full fails, and the
    // previous chain's only once the full's manifest is durable. On a signal the CLI waits for
    // this to stop cleanly (waiting for table locks, or streaming, then the slots), so no lock
    // or slot is left behind.
    let _undo = CleanupGuard::new();
    let mut started = None;
    let taken = take_dump(settings, repo, opts, progress, &mut started).await;
    if let Some(chain) = started {
        chain
            .finished(&opts.incremental, &settings.dbname, taken.is_ok())
            .await;
    }
    taken
}

/// A full or schema-only backup; a full with tracking on puts the chain it starts in
/// `started` as soon as its slot exists.
async fn take_dump(
    settings: &ConnectionSettings,
    repo: &Repository,
    opts: &BackupOptions,
    progress: &Progress,
    started: &mut Option<ChainStart>,
) -> Result<Manifest> {
    let created_at = Utc::now();
    let id = new_backup_id(created_at);
    let retain_until = opts.retain_until(created_at);
    let repo = &repo.clone().retaining(retain_until);
    let full = opts.backup_type == BackupType::Full;
    // Reading the catalog waits for any table another session holds exclusively.
    let (
        leader,
        server,
        pg_dump,
        tables,
        sequences,
        schemas,
        extensions,
        roles,
        foreign_keys,
        large_objects,
        globals,
        tracking,
    ) = interruptible(async {
        // The chain's slot is created just before the snapshot (see IncrementalInfo::snapshot);
        // what the previous chain's slot still holds is read first, to prove which tables
        // are unchanged.
        let watch = match (full, opts.incremental.enabled) {
            (true, true) => {
                let manifests = match repo.can_read() {
                    true => match repo.manifests().await {
                        Ok(manifests) => Some(manifests),
                        Err(e) => {
                            tracing::warn!(
                                "the previous chain is not known ({e}): every table is read, and no old slot is dropped"
                            );
                            None
                        }
                    },
                    false => None,
                };
                let preparing = incremental::slot::prepare_chain(
                    settings,
                    &opts.incremental,
                    &id,
                    manifests.as_deref(),
                )
                .await?;
                // Validators check the rows a backup reads: with them, every table is read.
                let watch = match (opts.validators.is_empty(), &manifests) {
                    (true, Some(manifests)) => reuse::watch(settings, &preparing, manifests).await,
                    _ => None,
                };
                preparing.start(started).await?;
                watch
            }
            (true, false) => {
                retire_slot(settings, &opts.incremental).await;
                None
            }
            (false, _) => None,
        };
        let leader = SnapshotLeader::begin(settings).await?;
        let server = catalog::server_info(leader.client()).await?;
        let pg_dump = pg_dump::find(opts.pg_dump.as_deref(), server.major()).await?;
        let tables = if full {
            catalog::data_tables(leader.client(), server.block_size).await?
        } else {
            Vec::new()
        };
        let sequences = catalog::sequences(leader.client()).await?;
        let schemas = catalog::schemas(leader.client()).await?;
        let extensions = catalog::extensions(leader.client()).await?;
        let roles = catalog::roles(leader.client()).await?;
        let foreign_keys = catalog::foreign_keys(leader.client()).await?;
        let large_objects = if full {
            catalog::large_objects(leader.client(), None).await?
        } else {
            (Vec::new(), 0)
        };
        let globals = globals::read(leader.client(), &roles).await?;
        let tracking = match started {
            Some(_) => {
                let publication = opts.incremental.publication_for(&settings.dbname);
                let relations = reuse::relations(leader.client(), &publication).await?;
                let evidence = match watch {
                    Some(watch) => watch.finish(&leader.snapshot).await,
                    None => None,
                };
                // The catalog as the snapshot sees it: the chain's first incremental runs
                // pg_dump only if DDL came after it.
                let fingerprint = incremental::schema::fingerprint(leader.client()).await?;
                Some((relations, evidence, fingerprint))
            }
            None => None,
        };
        leader.release_read_locks().await?;
        preflight_space(repo, &tables).await?;
        Ok((
            leader,
            server,
            pg_dump,
            tables,
            sequences,
            schemas,
            extensions,
            roles,
            foreign_keys,
            large_objects,
            globals,
            tracking,
        ))
    })
    .await
    .map_err(stopped(&id))?;
    let chain = started
        .as_ref()
        .zip(tracking.as_ref())
        .map(|(start, (_, _, fingerprint))| start.info(&leader.snapshot, fingerprint))
        .transpose()?;

    // What validators compare with: the previous full backup of this database.
    let previous = if opts.validators.is_empty() {
        PreviousFigures::new()
    } else {
        previous_figures(&repo.manifests().await?, &server.database, created_at)
    };
    let lock = RepoLock::shared(repo, &id).await?;
    let written = match repo.chunk_index().await {
        Ok(index) => {
            // Read under the shared lock: the chunks it lists stay until this manifest is written.
            let (relations, reused) = match tracking {
                Some((relations, Some(evidence), _)) => {
                    let reused =
                        evidence.entries(&tables, &relations, |id| index.stored_size(id).is_some());
                    (relations, reused)
                }
                Some((relations, None, _)) => (relations, HashMap::new()),
                None => (HashMap::new(), HashMap::new()),
            };
            if !reused.is_empty() {
                tracing::info!(
                    "{} of {} tables unchanged since the previous backup: their entries are reused, not read",
                    reused.len(),
                    tables.len()
                );
            }
            let run = Run {
                settings,
                repo,
                index: Arc::new(index),
                opts,
                progress,
                snapshot_id: &leader.snapshot_id,
                database: &server.database,
                previous: &previous,
                relations: &relations,
                reused: &reused,
                sequences: &sequences,
            };
            // A stop while streaming leaves no manifest, so nothing is visible; the lock is
            // released below and the chunks written are reclaimed by garbage collection.
            interruptible(run.write_streams(&pg_dump, &tables, large_objects))
                .await
                .map_err(stopped(&id))
        }
        Err(e) => Err(e),
    };
    let outcome = match written {
        Ok(streams) => {
            let manifest = Manifest {
                format: Manifest::format_for(&streams.tables),
                id: id.clone(),
                name: opts.name.clone().unwrap_or_else(|| {
                    format!(
                        "{}-{}",
                        opts.backup_type,
                        created_at.format("%Y%m%d-%H%M%S")
                    )
                }),
                backup_type: opts.backup_type,
                created_at,
                completed_at: Utc::now(),
                tool_version: crate::TOOL_VERSION.to_string(),
                source: SourceInfo {
                    server_version: server.version.clone(),
                    server_version_num: server.version_num,
                    database: server.database.clone(),
                    encoding: server.encoding.clone(),
                    snapshot_id: leader.snapshot_id.clone(),
                    snapshot_lsn: leader.lsn.clone(),
                    snapshot_xmin: leader.xmin.clone(),
                    pg_dump_version: pg_dump.version.clone(),
                    locale: server.locale.clone(),
                    qualified_data: true,
                },
                new_bytes: streams.new_bytes,
                pre_data: streams.pre_data,
                post_data: streams.post_data,
                sequences,
                tables: streams.tables,
                object_list: None,
                table_chunks: Vec::new(),
                schemas,
                extensions,
                roles,
                foreign_keys,
                large_objects: streams.large_objects,
                database_properties: streams.database_properties,
                globals,
                compression_level: opts.compression_level,
                digests: None,
                validators: streams.validators,
                schedule: opts.schedule.clone(),
                retain_until,
                chain: None,
                incremental: chain,
                signature: None,
            };
            let manifest = Manifest {
                digests: Some(Digests {
                    pre_data: streams.section_digests.0,
                    post_data: streams.section_digests.1,
                    tables: manifest.tables_digest(),
                }),
                ..manifest
            };
            let manifest = match streams.object_list {
                Some(list) => manifest.with_object_list(list),
                None => manifest,
            };
            match leader.finish().await {
                Ok(()) => repo.write_manifest(&manifest).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    match lock.release_with(outcome).await {
        Ok(manifest) => Ok(manifest),
        Err(e) => {
            reclaim_after_failure(repo, &id).await;
            Err(e)
        }
    }
}

/// With tracking off, drops the slots earlier chains left (they would keep WAL on the server
/// for nobody); a failure is only logged.
async fn retire_slot(settings: &ConnectionSettings, config: &IncrementalConfig) {
    match incremental::slot::retire(settings, config).await {
        Ok(slots) => {
            for slot in slots {
                tracing::warn!(
                    "[incremental] is not enabled: dropped replication slot {slot} of an earlier chain"
                );
            }
        }
        Err(e) => tracing::warn!("could not check for a replication slot to drop: {e}"),
    }
}

/// Stops before writing when the target clearly lacks room.
async fn preflight_space(repo: &Repository, tables: &[DataTable]) -> Result<()> {
    let heap: u64 = tables.iter().map(|t| t.bytes.max(0) as u64).sum();
    // A write-only host cannot read the previous backup's figures: it assumes the default.
    let manifests = if repo.can_read() {
        repo.manifests().await?
    } else {
        Vec::new()
    };
    let (ratio, basis) = match manifests.last() {
        Some(m) => match m.logical_bytes() {
            0 => (DEFAULT_RATIO, "default".to_string()),
            logical => (
                m.stored_bytes() as f64 / logical as f64,
                format!("ratio of backup {}", m.id),
            ),
        },
        None => (DEFAULT_RATIO, "default".to_string()),
    };
    let needed = (heap as f64 * ratio) as u64;
    let target = repo.target();
    let available = target
        .available_space()
        .await
        .map_err(|e| e.at("(free space)", "checking free space"))?;
    if let Some(available) = available
        && available < needed
    {
        return Err(Error::InsufficientSpace(format!(
            "need about {} (table data {} x compression {ratio:.2}, {basis}), but target '{}' at {} has {} free. \
             Free space there, delete old backups (`backup-cli backup delete <id> --force`) or use --repo elsewhere",
            human_bytes(needed),
            human_bytes(heap),
            target.name(),
            target.location(),
            human_bytes(available)
        )));
    }
    Ok(())
}

struct Streams {
    database_properties: Vec<DatabaseProperty>,
    pre_data: Stream,
    post_data: Stream,
    /// SHA-256 of the pre-data and post-data text.
    section_digests: (String, String),
    tables: Vec<TableEntry>,
    /// The tables and sequences kept apart, when they are many.
    object_list: Option<Stream>,
    large_objects: Option<LargeObjects>,
    new_bytes: u64,
    validators: Vec<crate::repository::manifest::ValidatorRun>,
}

/// One backup run's shared state.
struct Run<'a> {
    settings: &'a ConnectionSettings,
    repo: &'a Repository,
    index: Arc<ChunkIndex>,
    opts: &'a BackupOptions,
    progress: &'a Progress,
    snapshot_id: &'a str,
    /// The source database's name.
    database: &'a str,
    /// The previous backup's figures per table, for validators.
    previous: &'a PreviousFigures,
    /// With change tracking: every table's identity at the snapshot, by `schema.name`.
    relations: &'a reuse::Relations,
    /// The entries reused instead of read (tables proven unchanged), by `schema.name`.
    reused: &'a HashMap<String, TableEntry>,
    /// The sequences' values at the snapshot (kept apart with the tables when they are many).
    sequences: &'a [SequenceValue],
}

impl Run<'_> {
    async fn write_streams(
        &self,
        pg_dump: &pg_dump::PgDump,
        tables: &[DataTable],
        (lo_oids, lo_bytes): (Vec<u32>, i64),
    ) -> Result<Streams> {
        let level = self.opts.compression_level;
        let read: Vec<DataTable> = tables
            .iter()
            .filter(|t| !self.reused.contains_key(&t.display_name()))
            .cloned()
            .collect();
        let store = |sql: Vec<u8>| async move {
            let sha256 = crate::repository::sha256_hex(&sql);
            store_bytes(self.repo, self.index.clone(), level, sql)
                .await
                .map(|stored| (stored, sha256))
        };
        let schema = async {
            let archive = pg_dump.schema(self.settings, self.snapshot_id).await?;
            let sections = async {
                let (pre, post) = archive.sections().await?;
                Ok::<_, Error>((store(pre).await?, store(post).await?))
            };
            let (sections, properties) =
                tokio::try_join!(sections, self.database_properties(&archive))?;
            Ok::<_, Error>((sections, properties))
        };
        let (
            (((pre, pre_sha256), (post, post_sha256)), database_properties),
            (parts, validators),
            lo_data,
        ) = tokio::try_join!(
            schema,
            self.copy_tables(&read),
            self.copy_large_objects(lo_oids.len(), lo_bytes),
        )?;

        let mut entries: Vec<TableEntry> = read
            .iter()
            .map(|t| TableEntry {
                schema: t.schema.clone(),
                name: t.name.clone(),
                columns: t.columns.clone(),
                column_types: t.column_types.clone(),
                partition_of: t.partition_of.clone(),
                filter: t.filter.clone(),
                rows: 0,
                logical_bytes: 0,
                checksum: String::new(),
                parts: Vec::new(),
                tracked: self
                    .relations
                    .get(&t.display_name())
                    .map(|r| r.tracked(None)),
            })
            .collect();
        let mut checksums = vec![RowChecksum::default(); read.len()];
        let mut new_bytes = pre.new_bytes + post.new_bytes;
        let mut parts = parts;
        parts.sort_by_key(|(table, part, _)| (*table, *part));
        for (table, _, stored) in parts {
            let entry = &mut entries[table];
            entry.rows += stored.stream.rows;
            entry.logical_bytes += stored.stream.bytes;
            checksums[table].combine(stored.checksum);
            new_bytes += stored.new_bytes;
            entry.parts.push(stored.stream);
        }
        for (entry, checksum) in entries.iter_mut().zip(checksums) {
            entry.checksum = checksum.encode();
        }
        // The reused entries join the ones read, in the catalog's order.
        let mut entries = entries.into_iter();
        let entries: Vec<TableEntry> = tables
            .iter()
            .filter_map(|t| match self.reused.get(&t.display_name()) {
                Some(reused) => Some(reused.clone()),
                None => entries.next(),
            })
            .collect();
        let large_objects = lo_data.map(|stored| {
            new_bytes += stored.new_bytes;
            LargeObjects {
                oids: lo_oids,
                content_bytes: lo_bytes.max(0) as u64,
                data: stored.stream,
            }
        });
        let object_list = store_object_list(
            self.repo,
            self.index.clone(),
            level,
            (&entries, self.sequences),
        )
        .await?
        .map(|stored| {
            new_bytes += stored.new_bytes;
            stored.stream
        });
        Ok(Streams {
            database_properties,
            pre_data: pre.stream,
            post_data: post.stream,
            section_digests: (pre_sha256, post_sha256),
            tables: entries,
            object_list,
            large_objects,
            new_bytes,
            validators,
        })
    }

    /// The database's own settings, comment and privileges, from the schema's archive.
    async fn database_properties(
        &self,
        archive: &pg_dump::SchemaArchive,
    ) -> Result<Vec<DatabaseProperty>> {
        if self.database.contains(['\n', '\r']) {
            // pg_dump --create refuses such names (15.14+), as psql could not \connect them.
            tracing::warn!(
                "the database's own settings, comment and privileges are not backed up: pg_dump --create refuses a database name with a line break"
            );
            return Ok(Vec::new());
        }
        let sql = String::from_utf8(archive.database_properties().await?).map_err(|_| {
            Error::PgDump(
                "pg_restore --create wrote text that is not UTF-8 despite pg_dump -E UTF8".into(),
            )
        })?;
        Ok(ddl::database_properties(&sql)?
            .into_iter()
            .map(|e| DatabaseProperty {
                kind: e.kind,
                sql: e.sql,
            })
            .collect())
    }

    /// The large objects' data on a connection of its own, alongside the tables; their
    /// creation, owners, privileges and comments come with pg_dump's pre-data.
    async fn copy_large_objects(&self, count: usize, bytes: i64) -> Result<Option<Stored>> {
        if count == 0 {
            return Ok(None);
        }
        let estimate = bytes.max(0) as u64 * 2;
        let job = PartJob {
            table: 0,
            part: 0,
            relation: "pg_catalog.pg_largeobject".into(),
            sql: catalog::large_object_copy(None),
            label: format!("{count} large objects"),
            estimate,
            whole: true,
        };
        let overall = ProgressBar::hidden(); // the tables' overall bar does not count these
        let bar = self.progress.item(&job.label, estimate);
        let client = snapshot::worker(self.settings, self.snapshot_id).await?;
        let level = self.opts.compression_level;
        let stored = copy_part(
            &client,
            (self.repo, &self.index, level),
            &job,
            (&bar, &overall),
            None,
            async { Ok(()) },
        )
        .await?;
        bar.finish_and_clear();
        Ok(Some(stored))
    }

    /// The tables' parts, and the validators' verdicts on their rows.
    async fn copy_tables(
        &self,
        tables: &[DataTable],
    ) -> Result<(
        Vec<(usize, usize, Stored)>,
        Vec<crate::repository::manifest::ValidatorRun>,
    )> {
        let opts = self.opts;
        let jobs = plan_parts(tables, opts.jobs, opts.split_bytes);
        if jobs.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let checks = (!opts.validators.is_empty()).then(|| {
            let mut parts = vec![0usize; tables.len()];
            for job in &jobs {
                parts[job.table] += 1;
            }
            Arc::new(RowChecks::new(
                opts.validators.clone(),
                tables
                    .iter()
                    .zip(parts)
                    .map(|(t, parts)| {
                        let name = format!("{}.{}", t.schema, t.name);
                        let info = table_info(name, &t.columns, &t.column_types, self.previous);
                        (info, parts)
                    })
                    .collect(),
            ))
        });
        let total: u64 = jobs.iter().map(|j| j.estimate).sum();
        let overall = self.progress.overall("backup", total);
        let (settings, snapshot_id) = (self.settings.clone(), self.snapshot_id.to_string());
        let open = move || {
            let settings = settings.clone();
            async move { snapshot::reader(&settings).await }
        };
        let (repo, index, progress, bar, row_checks) = (
            self.repo.clone(),
            self.index.clone(),
            self.progress.clone(),
            overall.clone(),
            checks.clone(),
        );
        let level = opts.compression_level;
        let copy = move |client: Arc<tokio_postgres::Client>, unit: Vec<PartJob>| {
            let (repo, index, progress, overall, checks, snapshot_id) = (
                repo.clone(),
                index.clone(),
                progress.clone(),
                bar.clone(),
                row_checks.clone(),
                snapshot_id.clone(),
            );
            async move {
                let sink = (&repo, &index, level);
                let checks = checks.as_deref();
                let (label, estimate) = match unit.as_slice() {
                    [job] => (job.label.clone(), job.estimate),
                    jobs => (
                        format!("{} small tables", jobs.len()),
                        jobs.iter().map(|j| j.estimate).sum(),
                    ),
                };
                let bar = progress.item(&label, estimate);
                let bars = (&bar, &overall);
                let stored = match unit.as_slice() {
                    [job] => {
                        let table = [job.relation.as_str()];
                        let read = snapshot::next_read(&client, &snapshot_id, &table);
                        vec![copy_part(&client, sink, job, bars, checks, read).await?]
                    }
                    jobs => {
                        copy_small_tables((&client, &snapshot_id), sink, jobs, bars, checks).await?
                    }
                };
                bar.finish_and_clear();
                Ok(unit
                    .iter()
                    .zip(stored)
                    .map(|(job, stored)| (job.table, job.part, stored))
                    .collect::<Vec<_>>())
            }
        };
        let results = pool::run(
            opts.jobs,
            group_small_tables(jobs),
            open,
            copy,
            ("backup worker", Error::Internal),
        )
        .await?
        .into_iter()
        .flatten()
        .collect();
        overall.finish_and_clear();
        let runs = checks.map(|c| c.runs()).unwrap_or_default();
        Ok((results, runs))
    }
}

/// Splits the tables into COPY jobs, largest first.
fn plan_parts(tables: &[DataTable], jobs: usize, split_bytes: Option<u64>) -> Vec<PartJob> {
    let total: u64 = tables.iter().map(|t| t.bytes.max(0) as u64).sum();
    let split = split_bytes
        .unwrap_or_else(|| (total / (4 * jobs.max(1) as u64)).max(64 << 20))
        .max(1);
    let mut out = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let bytes = t.bytes.max(0) as u64;
        let cols = t.columns.join(", ");
        if let Some(filter) = &t.filter {
            // An extension configuration table: the user's rows only, as pg_dump reads them.
            out.push(PartJob {
                table: i,
                part: 0,
                relation: t.qualified(),
                sql: format!(
                    "COPY (SELECT {cols} FROM ONLY {} {filter}) TO STDOUT",
                    t.qualified()
                ),
                label: t.qualified(),
                estimate: bytes,
                whole: true,
            });
            continue;
        }
        let ranges = if bytes > split + split / 2 && t.pages > 1 {
            bytes.div_ceil(split).min(t.pages as u64)
        } else {
            1
        };
        if ranges == 1 {
            let sql = if t.columns.is_empty() {
                format!("COPY {} TO STDOUT", t.qualified())
            } else {
                format!("COPY {} ({cols}) TO STDOUT", t.qualified())
            };
            out.push(PartJob {
                table: i,
                part: 0,
                relation: t.qualified(),
                sql,
                label: t.qualified(),
                estimate: bytes,
                whole: true,
            });
            continue;
        }
        let pages_per = (t.pages as u64).div_ceil(ranges);
        for part in 0..ranges {
            let lo = part * pages_per;
            let filter = if part + 1 == ranges {
                format!("ctid >= '({lo},0)'::tid") // open-ended: nothing beyond the estimate is missed
            } else {
                format!(
                    "ctid >= '({lo},0)'::tid AND ctid < '({},0)'::tid",
                    lo + pages_per
                )
            };
            out.push(PartJob {
                table: i,
                part: part as usize,
                relation: t.qualified(),
                sql: format!(
                    "COPY (SELECT {cols} FROM ONLY {} WHERE {filter}) TO STDOUT",
                    t.qualified()
                ),
                label: format!("{} [{}/{ranges}]", t.qualified(), part + 1),
                estimate: bytes / ranges,
                whole: false,
            });
        }
    }
    out.sort_by_key(|job| std::cmp::Reverse(job.estimate));
    out
}

/// Tables whose whole data (by their relation size) is below this are stored together, as
/// windows on shared chunks: a chunk file each would make a backup of thousands of small
/// tables wait on the file system's inode allocation, and compress each alone, poorly.
const SMALL_TABLE_BYTES: u64 = 256 << 10;

/// Relation bytes of small tables stored by one worker in one go (several chunks).
const SMALL_TABLES_BATCH_BYTES: u64 = 4 << 20;

/// Groups the whole small tables' jobs into batches, in the catalog's order (so a restore
/// that loads them in that order reads each shared chunk once); every other job is a unit
/// of its own. Big jobs first, as `plan_parts` ordered them.
fn group_small_tables(jobs: Vec<PartJob>) -> Vec<Vec<PartJob>> {
    let (mut small, big): (Vec<PartJob>, Vec<PartJob>) = jobs
        .into_iter()
        .partition(|j| j.whole && j.estimate < SMALL_TABLE_BYTES);
    small.sort_by_key(|j| j.table);
    let mut units: Vec<Vec<PartJob>> = big.into_iter().map(|j| vec![j]).collect();
    let mut batch: Vec<PartJob> = Vec::new();
    let mut batched = 0;
    for job in small {
        batched += job.estimate.max(1);
        batch.push(job);
        if batched >= SMALL_TABLES_BATCH_BYTES {
            units.push(std::mem::take(&mut batch));
            batched = 0;
        }
    }
    if !batch.is_empty() {
        units.push(batch);
    }
    units
}

/// The progress observer of one stream writer: rows on the item's bar, bytes on both.
fn observe((bar, overall): (&ProgressBar, &ProgressBar)) -> ChunkObserver {
    let rows = Arc::new(AtomicU64::new(0));
    let (bar, overall) = (bar.clone(), overall.clone());
    Box::new(move |chunk_rows: u64, bytes: u64| {
        let total = rows.fetch_add(chunk_rows, Ordering::Relaxed) + chunk_rows;
        bar.set_message(format!("{total} rows"));
        Progress::advance(&bar, bytes);
        Progress::advance(&overall, bytes);
    })
}

/// Copies one part into a stream of the repository. `read` (the read's transaction and lock,
/// see `pg::snapshot`) is sent in the same round trip as the COPY's preparation, the COPY
/// right behind them: the server runs them in order, so the rows are read under the lock,
/// and nothing is stored when `read` fails.
async fn copy_part(
    client: &tokio_postgres::Client,
    (repo, index, level): (&Repository, &Arc<ChunkIndex>, i32),
    job: &PartJob,
    bars: (&ProgressBar, &ProgressBar),
    checks: Option<&RowChecks>,
    read: impl std::future::Future<Output = Result<()>>,
) -> Result<Stored> {
    let writer = StreamWriter::start(repo.clone(), index.clone(), level, observe(bars));
    let copied = match prepare(client, read, std::slice::from_ref(job)).await {
        Ok(statements) => copy_into(client, &writer, job, checks, &statements[0]).await,
        Err(e) => Err(e),
    };
    if let Err(e) = copied {
        return Err(writer.failed(e).await);
    }
    let stored = writer.finish().await?;
    if let Some(checks) = checks {
        checks.part_done(job.table, stored.stream.rows).await;
    }
    Ok(stored)
}

/// Copies small whole tables one after another into one stream, each table a window on it
/// (see [`SMALL_TABLE_BYTES`]); they are read in groups (see `snapshot::READ_GROUP_TABLES`),
/// each group under its own locks, as `copy_part` reads.
async fn copy_small_tables(
    (client, snapshot_id): (&tokio_postgres::Client, &str),
    (repo, index, level): (&Repository, &Arc<ChunkIndex>, i32),
    jobs: &[PartJob],
    bars: (&ProgressBar, &ProgressBar),
    checks: Option<&RowChecks>,
) -> Result<Vec<Stored>> {
    let writer = StreamWriter::start(repo.clone(), index.clone(), level, observe(bars));
    for group in jobs.chunks(snapshot::READ_GROUP_TABLES) {
        let tables: Vec<&str> = group.iter().map(|j| j.relation.as_str()).collect();
        let read = snapshot::next_read(client, snapshot_id, &tables);
        let statements = match prepare(client, read, group).await {
            Ok(statements) => statements,
            Err(e) => return Err(writer.failed(e).await),
        };
        for (job, statement) in group.iter().zip(&statements) {
            let copied = match copy_into(client, &writer, job, checks, statement).await {
                Ok(()) => writer.mark().await,
                Err(e) => Err(e),
            };
            if let Err(e) = copied {
                return Err(writer.failed(e).await);
            }
        }
    }
    let stored = writer.finish_windows().await?;
    if let Some(checks) = checks {
        for (job, stored) in jobs.iter().zip(&stored) {
            checks.part_done(job.table, stored.stream.rows).await;
        }
    }
    Ok(stored)
}

/// Runs `read` and prepares the jobs' COPY statements, all in one round trip (the server runs
/// them in order, so the statements are prepared under the read's locks).
async fn prepare(
    client: &tokio_postgres::Client,
    read: impl std::future::Future<Output = Result<()>>,
    jobs: &[PartJob],
) -> Result<Vec<tokio_postgres::Statement>> {
    let statements = futures_util::future::join_all(jobs.iter().map(|j| client.prepare(&j.sql)));
    let (read, statements) = tokio::join!(read, statements);
    read?;
    jobs.iter()
        .zip(statements)
        .map(|(job, statement)| statement.map_err(Error::db(format!("copying {}", job.label))))
        .collect()
}

/// Runs one part's COPY (prepared by [`prepare`]) and hands its rows to `writer`.
async fn copy_into(
    client: &tokio_postgres::Client,
    writer: &StreamWriter,
    job: &PartJob,
    checks: Option<&RowChecks>,
    statement: &tokio_postgres::Statement,
) -> Result<()> {
    let context = || format!("copying {}", job.label);
    let stream = client
        .copy_out(statement)
        .await
        .map_err(Error::db(context()))?;
    let mut stream = std::pin::pin!(stream);
    // COPY rows arrive as shared slices of the connection's read buffer: batch them without
    // copying; the chunking thread copies each byte once, into its window.
    let mut batch = Vec::new();
    let mut batched = 0;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(Error::db(context()))?;
        batched += piece.len();
        batch.push(piece);
        if batched >= BATCH_BYTES {
            batched = 0;
            send(writer, std::mem::take(&mut batch), job, checks).await?;
        }
    }
    if !batch.is_empty() {
        send(writer, batch, job, checks).await?;
    }
    Ok(())
}

/// Hands a batch of rows to the chunking thread and, at the same time, to the validators
/// (their work overlaps the chunking, hashing and compression of the batch).
async fn send(
    writer: &StreamWriter,
    batch: Vec<bytes::Bytes>,
    job: &PartJob,
    checks: Option<&RowChecks>,
) -> Result<()> {
    match checks {
        None => writer.send(batch).await,
        Some(checks) => {
            let pieces = batch.clone();
            let (sent, ()) = tokio::join!(writer.send(batch), checks.feed(job.table, &pieces));
            sent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, bytes: i64, pages: i64) -> DataTable {
        DataTable {
            schema: "public".into(),
            name: name.into(),
            filter: None,
            columns: vec!["id".into(), "v".into()],
            column_types: vec!["integer".into(), "text".into()],
            partition_of: None,
            bytes,
            pages,
        }
    }

    const MIB: i64 = 1 << 20;

    #[test]
    fn plan_parts_splits_big_tables_into_block_ranges_that_cover_them() {
        // 1 GiB at 4 jobs: split size 1 GiB / 16 = 64 MiB, so 16 ranges of 8 pages.
        let jobs = plan_parts(&[table("big", 1024 * MIB, 128)], 4, None);
        assert_eq!(jobs.len(), 16);
        assert!(jobs.iter().all(|j| j.table == 0 && j.estimate == 64 << 20));
        let mut parts: Vec<usize> = jobs.iter().map(|j| j.part).collect();
        parts.sort();
        assert_eq!(parts, (0..16).collect::<Vec<_>>());
        let first = jobs.iter().find(|j| j.part == 0).unwrap();
        assert!(
            first
                .sql
                .contains("ctid >= '(0,0)'::tid AND ctid < '(8,0)'::tid")
        );
        let last = jobs.iter().find(|j| j.part == 15).unwrap();
        assert!(
            last.sql
                .ends_with("WHERE ctid >= '(120,0)'::tid) TO STDOUT"),
            "the last range is open-ended: {}",
            last.sql
        );
        assert_eq!(last.label, "public.big [16/16]");
    }

    #[test]
    fn plan_parts_keeps_small_tables_whole_and_orders_largest_first() {
        let tables = [table("small", MIB, 10), table("medium", 50 * MIB, 100)];
        let jobs = plan_parts(&tables, 2, None);
        let order: Vec<(usize, &str)> = jobs.iter().map(|j| (j.table, j.sql.as_str())).collect();
        assert_eq!(
            order,
            [
                (1, "COPY public.medium (id, v) TO STDOUT"),
                (0, "COPY public.small (id, v) TO STDOUT")
            ]
        );
    }

    #[test]
    fn plan_parts_never_splits_more_ranges_than_pages_nor_an_extension_table() {
        // An explicit split of 1 byte would ask for a range per byte: at most one per page.
        let jobs = plan_parts(&[table("t", 10 * MIB, 3)], 8, Some(1));
        assert_eq!(jobs.len(), 3);
        let config = DataTable {
            filter: Some("WHERE NOT builtin".into()),
            ..table("settings", 1024 * MIB, 1000)
        };
        let jobs = plan_parts(&[config], 8, Some(1));
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            jobs[0].sql,
            "COPY (SELECT id, v FROM ONLY public.settings WHERE NOT builtin) TO STDOUT"
        );
    }
}
