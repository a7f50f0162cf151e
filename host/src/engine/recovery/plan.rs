//! `recovery plan`: what a recovery would do, without changing anything. [`select`] chooses
//! the tables, [`facts::read`] reads the destination (the database restored into) once, and
//! [`judge`], a pure function of (manifest, request, facts), gives the plan.
//!
//! The plan names the tables and rows, what will be overwritten, the foreign keys that cross
//! a table subset's boundary, the requirements (server version, extensions, roles, privileges,
//! space), an estimated duration from this repository's restore drills and history, the risks in plain
//! words, the strategy's steps, and the blockers that make `recovery execute` refuse.

use super::chain;
use super::facts::{self, Facts};
use super::privileges::privileges_missing;
use super::replay_plan::ReplayPlan;
pub use super::request::{PlanRequest, Strategy, Verification, destination_settings};
use super::step::{Step, steps};
use crate::engine::globals::{self, GlobalsPlan};
use crate::engine::progress::human_bytes;
use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::repository::Repository;
use crate::repository::history::{DEFAULT_RESTORE_BYTES_PER_SECOND, DrillOutcome, DrillRecord};
use crate::repository::manifest::{BackupType, DatabaseLocale, Manifest, TableEntry, quote_ident};
use serde::Serialize;
use std::collections::BTreeSet;

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
    /// Decides the locale: the source's when the destination server can create it
    /// (`available`, and a server version with the source's locale provider), else C (valid
    /// with every encoding), saying so.
    fn decide(manifest: &Manifest, destination_version_num: i32, available: bool) -> NewDatabase {
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
        } else if provider_ok && available {
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
        NewDatabase {
            template: "template0".into(),
            encoding,
            locale,
            differs,
            destination_version_num,
        }
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

/// One step of the recovery and what it will do with this backup and destination.
#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    pub name: Step,
    pub detail: String,
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
    /// The strategy's steps, as `recovery execute` runs and numbers them.
    pub steps: Vec<PlanStep>,
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
    /// The incremental chain replayed after the base full (null for a backup restored as it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayPlan>,
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

/// `recovery plan`: resolves an incremental's chain (or `--until`'s), chooses the tables,
/// reads the destination once, and judges the request.
pub async fn plan(
    repo: &Repository,
    requested: &Manifest,
    req: &PlanRequest,
) -> Result<RecoveryPlan> {
    let chain = chain::resolve(repo, requested, req.until).await?;
    let restored = chain.as_ref().map(|c| c.restored(requested));
    let manifest = restored.as_ref().unwrap_or(requested);
    let selection = select(manifest, req)?;
    let replay = chain
        .as_ref()
        .map(|c| ReplayPlan::new(c, manifest.clone(), &selection.chosen));
    let admin = admin_connection(&req.destination, &manifest.source.database).await?;
    let facts = facts::read(&admin, manifest, req, &selection.chosen).await?;
    let throughput = repo.restore_throughput().await?;
    let drills = repo.drills(Some(RECENT_DRILLS)).await.unwrap_or_else(|e| {
        tracing::warn!("the plan's estimate leaves out the drill history: {e}");
        Vec::new()
    });
    let mut plan = judge(
        manifest,
        req,
        selection,
        &facts,
        throughput,
        chrono::Utc::now(),
        replay,
    );
    estimate_from_drills(&mut plan, &drills);
    plan.backup_type = requested.backup_type;
    Ok(plan)
}

/// Drill records a plan looks through for its estimate (the newest).
const RECENT_DRILLS: usize = 50;

/// A backup's size class: the power of ten its logical bytes fall in (1–10 MB, 10–100 MB, …).
pub fn size_class(bytes: u64) -> u32 {
    bytes.max(1).ilog10()
}

/// A size class in words: `10 MB–100 MB`.
fn size_class_words(class: u32) -> String {
    let si = |power: u32| {
        let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
        let unit = units.get((power / 3) as usize).copied().unwrap_or("EB");
        format!("{} {unit}", 10u64.pow(power % 3))
    };
    format!("{}–{}", si(class), si(class + 1))
}

/// Prefers the measured restore time of the newest passed drill (`recovery drill`) of a
/// backup in the plan's size class over the restore-throughput median: scaled to the plan's
/// bytes, and said so in the estimate's basis.
pub fn estimate_from_drills(plan: &mut RecoveryPlan, drills: &[DrillRecord]) {
    let bytes: u64 = plan.tables.iter().map(|t| t.bytes).sum();
    let class = size_class(bytes);
    let Some(last) = drills.iter().rev().find(|d| {
        d.outcome == DrillOutcome::Passed && d.restore_seconds > 0.0 && size_class(d.bytes) == class
    }) else {
        return;
    };
    let scaled = if last.bytes > 0 {
        last.restore_seconds * bytes as f64 / last.bytes as f64
    } else {
        last.restore_seconds
    };
    plan.estimated_seconds =
        scaled.max(1.0) + plan.replay.as_ref().map_or(0.0, |r| r.estimated_seconds);
    plan.estimate_basis = format!(
        "the last restore drill in this size class ({}): drill {} restored {} of backup {} in {:.1} s on {}, scaled to {}",
        size_class_words(class),
        last.drill_id,
        human_bytes(last.bytes),
        last.backup_id,
        last.restore_seconds,
        last.started_at.format("%Y-%m-%d"),
        human_bytes(bytes)
    );
    if let Some(replay) = &plan.replay {
        plan.estimate_basis.push_str(&replay_basis(replay));
    }
}

/// The replay's part of an estimate's basis.
fn replay_basis(replay: &ReplayPlan) -> String {
    format!(
        "; replay of {} change(s) at an assumed {} changes/s",
        replay.changes,
        super::replay_plan::CHANGES_PER_SECOND
    )
}

/// The tables a request chooses, and what its subset does to the foreign keys between them.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Indexes into the manifest's tables, in manifest order.
    pub chosen: Vec<usize>,
    /// Tables `--cascade` added.
    pub cascade_added: Vec<String>,
    /// Foreign keys that cross the subset's boundary the wrong way for the strategy (empty
    /// with `--cascade`, which adds the missing side instead).
    pub crossing: Vec<Crossing>,
}

/// Resolves `-t` (leaf partitions of a partitioned table included) and widens the subset along
/// foreign keys with `--cascade`: `replace` must take the tables that reference a restored
/// one (emptying it would break them), `new-database` the tables a restored one references.
pub fn select(manifest: &Manifest, req: &PlanRequest) -> Result<Selection> {
    if manifest.backup_type == BackupType::SchemaOnly
        && (req.strategy == Strategy::MissingRows
            || req.strategy == Strategy::Replace && req.tables.is_some())
    {
        return Err(Error::Refused(format!(
            "backup {} is schema-only: it holds no table data to restore; \
             `latest` names the newest full backup",
            manifest.id
        )));
    }
    let Some(names) = &req.tables else {
        return Ok(Selection {
            chosen: (0..manifest.tables.len()).collect(),
            ..Selection::default()
        });
    };
    let mut chosen = resolve_names(manifest, names)?;
    let name_of = |i: usize| manifest.tables[i].display_name();
    // The side of a crossing key the subset lacks: what the blocker asks to add.
    let lacking = |c: &Crossing| match req.strategy {
        Strategy::Replace => c.table.clone(),
        _ => c.references.clone(),
    };
    let mut crossing: Vec<Crossing> = Vec::new();
    let mut cascade_added = Vec::new();
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
                    .any(|c| c.constraint == *fk && lacking(c) == name_of(missing))
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
    Ok(Selection {
        chosen: chosen.into_iter().collect(),
        cascade_added,
        crossing,
    })
}

/// The plan: a pure function of the backup (as restored), the request, its table selection,
/// the facts read from the destination, this repository's measured restore throughput (bytes
/// per second and how many restores), the time now and the chain to replay.
pub fn judge(
    manifest: &Manifest,
    req: &PlanRequest,
    selection: Selection,
    facts: &Facts,
    throughput: Option<(f64, usize)>,
    now: chrono::DateTime<chrono::Utc>,
    replay: Option<ReplayPlan>,
) -> RecoveryPlan {
    let subset = req.tables.is_some();
    let schema_only = manifest.backup_type == BackupType::SchemaOnly;
    let Selection {
        chosen: selected,
        cascade_added,
        crossing,
    } = selection;
    let server = &facts.server;
    let destination_settings = destination_settings(manifest, req, &facts.databases);
    let dbname = destination_settings.dbname.clone();
    let destination_exists = facts.databases.contains(&dbname);
    let database = facts.database.as_ref();
    let mut blockers = Vec::new();
    let mut risks = Vec::new();

    if subset {
        blockers.extend(crossing_blocker(req.strategy, &crossing));
        risks.extend(outward_references(manifest, req.strategy, &selected));
    }
    let tables: Vec<PlanTable> = selected
        .iter()
        .map(|&i| {
            let t = &manifest.tables[i];
            PlanTable {
                name: t.display_name(),
                rows: t.rows,
                bytes: t.logical_bytes,
                destination_rows: database
                    .and_then(|db| db.tables.get(&t.display_name()))
                    .map(|t| t.rows),
            }
        })
        .collect();
    let new_database = (req.strategy == Strategy::NewDatabase)
        .then(|| NewDatabase::decide(manifest, server.version_num, facts.source_locale_available));

    // Requirements.
    let mut requirements = Vec::new();
    let backup_major = manifest.source.server_version_num / 10000;
    let destination_major = server.version_num / 10000;
    let version_ok = destination_major >= backup_major;
    requirements.push(Requirement {
        name: "server version".into(),
        ok: version_ok,
        detail: format!(
            "destination server runs PostgreSQL {}, backup is from {}",
            server.version, manifest.source.server_version
        ),
    });
    if !version_ok {
        blockers.push(format!("the destination server (major {destination_major}) is older than the backup's (major {backup_major})"));
    }
    for ext in &manifest.extensions {
        let ok = facts.extensions.contains_key(&ext.name);
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
    let (globals, role_blockers) = globals::plan(&globals::Inputs {
        manifest,
        facts,
        dbname: &dbname,
        new_database: req.strategy == Strategy::NewDatabase,
        rewrites_schema,
        no_owner: req.no_owner,
        create_roles: req.create_roles,
    });
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
    let missing = privileges_missing(manifest, req, facts, &selected, &dbname);
    requirements.push(Requirement {
        name: "privileges".into(),
        ok: missing.is_empty(),
        detail: if missing.is_empty() {
            format!(
                "{} may run every step of {}{}",
                server.user,
                req.strategy,
                if server.superuser {
                    " (superuser)"
                } else {
                    " (checked statement by statement; not a superuser)"
                }
            )
        } else {
            format!("{} lacks: {}", server.user, missing.join("; "))
        },
    });
    for lack in &missing {
        blockers.push(format!("{} lacks {lack}", server.user));
    }
    let absent: Vec<&str> = tables
        .iter()
        .filter(|t| t.destination_rows.is_none())
        .map(|t| t.name.as_str())
        .collect();
    if subset && req.strategy == Strategy::Replace && !absent.is_empty() {
        blockers.push(format!(
            "{} do not exist in {dbname}: -s replace -t reloads existing tables; restore them beside it with -s new-database -t",
            absent.join(", "),
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
            "database {dbname} already exists and new-database never touches an existing database: \
             choose another name with --dest-db NAME, or, if it is an earlier drill's copy nobody uses, \
             drop it first (DROP DATABASE {};)",
            quote_ident(&dbname)
        ));
    }
    if schema_only && req.strategy == Strategy::Replace && !req.schema_only {
        blockers.push(format!(
            "backup {} is schema-only: -s replace would leave every table of {dbname} empty. \
             Restore a full backup (`latest` names the newest), or pass --schema-only to rebuild the structure without data",
            manifest.id
        ));
    }
    if req.schema_only && !schema_only {
        blockers.push(format!(
            "--schema-only confirms restoring a schema-only backup, and backup {} is {}: leave the flag out",
            manifest.id, manifest.backup_type
        ));
    }
    let other_database = manifest.source.database != dbname;
    if other_database && req.strategy != Strategy::NewDatabase && !req.from_other_database {
        blockers.push(format!(
            "backup {} is of database {}, and -s {} would overwrite database {dbname} with it: \
             choose a backup of {dbname}, or pass --from-other-database if that is what you mean",
            manifest.id, manifest.source.database, req.strategy,
        ));
    }
    if req.strategy == Strategy::MissingRows
        && let Some(db) = database
    {
        let without_pk: Vec<String> = tables
            .iter()
            .filter(|t| !db.tables.get(&t.name).is_some_and(|t| t.primary_key))
            .map(|t| t.name.clone())
            .collect();
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
    let triggers_suppressed = missing.is_empty();
    let skip_foreign_key_triggers =
        server.superuser && (subset || req.strategy == Strategy::MissingRows);

    let (rate, estimate_basis) = match throughput {
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
    let mut estimated_seconds = (bytes as f64 / rate).max(1.0);
    let mut estimate_basis = estimate_basis;
    if let Some(replay) = &replay {
        estimated_seconds += replay.estimated_seconds;
        estimate_basis.push_str(&replay_basis(replay));
        risks.extend(replay.risks());
    }

    risks.extend(strategy_risks(
        manifest,
        req.strategy,
        subset,
        &tables,
        &dbname,
    ));
    let steps = plan_steps(&StepInputs {
        manifest,
        req,
        subset,
        selected: &selected,
        tables: &tables,
        dbname: &dbname,
        new_database: new_database.as_ref(),
        globals: &globals,
        replay: replay.as_ref(),
        strict_replay: subset && req.strategy == Strategy::Replace && !skip_foreign_key_triggers,
    });

    RecoveryPlan {
        backup_id: manifest.id.clone(),
        backup_name: manifest.name.clone(),
        backup_created_at: manifest.created_at,
        backup_type: manifest.backup_type,
        backup_database: manifest.source.database.clone(),
        backup_age_seconds: (now - manifest.created_at).num_seconds(),
        requested: req.requested.clone(),
        passed_over: req.passed_over.clone(),
        strategy: req.strategy,
        destination: PlanDestination {
            host: destination_settings.host.clone(),
            port: destination_settings.port,
            database: dbname,
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
        replay,
        selected,
        destination_settings,
        no_owner: req.no_owner,
    }
}

/// The blocker for foreign keys that cross a subset, naming the tables to add.
fn crossing_blocker(strategy: Strategy, crossing: &[Crossing]) -> Option<String> {
    if crossing.is_empty() {
        return None;
    }
    let needed: BTreeSet<&str> = crossing
        .iter()
        .map(|c| {
            if strategy == Strategy::Replace {
                c.table.as_str()
            } else {
                c.references.as_str()
            }
        })
        .collect();
    let why = crossing
        .iter()
        .map(|c| format!("{} references {} ({})", c.table, c.references, c.constraint))
        .collect::<Vec<_>>()
        .join("; ");
    Some(format!(
        "foreign keys cross the subset: {why}. Add {} to -t, or pass --cascade to include them",
        needed.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// Restored tables that reference tables left as they are, in an existing database: their
/// rows must match the current ones.
fn outward_references(manifest: &Manifest, strategy: Strategy, selected: &[usize]) -> Vec<String> {
    if strategy == Strategy::NewDatabase {
        return Vec::new();
    }
    let name_of = |i: usize| manifest.tables[i].display_name();
    edges(manifest)
        .into_iter()
        .filter(|(_, child, parent)| selected.contains(child) && !selected.contains(parent))
        .map(|(fk, child, parent)| {
            format!(
                "{} references {} ({fk}), which is not restored: restored rows must find their match in its current rows (checked after loading; the restore is rolled back otherwise)",
                name_of(child),
                name_of(parent)
            )
        })
        .collect()
}

/// What each strategy puts at risk, in plain words.
fn strategy_risks(
    manifest: &Manifest,
    strategy: Strategy,
    subset: bool,
    tables: &[PlanTable],
    dbname: &str,
) -> Vec<String> {
    match strategy {
        Strategy::NewDatabase => vec![format!(
            "none for existing data: {dbname} is a new database; on failure it is dropped again"
        )],
        Strategy::Replace if !subset => vec![format!(
            "replace drops every object in schemas {} of {dbname}: anything created or changed since the backup ({}) is lost",
            manifest.schemas.join(", "),
            manifest.created_at.format("%Y-%m-%d %H:%M UTC")
        )],
        Strategy::Replace => tables
            .iter()
            .map(|t| {
                format!(
                    "replace empties {} ({} rows now, {} in the backup): rows written since the backup are lost",
                    t.name,
                    t.destination_rows.map_or("missing".into(), |r| r.to_string()),
                    t.rows
                )
            })
            .collect(),
        Strategy::MissingRows => vec![
            "rows that still exist keep their current values; only missing rows come back".into(),
        ],
    }
}

/// What the steps' descriptions need.
struct StepInputs<'a> {
    manifest: &'a Manifest,
    req: &'a PlanRequest,
    subset: bool,
    selected: &'a [usize],
    tables: &'a [PlanTable],
    dbname: &'a str,
    new_database: Option<&'a NewDatabase>,
    globals: &'a GlobalsPlan,
    replay: Option<&'a ReplayPlan>,
    /// The replay keeps the commit order across tables (live foreign keys).
    strict_replay: bool,
}

/// The strategy's [`Step`] list, each step with what it will do here.
fn plan_steps(input: &StepInputs<'_>) -> Vec<PlanStep> {
    let StepInputs {
        manifest,
        req,
        subset,
        selected,
        tables,
        dbname,
        new_database,
        globals,
        replay,
        strict_replay,
    } = *input;
    let chunks = count_chunks(manifest, selected);
    let verify = match req.verification {
        Verification::Rows => "count every table's rows",
        Verification::Checksums => "count every table's rows and re-read it to compare checksums",
    };
    let table_names = tables
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let large_objects = manifest.large_objects.as_ref();
    // replace -t reloads existing tables; a new database's subset is built like a whole one.
    let reload = subset && req.strategy == Strategy::Replace;
    let roles = (req.create_roles && !globals.statements.is_empty()).then(|| {
        format!(
            "; create the missing roles and their memberships: {}",
            globals.statements.join("; ")
        )
    });
    let roles = roles.as_deref().unwrap_or_default();
    let filtered: Vec<String> = selected
        .iter()
        .map(|&i| &manifest.tables[i])
        .filter(|t| t.filter.is_some())
        .map(TableEntry::display_name)
        .collect();
    steps(req.strategy, subset, replay.is_some())
        .into_iter()
        .map(|step| {
            let detail = match step {
                Step::VerifyChunks => format!(
                    "verify the {chunks} chunks the restore reads (SHA-256, decompression) before touching the destination"
                ),
                Step::CreateDatabase => format!(
                    "create database {dbname} (under a temporary name until it is verified) from {}{roles}",
                    new_database.map_or_else(|| "template0".to_string(), NewDatabase::describe)
                ),
                Step::Schema if req.strategy == Strategy::NewDatabase => {
                    "create the schema (pg_dump pre-data)".to_string()
                }
                Step::Schema => format!(
                    "in one transaction{roles}: drop schemas {} (and the backup's publications and event triggers) and recreate them from the backup{}",
                    manifest.schemas.join(", "),
                    large_objects.map_or(String::new(), |lo| format!(
                        "; replace the backup's {} large object(s) (others in the database are kept)",
                        lo.oids.len()
                    ))
                ),
                Step::EmptyTables => format!(
                    "in one transaction: switch off their user triggers, empty {table_names}{}",
                    if filtered.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (of the extension configuration tables {}, only the rows their extension's filter selects, with DELETE)",
                            filtered.join(", ")
                        )
                    }
                ),
                Step::Load if req.strategy == Strategy::MissingRows && replay.is_some() => {
                    "in one transaction: switch off the tables' user triggers, load each table's base backup rows into a temporary table"
                        .to_string()
                }
                Step::Load if req.strategy == Strategy::MissingRows => {
                    "in one transaction: switch off the tables' user triggers, load each table's backup rows into a temporary table \
                     and insert the rows whose primary key is missing from the destination"
                        .to_string()
                }
                Step::Replay if req.strategy == Strategy::MissingRows => format!(
                    "{} into the temporary tables, then insert the rows whose primary key is missing from the destination",
                    replay.map_or_else(String::new, |r| r.step_detail(false, false))
                ),
                Step::Load if reload => {
                    format!("reload {table_names} from the backup, referenced tables first")
                }
                Step::Load => format!(
                    "load {} table(s) in parallel with COPY{}{}",
                    selected.len(),
                    if req.strategy == Strategy::NewDatabase {
                        format!(
                            ", checking each of the {chunks} chunks (SHA-256, decompression) before its rows are sent{}",
                            if replay.is_none() {
                                "; each table's indexes and keys built as soon as its rows are in, beside the other tables' loads"
                            } else {
                                ""
                            }
                        )
                    } else {
                        String::new()
                    },
                    large_objects.map_or(String::new(), |lo| format!(
                        ", and write the data of {} large object(s) ({})",
                        lo.oids.len(),
                        human_bytes(lo.content_bytes)
                    ))
                ),
                Step::Replay => replay.map_or_else(String::new, |r| {
                    r.step_detail(strict_replay, req.strategy == Strategy::NewDatabase)
                }),
                Step::PostData => "build indexes and constraints (independent ones in parallel), then foreign keys (validated in parallel), triggers and the rest (pg_dump post-data)".to_string(),
                Step::CheckForeignKeys => "check the foreign keys touching the restored tables, then switch their user triggers back on as they were".to_string(),
                Step::Sequences if reload => "set the values of the sequences the restored tables own".to_string(),
                Step::Sequences => format!("set the values of the backup's {} sequence(s)", manifest.sequences.len()),
                Step::VacuumAnalyze => "ANALYZE each table (VACUUM (ANALYZE) where an index holds a key's columns), then validate the foreign keys on it".to_string(),
                Step::EventTriggers => "create event triggers last, as pg_restore does".to_string(),
                Step::Verify => format!(
                    "{verify}{}, check no constraint is left NOT VALID (those NOT VALID in the backup stay so)",
                    if replay.is_some() {
                        " (a replayed table against the rows the replay left it with; its checksum is the base's, so it is not compared)"
                    } else {
                        ""
                    }
                ),
                Step::Rename => format!(
                    "rename it to {dbname}, with the source database's settings (ALTER DATABASE … SET), comment and privileges, as pg_restore --create does{}",
                    if globals.database_statements.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; give it the backup's owner and settings: {}",
                            globals.database_statements.join("; ")
                        )
                    }
                ),
                Step::Commit => "commit, only if every check passed (otherwise nothing is changed)".to_string(),
                Step::Analyze => "ANALYZE the restored tables".to_string(),
            };
            PlanStep { name: step, detail }
        })
        .collect()
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
