//! What a restore or an export proves about the backup it reads before reading any row: every
//! manifest it uses (the backup, and for an incremental chain its base and links) carries a
//! signature that holds, and the backup's links to its neighbours in the history hold (see
//! [`signing::check_restore`]). The result goes into the report, for an auditor to file.

use super::chain::{self, Until};
use crate::error::Result;
use crate::repository::Repository;
use crate::repository::manifest::Manifest;
use crate::repository::signing::{self, Checked};

/// Checks `requested` (restored up to `until`) against this host's
/// `[repository] trusted_signers`; refuses as [`signing::check_restore`] does.
pub async fn check(
    repo: &Repository,
    requested: &Manifest,
    until: Option<Until>,
    allow_unsigned: bool,
) -> Result<Checked> {
    // The requested manifest first: a forged one is refused before its chain is followed.
    let trusted = crate::repository::keys::source().trusted_signers;
    signing::check(requested, &trusted, allow_unsigned)?;
    let chain = chain::resolve(repo, requested, until).await?;
    let members: Vec<&Manifest> = chain
        .iter()
        .flat_map(|c| std::iter::once(&c.base).chain(&c.links))
        .collect();
    signing::check_restore(repo, requested, &members, &trusted, allow_unsigned).await
}
