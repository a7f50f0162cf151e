//! `recovery plan`: what a recovery would do, read from the manifest and the destination database (the one restored into),
//! without changing anything.
//!
//! The plan names the tables and rows, what will be overwritten, the foreign keys that cross
//! a table subset's boundary, the requirements (server version, extensions, roles, privileges,
//! space), an estimated duration from this repository's restore history, the risks in plain
//! words, and the blockers that make `recovery execute` refuse.

use crate::engine::globals::{self, GlobalsPlan};
use crate::engine::progress::human_bytes;
use crate::error::{Error, Result};
use crate::pg::{ConnectionSettings, catalog};
use crate::repository::Repository;
use crate::repository::history::DEFAULT_RESTORE_BYTES_PER_SECOND;
use crate::repository::manifest::{BackupType, DatabaseLocale, Manifest, TableEntry, quote_ident};
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
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanTable {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    /// Rows in the destination now; null when the table does not exist there.
    pub destination_rows: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Crossing {
    pub constraint: String,
    pub table: String,
    pub references: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Requirement {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanDestination {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub exists: bool,
}

/// How `new-database` creates the destination: from template0 with the backup's encoding and, where
/// the destination server has it, the source's locale.
#[derive(Debug, Clone, Serialize)]
pub struct NewDatabase {
    pub template: String,
    pub encoding: String,
    /// The locale the new database gets (empty fields: the destination server's default).
    pub locale: DatabaseLocale,
    /// Why it differs from the source database's, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differs: Option<String>,
    #[serde(skip)]
    destination_version_num: i32,
}

impl NewDatabase {
    /// Decides the locale: the source's when the destination server can create it, else C (valid with
    /// every encoding), saying so.
    async fn decide(
        admin: &tokio_postgres::Client,
        manifest: &Manifest,
        destination_version_num: i32,
    ) -> Result<NewDatabase> {
        let source = &manifest.source.locale;
        let encoding = manifest.source.encoding.clone();
        let provider_ok = match source.provider.as_str() {
            "icu" => destination_version_num >= 150000,
            "builtin" => destination_version_num >= 170000,
            _ => true,
        };
        let (locale, differs) = if source.lc_collate.is_empty() {
            (
                DatabaseLocale::default(),
                Some("the backup does not record the source's locale (taken by an older version): the destination server's default is used".into()),
            )
        } else if provider_ok && catalog::locale_available(admin, source, &encoding).await? {
            (source.clone(), None)
        } else {
            (
                DatabaseLocale {
                    lc_collate: "C".into(),
                    lc_ctype: "C".into(),
                    provider: "libc".into(),
                    locale: None,
                },
                Some(format!(
                    "the source's locale ({}) is not available on the destination server: the new database uses C, so text sorts by byte value; \
                     install the locale on the destination server and restore again to keep the source's ordering",
                    describe_locale(source)
                )),
            )
        };
        Ok(NewDatabase {
            template: "template0".into(),
            encoding,
            locale,
            differs,
            destination_version_num,
        })
    }

    /// The `CREATE DATABASE` statement for database `name`.
    pub fn create_sql(&self, name: &str) -> String {
        let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let mut sql = format!(
            "CREATE DATABASE {} TEMPLATE {} ENCODING {}",
            crate::repository::manifest::quote_ident(name),
            crate::repository::manifest::quote_ident(&self.template),
            literal(&self.encoding)
        );
        let l = &self.locale;
        if !l.lc_collate.is_empty() {
            sql.push_str(&format!(
                " LC_COLLATE {} LC_CTYPE {}",
                literal(&l.lc_collate),
                literal(&l.lc_ctype)
            ));
            // A cluster created with ICU as its default would otherwise give ICU.
            if self.destination_version_num >= 150000 {
                let provider = if l.provider.is_empty() {
                    "libc"
                } else {
                    l.provider.as_str()
                };
                sql.push_str(&format!(" LOCALE_PROVIDER {provider}"));
                match (provider, &l.locale) {
                    ("icu", Some(locale)) => {
                        sql.push_str(&format!(" ICU_LOCALE {}", literal(locale)))
                    }
                    ("builtin", Some(locale)) => {
                        sql.push_str(&format!(" BUILTIN_LOCALE {}", literal(locale)))
                    }
                    _ => {}
                }
            }
        }
        sql
    }

    /// "template0, encoding LATIN1, LC_COLLATE C, LC_CTYPE C", as the plan's step says it.
    pub fn describe(&self) -> String {
        let locale = if self.locale.lc_collate.is_empty() {
            "the destination server's default locale".to_string()
        } else {
            describe_locale(&self.locale)
        };
        format!("{}, encoding {}, {locale}", self.template, self.encoding)
    }
}

fn describe_locale(l: &DatabaseLocale) -> String {
    let mut out = format!("LC_COLLATE {}, LC_CTYPE {}", l.lc_collate, l.lc_ctype);
    if let Some(locale) = &l.locale
        && l.provider != "libc"
    {
        out.push_str(&format!(", {} locale {locale}", l.provider));
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct RecoveryPlan {
    pub backup_id: String,
    pub backup_name: String,
    pub backup_created_at: chrono::DateTime<chrono::Utc>,
    pub backup_type: BackupType,
    /// The database the backup was taken of.
    pub backup_database: String,
    /// Seconds between the backup's snapshot and this plan.
    pub backup_age_seconds: i64,
    /// The backup argument as given (`latest`, `latest-schema` or an id).
    pub requested: String,
    /// Newer backups `latest` passed over, each with the reason.
    pub passed_over: Vec<String>,
    pub strategy: Strategy,
    pub destination: PlanDestination,
    pub subset: bool,
    pub tables: Vec<PlanTable>,
    /// Tables added to the subset by `--cascade`.
    pub cascade_added: Vec<String>,
    pub foreign_keys_crossing: Vec<Crossing>,
    pub estimated_seconds: f64,
    pub estimate_basis: String,
    pub requirements: Vec<Requirement>,
    pub risks: Vec<String>,
    /// Reasons `recovery execute` will refuse; empty when the plan can run.
    pub blockers: Vec<String>,
    pub steps: Vec<String>,
    /// How a new database is created (null for the strategies that restore into an existing one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_database: Option<NewDatabase>,
    /// Roles, the database's owner and settings: what exists, what is created, what is by hand.
    pub globals: GlobalsPlan,
    /// `--create-roles` was given: execute creates `globals.roles_to_create`.
    pub create_roles: bool,
    /// User triggers do not fire for restored rows (existing tables: switched off by name
    /// inside the recovery transaction, which needs their owner).
    pub triggers_suppressed: bool,
    /// A superuser's `replace -t` or `missing-rows` also skips the foreign-key triggers
    /// (`session_replication_role = replica`) and checks the keys once after loading.
    #[serde(skip)]
    pub skip_foreign_key_triggers: bool,
    pub verification: Verification,
    #[serde(skip)]
    pub selected: Vec<usize>,
    #[serde(skip)]
    pub destination_settings: ConnectionSettings,
    #[serde(skip)]
    pub no_owner: bool,
}

impl RecoveryPlan {
    pub fn ready(&self) -> bool {
        self.blockers.is_empty()
    }

    /// The refusal `recovery execute` gives when the plan has blockers.
    pub fn check_ready(&self) -> crate::error::Result<()> {
        if self.ready() {
            return Ok(());
        }
        Err(crate::error::Error::Refused(format!(
            "recovery refused: {}",
            self.blockers.join("\n  - ")
        )))
    }

    /// The backup in one line, as the plan and the confirmation show it: id, name, type,
    /// database and age.
    pub fn backup_summary(&self) -> String {
        format!(
            "backup {} ('{}', {}, of database {}, taken {}, {} ago)",
            self.backup_id,
            self.backup_name,
            self.backup_type,
            self.backup_database,
            self.backup_created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            human_age(self.backup_age_seconds)
        )
    }

    pub fn selected_tables<'a>(&self, manifest: &'a Manifest) -> Vec<&'a TableEntry> {
        self.selected.iter().map(|&i| &manifest.tables[i]).collect()
    }
}

/// An age in the largest unit that keeps it readable: `40 s`, `12 min`, `5 h 3 min`, `3 days`.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days", s / 86400),
    }
}

/// Display names of a partitioned table's leaves, or the table itself.
fn leaves(manifest: &Manifest, name: &str) -> Vec<usize> {
    manifest
        .tables
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            t.display_name() == name
                || t.partition_of.as_deref().map(|p| p.replace('"', "")) == Some(name.to_string())
        })
        .map(|(i, _)| i)
        .collect()
}

fn resolve_names(manifest: &Manifest, names: &[String]) -> Result<BTreeSet<usize>> {
    let mut out = BTreeSet::new();
    for raw in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let qualified = if raw.contains('.') {
            raw.to_string()
        } else {
            format!("public.{raw}")
        };
        let found = leaves(manifest, &qualified);
        if found.is_empty() {
            let known: Vec<String> = manifest
                .tables
                .iter()
                .map(TableEntry::display_name)
                .collect();
            return Err(Error::Refused(format!(
                "table '{raw}' is not in backup {}; it holds: {}",
                manifest.id,
                known.join(", ")
            )));
        }
        out.extend(found);
    }
    if out.is_empty() {
        return Err(Error::Refused("-t names no tables".into()));
    }
    Ok(out)
}

/// Foreign keys as (constraint, referencing leaf, referenced leaf) index triples.
fn edges(manifest: &Manifest) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for fk in &manifest.foreign_keys {
        for child in leaves(manifest, &fk.table) {
            for parent in leaves(manifest, &fk.references) {
                out.push((fk.name.clone(), child, parent));
            }
        }
    }
    out
}

/// A connection to the destination server for catalog work and CREATE/DROP DATABASE.
pub(crate) async fn admin_connection(
    destination: &ConnectionSettings,
    source_db: &str,
) -> Result<tokio_postgres::Client> {
    let mut last = None;
    for db in [
        destination.dbname.as_str(),
        source_db,
        "postgres",
        "template1",
    ] {
        match destination.connect_to(db).await {
            Ok(client) => return Ok(client),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Refused("no database to connect to".into())))
}

pub async fn plan(
    repo: &Repository,
    manifest: &Manifest,
    req: &PlanRequest,
) -> Result<RecoveryPlan> {
    let schema_only = manifest.backup_type == BackupType::SchemaOnly;
    if schema_only
        && (req.strategy == Strategy::MissingRows
            || req.strategy == Strategy::Replace && req.tables.is_some())
    {
        return Err(Error::Refused(format!(
            "backup {} is schema-only: it holds no table data to restore; \
             `latest` names the newest full backup",
            manifest.id
        )));
    }
    let subset = req.tables.is_some();
    let mut chosen: BTreeSet<usize> = match &req.tables {
        Some(names) => resolve_names(manifest, names)?,
        None => (0..manifest.tables.len()).collect(),
    };
    let name_of = |i: usize| manifest.tables[i].display_name();

    // Foreign keys across the subset boundary.
    let mut blockers = Vec::new();
    let mut risks = Vec::new();
    let mut crossing = Vec::new();
    let mut cascade_added = Vec::new();
    if subset {
        let all_edges = edges(manifest);
        loop {
            let mut added = false;
            for (fk, child, parent) in &all_edges {
                let (c_in, p_in) = (chosen.contains(child), chosen.contains(parent));
                // Which side must be inside the subset for the restore to be sound.
                let missing = match req.strategy {
                    Strategy::Replace if p_in && !c_in => Some(*child),
                    Strategy::NewDatabase if c_in && !p_in => Some(*parent),
                    _ => None,
                };
                if let Some(missing) = missing {
                    if req.cascade {
                        chosen.insert(missing);
                        cascade_added.push(name_of(missing));
                        added = true;
                    } else if !crossing
                        .iter()
                        .any(|c: &Crossing| c.constraint == *fk && c.table == name_of(*child))
                    {
                        crossing.push(Crossing {
                            constraint: fk.clone(),
                            table: name_of(*child),
                            references: name_of(*parent),
                        });
                    }
                }
            }
            if !added {
                break;
            }
        }
        if !crossing.is_empty() {
            let needed: BTreeSet<String> = crossing
                .iter()
                .map(|c| {
                    if req.strategy == Strategy::Replace {
                        c.table.clone()
                    } else {
                        c.references.clone()
                    }
                })
                .collect();
            let why = crossing
                .iter()
                .map(|c| format!("{} references {} ({})", c.table, c.references, c.constraint))
                .collect::<Vec<_>>()
                .join("; ");
            blockers.push(format!(
                "foreign keys cross the subset: {why}. Add {} to -t, or pass --cascade to include them",
                needed.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        for (fk, child, parent) in edges(manifest) {
            let outward = chosen.contains(&child) && !chosen.contains(&parent);
            if outward && req.strategy != Strategy::NewDatabase {
                risks.push(format!(
                    "{} references {} ({fk}), which is not restored: restored rows must find their match in its current rows (checked after loading; the restore is rolled back otherwise)",
                    name_of(child),
                    name_of(parent)
                ));
            }
        }
    }
    let selected: Vec<usize> = chosen.into_iter().collect();

    // The destination.
    let mut destination_settings = req.destination.clone();
    let admin = admin_connection(&req.destination, &manifest.source.database).await?;
    if req.strategy == Strategy::NewDatabase && !req.destination_named {
        let original = &manifest.source.database;
        destination_settings.dbname = if catalog::database_exists(&admin, original).await? {
            format!("{original}_restored_{}", manifest.id.replace('-', "_"))
        } else {
            original.clone()
        };
    }
    let destination_exists = catalog::database_exists(&admin, &destination_settings.dbname).await?;
    let facts = catalog::destination_server(&admin).await?;
    let new_database = if req.strategy == Strategy::NewDatabase {
        Some(NewDatabase::decide(&admin, manifest, facts.version_num).await?)
    } else {
        None
    };
    let destination_client = if req.strategy != Strategy::NewDatabase {
        if !destination_exists {
            return Err(Error::Refused(format!(
                "database {} does not exist on {}:{}; use -s new-database to recreate it",
                destination_settings.dbname, destination_settings.host, destination_settings.port
            )));
        }
        Some(destination_settings.connect().await?)
    } else {
        None
    };

    let mut tables = Vec::new();
    for &i in &selected {
        let t = &manifest.tables[i];
        let destination_rows = match &destination_client {
            Some(client) => catalog::row_count(client, &t.qualified()).await?,
            None => None,
        };
        tables.push(PlanTable {
            name: t.display_name(),
            rows: t.rows,
            bytes: t.logical_bytes,
            destination_rows,
        });
    }

    // Requirements.
    let mut requirements = Vec::new();
    let backup_major = manifest.source.server_version_num / 10000;
    let destination_major = facts.version_num / 10000;
    let version_ok = destination_major >= backup_major;
    requirements.push(Requirement {
        name: "server version".into(),
        ok: version_ok,
        detail: format!(
            "destination server runs PostgreSQL {}, backup is from {}",
            facts.version, manifest.source.server_version
        ),
    });
    if !version_ok {
        blockers.push(format!("the destination server (major {destination_major}) is older than the backup's (major {backup_major})"));
    }
    let available = catalog::available_extensions(&admin).await?;
    for ext in &manifest.extensions {
        let ok = available.contains(&ext.name);
        requirements.push(Requirement {
            name: format!("extension {}", ext.name),
            ok,
            detail: if ok {
                format!("available (backup has {})", ext.version)
            } else {
                "not installed on the destination server".into()
            },
        });
        let existing_tables_only = subset && req.strategy != Strategy::NewDatabase;
        if !ok && !existing_tables_only {
            blockers.push(format!(
                "extension {} is not available on the destination server: install its package",
                ext.name
            ));
        }
    }
    if let Some(new) = &new_database {
        requirements.push(Requirement {
            name: "locale".into(),
            ok: new.differs.is_none(),
            detail: match &new.differs {
                Some(why) => why.clone(),
                None => format!(
                    "the source's, available on the destination server ({})",
                    new.describe()
                ),
            },
        });
        if let Some(why) = &new.differs {
            risks.push(why.clone());
        }
    }
    let rewrites_schema = !subset && req.strategy != Strategy::MissingRows;
    let (globals, role_blockers) = globals::plan(
        &admin,
        &globals::Inputs {
            manifest,
            facts: &facts,
            dbname: &destination_settings.dbname,
            new_database: req.strategy == Strategy::NewDatabase,
            rewrites_schema,
            no_owner: req.no_owner,
            create_roles: req.create_roles,
        },
    )
    .await?;
    let mut roles_detail = vec![format!(
        "exist: {}",
        if globals.existing_roles.is_empty() {
            "none of the backup's roles".to_string()
        } else {
            globals.existing_roles.join(", ")
        }
    )];
    if !globals.roles_to_create.is_empty() {
        roles_detail.push(format!(
            "{} by --create-roles: {}",
            if req.create_roles {
                "to be created"
            } else {
                "missing, would be created"
            },
            globals.roles_to_create.join(", ")
        ));
    }
    roles_detail.push(globals.passwords.clone());
    requirements.push(Requirement {
        name: "roles".into(),
        ok: role_blockers.is_empty(),
        detail: roles_detail.join("; "),
    });
    blockers.extend(role_blockers);
    let needed = privileges_needed(
        &admin,
        destination_client.as_ref(),
        manifest,
        req,
        &facts,
        &tables,
        &destination_settings.dbname,
    )
    .await?;
    requirements.push(Requirement {
        name: "privileges".into(),
        ok: needed.missing.is_empty(),
        detail: if needed.missing.is_empty() {
            format!(
                "{} may run every step of {}{}",
                facts.user,
                req.strategy,
                if facts.superuser {
                    " (superuser)"
                } else {
                    " (checked statement by statement; not a superuser)"
                }
            )
        } else {
            format!("{} lacks: {}", facts.user, needed.missing.join("; "))
        },
    });
    for missing in &needed.missing {
        blockers.push(format!("{} lacks {missing}", facts.user));
    }
    let absent: Vec<&str> = tables
        .iter()
        .filter(|t| t.destination_rows.is_none())
        .map(|t| t.name.as_str())
        .collect();
    if subset && req.strategy == Strategy::Replace && !absent.is_empty() {
        blockers.push(format!(
            "{} do not exist in {}: -s replace -t reloads existing tables; restore them beside it with -s new-database -t",
            absent.join(", "),
            destination_settings.dbname
        ));
    }
    let bytes: u64 = tables.iter().map(|t| t.bytes).sum();
    requirements.push(Requirement {
        name: "space".into(),
        ok: true,
        detail: format!(
            "about {} on the database server for table data, plus its indexes",
            human_bytes(bytes)
        ),
    });
    if req.strategy == Strategy::NewDatabase && destination_exists {
        // Never point at -s replace here: without --dest-db it overwrites the live database.
        blockers.push(format!(
            "database {} already exists and new-database never touches an existing database: \
             choose another name with --dest-db NAME, or, if it is an earlier drill's copy nobody uses, \
             drop it first (DROP DATABASE {};)",
            destination_settings.dbname,
            quote_ident(&destination_settings.dbname)
        ));
    }
    if schema_only && req.strategy == Strategy::Replace && !req.schema_only {
        blockers.push(format!(
            "backup {} is schema-only: -s replace would leave every table of {} empty. \
             Restore a full backup (`latest` names the newest), or pass --schema-only to rebuild the structure without data",
            manifest.id, destination_settings.dbname
        ));
    }
    if req.schema_only && !schema_only {
        blockers.push(format!(
            "--schema-only confirms restoring a schema-only backup, and backup {} is {}: leave the flag out",
            manifest.id, manifest.backup_type
        ));
    }
    let other_database = manifest.source.database != destination_settings.dbname;
    if other_database && req.strategy != Strategy::NewDatabase && !req.from_other_database {
        blockers.push(format!(
            "backup {} is of database {}, and -s {} would overwrite database {} with it: \
             choose a backup of {}, or pass --from-other-database if that is what you mean",
            manifest.id,
            manifest.source.database,
            req.strategy,
            destination_settings.dbname,
            destination_settings.dbname
        ));
    }
    if req.strategy == Strategy::MissingRows
        && let Some(client) = &destination_client
    {
        let mut without_pk = Vec::new();
        for &i in &selected {
            let t = &manifest.tables[i];
            if catalog::primary_key(client, &t.qualified())
                .await?
                .is_empty()
            {
                without_pk.push(t.display_name());
            }
        }
        if !without_pk.is_empty() {
            blockers.push(format!(
                "missing-rows matches rows by primary key, and {} have none (or do not exist in the destination): \
                 leave them out with -t, or restore them beside the live database (-s new-database -t TABLES) and copy back the rows you need",
                without_pk.join(", ")
            ));
        }
    }

    // New tables get their triggers after the load; existing tables' user triggers are
    // switched off for the restore's rows (by their owner) unless a privilege is missing.
    let triggers_suppressed = needed.missing.is_empty();
    let skip_foreign_key_triggers =
        facts.superuser && (subset || req.strategy == Strategy::MissingRows);

    // Estimate.
    let (rate, estimate_basis) = match repo.restore_throughput().await? {
        Some((rate, n)) => (
            rate,
            format!(
                "median of {n} measured restore(s) in this repository: {}/s",
                human_bytes(rate as u64)
            ),
        ),
        None => (
            DEFAULT_RESTORE_BYTES_PER_SECOND,
            format!(
                "no restore measured in this repository yet; assuming {}/s",
                human_bytes(DEFAULT_RESTORE_BYTES_PER_SECOND as u64)
            ),
        ),
    };
    let estimated_seconds = (bytes as f64 / rate).max(1.0);

    // Risks and steps, in plain words.
    let chunks = count_chunks(manifest, &selected);
    let verify = match req.verification {
        Verification::Rows => "count every table's rows",
        Verification::Checksums => "count every table's rows and re-read it to compare checksums",
    };
    let mut steps = Vec::new();
    match req.strategy {
        Strategy::NewDatabase => {
            // A failure drops the new database, so chunks are checked as they are loaded
            // rather than all beforehand (`--dry-run` checks them all without loading).
            if let Some(new) = &new_database {
                steps.push(format!(
                    "create database {} from {}, with the source database's settings (ALTER DATABASE … SET), comment and privileges, as pg_restore --create does",
                    destination_settings.dbname,
                    new.describe()
                ));
            }
            steps.push("create the schema (pg_dump pre-data)".into());
            if let Some(lo) = &manifest.large_objects {
                steps.push(format!(
                    "write the data of {} large object(s) ({})",
                    lo.oids.len(),
                    human_bytes(lo.content_bytes)
                ));
            }
            steps.push(format!(
                "load {} table(s) in parallel with COPY, checking each of the {chunks} chunks (SHA-256, decompression) before its rows are sent",
                selected.len()
            ));
            steps.push("build indexes and constraints (independent ones in parallel), then foreign keys (validated in parallel), triggers and the rest".into());
            steps.push(format!(
                "set sequence values, ANALYZE, {verify}, check no constraint is left NOT VALID (those NOT VALID in the backup stay so)"
            ));
            steps.push("create event triggers last, as pg_restore does".into());
            risks.push(format!(
                "none for existing data: {} is a new database; on failure it is dropped again",
                destination_settings.dbname
            ));
        }
        Strategy::Replace if !subset => {
            steps.push(verify_chunks_first(chunks));
            steps.push(format!(
                "in one transaction: drop schemas {} (and the backup's publications and event triggers) and recreate them from the backup",
                manifest.schemas.join(", ")
            ));
            if let Some(lo) = &manifest.large_objects {
                steps.push(format!(
                    "replace the backup's {} large object(s) (others in the database are kept)",
                    lo.oids.len()
                ));
            }
            steps.push(format!("load every table, build post-data, set sequences, {verify}; commit only if all checks pass"));
            risks.push(format!(
                "replace drops every object in schemas {} of {}: anything created or changed since the backup ({}) is lost",
                manifest.schemas.join(", "),
                destination_settings.dbname,
                manifest.created_at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        Strategy::Replace => {
            steps.push(verify_chunks_first(chunks));
            steps.push(format!(
                "in one transaction: switch off their user triggers, empty {} and reload them from the backup",
                tables
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            steps.push(format!(
                "check foreign keys, switch the triggers back on as they were, set owned sequences, {verify}; commit only if all checks pass"
            ));
            for t in &tables {
                risks.push(format!(
                    "replace empties {} ({} rows now, {} in the backup): rows written since the backup are lost",
                    t.name,
                    t.destination_rows.map_or("missing".into(), |r| r.to_string()),
                    t.rows
                ));
            }
        }
        Strategy::MissingRows => {
            steps.push(verify_chunks_first(chunks));
            steps.push(
                "in one transaction: switch off the tables' user triggers, load each table's backup rows into a temporary table".into(),
            );
            steps.push("insert the rows whose primary key is missing from the destination; check foreign keys; commit".into());
            risks.push(
                "rows that still exist keep their current values; only missing rows come back"
                    .into(),
            );
        }
    }

    if req.create_roles && !globals.statements.is_empty() {
        steps.insert(
            0,
            format!(
                "create the missing roles and their memberships: {}",
                globals.statements.join("; ")
            ),
        );
    }
    if !globals.database_statements.is_empty() {
        steps.push(format!(
            "give the new database the backup's owner and settings: {}",
            globals.database_statements.join("; ")
        ));
    }

    Ok(RecoveryPlan {
        backup_id: manifest.id.clone(),
        backup_name: manifest.name.clone(),
        backup_created_at: manifest.created_at,
        backup_type: manifest.backup_type,
        backup_database: manifest.source.database.clone(),
        backup_age_seconds: (chrono::Utc::now() - manifest.created_at).num_seconds(),
        requested: req.requested.clone(),
        passed_over: req.passed_over.clone(),
        strategy: req.strategy,
        destination: PlanDestination {
            host: destination_settings.host.clone(),
            port: destination_settings.port,
            database: destination_settings.dbname.clone(),
            exists: destination_exists,
        },
        subset,
        tables,
        cascade_added,
        foreign_keys_crossing: crossing,
        estimated_seconds,
        estimate_basis,
        requirements,
        risks,
        blockers,
        steps,
        new_database,
        globals,
        create_roles: req.create_roles,
        triggers_suppressed,
        skip_foreign_key_triggers,
        verification: req.verification,
        selected,
        destination_settings,
        no_owner: req.no_owner,
    })
}

fn verify_chunks_first(chunks: usize) -> String {
    format!(
        "verify the {chunks} chunks the restore reads (SHA-256, decompression) before touching the destination"
    )
}

fn count_chunks(manifest: &Manifest, selected: &[usize]) -> usize {
    selected
        .iter()
        .map(|&i| {
            manifest.tables[i]
                .parts
                .iter()
                .map(|p| p.chunks.len())
                .sum::<usize>()
        })
        .sum::<usize>()
        + manifest.pre_data.chunks.len()
        + manifest.post_data.chunks.len()
        + manifest
            .large_objects
            .as_ref()
            .map_or(0, |lo| lo.data.chunks.len())
}

/// What the connected role lacks for the strategy's statements, each with what to grant.
struct Privileges {
    missing: Vec<String>,
}

/// Checks, as the role that will run the restore, every privilege the strategy's statements
/// need, so that `recovery plan` and `--dry-run` fail where `execute` would.
async fn privileges_needed(
    admin: &tokio_postgres::Client,
    destination: Option<&tokio_postgres::Client>,
    manifest: &Manifest,
    req: &PlanRequest,
    facts: &catalog::DestinationServer,
    tables: &[PlanTable],
    dbname: &str,
) -> Result<Privileges> {
    let user = quote_ident(&facts.user);
    let db = quote_ident(dbname);
    let subset = req.tables.is_some();
    let extension_names: Vec<String> = manifest.extensions.iter().map(|e| e.name.clone()).collect();
    let mut missing = Vec::new();
    let untrusted = |names: Vec<String>| {
        names.into_iter().map(|e| {
            format!(
                "superuser, to create extension {e} (not a trusted extension): run the restore as a superuser, \
                 or have one create it first (CREATE EXTENSION {};)",
                quote_ident(&e)
            )
        })
    };
    match (req.strategy, destination) {
        (Strategy::NewDatabase, _) => {
            if !facts.superuser && !facts.createdb {
                missing.push(format!(
                    "CREATEDB, to create database {dbname}: ALTER ROLE {user} CREATEDB; (as a superuser)"
                ));
            }
            missing.extend(untrusted(
                catalog::untrusted_extensions(admin, &extension_names, None).await?,
            ));
        }
        (Strategy::Replace, Some(client)) if !subset => {
            for (schema, owner) in catalog::schemas_not_owned(client, &manifest.schemas).await? {
                // pg_database_owner cannot be granted: its one member is the database's owner.
                let or_grant = if owner == "pg_database_owner" {
                    String::new()
                } else {
                    format!(" or GRANT {} TO {user};", quote_ident(&owner))
                };
                missing.push(format!(
                    "ownership of schema {schema} (owned by {owner}), to drop and recreate it: \
                     ALTER SCHEMA {} OWNER TO {user};{or_grant}",
                    quote_ident(&schema)
                ));
            }
            if manifest.schemas.iter().any(|s| s != "public")
                && !catalog::database_privilege(client, "CREATE").await?
            {
                missing.push(format!(
                    "CREATE on database {dbname}, to create the backup's schemas: GRANT CREATE ON DATABASE {db} TO {user};"
                ));
            }
            missing.extend(untrusted(
                catalog::untrusted_extensions(
                    client,
                    &extension_names,
                    Some(manifest.schemas.as_slice()),
                )
                .await?,
            ));
        }
        (_, Some(client)) => {
            let names: Vec<String> = tables
                .iter()
                .filter(|t| t.destination_rows.is_some())
                .filter_map(|t| manifest.find_table(&t.name).map(TableEntry::qualified))
                .collect();
            let wanted: &[&str] = if req.strategy == Strategy::Replace {
                &["SELECT", "INSERT", "TRUNCATE"]
            } else {
                &["SELECT", "INSERT"]
            };
            for access in catalog::table_access(client, &names).await? {
                let lacking: Vec<&str> = access
                    .missing
                    .iter()
                    .copied()
                    .filter(|p| wanted.contains(p))
                    .collect();
                if !lacking.is_empty() {
                    missing.push(format!(
                        "{} on {}: GRANT {} ON {} TO {user};",
                        lacking.join(", "),
                        access.table,
                        lacking.join(", "),
                        access.table
                    ));
                }
                if access.user_triggers && !access.owned && !facts.superuser {
                    let owner = access.owner.as_deref().unwrap_or("?");
                    missing.push(format!(
                        "ownership of {} (owned by {owner}), to switch off its user triggers for the restored rows: \
                         GRANT {} TO {user}; or ALTER TABLE {} OWNER TO {user};",
                        access.table,
                        quote_ident(owner),
                        access.table
                    ));
                }
                if req.strategy == Strategy::Replace {
                    for seq in &access.sequences_without_update {
                        missing.push(format!(
                            "UPDATE on sequence {seq}, to set its value: GRANT UPDATE ON SEQUENCE {seq} TO {user};"
                        ));
                    }
                }
            }
            if req.strategy == Strategy::MissingRows
                && !catalog::database_privilege(client, "TEMPORARY").await?
            {
                missing.push(format!(
                    "TEMPORARY on database {dbname}, to stage the backup's rows: GRANT TEMPORARY ON DATABASE {db} TO {user};"
                ));
            }
        }
        (_, None) => {}
    }
    let rewrites_schema = !subset && req.strategy != Strategy::MissingRows;
    if rewrites_schema && !req.no_owner && !facts.superuser {
        for role in catalog::roles_not_assumable(admin, &manifest.roles).await? {
            missing.push(format!(
                "membership in role {role}, to make it the owner of the objects it owns in the backup: \
                 GRANT {} TO {user}; (or pass --no-owner)",
                quote_ident(&role)
            ));
        }
    }
    Ok(Privileges { missing })
}
