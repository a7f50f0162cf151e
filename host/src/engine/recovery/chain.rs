//! Which backups a restore reads: a full backup alone, or a chain — its base full, then each
//! incremental after it, oldest first — replayed up to the requested incremental or to a point
//! in time (`--until TIME`, `--until-lsn LSN`). A link that is missing or damaged on every
//! target, or two links that do not meet (one ends where the next does not start), is a
//! clear error naming it: a chain with a gap never restores.

use crate::error::{Error, Result};
use crate::repository::Repository;
pub use crate::repository::changes::Lsn;
use crate::repository::manifest::{BackupType, Manifest};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use std::fmt;

/// How far a chain is replayed: to the last transaction committed at or before a time, or at
/// or before a WAL position. Transactions are replayed whole, in commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Until {
    Time(DateTime<Utc>),
    Lsn(Lsn),
}

impl Until {
    /// `--until` or `--until-lsn` (the flags exclude each other).
    pub fn from_flags(time: Option<DateTime<Utc>>, lsn: Option<Lsn>) -> Option<Until> {
        time.map(Until::Time).or(lsn.map(Until::Lsn))
    }

    /// Whether the transaction that committed at `lsn` and `time` is replayed.
    pub fn admits(&self, lsn: Lsn, time: DateTime<Utc>) -> bool {
        match *self {
            Until::Time(until) => time <= until,
            Until::Lsn(until) => lsn <= until,
        }
    }
}

impl fmt::Display for Until {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Until::Time(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.6f UTC")),
            Until::Lsn(l) => write!(f, "LSN {l}"),
        }
    }
}

/// `--until`: RFC 3339 (`2026-12-02T14:32:00Z`) or `YYYY-MM-DD HH:MM:SS[.ffffff][+TZ]` as psql
/// prints a `timestamptz`; without a zone the time is UTC.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let normal = text.replacen('T', " ", 1);
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z"] {
        if let Ok(at) = DateTime::parse_from_str(&normal, format) {
            return Ok(at.with_timezone(&Utc));
        }
    }
    let without_zone = normal.strip_suffix(" UTC").unwrap_or(&normal);
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(without_zone, format) {
            return Ok(at.and_utc());
        }
    }
    Err(format!(
        "'{text}' is not a time like 2026-12-02T14:32:00Z or 2026-12-02 14:32:00+01 (without a zone: UTC)"
    ))
}

/// The backups a restore reads, base first, and how far it replays them.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The full backup the chain starts from: its schema and table data are loaded.
    pub base: Manifest,
    /// The incrementals replayed after it, oldest first (possibly none: `--until` on a full
    /// whose chain has no later change yet).
    pub links: Vec<Manifest>,
    pub until: Option<Until>,
    /// The backup that was asked for (the last link, or the base with `--until`).
    pub requested: String,
}

/// The chain a restore of `requested` reads: None for a full or schema-only backup restored
/// as it is (no `--until`).
pub async fn resolve(
    repo: &Repository,
    requested: &Manifest,
    until: Option<Until>,
) -> Result<Option<Chain>> {
    let chain = match (requested.backup_type, until) {
        (BackupType::Full, None) => return Ok(None),
        (BackupType::SchemaOnly, None) => return Ok(None),
        (BackupType::SchemaOnly, Some(_)) => {
            return Err(Error::Refused(format!(
                "backup {} is schema-only: it holds no rows to replay to a point in time; \
                 name a full backup taken with change tracking, or one of its incrementals",
                requested.id
            )));
        }
        (BackupType::Incremental, _) => backwards(repo, requested, until).await?,
        (BackupType::Full, Some(until)) => forwards(repo, requested, until).await?,
    };
    chain.check()?;
    Ok(Some(chain))
}

/// The chain from the base up to the incremental `last`, following each link's parent.
async fn backwards(repo: &Repository, last: &Manifest, until: Option<Until>) -> Result<Chain> {
    let mut links = vec![last.clone()];
    loop {
        let child = links.last().map_or(last, |l| l);
        let Some(link) = &child.chain else {
            return Err(Error::Repository(format!(
                "backup {} is incremental but does not name its parent: its manifest is damaged; \
                 restore its base full backup, or an earlier incremental",
                child.id
            )));
        };
        let parent = repo
            .read_manifest(&link.parent)
            .await
            .map_err(|e| broken(last, &link.parent, &link.base, &e))?;
        match parent.backup_type {
            BackupType::Full => {
                if parent.id != link.base {
                    return Err(Error::Repository(format!(
                        "the chain of backup {} is inconsistent: it names base {}, but its links lead to full backup {}",
                        last.id, link.base, parent.id
                    )));
                }
                links.reverse();
                return Ok(Chain {
                    base: parent,
                    links,
                    until,
                    requested: last.id.clone(),
                });
            }
            BackupType::Incremental if links.len() < 100_000 => links.push(parent),
            _ => {
                return Err(Error::Repository(format!(
                    "the chain of backup {} is inconsistent: its link {} is a {} backup",
                    last.id, parent.id, parent.backup_type
                )));
            }
        }
    }
}

/// `--until` on a full backup: the incrementals built on it, oldest first, as far as the point
/// in time needs.
async fn forwards(repo: &Repository, base: &Manifest, until: Until) -> Result<Chain> {
    let all = repo.manifests().await?;
    let mut links: Vec<Manifest> = Vec::new();
    let mut at = base.id.clone();
    loop {
        let next = all
            .iter()
            .filter(|m| m.backup_type == BackupType::Incremental)
            .filter(|m| m.chain.as_ref().is_some_and(|c| c.parent == at))
            .min_by_key(|m| (m.created_at, m.id.clone()));
        let Some(next) = next else { break };
        let starts_after = next.incremental.as_ref().is_some_and(|i| match until {
            Until::Time(t) => i.first_commit.is_some_and(|first| first > t),
            Until::Lsn(l) => i.start_lsn >= l,
        });
        if starts_after {
            break;
        }
        at = next.id.clone();
        links.push(next.clone());
    }
    Ok(Chain {
        base: base.clone(),
        links,
        until: Some(until),
        requested: base.id.clone(),
    })
}

fn broken(last: &Manifest, missing: &str, base: &str, why: &Error) -> Error {
    Error::Repository(format!(
        "the chain of backup {} is broken: it needs backup {missing} (the chain starts at full backup {base}), \
         which cannot be read on any target ({why}); restore an intact earlier backup of the chain, or the base full alone",
        last.id
    ))
}

impl Chain {
    /// Every link meets the next (each incremental starts where the one before it ended) and
    /// the point in time is not before the base.
    fn check(&self) -> Result<()> {
        let Some(info) = &self.base.incremental else {
            return Err(Error::Refused(format!(
                "backup {} was taken without change tracking, so no change after it was recorded: \
                 it can only be restored as it is (leave out --until/--until-lsn); \
                 set [incremental] enabled = true so the next full backup starts a chain",
                self.base.id
            )));
        };
        let mut end = (self.base.id.as_str(), info.end_lsn);
        for link in &self.links {
            let Some(info) = &link.incremental else {
                return Err(Error::Repository(format!(
                    "backup {} is incremental but records no changes: its manifest is damaged",
                    link.id
                )));
            };
            if info.start_lsn != end.1 {
                return Err(Error::Repository(format!(
                    "the chain is broken between backups {} and {}: {} starts at {} but {} ended at {}; \
                     changes between them are missing, so neither it nor later incrementals can be restored exactly; \
                     restore {} (or with --until before the gap)",
                    end.0, link.id, link.id, info.start_lsn, end.0, end.1, end.0
                )));
            }
            end = (link.id.as_str(), info.end_lsn);
        }
        match self.until {
            Some(Until::Time(t)) if t < self.base.created_at => Err(Error::Refused(format!(
                "--until {} is before full backup {} was taken ({}): the chain cannot go back in time; \
                 name an older full backup with --until",
                Until::Time(t),
                self.base.id,
                self.base.created_at.format("%Y-%m-%d %H:%M:%S UTC")
            ))),
            Some(Until::Lsn(l)) if l < info.end_lsn => Err(Error::Refused(format!(
                "--until-lsn {l} is before full backup {} (taken at LSN {}): name an older full backup",
                self.base.id, info.end_lsn
            ))),
            _ => Ok(()),
        }
    }

    /// The backup as restored: the base's data and type, the schema (pre-data, post-data and
    /// their digests) of [`Chain::schema_from`], the requested backup's identity, and the
    /// sequence values of [`Chain::sequences_from`].
    pub fn restored(&self, requested: &Manifest) -> Manifest {
        let mut restored = self.base.clone();
        restored.id = requested.id.clone();
        restored.name = requested.name.clone();
        restored.created_at = requested.created_at;
        restored.completed_at = requested.completed_at;
        restored.sequences = self.sequences_from().sequences.clone();
        let schema = self.schema_from();
        restored.pre_data = schema.pre_data.clone();
        restored.post_data = schema.post_data.clone();
        if let (Some(digests), Some(from)) = (restored.digests.as_mut(), &schema.digests) {
            digests.pre_data = from.pre_data.clone();
            digests.post_data = from.post_data.clone();
        }
        restored
    }

    /// The backup whose schema the restore creates. Each incremental records the schema as it
    /// was when it ran (read before its end), so schema changes are known at incremental
    /// boundaries only: the last link the point reached covers whole (without `--until`, the
    /// last link; with `--until TIME`, the last that completed at or before TIME; with
    /// `--until-lsn`, the last that ended at or before it), else the base. A point inside an
    /// incremental that carries schema changes gets the schema before them ([`Chain::schema`]
    /// says which changes are left out).
    pub fn schema_from(&self) -> &Manifest {
        let covered = |link: &Manifest| match (self.until, &link.incremental) {
            (None, _) => true,
            (Some(Until::Time(t)), _) => link.completed_at <= t,
            (Some(Until::Lsn(l)), Some(i)) => i.end_lsn <= l,
            (Some(Until::Lsn(_)), None) => false,
        };
        self.links
            .iter()
            .take_while(|link| covered(link))
            .last()
            .unwrap_or(&self.base)
    }

    /// What schema the restore has, in words: whose, the schema changes it carries since the
    /// base, and those of a link the point falls inside (left out).
    pub fn schema(&self) -> String {
        let from = self.schema_from();
        let changes = |link: &Manifest| {
            link.incremental
                .as_ref()
                .map_or(&[][..], |i| i.schema_changes.as_slice())
                .to_vec()
        };
        let mut carried = Vec::new();
        let mut left_out = Vec::new();
        let mut past = from.id == self.base.id;
        for link in &self.links {
            match past {
                false => carried.extend(changes(link)),
                true => left_out.push((link, changes(link))),
            }
            past = past || link.id == from.id;
        }
        let mut text = match from.id == self.base.id {
            true => format!("the schema of full backup {}", self.base.id),
            false => format!(
                "the schema recorded by incremental {} (completed {})",
                from.id,
                from.completed_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        };
        match carried.len() {
            0 => text.push_str(", with no schema change since the base"),
            n => text.push_str(&format!(
                ", with {n} schema change(s) since the base: {}",
                carried.join("; ")
            )),
        }
        let reached = match self.until {
            Some(_) => left_out.first().filter(|(_, c)| !c.is_empty()),
            None => None,
        };
        if let Some((link, changes)) = reached {
            text.push_str(&format!(
                ". Not applied: the {} schema change(s) incremental {} recorded ({}), made at a time between {} and {} that is not known                  (schema changes are recorded at incremental boundaries); the point falls inside that interval, so the restore has the schema before them",
                changes.len(),
                link.id,
                changes.join("; "),
                from.completed_at.format("%Y-%m-%d %H:%M:%S UTC"),
                link.completed_at.format("%Y-%m-%d %H:%M:%S UTC"),
            ));
        }
        text
    }

    /// The backup whose recorded sequence values the restore sets: the incremental the point
    /// reached falls in (the last link without `--until`, or when the point is past the
    /// chain's end), else the base. Logical decoding does not carry sequences, so a point
    /// inside an incremental gets the values recorded at that incremental's end: at or ahead
    /// of the point (numbers may be skipped), never behind a value a replayed row used.
    pub fn sequences_from(&self) -> &Manifest {
        let covered = |link: &Manifest| match (self.until, &link.incremental) {
            (None, _) | (_, None) => true,
            (Some(Until::Time(t)), Some(i)) => i.last_commit.is_none_or(|c| c <= t),
            // Every commit of the link is before its end.
            (Some(Until::Lsn(l)), Some(i)) => i.end_lsn <= l,
        };
        self.links
            .iter()
            .find(|link| !covered(link))
            .or(self.links.last())
            .unwrap_or(&self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_times_take_rfc3339_and_psql_forms() {
        let want = "2026-12-02T14:32:00Z".parse::<DateTime<Utc>>().unwrap();
        for text in [
            "2026-12-02T14:32:00Z",
            "2026-12-02T15:32:00+01:00",
            "2026-12-02 14:32:00",
            "2026-12-02 14:32:00+00",
            "2026-12-02 16:32:00+02",
            "2026-12-02 15:32:00+0100",
            "2026-12-02 14:32",
        ] {
            assert_eq!(parse_time(text), Ok(want), "{text}");
        }
        let micro = parse_time("2026-12-02 14:32:00.123456+00").unwrap();
        assert_eq!(micro.timestamp_subsec_micros(), 123456);
        assert!(
            parse_time("yesterday")
                .unwrap_err()
                .contains("without a zone: UTC")
        );
    }

    #[test]
    fn until_admits_transactions_committed_at_or_before_it() {
        let t = parse_time("2026-12-02 14:32:00").unwrap();
        let lsn = Lsn(100);
        let at = Until::Time(t);
        assert!(at.admits(lsn, t));
        assert!(!at.admits(lsn, t + chrono::Duration::microseconds(1)));
        let at = Until::Lsn(Lsn(100));
        assert!(at.admits(Lsn(100), t) && at.admits(Lsn(99), t) && !at.admits(Lsn(101), t));
    }
}
