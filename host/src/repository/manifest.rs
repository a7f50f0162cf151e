//! The backup manifest: the one JSON document that makes a backup exist.
//!
//! It lists every table with its columns, row count, logical bytes, an order-independent data
//! checksum and the chunks holding its COPY text, plus the DDL sections, sequence values and the
//! snapshot it was taken from. It is written last and atomically; no manifest, no backup.

use super::changes::Lsn;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The longest chunk the format allows: the chunker's largest cut plus one COPY line, which
/// PostgreSQL bounds at 1 GiB. A manifest claiming more is damaged (it would only serve to
/// make a reader allocate).
pub const MAX_CHUNK_LEN: u64 = super::chunker::MAX_CHUNK as u64 + (1 << 30);

/// Whether `id` is a chunk id: the SHA-256 of the chunk, 64 lowercase hex digits.
pub fn is_chunk_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The most bytes zstd can store `len` bytes in (its compress bound), so a stored size above
/// it cannot be genuine.
fn max_stored_len(len: u64) -> u64 {
    len + (len >> 8) + 64 * 1024
}

/// What a backup contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackupType {
    /// DDL, sequences and all table data.
    Full,
    /// DDL and sequence values only (the runbook's "before each migration" backup).
    SchemaOnly,
    /// The row changes since its parent in the chain (see [`IncrementalInfo`]).
    Incremental,
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupType::Full => "full",
            BackupType::SchemaOnly => "schema-only",
            BackupType::Incremental => "incremental",
        })
    }
}

impl FromStr for BackupType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(BackupType::Full),
            "schema-only" => Ok(BackupType::SchemaOnly),
            "incremental" => Ok(BackupType::Incremental),
            other => Err(format!(
                "unknown backup type '{other}' (expected full, schema-only or incremental)"
            )),
        }
    }
}

/// One stored chunk: its content address and sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// SHA-256 of the uncompressed bytes, hex.
    pub id: String,
    /// Uncompressed length.
    pub len: u64,
    /// Stored (compressed) length.
    pub stored: u64,
}

/// A stream of bytes stored as consecutive chunks (a table range's COPY text or a DDL section).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// Lines in the stream; for table data, one line per row.
    pub rows: u64,
    pub bytes: u64,
    /// Order-independent checksum of the lines (see [`crate::repository::chunker::RowChecksum`]).
    pub checksum: String,
    pub chunks: Vec<ChunkRef>,
    /// Set when the stream is a window on chunks it shares with other streams (small tables
    /// stored together, see `engine::backup`): its bytes start this far into its first chunk
    /// and end `bytes` later, possibly before its last chunk ends. Unset, the chunks hold
    /// exactly the stream. Manifests with windows have format [`WINDOWS_FORMAT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<u64>,
}

/// The manifest format that may hold windowed streams ([`Stream::skip`]); manifests without
/// them are still written as format 1, which older backup-cli versions read.
pub const WINDOWS_FORMAT: u32 = 2;

/// The manifest format that may keep its tables and sequences apart
/// ([`Manifest::object_list`]).
pub const OBJECT_LIST_FORMAT: u32 = 3;

/// Bytes of JSON (the tables and sequences) above which a backup keeps them apart, in chunks
/// of their own: thousands of tables made a manifest of megabytes, written whole by every
/// backup (a fifth of a 5,000-table backup's bytes, all of an unchanged second full's).
/// Below it, they stay in the manifest, readable as they are.
pub const OBJECT_LIST_APART_BYTES: usize = 256 << 10;

/// What [`Manifest::object_list`] holds, as JSON.
#[derive(Serialize)]
struct ObjectList<'a> {
    tables: &'a [TableEntry],
    sequences: &'a [SequenceValue],
}

/// [`ObjectList`] as read back.
#[derive(Deserialize)]
struct ObjectListRead {
    tables: Vec<TableEntry>,
    sequences: Vec<SequenceValue>,
}

/// The JSON a backup's tables and sequences are kept apart as.
pub fn object_list_json(
    tables: &[TableEntry],
    sequences: &[SequenceValue],
) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&ObjectList { tables, sequences })
}

/// The distinct chunk ids of `tables`' streams, sorted.
fn chunk_ids(tables: &[TableEntry]) -> Vec<String> {
    let ids: std::collections::BTreeSet<&str> = tables
        .iter()
        .flat_map(|t| &t.parts)
        .flat_map(|p| &p.chunks)
        .map(|c| c.id.as_str())
        .collect();
    ids.into_iter().map(str::to_string).collect()
}

/// Of one chunk, the plain bytes that belong to a stream.
pub type Piece<'a> = (&'a ChunkRef, std::ops::Range<usize>);

impl Stream {
    /// Each chunk with the range of its plain bytes that belong to this stream (a window's
    /// first and last chunks are shared with its neighbours).
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_>> {
        let mut skip = self.skip.unwrap_or(0);
        let mut left = self.bytes;
        self.chunks.iter().map(move |chunk| {
            let start = skip.min(chunk.len);
            let end = match self.skip {
                Some(_) => chunk.len.min(start.saturating_add(left)),
                None => chunk.len,
            };
            left = left.saturating_sub(end - start);
            skip = 0;
            (chunk, start as usize..end as usize)
        })
    }

    /// Whether this stream shares its chunks with others.
    pub fn is_window(&self) -> bool {
        self.skip.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub schema: String,
    pub name: String,
    /// Columns in COPY order, already quoted as identifiers.
    pub columns: Vec<String>,
    /// Their types as `format_type` spells them (empty in backups taken before they were
    /// recorded), for validators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_types: Vec<String>,
    /// The partitioned table this leaf belongs to, if any (qualified and quoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_of: Option<String>,
    /// For an extension's configuration table: the `WHERE …` clause its extension registered
    /// with `pg_extension_config_dump` (only those rows are the user's; the extension's
    /// script creates the rest), as pg_dump applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    pub rows: u64,
    /// Bytes of COPY text.
    pub logical_bytes: u64,
    /// Order-independent checksum over all rows of the table.
    pub checksum: String,
    /// Ranges of the table's data, each restorable on its own.
    pub parts: Vec<Stream>,
    /// In a full backup taken with change tracking: the table's identity at the snapshot, and
    /// whether the entry was reused from an earlier backup instead of read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked: Option<Tracked>,
}

/// A tracked table in a full backup (see `engine::incremental::reuse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    /// The table's OID and the `xmin` of its `pg_class` row at the snapshot (`16384:745`):
    /// DDL on the table (a rename, a column added or retyped, a rewrite) changes it.
    pub relation: String,
    /// How the chain's publication published the table at the snapshot (its OID and
    /// `xmin`, and the `xmin` of the table's entry in it, or `all`), if it did: a table
    /// removed from the publication and added again gets another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// The table's replica identity (and the index it uses) and its live columns (number,
    /// name, type, and the `xmin` of each `pg_attribute` row) at the snapshot: any DDL on a
    /// column or on the replica identity changes it, a TRUNCATE or VACUUM does not.
    /// Incrementals check it against their chain's full (absent in fulls taken before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    /// When this full did not read the table because the change stream proved it unchanged:
    /// the backup that read these rows (their chunks are shared, referenced from here too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

impl TableEntry {
    /// `schema.name`, quoted where needed.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name` as people type it.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// `COPY … TO STDOUT` of the rows this entry holds, read the way the backup read them.
    pub fn copy_out_sql(&self) -> String {
        match &self.filter {
            Some(filter) => format!(
                "COPY (SELECT {} FROM ONLY {} {filter}) TO STDOUT",
                self.columns.join(", "),
                self.qualified()
            ),
            None if self.columns.is_empty() => format!("COPY {} TO STDOUT", self.qualified()),
            None => format!(
                "COPY {} ({}) TO STDOUT",
                self.qualified(),
                self.columns.join(", ")
            ),
        }
    }

    /// `SELECT count(*)` of those rows.
    pub fn count_sql(&self) -> String {
        match &self.filter {
            Some(filter) => format!("SELECT count(*) FROM ONLY {} {filter}", self.qualified()),
            None => format!("SELECT count(*) FROM ONLY {}", self.qualified()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceValue {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    pub name: String,
    pub version: String,
}

/// A foreign key between two tables, by display name (`schema.table`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub name: String,
    /// The referencing table.
    pub table: String,
    /// The referenced table.
    pub references: String,
}

/// One of pg_dump's entries about the database itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseProperty {
    /// pg_dump's entry type: `DATABASE PROPERTIES`, `COMMENT`, `ACL`, `SECURITY LABEL`.
    pub kind: String,
    /// Its statements, naming the source database.
    pub sql: String,
}

/// The cluster-wide objects a database needs on a new server, as the backup found them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Globals {
    /// The database's owner.
    #[serde(default)]
    pub owner: Option<String>,
    /// `ALTER DATABASE … SET` (role None) and `ALTER ROLE … IN DATABASE … SET` settings.
    #[serde(default)]
    pub settings: Vec<DatabaseSetting>,
    /// The roles the database references (owners, grantees, the database owner, roles with
    /// settings in it) and the roles those are members of; predefined `pg_*` roles excluded.
    #[serde(default)]
    pub roles: Vec<RoleDefinition>,
    /// Whether the roles' password hashes are recorded (reading pg_authid needs a superuser).
    #[serde(default)]
    pub passwords_included: bool,
    /// The role that took the backup (whose privileges decided what could be read).
    #[serde(default)]
    pub read_by: String,
    /// Tablespaces the database or its tables use (other than pg_default).
    #[serde(default)]
    pub tablespaces: Vec<String>,
}

/// One `name=value` entry of `pg_db_role_setting` for this database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSetting {
    /// For `ALTER ROLE … IN DATABASE … SET`; None for `ALTER DATABASE … SET`.
    #[serde(default)]
    pub role: Option<String>,
    pub name: String,
    pub value: String,
}

/// A role as `CREATE ROLE` needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDefinition {
    pub name: String,
    pub superuser: bool,
    pub inherit: bool,
    pub createrole: bool,
    pub createdb: bool,
    pub login: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub connection_limit: i32,
    #[serde(default)]
    pub valid_until: Option<String>,
    /// The stored password hash (SCRAM or md5); None when not readable or not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Roles this role is a member of.
    #[serde(default)]
    pub member_of: Vec<Membership>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub role: String,
    pub admin: bool,
}

/// Facts about the source database at the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub server_version: String,
    pub server_version_num: i32,
    pub database: String,
    pub encoding: String,
    pub snapshot_id: String,
    /// WAL position when the snapshot was taken.
    pub snapshot_lsn: Option<String>,
    /// Oldest transaction id still running at the snapshot (`pg_snapshot_xmin`).
    pub snapshot_xmin: String,
    pub pg_dump_version: String,
    /// The database's locale, recreated for a new database (empty in backups taken before
    /// it was recorded: the target's default is used then).
    #[serde(default)]
    pub locale: DatabaseLocale,
    /// Table data was read with pg_dump's empty `search_path`, so values naming objects
    /// (`regclass`, …) are schema-qualified. False in backups made before that was so.
    #[serde(default)]
    pub qualified_data: bool,
}

/// A database's collation and character classification, as `CREATE DATABASE` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseLocale {
    /// `LC_COLLATE` (empty: not recorded).
    #[serde(default)]
    pub lc_collate: String,
    /// `LC_CTYPE`.
    #[serde(default)]
    pub lc_ctype: String,
    /// `libc`, `icu` or `builtin` (PostgreSQL 17+).
    #[serde(default)]
    pub provider: String,
    /// The ICU (or builtin) locale when the provider is not libc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// The data of the database's large objects. Creating them, their owners, privileges and
/// comments are in pre-data, as pg_dump writes them; the data is COPY text of
/// `(oid, slice, bytea)` rows, one per [`LARGE_OBJECT_SLICE`] bytes of each object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeObjects {
    /// Every large object's oid (a restore into an existing database replaces these and
    /// keeps the rest; verification counts them).
    pub oids: Vec<u32>,
    /// Bytes of large-object content (before hex encoding).
    pub content_bytes: u64,
    pub data: Stream,
}

/// Bytes of a large object per stored row: bounded memory on both sides of the COPY.
pub const LARGE_OBJECT_SLICE: i64 = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub tool_version: String,
    pub source: SourceInfo,
    /// `pg_dump --section=pre-data` output.
    pub pre_data: Stream,
    /// `pg_dump --section=post-data` output.
    pub post_data: Stream,
    pub sequences: Vec<SequenceValue>,
    /// Empty in the stored manifest, as `sequences` is, when they are kept apart
    /// ([`Manifest::object_list`]); reading the manifest puts them back.
    pub tables: Vec<TableEntry>,
    /// Thousands of tables and sequences kept apart: `tables` and `sequences` as JSON, a
    /// stream of chunks like the data's, so an unchanged list is stored once however many
    /// backups hold it (format [`OBJECT_LIST_FORMAT`], see [`OBJECT_LIST_APART_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_list: Option<Stream>,
    /// With the list kept apart, every chunk its tables' streams hold, in the manifest's own
    /// text: garbage collection keeps the chunks a damaged (or, to an older backup-cli,
    /// unreadable) manifest names, and these are the ones the list itself would name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table_chunks: Vec<String>,
    /// Schemas holding the backed-up objects (the scope of a whole-database `replace`).
    #[serde(default)]
    pub schemas: Vec<String>,
    #[serde(default)]
    pub extensions: Vec<Extension>,
    /// Roles that own objects or hold privileges on them: a restore target needs them.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub foreign_keys: Vec<ForeignKey>,
    /// Large objects (`pg_largeobject`), if the database had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<LargeObjects>,
    /// The database's own comment, privileges and settings (`ALTER DATABASE … SET`,
    /// `ALTER ROLE … IN DATABASE … SET`), as `pg_dump --create` writes them. A new-database
    /// restore applies them, as `pg_restore --create` does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub database_properties: Vec<DatabaseProperty>,
    /// What the database needs from its cluster (owner, settings, roles, tablespaces), which
    /// a dump of one database leaves out; empty in backups taken before it was recorded.
    #[serde(default)]
    pub globals: Globals,
    /// Compressed bytes this backup added to the repository (chunks not already present).
    pub new_bytes: u64,
    pub compression_level: i32,
    /// Digests binding the parts of the manifest together, checked by `backup validate`;
    /// manifests written before they were recorded have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digests: Option<Digests>,
    /// What the `[[validators]]` plugins found in the backup's rows, one entry per validator
    /// (empty: none configured, or a backup taken before validators existed). A finding of
    /// severity `error` makes the backup suspect ([`Manifest::is_suspect`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<ValidatorRun>,
    /// The `[[schedules]]` entry that took it (`backup create --schedule`, the daemon); its
    /// retention policy governs the backup. None: taken by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// When the retention that governs the backup lets it go at the earliest: its creation
    /// plus its policy's `keep_within`, as decided when it was taken (None: no policy, or
    /// one that keeps by count only). S3 Object Lock targets lock its objects until then
    /// (at least their `days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<DateTime<Utc>>,
    /// For an incremental backup: what it is built on (None for full and schema-only ones).
    /// Retention keeps every link a kept incremental needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Chain>,
    /// Change tracking: for an incremental, the changes it holds; for a full taken with
    /// `[incremental] enabled`, where its chain's first incremental starts (no changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalInfo>,
    /// The writing host's Ed25519 signature and the link to the previous backup of the
    /// database (see `repository::signing`); None when the host has no signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ManifestSignature>,
}

/// What an incremental backup captured from the logical replication slot of its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalInfo {
    /// The replication slot the changes were read from.
    pub slot: String,
    /// Its confirmed position when the capture started (the parent's `end_lsn`).
    pub start_lsn: Lsn,
    /// Where the capture stopped: every transaction committed before it is in the chain up to
    /// here, none after it.
    pub end_lsn: Lsn,
    pub first_commit: Option<DateTime<Utc>>,
    pub last_commit: Option<DateTime<Utc>>,
    pub transactions: u64,
    /// The change set: JSON Lines of [`crate::repository::changes::Change`], chunked like
    /// table data; `rows` counts the records.
    pub changes: Stream,
    /// Row changes per table (tables without changes left out).
    #[serde(default)]
    pub tables: Vec<TableChanges>,
    /// Tables replay cannot bring exactly up to date, with what to run about it.
    #[serde(default)]
    pub not_exact: Vec<NotExact>,
    /// For a full: its snapshot as `pg_current_snapshot()` gives it (`xmin:xmax:xip,…`). The
    /// slot is created just before the snapshot, so the first incremental leaves out the
    /// transactions this snapshot already sees (no gap, no overlap). None for incrementals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Schema changes since the parent backup that this incremental carries (its pre-data
    /// and post-data are the schema at its end), one per object: `INDEX t_v_idx: created`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_changes: Vec<String>,
    /// The catalog's fingerprint when the schema was read (`incremental::schema::fingerprint`):
    /// the next incremental reads the schema again only when it differs. None for a full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_fingerprint: Option<String>,
}

/// Counts of row changes to one table in an incremental.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableChanges {
    /// `schema.name`, as [`TableEntry::display_name`].
    pub table: String,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub truncates: u64,
}

/// A table whose changes are not captured exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotExact {
    /// `schema.name`.
    pub table: String,
    pub reason: String,
    /// The statement that makes it exact (then take a new full backup).
    pub fix: String,
}

/// How much a validator's finding matters: `error` and `critical` make the backup suspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        })
    }
}

/// One validator plugin's verdict on a backup's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorRun {
    /// The `[[validators]]` entry's name.
    pub name: String,
    /// The plugin's own name and version (`describe`) and the file's SHA-256.
    pub plugin: String,
    pub version: String,
    pub sha256: String,
    pub findings: Vec<Finding>,
}

/// Something a validator rule found in a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule, e.g. `max_shrink_percent`, `unique`.
    pub rule: String,
    /// `schema.name`.
    pub table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub severity: Severity,
    pub message: String,
    /// Rows that broke the rule (0 when the rule is about the table as a whole).
    #[serde(default)]
    pub count: u64,
}

/// A manifest's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSignature {
    /// The writing host's public key (`larder-signer-…`).
    pub signer: String,
    /// The newest backup of the same database when this one was written.
    pub previous: Option<PreviousLink>,
    /// Ed25519 over the manifest without its signature and the link (hex).
    pub value: String,
}

/// A link to the previous backup of the same database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousLink {
    pub id: String,
    /// SHA-256 of that manifest's JSON (signature included).
    pub sha256: String,
}

/// The backups an incremental needs to be restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// The backup it records the changes since (a full or an earlier incremental).
    pub parent: String,
    /// The full backup the chain starts from.
    pub base: String,
}

/// SHA-256 digests recorded at backup time so that validation notices a DDL section swapped
/// or replaced and a table removed, added or altered in the manifest. Not a signature: whoever
/// can rewrite a manifest can recompute them; they catch damage and clumsy edits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    /// Of the pre-data section's text.
    pub pre_data: String,
    /// Of the post-data section's text.
    pub post_data: String,
    /// Of the table list, see [`Manifest::tables_digest`].
    pub tables: String,
}

impl Manifest {
    /// Reads the manifest stored under `backups/<key_id>.json`, checking every field that is
    /// used as an object key, a size or an allocation, so nothing crafted gets further.
    /// The error says what is wrong, for "damaged manifest" messages.
    /// A manifest whose object list is kept apart comes back without its tables and
    /// sequences: read the list's stream and hand it to [`Manifest::attach_objects`].
    pub fn parse(key_id: &str, bytes: &[u8]) -> Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("it is not a valid manifest: {e}"))?;
        if manifest.object_list.is_some()
            && !(manifest.tables.is_empty() && manifest.sequences.is_empty())
        {
            return Err("it holds its tables and sequences both in itself and apart".into());
        }
        manifest.check(key_id)?;
        Ok(manifest)
    }

    /// Puts back the tables and sequences kept apart, from their stream's bytes: checked as
    /// a whole manifest is, and the tables' chunks must be the ones the manifest names.
    pub fn attach_objects(&mut self, key_id: &str, list: &[u8]) -> Result<(), String> {
        let list: ObjectListRead = serde_json::from_slice(list)
            .map_err(|e| format!("its object list is not valid: {e}"))?;
        (self.tables, self.sequences) = (list.tables, list.sequences);
        if self.table_chunks != chunk_ids(&self.tables) {
            return Err("its object list holds other chunks than the manifest names".into());
        }
        self.check(key_id)
    }

    /// Keeps the tables and sequences apart in `list` (their [`object_list_json`] stored as a
    /// stream, see [`OBJECT_LIST_APART_BYTES`]).
    pub fn with_object_list(self, list: Stream) -> Manifest {
        Manifest {
            format: OBJECT_LIST_FORMAT,
            table_chunks: chunk_ids(&self.tables),
            object_list: Some(list),
            ..self
        }
    }

    /// The manifest as stored: without its tables and sequences when they are kept apart.
    pub fn stored_json(&self) -> serde_json::Result<Vec<u8>> {
        match self.object_list {
            Some(_) => serde_json::to_vec_pretty(&Manifest {
                tables: Vec::new(),
                sequences: Vec::new(),
                ..self.clone()
            }),
            None => serde_json::to_vec_pretty(self),
        }
    }

    fn check(&self, key_id: &str) -> Result<(), String> {
        // The key is the identity: an inner id that differs would make deletes, copies and
        // validation records act on another backup's objects.
        if self.id != key_id {
            return Err(format!(
                "its inner id {:?} differs from its key {key_id}",
                self.id
            ));
        }
        if !(super::FORMAT_VERSION..=OBJECT_LIST_FORMAT).contains(&self.format) {
            return Err(format!(
                "it has format {}, this backup-cli reads formats {} to {OBJECT_LIST_FORMAT}",
                self.format,
                super::FORMAT_VERSION
            ));
        }
        if self.format < OBJECT_LIST_FORMAT && self.object_list.is_some() {
            return Err(format!(
                "it has format {} but keeps its tables and sequences apart, which needs format {OBJECT_LIST_FORMAT}",
                self.format
            ));
        }
        if self.format < WINDOWS_FORMAT && self.streams().any(Stream::is_window) {
            return Err(format!(
                "it has format {} but windowed streams, which need format {WINDOWS_FORMAT}",
                self.format
            ));
        }
        check_stream("the pre-data section", &self.pre_data)?;
        check_stream("the post-data section", &self.post_data)?;
        for table in &self.tables {
            for part in &table.parts {
                check_stream(&format!("table {}", table.display_name()), part)?;
            }
        }
        if let Some(lo) = &self.large_objects {
            check_stream("the large objects' data", &lo.data)?;
        }
        if let Some(incremental) = &self.incremental {
            check_stream("the change set", &incremental.changes)?;
        }
        if let Some(list) = &self.object_list {
            check_stream("the object list", list)?;
        }
        Ok(())
    }

    /// SHA-256 over every table's identity, counts, checksums and chunk ids (and the large
    /// objects' data), in a fixed text form (not serde's, so fields added later do not
    /// change it).
    pub fn tables_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let parts = |hash: &mut Sha256, part: &Stream| {
            hash.update(format!(
                "part {} {} {}\n",
                part.rows, part.bytes, part.checksum
            ));
            if let Some(skip) = part.skip {
                hash.update(format!("window {skip}\n"));
            }
            for chunk in &part.chunks {
                hash.update(format!("chunk {} {}\n", chunk.id, chunk.len));
            }
        };
        for t in &self.tables {
            hash.update(format!(
                "table {:?} {:?} {:?} {} {} {}\n",
                t.schema, t.name, t.columns, t.rows, t.logical_bytes, t.checksum
            ));
            for part in &t.parts {
                parts(&mut hash, part);
            }
        }
        if let Some(lo) = &self.large_objects {
            hash.update(format!(
                "large objects {} {}\n",
                lo.oids.len(),
                lo.content_bytes
            ));
            parts(&mut hash, &lo.data);
        }
        if let Some(incremental) = &self.incremental {
            hash.update(format!(
                "changes {} {} {}\n",
                incremental.slot, incremental.start_lsn, incremental.end_lsn
            ));
            parts(&mut hash, &incremental.changes);
        }
        hex::encode(hash.finalize())
    }

    pub fn rows(&self) -> u64 {
        self.tables
            .iter()
            .fold(0u64, |sum, t| sum.saturating_add(t.rows))
    }

    pub fn logical_bytes(&self) -> u64 {
        self.tables
            .iter()
            .fold(0u64, |sum, t| sum.saturating_add(t.logical_bytes))
            .saturating_add(self.pre_data.bytes)
            .saturating_add(self.post_data.bytes)
            .saturating_add(self.large_objects.as_ref().map_or(0, |lo| lo.data.bytes))
            .saturating_add(self.incremental.as_ref().map_or(0, |i| i.changes.bytes))
    }

    /// Every chunk the backup references, data and DDL alike.
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.streams().flat_map(|s| s.chunks.iter())
    }

    /// Every stream the backup holds: table parts, sections, large objects, changes, the
    /// object list kept apart.
    pub fn streams(&self) -> impl Iterator<Item = &Stream> {
        self.tables
            .iter()
            .flat_map(|t| t.parts.iter())
            .chain([&self.pre_data, &self.post_data])
            .chain(self.large_objects.as_ref().map(|lo| &lo.data))
            .chain(self.incremental.as_ref().map(|i| &i.changes))
            .chain(&self.object_list)
    }

    /// The format a manifest with these streams is written in: the oldest that reads them.
    pub fn format_for(tables: &[TableEntry]) -> u32 {
        if tables.iter().flat_map(|t| &t.parts).any(Stream::is_window) {
            WINDOWS_FORMAT
        } else {
            super::FORMAT_VERSION
        }
    }

    /// Compressed bytes of the distinct chunks the backup references: what it costs on its own.
    pub fn stored_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.chunks()
            .filter(|c| seen.insert(c.id.as_str()))
            .fold(0u64, |sum, c| sum.saturating_add(c.stored))
    }

    pub fn duration_seconds(&self) -> f64 {
        (self.completed_at - self.created_at).num_milliseconds() as f64 / 1000.0
    }

    /// Whether a validator found an error in the backup's rows (a mass delete, broken
    /// uniqueness, …): the backup is kept and listed, but `latest` passes over it and
    /// retention never counts it among the backups it must keep.
    pub fn is_suspect(&self) -> bool {
        self.suspect_findings().next().is_some()
    }

    /// The findings of severity `error` or `critical`, with the validator that made each.
    pub fn suspect_findings(&self) -> impl Iterator<Item = (&ValidatorRun, &Finding)> {
        self.validators.iter().flat_map(|run| {
            run.findings
                .iter()
                .filter(|f| f.severity >= Severity::Error)
                .map(move |f| (run, f))
        })
    }

    pub fn find_table(&self, name: &str) -> Option<&TableEntry> {
        self.tables
            .iter()
            .find(|t| t.display_name() == name || (t.schema == "public" && t.name == name))
    }
}

/// The chunk references of one stream are usable: hex ids, sizes within the format's limits.
fn check_stream(what: &str, stream: &Stream) -> Result<(), String> {
    for chunk in &stream.chunks {
        if !is_chunk_id(&chunk.id) {
            return Err(format!(
                "{what} refers to chunk {:?}, which is not a SHA-256 in hex",
                chunk.id
            ));
        }
        if chunk.len > MAX_CHUNK_LEN || chunk.stored > max_stored_len(chunk.len) {
            return Err(format!(
                "{what} gives chunk {} a size of {} bytes ({} stored), beyond the format's limit of {MAX_CHUNK_LEN}",
                chunk.id, chunk.len, chunk.stored
            ));
        }
    }
    if let Some(skip) = stream.skip {
        // A window starts in its first chunk and ends in its last one.
        let total = stream
            .chunks
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.len));
        let last = stream.chunks.last().map_or(0, |c| c.len);
        let fits = match stream.chunks.first() {
            None => skip == 0 && stream.bytes == 0,
            Some(first) => {
                skip < first.len
                    && skip.saturating_add(stream.bytes) <= total
                    && skip.saturating_add(stream.bytes) > total - last
            }
        };
        if !fits {
            return Err(format!(
                "{what} is a window of {} bytes from byte {skip} of chunks holding {total}, which does not fit them",
                stream.bytes
            ));
        }
    }
    Ok(())
}

/// SQL keywords that are not unreserved (`pg_get_keywords()` with `catcode <> 'U'`) in
/// PostgreSQL 15 to 18: as identifiers they must be quoted, or `LOCK TABLE select.t` is a
/// syntax error. Quoting one that a given server would accept bare is harmless.
const QUOTED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "json",
    "json_array",
    "json_arrayagg",
    "json_exists",
    "json_object",
    "json_objectagg",
    "json_query",
    "json_scalar",
    "json_serialize",
    "json_table",
    "json_value",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "merge_action",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

/// Quotes an identifier the way PostgreSQL's `quote_ident()` does: bare only when it is
/// lower-case letters, digits and underscores, starts with a letter or underscore, and is not
/// a keyword that needs quoting.
pub fn quote_ident(ident: &str) -> String {
    let plain = ident
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && ident
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && QUOTED_KEYWORDS.binary_search(&ident).is_err();
    if plain {
        ident.to_string()
    } else {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }
}

/// Quotes a string literal for SQL (`standard_conforming_strings` on, as every session sets).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A table `public.NAME (id)` of `rows` rows and `bytes` bytes, stored in `part`, with no
/// checksum: unit tests set what they judge.
#[cfg(test)]
pub(crate) fn sample_table(name: &str, (rows, bytes): (u64, u64), part: Stream) -> TableEntry {
    TableEntry {
        schema: "public".into(),
        name: name.into(),
        columns: vec!["id".into()],
        column_types: Vec::new(),
        partition_of: None,
        filter: None,
        rows,
        logical_bytes: bytes,
        checksum: String::new(),
        parts: vec![part],
        tracked: None,
    }
}

/// A manifest with nothing in it yet (no tables, no DDL), taken now of database `app` on
/// PostgreSQL 16: unit tests fill in what they judge.
#[cfg(test)]
pub(crate) fn sample_manifest(id: &str) -> Manifest {
    let now = Utc::now();
    Manifest {
        format: 1,
        id: id.into(),
        name: id.into(),
        backup_type: BackupType::Full,
        created_at: now,
        completed_at: now,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        source: SourceInfo {
            server_version: "16.4".into(),
            server_version_num: 160004,
            database: "app".into(),
            encoding: "UTF8".into(),
            snapshot_id: String::new(),
            snapshot_lsn: None,
            snapshot_xmin: String::new(),
            pg_dump_version: "16.4".into(),
            locale: DatabaseLocale::default(),
            qualified_data: true,
        },
        pre_data: Stream::default(),
        post_data: Stream::default(),
        sequences: Vec::new(),
        tables: Vec::new(),
        object_list: None,
        table_chunks: Vec::new(),
        schemas: vec!["public".into()],
        extensions: Vec::new(),
        roles: Vec::new(),
        foreign_keys: Vec::new(),
        large_objects: None,
        database_properties: Vec::new(),
        globals: Globals::default(),
        new_bytes: 0,
        compression_level: 3,
        digests: None,
        validators: Vec::new(),
        schedule: None,
        retain_until: None,
        chain: None,
        incremental: None,
        signature: None,
    }
}

#[cfg(test)]
mod quoting_tests {
    use super::{QUOTED_KEYWORDS, quote_ident};

    #[test]
    fn identifiers_are_quoted_like_the_servers_quote_ident() {
        assert!(
            QUOTED_KEYWORDS.windows(2).all(|w| w[0] < w[1]),
            "sorted for binary search"
        );
        assert_eq!(quote_ident("orders"), "orders");
        assert_eq!(quote_ident("_t1"), "_t1");
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("name"), "name", "unreserved keywords stay bare");
        assert_eq!(quote_ident("Mixed"), "\"Mixed\"");
        assert_eq!(quote_ident("1st"), "\"1st\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("café"), "\"café\"");
        assert_eq!(quote_ident(""), "\"\"");
    }
}

#[cfg(test)]
mod suspect_tests {
    use super::{Finding, Manifest, Severity, ValidatorRun};

    fn corpus_manifest() -> Manifest {
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/corpus/manifest/valid.json"),
        )
        .expect("corpus manifest");
        let manifest: Manifest = serde_json::from_slice(&bytes).expect("parses");
        manifest
    }

    fn finding(severity: Severity) -> Finding {
        Finding {
            rule: "max_shrink_percent".into(),
            table: "public.contacts".into(),
            column: None,
            severity,
            message: "80% fewer rows than backup x".into(),
            count: 0,
        }
    }

    #[test]
    fn manifests_without_validators_read_and_are_not_suspect() {
        let manifest = corpus_manifest();
        assert!(manifest.validators.is_empty());
        assert!(!manifest.is_suspect());
        let json = serde_json::to_string(&manifest).expect("serialises");
        assert!(!json.contains("validators"), "no field written when empty");
    }

    #[test]
    fn only_an_error_finding_makes_a_backup_suspect() {
        let mut manifest = super::sample_manifest("20261201-020000-abcd");
        let run = |findings| ValidatorRun {
            name: "rules".into(),
            plugin: "rules-validator".into(),
            version: "0.1.0".into(),
            sha256: "0".repeat(64),
            findings,
        };
        manifest.validators = vec![run(vec![
            finding(Severity::Info),
            finding(Severity::Warning),
        ])];
        assert!(!manifest.is_suspect());
        manifest
            .validators
            .push(run(vec![finding(Severity::Error)]));
        assert!(manifest.is_suspect());
        let (by, first) = manifest.suspect_findings().next().expect("one");
        assert_eq!(
            (by.name.as_str(), first.severity),
            ("rules", Severity::Error)
        );
        let back: Manifest =
            serde_json::from_str(&serde_json::to_string(&manifest).expect("json")).expect("back");
        assert_eq!(back, manifest);
    }
}

#[cfg(test)]
mod incremental_tests {
    use super::{
        BackupType, Chain, ChunkRef, IncrementalInfo, Manifest, NotExact, OBJECT_LIST_FORMAT,
        SequenceValue, Stream, TableChanges, TableEntry, WINDOWS_FORMAT, check_stream,
        object_list_json,
    };
    use crate::repository::changes::Lsn;

    fn incremental(id: &str) -> Manifest {
        let mut manifest = super::sample_manifest(id);
        manifest.backup_type = BackupType::Incremental;
        manifest.chain = Some(Chain {
            parent: "20261202-030000-aaaa".into(),
            base: "20261202-030000-aaaa".into(),
        });
        manifest.incremental = Some(IncrementalInfo {
            slot: "larder_app".into(),
            start_lsn: Lsn(0x16B3748),
            end_lsn: Lsn(0x16B9000),
            first_commit: Some(manifest.created_at),
            last_commit: Some(manifest.created_at),
            transactions: 2,
            changes: Stream {
                rows: 6,
                bytes: 300,
                checksum: "c".into(),
                chunks: vec![ChunkRef {
                    id: "a".repeat(64),
                    len: 300,
                    stored: 120,
                }],
                skip: None,
            },
            tables: vec![TableChanges {
                table: "public.t".into(),
                inserts: 1,
                updates: 1,
                ..TableChanges::default()
            }],
            not_exact: vec![NotExact {
                table: "public.log".into(),
                reason: "it has no replica identity".into(),
                fix: "ALTER TABLE public.log REPLICA IDENTITY FULL".into(),
            }],
            snapshot: None,
            schema_changes: Vec::new(),
            schema_fingerprint: None,
        });
        manifest
    }

    #[test]
    fn an_incremental_manifest_round_trips_and_counts_its_change_set() {
        let manifest = incremental("20261202-040000-bbbb");
        let json = serde_json::to_string(&manifest).unwrap();
        assert!(json.contains(r#""type":"incremental""#), "{json}");
        assert!(json.contains(r#""start_lsn":"0/16B3748""#), "{json}");
        assert!(
            !json.contains("snapshot\":null"),
            "absent snapshot not written"
        );
        let back = Manifest::parse(&manifest.id, json.as_bytes()).unwrap();
        assert_eq!(back, manifest);
        assert_eq!(
            back.chunks().count(),
            1,
            "the change set's chunks are the backup's"
        );
        assert_eq!(back.logical_bytes(), 300);
        assert_eq!(
            "incremental".parse::<BackupType>(),
            Ok(BackupType::Incremental)
        );
        assert_eq!(BackupType::Incremental.to_string(), "incremental");
    }

    #[test]
    fn a_damaged_change_set_reference_is_refused_and_changes_are_in_the_digest() {
        let mut manifest = incremental("20261202-040000-bbbb");
        let digest = manifest.tables_digest();
        if let Some(info) = manifest.incremental.as_mut() {
            info.end_lsn = Lsn(0x16BA000);
        }
        assert_ne!(manifest.tables_digest(), digest);
        if let Some(info) = manifest.incremental.as_mut() {
            info.changes.chunks[0].id = "../../x".into();
        }
        let json = serde_json::to_string(&manifest).unwrap();
        let e = Manifest::parse(&manifest.id, json.as_bytes()).unwrap_err();
        assert!(e.contains("the change set"), "{e}");
    }

    /// A stream of `bytes` from byte `skip` of chunks of these lengths.
    fn window(skip: u64, bytes: u64, lens: &[u64]) -> Stream {
        Stream {
            rows: 1,
            bytes,
            checksum: "c".into(),
            chunks: lens
                .iter()
                .map(|&len| ChunkRef {
                    id: "b".repeat(64),
                    len,
                    stored: len,
                })
                .collect(),
            skip: Some(skip),
        }
    }

    #[test]
    fn a_window_gives_each_chunk_its_bytes_and_must_fit_its_chunks() {
        let pieces = |s: &Stream| {
            s.pieces()
                .map(|(_, r)| (r.start, r.end))
                .collect::<Vec<_>>()
        };
        assert_eq!(pieces(&window(3, 4, &[10])), [(3, 7)]);
        assert_eq!(pieces(&window(8, 7, &[10, 10])), [(8, 10), (0, 5)]);
        assert_eq!(
            pieces(&window(0, 25, &[10, 10, 10])),
            [(0, 10), (0, 10), (0, 5)]
        );
        let whole = Stream {
            skip: None,
            bytes: 20,
            ..window(0, 20, &[10, 10])
        };
        assert_eq!(pieces(&whole), [(0, 10), (0, 10)]);
        for fits in [
            window(3, 4, &[10]),
            window(9, 2, &[10, 5]),
            window(0, 0, &[]),
        ] {
            assert_eq!(check_stream("t", &fits), Ok(()), "{fits:?}");
        }
        // Starting past the first chunk, running past the last, or not reaching it.
        for bad in [
            window(10, 1, &[10, 10]),
            window(5, 16, &[10, 10]),
            window(2, 5, &[10, 10]),
            window(0, 3, &[]),
        ] {
            let e = check_stream("table t", &bad).unwrap_err();
            assert!(e.contains("table t is a window"), "{e}");
        }
    }

    /// A table `public.NAME` of one 4-byte row, stored in `part`.
    fn one_row_table(name: &str, part: Stream) -> TableEntry {
        TableEntry {
            checksum: "c".into(),
            ..super::sample_table(name, (1, 4), part)
        }
    }

    #[test]
    fn windows_need_format_2_and_older_manifests_stay_format_1() {
        let mut manifest = super::sample_manifest("20261202-040000-dddd");
        assert_eq!(Manifest::format_for(&manifest.tables), 1);
        manifest
            .tables
            .push(one_row_table("t", window(0, 4, &[10])));
        assert_eq!(Manifest::format_for(&manifest.tables), WINDOWS_FORMAT);
        let json = serde_json::to_string(&manifest).unwrap();
        let e = Manifest::parse(&manifest.id, json.as_bytes()).unwrap_err();
        assert!(e.contains("need format 2"), "{e}");
        manifest.format = WINDOWS_FORMAT;
        let json = serde_json::to_string(&manifest).unwrap();
        let back = Manifest::parse(&manifest.id, json.as_bytes()).unwrap();
        assert_eq!(back.tables[0].parts[0].skip, Some(0));
        let digest = back.tables_digest();
        manifest.tables[0].parts[0].skip = Some(1);
        assert_ne!(manifest.tables_digest(), digest);
        manifest.format = OBJECT_LIST_FORMAT + 1;
        let json = serde_json::to_string(&manifest).unwrap();
        let e = Manifest::parse(&manifest.id, json.as_bytes()).unwrap_err();
        assert!(e.contains("has format 4"), "{e}");
    }

    #[test]
    fn an_object_list_kept_apart_is_stored_without_its_tables_and_must_name_their_chunks() {
        let mut manifest = super::sample_manifest("20261202-040000-eeee");
        manifest.format = WINDOWS_FORMAT;
        for (i, chunk) in [10u64, 20, 10].iter().enumerate() {
            let mut part = window(0, 4, &[*chunk]);
            part.chunks[0].id = format!("{i:x}").repeat(64);
            manifest.tables.push(one_row_table(&format!("t{i}"), part));
        }
        manifest.sequences.push(SequenceValue {
            schema: "public".into(),
            name: "t0_id_seq".into(),
            last_value: 41,
            is_called: true,
        });
        let list_json = object_list_json(&manifest.tables, &manifest.sequences).unwrap();
        let list = Stream {
            rows: 1,
            bytes: list_json.len() as u64,
            checksum: "l".into(),
            chunks: vec![ChunkRef {
                id: "f".repeat(64),
                len: list_json.len() as u64,
                stored: 99,
            }],
            skip: None,
        };
        let whole = manifest.clone().with_object_list(list);
        assert_eq!(whole.format, OBJECT_LIST_FORMAT);
        assert_eq!(whole.tables, manifest.tables);
        assert!(whole.chunks().any(|c| c.id == "f".repeat(64)));
        // Stored: no tables, but every chunk id they hold is in the text (for garbage
        // collection of a manifest it cannot read).
        let stored = whole.stored_json().unwrap();
        let text = String::from_utf8(stored.clone()).unwrap();
        assert!(
            !text.contains("\"t1\"") && !text.contains("t0_id_seq"),
            "{text}"
        );
        for id in ["0", "1", "2", "f"].map(|d| d.repeat(64)) {
            assert!(text.contains(&id), "{id} not in {text}");
        }
        let mut back = Manifest::parse(&whole.id, &stored).unwrap();
        assert!(back.tables.is_empty() && back.sequences.is_empty());
        back.attach_objects(&whole.id, &list_json).unwrap();
        assert_eq!(back, whole);
        // A list holding other chunks than the manifest names, or not a list at all.
        let mut other = manifest.tables.clone();
        other[1].parts[0].chunks[0].id = "e".repeat(64);
        let mut wrong = Manifest::parse(&whole.id, &stored).unwrap();
        let e = wrong
            .attach_objects(&whole.id, &object_list_json(&other, &[]).unwrap())
            .unwrap_err();
        assert!(e.contains("other chunks"), "{e}");
        let e = wrong.attach_objects(&whole.id, b"[]").unwrap_err();
        assert!(e.contains("object list is not valid"), "{e}");
        // Older formats cannot keep the list apart; a list both inline and apart is refused.
        let mut older = whole.clone();
        older.format = WINDOWS_FORMAT;
        let e = Manifest::parse(&older.id, &older.stored_json().unwrap()).unwrap_err();
        assert!(e.contains("needs format 3"), "{e}");
        let both = serde_json::to_vec(&whole).unwrap();
        let e = Manifest::parse(&whole.id, &both).unwrap_err();
        assert!(e.contains("both in itself and apart"), "{e}");
        let mut sequences_too = whole.clone();
        sequences_too.tables.clear();
        let e =
            Manifest::parse(&whole.id, &serde_json::to_vec(&sequences_too).unwrap()).unwrap_err();
        assert!(e.contains("both in itself and apart"), "{e}");
    }

    #[test]
    fn manifests_without_change_tracking_read_as_before() {
        let manifest = super::sample_manifest("20261202-040000-cccc");
        let json = serde_json::to_string(&manifest).unwrap();
        assert!(!json.contains("incremental"), "{json}");
        assert_eq!(
            Manifest::parse(&manifest.id, json.as_bytes())
                .unwrap()
                .incremental,
            None
        );
    }
}
