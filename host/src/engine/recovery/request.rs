//! What a recovery is asked to do: the strategy, the verification, the request as given, and
//! where it restores to. It imports nothing of recovery but the point-in-time type, so the
//! plan, the facts, the privilege rules and the step lists can all read it without importing
//! one another.

use super::chain::Until;
use crate::pg::ConnectionSettings;
use crate::repository::manifest::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How a recovery treats the destination (the database restored into).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The destination ends up exactly as the backup for the chosen scope (existing data is replaced).
    Replace,
    /// Restore into a database that does not exist yet (safe: nothing existing is touched).
    NewDatabase,
    /// Re-insert rows present in the backup but missing from the destination (matched by primary key).
    MissingRows,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::Replace => "replace",
            Strategy::NewDatabase => "new-database",
            Strategy::MissingRows => "missing-rows",
        })
    }
}

/// How `recovery execute` proves the restored tables. Every chunk is checked against its
/// SHA-256 before its rows are sent, whichever is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Verification {
    /// Compare each restored table's row count in the destination with the backup's (for a new
    /// database, the rows the server reported storing with COPY into the empty table).
    #[default]
    Rows,
    /// Also re-read every restored table and compare a checksum of its rows with the one
    /// recorded at backup time (reads all restored data once more).
    Checksums,
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verification::Rows => "rows",
            Verification::Checksums => "checksums",
        })
    }
}

#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub strategy: Strategy,
    /// `-t`: table names (`contacts`, `public.contacts`, or a partitioned table); None = all.
    pub tables: Option<Vec<String>>,
    /// Widen a subset along foreign keys instead of refusing.
    pub cascade: bool,
    /// Skip ownership statements (for a destination server without the source's roles).
    pub no_owner: bool,
    pub verification: Verification,
    /// The database to restore into (its name is a proposal for new-database unless named).
    pub destination: ConnectionSettings,
    pub destination_named: bool,
    /// What the backup argument was (`latest`, an id) and the newer backups `latest` passed over.
    pub requested: String,
    pub passed_over: Vec<String>,
    /// `--schema-only`: restoring a schema-only backup over existing tables (they end up empty).
    pub schema_only: bool,
    /// `--from-other-database`: replacing a database with a backup of another one.
    pub from_other_database: bool,
    /// `--create-roles`: create the backup's roles missing on the destination server.
    pub create_roles: bool,
    /// `--until` / `--until-lsn`: replay the chain only to this point.
    pub until: Option<Until>,
}

/// The database restored into: as requested, except that an unnamed `new-database` restore
/// goes to the backup's database when it no longer exists on the destination server, else
/// beside it as `<db>_restored_<backup-id>`.
pub fn destination_settings(
    manifest: &Manifest,
    req: &PlanRequest,
    databases: &BTreeSet<String>,
) -> ConnectionSettings {
    let mut settings = req.destination.clone();
    if req.strategy == Strategy::NewDatabase && !req.destination_named {
        let original = &manifest.source.database;
        settings.dbname = if databases.contains(original) {
            format!("{original}_restored_{}", manifest.id.replace('-', "_"))
        } else {
            original.clone()
        };
    }
    settings
}
