//! Tamper evidence: every manifest signed (Ed25519) by the key of the host that wrote it,
//! recording the hash of the previous manifest of the same database, so an edited, reordered
//! or deleted backup in the middle of a history is detected.
//!
//! The signature covers the manifest's JSON without its signature, and the link to the
//! previous backup. Readers check it against `[repository] trusted_signers`
//! ([`check`]); `backup verify-history` walks the links ([`verify_history`]).

use super::Repository;
use super::manifest::{Manifest, ManifestSignature, PreviousLink};
use crate::error::{Error, Result};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

const SIGNING_PREFIX: &str = "LARDER-SIGNING-";
const SIGNER_PREFIX: &str = "larder-signer-";
const CONTEXT: &[u8] = b"larder manifest signature v1\n";

/// A host's signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Reads `LARDER-SIGNING-<64 hex>` from `path`.
    pub fn read(path: &Path) -> Result<SigningKey> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the signing key {}: {e}",
                path.display()
            ))
        })?;
        let seed = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(SIGNING_PREFIX))
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{} holds no signing key (a line {SIGNING_PREFIX}<64 hex digits>)",
                    path.display()
                ))
            })?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| Error::Config(format!("{}: not an Ed25519 seed", path.display())))?;
        Ok(SigningKey { pair })
    }

    /// A new key's text and its signer (public key) text.
    pub fn generate() -> Result<(String, String)> {
        let seed = super::crypto::random32()?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| Error::Internal("making a signing key failed".into()))?;
        Ok((
            format!("{SIGNING_PREFIX}{}", hex::encode(seed)),
            signer_text(pair.public_key().as_ref()),
        ))
    }

    pub fn signer(&self) -> String {
        signer_text(self.pair.public_key().as_ref())
    }
}

fn signer_text(public: &[u8]) -> String {
    format!("{SIGNER_PREFIX}{}", hex::encode(public))
}

/// SHA-256 of a manifest's JSON as stored (signature included): what a link records.
pub fn manifest_hash(manifest: &Manifest) -> Result<String> {
    serde_json::to_vec(manifest)
        .map(|json| super::sha256_hex(&json))
        .map_err(|e| Error::Internal(format!("encoding manifest {}: {e}", manifest.id)))
}

fn signed_bytes(manifest: &Manifest, previous: &Option<PreviousLink>) -> Result<Vec<u8>> {
    let unsigned = Manifest {
        signature: None,
        ..manifest.clone()
    };
    let encode = |e: serde_json::Error| Error::Internal(format!("encoding manifest: {e}"));
    let mut out = CONTEXT.to_vec();
    out.extend(serde_json::to_vec(&unsigned).map_err(encode)?);
    out.push(b'\n');
    out.extend(serde_json::to_vec(previous).map_err(encode)?);
    Ok(out)
}

/// Signs `manifest`, linking it to `previous` (the newest backup of its database).
pub fn sign(manifest: &mut Manifest, previous: Option<&Manifest>, key: &SigningKey) -> Result<()> {
    let previous = previous
        .map(|p| {
            Ok::<_, Error>(PreviousLink {
                id: p.id.clone(),
                sha256: manifest_hash(p)?,
            })
        })
        .transpose()?;
    let value = key.pair.sign(&signed_bytes(manifest, &previous)?);
    manifest.signature = Some(ManifestSignature {
        signer: key.signer(),
        previous,
        value: hex::encode(value.as_ref()),
    });
    Ok(())
}

/// What a manifest's signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by `signer`, and the signature holds.
    Signed {
        signer: String,
        trusted: bool,
    },
    Unsigned,
    /// The signature does not match the manifest: it was edited after signing.
    Broken {
        signer: String,
    },
}

/// Checks `manifest`'s signature; `trusted`: the signers `[repository] trusted_signers` lists.
pub fn verify(manifest: &Manifest, trusted: &[String]) -> Verdict {
    let Some(signature) = &manifest.signature else {
        return Verdict::Unsigned;
    };
    let signer = signature.signer.clone();
    let holds = signature
        .signer
        .strip_prefix(SIGNER_PREFIX)
        .and_then(|h| hex::decode(h).ok())
        .zip(hex::decode(&signature.value).ok())
        .zip(signed_bytes(manifest, &signature.previous).ok())
        .is_some_and(|((public, value), message)| {
            UnparsedPublicKey::new(&ED25519, public)
                .verify(&message, &value)
                .is_ok()
        });
    if !holds {
        return Verdict::Broken { signer };
    }
    Verdict::Signed {
        trusted: trusted.iter().any(|t| t.trim() == signer),
        signer,
    }
}

/// Whether a restore, export or validation may use `manifest`: a broken signature is always
/// refused; with `trusted_signers` configured, an unsigned or untrusted one is refused unless
/// `allow_unsigned`. Returns the signer when trusted, and the risk taken otherwise.
pub fn check(manifest: &Manifest, trusted: &[String], allow_unsigned: bool) -> Result<Checked> {
    let refuse = |why: String| {
        Error::SignatureRefused(format!(
            "backup {}: {why}; refusing to use it (restore from another backup, or pass --allow-unsigned to take the risk)",
            manifest.id
        ))
    };
    let verified = |signer: String| Checked {
        signer: Some(signer),
        signature_verified: true,
        ..Checked::default()
    };
    match verify(manifest, trusted) {
        Verdict::Broken { signer } => Err(Error::SignatureRefused(format!(
            "backup {}: its manifest does not match its signature by {signer}: it was edited after it was written (a changed row count or chunk list, or a forged manifest); it cannot be trusted",
            manifest.id
        ))),
        Verdict::Signed {
            signer,
            trusted: true,
        } => Ok(verified(signer)),
        Verdict::Signed { signer, .. } if trusted.is_empty() => Ok(verified(signer)),
        Verdict::Unsigned if trusted.is_empty() => Ok(Checked::default()),
        Verdict::Signed { signer, .. } => {
            let why =
                format!("it is signed by {signer}, which is not in [repository] trusted_signers");
            if allow_unsigned {
                Ok(Checked {
                    risks: vec![format!("--allow-unsigned: {why}; it may have been forged")],
                    ..Checked::default()
                })
            } else {
                Err(refuse(why))
            }
        }
        Verdict::Unsigned => {
            let why =
                "its manifest is not signed, and [repository] trusted_signers asks for signatures"
                    .to_string();
            if allow_unsigned {
                Ok(Checked {
                    risks: vec![format!(
                        "--allow-unsigned: backup {} is not signed; nothing proves who wrote it or that it was not edited",
                        manifest.id
                    )],
                    ..Checked::default()
                })
            } else {
                Err(refuse(why))
            }
        }
    }
}

/// [`check`] against this host's `[repository] trusted_signers`.
pub fn check_configured(manifest: &Manifest, allow_unsigned: bool) -> Result<Checked> {
    check(
        manifest,
        &super::keys::source().trusted_signers,
        allow_unsigned,
    )
}

/// What the checks of a backup's manifest found acceptable: its signature, and for a restore
/// its place in its database's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// The signer whose valid signature the manifest carries.
    pub signer: Option<String>,
    /// The signature holds (and its signer is trusted, when `trusted_signers` is set).
    pub signature_verified: bool,
    /// Every link between this backup and its neighbours in the history holds: the previous
    /// backup it recorded is in the repository unchanged (or it is the first), and the next
    /// one recorded it as it is now (or it is the newest).
    pub chain_verified: bool,
    /// The links a restore checked (None for validation, and for an unsigned backup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainCheck>,
    /// Besides the backup, the manifests the restore reads (an incremental chain's base and
    /// links), each signature checked the same way.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_checked: Vec<String>,
    /// The risks `--allow-unsigned` accepted.
    pub risks: Vec<String>,
}

impl Checked {
    /// One line of evidence for the restore report.
    pub fn evidence(&self) -> String {
        let Some(signer) = &self.signer else {
            return if self.risks.is_empty() {
                "not signed, and no [repository] trusted_signers asks for signatures: nothing proves who wrote it".into()
            } else {
                "signature not verified (--allow-unsigned: see the risks)".into()
            };
        };
        let what = if self.chain_verified {
            "signature and chain verified"
        } else {
            "signature verified"
        };
        let mut line = format!("signed by {signer}: {what}");
        if let Some(chain) = &self.chain {
            line.push_str(&format!(
                " (previous: {}; next: {})",
                chain.previous.detail, chain.next.detail
            ));
        }
        if !self.also_checked.is_empty() {
            line.push_str(&format!(
                "; signatures of {} also verified",
                self.also_checked.join(", ")
            ));
        }
        line
    }
}

/// A backup's links to its neighbours in its database's history, as a restore found them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainCheck {
    pub previous: LinkCheck,
    pub next: LinkCheck,
}

/// One link: the neighbour, and what was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkCheck {
    pub backup_id: Option<String>,
    pub state: LinkState,
    /// In words.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// The link holds: the neighbour's hash is the one signed.
    Verified,
    /// No neighbour on that side: the first (or the newest) backup of its database.
    End,
    /// The previous backup is no longer in the repository (pruned, or deleted).
    Missing,
    /// No signed link to check: written by a host that could not read the history (a writer
    /// key), or concurrently with its neighbour.
    Unlinked,
    /// The hashes differ (refused unless `--allow-unsigned`).
    Altered,
}

impl LinkCheck {
    fn new(backup_id: Option<&str>, state: LinkState, detail: String) -> LinkCheck {
        LinkCheck {
            backup_id: backup_id.map(str::to_string),
            state,
            detail,
        }
    }

    fn holds(&self) -> bool {
        matches!(self.state, LinkState::Verified | LinkState::End)
    }
}

/// What a restore (or export) of `requested` may rely on: [`check`] of its signature and of
/// every manifest in `also` (an incremental chain's base and links), then its links to the
/// previous and the next backup of its database against what the repository holds. A link
/// whose hash differs (the previous backup altered, or this one replaced, after the other was
/// signed) is refused unless `allow_unsigned`; a previous backup no longer there (pruned or
/// deleted) or a missing link is said, not refused.
pub async fn check_restore(
    repo: &Repository,
    requested: &Manifest,
    also: &[&Manifest],
    trusted: &[String],
    allow_unsigned: bool,
) -> Result<Checked> {
    let mut checked = check(requested, trusted, allow_unsigned)?;
    for manifest in also.iter().filter(|m| m.id != requested.id) {
        let member = check(manifest, trusted, allow_unsigned)?;
        checked.signature_verified &= member.signature_verified;
        checked.risks.extend(member.risks);
        checked.also_checked.push(manifest.id.clone());
    }
    if checked.signer.is_none() {
        return Ok(checked);
    }
    let chain = ChainCheck {
        previous: previous_link(repo, requested).await?,
        next: next_link(repo, requested).await?,
    };
    for link in [&chain.previous, &chain.next] {
        if link.state != LinkState::Altered {
            continue;
        }
        let why = format!("backup {}: {}", requested.id, link.detail);
        if !allow_unsigned {
            return Err(Error::SignatureRefused(format!(
                "{why}; the history was rewritten by a holder of a signing key: refusing to use it (`backup verify-history` lists what changed; pass --allow-unsigned to take the risk)"
            )));
        }
        checked.risks.push(format!(
            "--allow-unsigned: {why}; the history was rewritten"
        ));
    }
    checked.chain_verified =
        checked.signature_verified && chain.previous.holds() && chain.next.holds();
    checked.chain = Some(chain);
    Ok(checked)
}

/// The link `manifest` signed to the previous backup of its database.
async fn previous_link(repo: &Repository, manifest: &Manifest) -> Result<LinkCheck> {
    let link = manifest
        .signature
        .as_ref()
        .and_then(|s| s.previous.as_ref());
    let Some(link) = link else {
        return Ok(match neighbour(repo, manifest, Side::Before).await? {
            None => LinkCheck::new(
                None,
                LinkState::End,
                "none, the first backup of its database".into(),
            ),
            Some(older) => LinkCheck::new(
                Some(&older.id),
                LinkState::Unlinked,
                format!(
                    "{} is older but was not linked (written by a host that cannot read the history)",
                    older.id
                ),
            ),
        });
    };
    Ok(match repo.read_manifest(&link.id).await {
        Err(Error::BackupNotFound(_)) => LinkCheck::new(
            Some(&link.id),
            LinkState::Missing,
            format!(
                "{} is no longer in the repository (pruned, or deleted: `backup verify-history`)",
                link.id
            ),
        ),
        Err(e) => return Err(e),
        Ok(previous) if manifest_hash(&previous)? == link.sha256 => LinkCheck::new(
            Some(&link.id),
            LinkState::Verified,
            format!("{} unchanged", link.id),
        ),
        Ok(_) => LinkCheck::new(
            Some(&link.id),
            LinkState::Altered,
            format!(
                "its previous backup {} was altered after this one was written (its hash differs from the one signed here)",
                link.id
            ),
        ),
    })
}

/// The link the next backup of `manifest`'s database signed to it.
async fn next_link(repo: &Repository, manifest: &Manifest) -> Result<LinkCheck> {
    let Some(next) = neighbour(repo, manifest, Side::After).await? else {
        return Ok(LinkCheck::new(
            None,
            LinkState::End,
            "none, the newest backup of its database".into(),
        ));
    };
    let link = next.signature.as_ref().and_then(|s| s.previous.as_ref());
    Ok(match link {
        Some(link) if link.id == manifest.id => {
            if manifest_hash(manifest)? == link.sha256 {
                LinkCheck::new(
                    Some(&next.id),
                    LinkState::Verified,
                    format!("{} links to it unchanged", next.id),
                )
            } else {
                LinkCheck::new(
                    Some(&next.id),
                    LinkState::Altered,
                    format!(
                        "its manifest was replaced after backup {} was written (the hash that backup signed for it differs)",
                        next.id
                    ),
                )
            }
        }
        Some(link) => LinkCheck::new(
            Some(&next.id),
            LinkState::Unlinked,
            format!(
                "{} links to {} instead (this backup was written concurrently, or added later)",
                next.id, link.id
            ),
        ),
        None => LinkCheck::new(
            Some(&next.id),
            LinkState::Unlinked,
            format!(
                "{} has no link (written by a host that cannot read the history)",
                next.id
            ),
        ),
    })
}

enum Side {
    Before,
    After,
}

/// The nearest backup of `manifest`'s database before or after it (by creation time), read
/// one manifest at a time outward from its id, so a restore does not read the whole catalog.
async fn neighbour(repo: &Repository, manifest: &Manifest, side: Side) -> Result<Option<Manifest>> {
    let ids = repo.backup_ids().await?;
    // Ids sort by their creation second; backups of the same second are all read.
    let second = manifest.id.get(..15).unwrap_or(&manifest.id);
    let mut candidates: Vec<&String> = match side {
        Side::Before => ids
            .iter()
            .filter(|id| id.as_str() < manifest.id.as_str() || id.starts_with(second))
            .rev()
            .collect(),
        Side::After => ids
            .iter()
            .filter(|id| id.as_str() > manifest.id.as_str() || id.starts_with(second))
            .collect(),
    };
    candidates.retain(|id| **id != manifest.id);
    let key = |m: &Manifest| (m.created_at, m.id.clone());
    let mut found: Option<Manifest> = None;
    for id in candidates {
        if let Some(best) = &found
            && !id.starts_with(best.id.get(..15).unwrap_or(&best.id))
        {
            break;
        }
        let other = match repo.read_manifest(id).await {
            Ok(other) => other,
            // Gone while reading, or damaged: `backup verify-history` reports those.
            Err(Error::BackupNotFound(_) | Error::ChecksumMismatch { .. }) => continue,
            Err(e) => return Err(e),
        };
        let wanted = other.source.database == manifest.source.database
            && match side {
                Side::Before => key(&other) < key(manifest),
                Side::After => key(&other) > key(manifest),
            };
        if !wanted {
            continue;
        }
        let closer = found.as_ref().is_none_or(|best| match side {
            Side::Before => key(&other) > key(best),
            Side::After => key(&other) < key(best),
        });
        if closer {
            found = Some(other);
        }
    }
    Ok(found)
}

/// One problem `verify-history` found.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryProblem {
    pub database: String,
    pub backup_id: String,
    pub problem: String,
}

/// What `backup verify-history` found.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub backups: usize,
    pub signed: usize,
    pub databases: usize,
    pub problems: Vec<HistoryProblem>,
}

/// Checks every manifest's signature and each database's chain of links: a link to a backup
/// that is gone is a gap, one whose hash differs an altered backup.
pub async fn verify_history(repo: &Repository, trusted: &[String]) -> Result<History> {
    let catalog = repo.catalog().await?;
    let mut problems = Vec::new();
    for damaged in &catalog.damaged {
        problems.push(HistoryProblem {
            database: String::new(),
            backup_id: damaged.backup_id.clone(),
            problem: damaged.error.clone(),
        });
    }
    let by_id: BTreeMap<&str, &Manifest> = catalog
        .manifests
        .iter()
        .map(|m| (m.id.as_str(), m))
        .collect();
    let mut databases = BTreeMap::new();
    let mut signed = 0;
    for manifest in &catalog.manifests {
        *databases
            .entry(manifest.source.database.as_str())
            .or_insert(0) += 1;
        let problem = |problem: String| HistoryProblem {
            database: manifest.source.database.clone(),
            backup_id: manifest.id.clone(),
            problem,
        };
        match verify(manifest, trusted) {
            Verdict::Broken { signer } => {
                problems.push(problem(format!(
                    "its manifest does not match its signature by {signer}: edited after it was written"
                )));
                continue;
            }
            Verdict::Unsigned => {
                if !trusted.is_empty() {
                    problems.push(problem("not signed".into()));
                }
                continue;
            }
            Verdict::Signed {
                signer,
                trusted: false,
            } if !trusted.is_empty() => {
                problems.push(problem(format!("signed by {signer}, not a trusted signer")));
            }
            Verdict::Signed { .. } => {}
        }
        signed += 1;
        let Some(link) = manifest
            .signature
            .as_ref()
            .and_then(|s| s.previous.as_ref())
        else {
            continue;
        };
        match by_id.get(link.id.as_str()) {
            None => problems.push(problem(format!(
                "gap: the previous backup of database {} when it was written, {}, is missing (deleted or hidden)",
                manifest.source.database, link.id
            ))),
            Some(previous) if manifest_hash(previous)? != link.sha256 => problems.push(problem(format!(
                "the previous backup {} was altered after this one was written (its hash differs from the one signed here)",
                link.id
            ))),
            Some(_) => {}
        }
    }
    Ok(History {
        backups: catalog.manifests.len(),
        signed,
        databases: databases.len(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_catch_edits_and_untrusted_signers() {
        let (text, signer) = SigningKey::generate().expect("key");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("signing");
        std::fs::write(&path, text).expect("write");
        let key = SigningKey::read(&path).expect("read");
        assert_eq!(key.signer(), signer);
        let mut manifest = super::super::manifest::sample_manifest("20261202-000000-0001");
        sign(&mut manifest, None, &key).expect("sign");
        let trusted = vec![signer.clone()];
        assert_eq!(
            verify(&manifest, &trusted),
            Verdict::Signed {
                signer: signer.clone(),
                trusted: true
            }
        );
        assert!(check(&manifest, &trusted, false).is_ok());
        assert!(check(&manifest, &["larder-signer-00".into()], false).is_err());
        assert!(
            check(&manifest, &["larder-signer-00".into()], true).is_ok_and(|c| !c.risks.is_empty())
        );
        let mut edited = manifest.clone();
        edited.name.push('!');
        assert!(matches!(verify(&edited, &trusted), Verdict::Broken { .. }));
        assert!(check(&edited, &trusted, true).is_err());
        let unsigned = Manifest {
            signature: None,
            ..manifest.clone()
        };
        assert!(check(&unsigned, &trusted, false).is_err());
        assert!(check(&unsigned, &[], false).is_ok());
    }
}
