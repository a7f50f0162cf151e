//! Pins: backups an operator marked to keep (`backup pin`), recorded beside them as
//! `pins/<id>.json` on every target that holds a copy. Retention never deletes a backup with
//! an active pin; a pin with `until` in the past no longer counts. Sealed in an encrypted
//! repository (its reason is the operator's words about the database), see `history`.

use super::Repository;
use crate::error::{Error, Result};
use crate::targets::TargetError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub backup_id: String,
    pub pinned_at: DateTime<Utc>,
    /// None: until `backup unpin`.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Pin {
    /// Whether it still keeps its backup at `now` (no `until`, or `until` ahead).
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

fn pin_key(backup_id: &str) -> String {
    format!("pins/{backup_id}.json")
}

impl Repository {
    /// Records the pin on this repository's own target.
    pub async fn write_pin(&self, pin: &Pin) -> Result<()> {
        self.put_json(&pin_key(&pin.backup_id), pin).await
    }

    /// Removes the pin from this repository's own target; false when there was none.
    pub async fn remove_pin(&self, backup_id: &str) -> Result<bool> {
        let key = pin_key(backup_id);
        match self.target().get(&key).await {
            Err(TargetError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.at(&key, format!("reading the pin of backup {backup_id}"))),
            Ok(_) => {}
        }
        self.target()
            .delete(&key)
            .await
            .map_err(|e| e.at(&key, format!("removing the pin of backup {backup_id}")))?;
        Ok(true)
    }

    /// The backup's pin as this target and its fallbacks record it; when copies disagree the
    /// one that keeps longest wins, and a pin that cannot be read fails (retention errs on
    /// keeping).
    pub async fn pin_of(&self, backup_id: &str) -> Result<Option<Pin>> {
        let key = pin_key(backup_id);
        let mut found: Option<Pin> = None;
        for target in std::iter::once(&self.target).chain(&self.fallbacks) {
            let bytes = match target.get(&key).await {
                Ok(bytes) => bytes,
                Err(TargetError::NotFound { .. }) => continue,
                Err(e) => return Err(e.at(&key, format!("reading the pin of backup {backup_id}"))),
            };
            let pin: Pin = self.open_record(&key, &bytes).ok_or_else(|| {
                Error::Repository(format!(
                    "{key} on target '{}' is not a pin this host can read (damaged, not sealed for this repository, or this host holds the writer key only); remove it with `backup-cli backup unpin {backup_id}` and pin again",
                    target.name()
                ))
            })?;
            let longer = match &found {
                None => true,
                Some(old) => match (old.until, pin.until) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(a), Some(b)) => b > a,
                },
            };
            if longer {
                found = Some(pin);
            }
        }
        Ok(found)
    }
}
