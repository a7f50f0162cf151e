//! The read policy of a repository kept on several targets, written once for every reader:
//! an object is read from the first target holding a good copy (primary first, then the
//! fallbacks in order), and a read served from elsewhere says which target served it.

use super::Repository;
use crate::error::{Error, Result};
use crate::targets::Target;
use std::future::Future;
use std::sync::Arc;

impl Repository {
    /// The targets reads go to, in order: this repository's own, then its fallbacks.
    fn sources(&self) -> impl Iterator<Item = &Arc<dyn Target>> {
        std::iter::once(&self.target).chain(&self.fallbacks)
    }

    /// The first good copy of the object `key`: `read` (which fetches and checks it) runs on
    /// each source in turn until one succeeds. A copy that is missing, damaged or on a target
    /// that fails is passed over; when none is good, the primary's error is returned (the
    /// runbook's words about the copy the operator expects). A copy served from another
    /// target is noted with its name ([`Repository::notices`]) unless the primary simply
    /// does not hold this backup, which is normal for one made while it was down.
    pub(super) async fn first_good<T, F, Fut>(&self, key: &str, read: F) -> Result<T>
    where
        F: Fn(Arc<dyn Target>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut primary_error = None;
        for source in self.sources() {
            match read(source.clone()).await {
                Ok(value) => {
                    match &primary_error {
                        None => {}
                        Some(Error::BackupNotFound(_)) => tracing::debug!(
                            "{key} is not on target '{}'; read it from target '{}'",
                            self.target.name(),
                            source.name()
                        ),
                        Some(e) => self.notice(format!(
                            "{key} on target '{}': {e}; read the good copy from target '{}'",
                            self.target.name(),
                            source.name()
                        )),
                    }
                    return Ok(value);
                }
                Err(e) => {
                    if primary_error.is_none() {
                        primary_error = Some(e);
                    } else {
                        tracing::debug!("{key} on target '{}': {e}", source.name());
                    }
                }
            }
        }
        Err(primary_error
            .unwrap_or_else(|| Error::Internal(format!("{key}: no target to read it from"))))
    }

    /// A listing taken on every source: the primary must answer (nothing can be said
    /// otherwise), a fallback that cannot be listed is passed over with a warning.
    pub(super) async fn list_everywhere<T, F, Fut>(&self, list: F) -> Result<Vec<T>>
    where
        F: Fn(Arc<dyn Target>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut listings = vec![list(self.target.clone()).await?];
        for fallback in &self.fallbacks {
            match list(fallback.clone()).await {
                Ok(listing) => listings.push(listing),
                Err(e) => tracing::warn!("cannot list target '{}': {e}", fallback.name()),
            }
        }
        Ok(listings)
    }
}
