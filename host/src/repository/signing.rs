//! Tamper evidence: every manifest signed (Ed25519) by the key of the host that wrote it,
//! recording the hash of the previous manifest of the same database, so an edited, reordered
//! or deleted backup in the middle of a history is detected.
//!
//! The signature covers the manifest's JSON without its signature, and the link to the
//! previous backup. Readers check it against `[repository] trusted_signers`
//! ([`check`]); `backup verify-history` walks the links ([`verify_history`]).
//!
//! Two signed records keep the chain whole where a manifest cannot speak for itself:
//! - A host that removes a backup (retention, `backup delete`) first writes a
//!   [`Retirement`] (`retired/<id>.json`, sealed like other records in an encrypted
//!   repository): the removed manifest's hash, its own link, why, when and by whom. A link to
//!   a backup that is gone is then "retired by retention on DATE by signer X" when a trusted
//!   retirement names exactly that manifest, and the chain goes on through the retirement's
//!   link; without one (a manifest deleted behind the tool's back) it is a gap.
//! - In an encrypted repository every signed manifest gets a [`LinkRecord`] (`links/<id>.json`,
//!   plain): its id, creation time, hash and a keyed tag of its database, signed. A host
//!   holding only the writer key cannot open manifests, so it links its backup to the newest
//!   trusted link record of its database instead.

use super::Repository;
use super::manifest::{Manifest, ManifestSignature, PreviousLink};
use crate::error::{Error, Result};
use crate::targets::TargetError;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const SIGNING_PREFIX: &str = "LARDER-SIGNING-";
const SIGNER_PREFIX: &str = "larder-signer-";
const CONTEXT: &[u8] = b"larder manifest signature v1\n";
const LINK_CONTEXT: &[u8] = b"larder link record v1\n";
const RETIREMENT_CONTEXT: &[u8] = b"larder retirement v1\n";
const LINKS: &str = "links/";
const RETIRED: &str = "retired/";

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

    /// The key this host signs with (`[repository] signing_key_file`), if any.
    pub fn configured() -> Result<Option<SigningKey>> {
        super::keys::source()
            .signing_key_file
            .map(|path| SigningKey::read(&path))
            .transpose()
    }

    /// Ed25519 of `context` then `message`, hex.
    fn sign_text(&self, context: &[u8], message: &[u8]) -> String {
        let mut bytes = context.to_vec();
        bytes.extend_from_slice(message);
        hex::encode(self.pair.sign(&bytes).as_ref())
    }
}

/// Whether `value` (hex) is `signer`'s signature of `context` then `message`.
fn signature_holds(signer: &str, value: &str, context: &[u8], message: &[u8]) -> bool {
    let mut bytes = context.to_vec();
    bytes.extend_from_slice(message);
    signer
        .strip_prefix(SIGNER_PREFIX)
        .and_then(|h| hex::decode(h).ok())
        .zip(hex::decode(value).ok())
        .is_some_and(|(public, value)| {
            UnparsedPublicKey::new(&ED25519, public)
                .verify(&bytes, &value)
                .is_ok()
        })
}

/// Whether a record signed by `signer` may be relied on: its signature holds (checked by the
/// caller) and, when `[repository] trusted_signers` is set, its signer is in it.
fn is_trusted(signer: &str, trusted: &[String]) -> bool {
    trusted.is_empty() || trusted.iter().any(|t| t.trim() == signer)
}

fn encode(what: &str, value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding {what}: {e}")))
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

/// The link a backup records to `previous`, the newest backup of its database before it.
pub fn link_to(previous: &Manifest) -> Result<PreviousLink> {
    Ok(PreviousLink {
        id: previous.id.clone(),
        sha256: manifest_hash(previous)?,
    })
}

/// Signs `manifest`, linking it to `previous` (see [`link_to`], or for a writer-key host
/// [`newest_link`]).
pub fn sign(
    manifest: &mut Manifest,
    previous: Option<PreviousLink>,
    key: &SigningKey,
) -> Result<()> {
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
    // The manifest's signed bytes start with their own context.
    let holds = signed_bytes(manifest, &signature.previous)
        .is_ok_and(|message| signature_holds(&signer, &signature.value, &[], &message));
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
    /// The previous backup was removed by retention or `backup delete`, and a trusted
    /// retirement record names exactly the manifest linked to.
    Retired,
    /// The previous backup is no longer in the repository, and no trusted retirement record
    /// says it was removed by the tool (deleted behind its back, or by a host that does not
    /// sign).
    Missing,
    /// No signed link to check: written concurrently with its neighbour, or by a writer-key
    /// host that found no trusted link record of it (see [`LinkRecord`]).
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
        matches!(
            self.state,
            LinkState::Verified | LinkState::End | LinkState::Retired
        )
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
        previous: previous_link(repo, requested, trusted).await?,
        next: next_link(repo, requested, trusted).await?,
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
async fn previous_link(
    repo: &Repository,
    manifest: &Manifest,
    trusted: &[String],
) -> Result<LinkCheck> {
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
                    "{} is older but was not linked (written concurrently with it, or by a writer-key host that found no trusted link record of it)",
                    older.id
                ),
            ),
        });
    };
    Ok(match repo.read_manifest(&link.id).await {
        Err(Error::BackupNotFound(_)) => {
            let retirement = read_retirement(repo, &link.id).await?;
            match retirement.map(|r| r.explains(link, trusted)) {
                Some(Ok(statement)) => LinkCheck::new(
                    Some(&link.id),
                    LinkState::Retired,
                    format!("{} {statement}", link.id),
                ),
                Some(Err(why)) => LinkCheck::new(
                    Some(&link.id),
                    LinkState::Missing,
                    format!(
                        "{} is no longer in the repository, and {why} (`backup verify-history`)",
                        link.id
                    ),
                ),
                None => LinkCheck::new(
                    Some(&link.id),
                    LinkState::Missing,
                    format!(
                        "{} is no longer in the repository, and no record says the tool removed it (`backup verify-history`)",
                        link.id
                    ),
                ),
            }
        }
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
async fn next_link(
    repo: &Repository,
    manifest: &Manifest,
    trusted: &[String],
) -> Result<LinkCheck> {
    let Some(next) = neighbour(repo, manifest, Side::After).await? else {
        return Ok(LinkCheck::new(
            None,
            LinkState::End,
            "none, the newest backup of its database".into(),
        ));
    };
    let mut link = next.signature.as_ref().and_then(|s| s.previous.clone());
    // The backups between them that were removed by the tool: the chain goes on through each
    // one's trusted retirement record.
    let mut through = Vec::new();
    while let Some(current) = link.as_ref().filter(|l| l.id != manifest.id) {
        if through.contains(&current.id) {
            break;
        }
        let record = match read_retirement(repo, &current.id).await? {
            Some(record) if record.explains(current, trusted).is_ok() => record,
            _ => break,
        };
        through.push(current.id.clone());
        link = record.previous;
    }
    let via = if through.is_empty() {
        String::new()
    } else {
        format!(" through retired {}", through.join(", "))
    };
    Ok(match &link {
        Some(link) if link.id == manifest.id => {
            if manifest_hash(manifest)? == link.sha256 {
                LinkCheck::new(
                    Some(&next.id),
                    LinkState::Verified,
                    format!("{} links to it unchanged{via}", next.id),
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
                "{} links{via} to {} instead (this backup was written concurrently, or added later)",
                next.id, link.id
            ),
        ),
        None => LinkCheck::new(
            Some(&next.id),
            LinkState::Unlinked,
            format!(
                "{} has no link{via} (its writer found no trusted link record of this backup)",
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

/// Why a backup was removed, for its [`Retirement`].
#[derive(Debug, Clone)]
pub struct RetiredBy {
    /// `retention` or `backup delete`.
    pub reason: &'static str,
    /// The rule that decided it, or which copies went.
    pub detail: String,
}

impl RetiredBy {
    /// Removed by `backup prune` (or the daemon's retention): `detail` is the deciding rule.
    pub fn retention(detail: String) -> RetiredBy {
        RetiredBy {
            reason: "retention",
            detail,
        }
    }

    /// Removed by `backup delete`.
    pub fn delete(detail: String) -> RetiredBy {
        RetiredBy {
            reason: "backup delete",
            detail,
        }
    }
}

/// The evidence a host leaves when it removes a backup (`retired/<id>.json`): which manifest
/// went (its hash, so the next backup's link can be matched to it), its own link (so the chain
/// can be followed past it), why, when and who; signed by the removing host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retirement {
    pub backup_id: String,
    pub database: String,
    pub created_at: DateTime<Utc>,
    /// [`manifest_hash`] of the manifest removed; None when it was damaged (removed by id).
    pub manifest_sha256: Option<String>,
    /// The removed manifest's link to the backup before it.
    pub previous: Option<PreviousLink>,
    /// `retention` or `backup delete`.
    pub reason: String,
    pub detail: String,
    pub retired_at: DateTime<Utc>,
    /// The removing host's key and its signature of the rest; None when it has no
    /// `signing_key_file` (such a record proves nothing).
    pub signer: Option<String>,
    pub signature: Option<String>,
}

impl Retirement {
    fn signed_bytes(&self) -> Result<Vec<u8>> {
        encode(
            "retirement record",
            &Retirement {
                signer: None,
                signature: None,
                ..self.clone()
            },
        )
    }

    /// The trusted signer of this record, or why it cannot be relied on.
    fn trusted_signer(&self, trusted: &[String]) -> std::result::Result<&str, String> {
        let (Some(signer), Some(value)) = (&self.signer, &self.signature) else {
            return Err(format!(
                "the record of its removal ({} on {}) is not signed: nothing proves who removed it",
                self.reason,
                self.retired_at.format("%Y-%m-%d")
            ));
        };
        let holds = self
            .signed_bytes()
            .is_ok_and(|m| signature_holds(signer, value, RETIREMENT_CONTEXT, &m));
        if !holds {
            return Err(format!(
                "the record of its removal does not match its signature by {signer}: it was forged or edited"
            ));
        }
        if !is_trusted(signer, trusted) {
            return Err(format!(
                "the record of its removal is signed by {signer}, not a trusted signer"
            ));
        }
        Ok(signer)
    }

    /// "retired by retention on DATE by signer X (detail)" when this trusted record names the
    /// manifest `link` points at; else why the removal is not accounted for.
    fn explains(
        &self,
        link: &PreviousLink,
        trusted: &[String],
    ) -> std::result::Result<String, String> {
        let signer = self.trusted_signer(trusted)?;
        if self.backup_id != link.id
            || self
                .manifest_sha256
                .as_ref()
                .is_some_and(|h| *h != link.sha256)
        {
            return Err(format!(
                "the record of its removal names another manifest than the one linked to (hash {})",
                self.manifest_sha256.as_deref().unwrap_or("unknown")
            ));
        }
        Ok(self.statement(signer))
    }

    /// "retired by retention on DATE by signer X (detail)".
    fn statement(&self, signer: &str) -> String {
        format!(
            "retired by {} on {} by signer {signer} ({}){}",
            self.reason,
            self.retired_at.format("%Y-%m-%d %H:%M UTC"),
            self.detail,
            if self.manifest_sha256.is_none() {
                "; its manifest was damaged when removed, so its hash was not recorded"
            } else {
                ""
            }
        )
    }
}

fn retired_key(backup_id: &str) -> String {
    format!("{RETIRED}{backup_id}.json")
}

fn link_key(backup_id: &str) -> String {
    format!("{LINKS}{backup_id}.json")
}

/// Records, before `repo`'s copy of backup `backup_id` is removed, why and by whom (see
/// [`Retirement`]). Written when the manifest is signed (it is part of a chain) or this host
/// signs; a manifest that is not there needs none.
pub async fn record_retirement(repo: &Repository, backup_id: &str, why: &RetiredBy) -> Result<()> {
    let key = SigningKey::configured()?;
    let manifest = match repo.read_manifest(backup_id).await {
        Ok(manifest) => Some(manifest),
        Err(Error::BackupNotFound(_)) => return Ok(()),
        Err(Error::ChecksumMismatch { .. }) => None,
        Err(e) => return Err(e),
    };
    let signed = manifest.as_ref().is_some_and(|m| m.signature.is_some());
    if !signed && key.is_none() {
        return Ok(());
    }
    let mut record = Retirement {
        backup_id: backup_id.to_string(),
        database: manifest
            .as_ref()
            .map(|m| m.source.database.clone())
            .unwrap_or_default(),
        created_at: manifest.as_ref().map_or_else(Utc::now, |m| m.created_at),
        manifest_sha256: manifest.as_ref().map(manifest_hash).transpose()?,
        previous: manifest
            .as_ref()
            .and_then(|m| m.signature.as_ref())
            .and_then(|s| s.previous.clone()),
        reason: why.reason.to_string(),
        detail: why.detail.clone(),
        retired_at: Utc::now(),
        signer: None,
        signature: None,
    };
    if let Some(key) = &key {
        let value = key.sign_text(RETIREMENT_CONTEXT, &record.signed_bytes()?);
        record.signer = Some(key.signer());
        record.signature = Some(value);
    }
    repo.put_json(&retired_key(backup_id), &record).await?;
    // Its link record (in an encrypted repository) goes with it: a writer-key host must not
    // link to a backup that is gone.
    repo.target()
        .delete(&link_key(backup_id))
        .await
        .map_err(|e| e.at(&link_key(backup_id), "removing a link record"))
}

async fn read_retirement(repo: &Repository, backup_id: &str) -> Result<Option<Retirement>> {
    repo.get_json(&retired_key(backup_id)).await
}

/// Every retirement record that can be read, by backup id.
async fn retirements(repo: &Repository) -> Result<BTreeMap<String, Retirement>> {
    let objects = repo
        .target()
        .list(RETIRED)
        .await
        .map_err(|e| e.at(RETIRED, "reading retirement records"))?;
    let mut out = BTreeMap::new();
    for object in objects {
        if let Some(record) = repo.get_json::<Retirement>(&object.key).await? {
            out.insert(record.backup_id.clone(), record);
        }
    }
    Ok(out)
}

/// What a host that cannot open manifests needs to link its backup to the newest one of its
/// database (`links/<id>.json`, plain in an encrypted repository).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkRecord {
    pub backup_id: String,
    /// A keyed tag of its database's name ([`crate::repository::crypto::Keyring::tag`]).
    pub database_tag: String,
    pub created_at: DateTime<Utc>,
    /// [`manifest_hash`] of its manifest: what the next backup's link records.
    pub manifest_sha256: String,
    /// The host that wrote the record, and its signature of the rest.
    pub signer: String,
    pub signature: String,
}

impl LinkRecord {
    fn signed_bytes(&self) -> Result<Vec<u8>> {
        encode(
            "link record",
            &LinkRecord {
                signer: String::new(),
                signature: String::new(),
                ..self.clone()
            },
        )
    }

    fn holds(&self, trusted: &[String]) -> bool {
        self.signed_bytes()
            .is_ok_and(|m| signature_holds(&self.signer, &self.signature, LINK_CONTEXT, &m))
            && is_trusted(&self.signer, trusted)
    }
}

/// Writes `manifest`'s [`LinkRecord`] signed by `key`, in an encrypted repository (a plain
/// one's manifests can be read by every host, so it needs none).
pub async fn record_link(repo: &Repository, manifest: &Manifest, key: &SigningKey) -> Result<()> {
    let Some(keyring) = repo.keyring() else {
        return Ok(());
    };
    let mut record = LinkRecord {
        backup_id: manifest.id.clone(),
        database_tag: keyring.tag("database", &manifest.source.database)?,
        created_at: manifest.created_at,
        manifest_sha256: manifest_hash(manifest)?,
        signer: key.signer(),
        signature: String::new(),
    };
    record.signature = key.sign_text(LINK_CONTEXT, &record.signed_bytes()?);
    let object = link_key(&manifest.id);
    let body = encode("link record", &record)?;
    repo.target()
        .put(&object, Bytes::from(body))
        .await
        .map_err(|e| {
            e.at(
                &object,
                format!("writing the link record of backup {}", manifest.id),
            )
        })
}

/// For a host holding only the writer key: the link to the newest backup of `manifest`'s
/// database before it, from the link records whose signature holds (by a trusted signer, when
/// `trusted_signers` is set) and whose manifest is still there. None when there is none.
pub async fn newest_link(
    repo: &Repository,
    manifest: &Manifest,
    trusted: &[String],
) -> Result<Option<PreviousLink>> {
    let Some(keyring) = repo.keyring() else {
        return Ok(None);
    };
    let tag = keyring.tag("database", &manifest.source.database)?;
    let present: BTreeSet<String> = repo.backup_ids().await?.into_iter().collect();
    let objects = repo
        .target()
        .list(LINKS)
        .await
        .map_err(|e| e.at(LINKS, "reading link records"))?;
    let mut newest: Option<LinkRecord> = None;
    for object in objects {
        let Some(id) = object
            .key
            .strip_prefix(LINKS)
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        if id == manifest.id || !present.contains(id) {
            continue;
        }
        let bytes = match repo.target().get(&object.key).await {
            Ok(bytes) => bytes,
            Err(TargetError::NotFound { .. }) => continue,
            Err(e) => return Err(e.at(&object.key, "reading a link record")),
        };
        let Ok(record) = serde_json::from_slice::<LinkRecord>(&bytes) else {
            tracing::warn!("{} is not a link record; not linked to", object.key);
            continue;
        };
        if record.backup_id != id || record.database_tag != tag {
            continue;
        }
        if !record.holds(trusted) {
            tracing::warn!(
                "{}: its signature by {} does not hold or is not trusted; not linked to",
                object.key,
                record.signer
            );
            continue;
        }
        if record.created_at > manifest.created_at {
            continue;
        }
        let newer = newest
            .as_ref()
            .is_none_or(|n| (record.created_at, &record.backup_id) > (n.created_at, &n.backup_id));
        if newer {
            newest = Some(record);
        }
    }
    Ok(newest.map(|r| PreviousLink {
        id: r.backup_id,
        sha256: r.manifest_sha256,
    }))
}

/// One problem `verify-history` found.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryProblem {
    pub database: String,
    pub backup_id: String,
    pub problem: String,
}

/// A backup removed by the tool, as its trusted retirement record tells.
#[derive(Debug, Clone, Serialize)]
pub struct RetiredBackup {
    pub database: String,
    pub backup_id: String,
    /// `retention` or `backup delete`.
    pub reason: String,
    pub retired_at: DateTime<Utc>,
    pub signer: String,
    /// "retired by retention on DATE by signer X (the rule)".
    pub statement: String,
}

/// What `backup verify-history` found.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub backups: usize,
    pub signed: usize,
    pub databases: usize,
    /// Backups removed by retention or `backup delete`, with trusted evidence, oldest first.
    pub retired: Vec<RetiredBackup>,
    pub problems: Vec<HistoryProblem>,
}

/// Checks every manifest's signature and each database's chain of links: a link to a backup
/// that is gone is a gap unless a trusted retirement record names exactly that manifest (then
/// the chain goes on from the retirement's own link), and one whose hash differs an altered
/// backup.
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
    // A backup still there (on another target, or copied back) is not retired.
    let mut records = retirements(repo).await?;
    records.retain(|id, _| !by_id.contains_key(id.as_str()));
    // What is wrong with `link`, recorded by backup `from` (of `database`), if anything.
    let broken_link = |database: &str, link: &PreviousLink| -> Result<Option<String>> {
        Ok(match (by_id.get(link.id.as_str()), records.get(&link.id)) {
            (Some(previous), _) if manifest_hash(previous)? != link.sha256 => Some(format!(
                "the previous backup {} was altered after this one was written (its hash differs from the one signed here)",
                link.id
            )),
            (Some(_), _) => None,
            (None, Some(record)) => record.explains(link, trusted).err().map(|why| {
                format!(
                    "gap: the previous backup of database {database} when it was written, {}, is missing, and {why}",
                    link.id
                )
            }),
            (None, None) => Some(format!(
                "gap: the previous backup of database {database} when it was written, {}, is missing, and no record says the tool removed it (deleted behind its back, or hidden)",
                link.id
            )),
        })
    };
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
        let link = manifest
            .signature
            .as_ref()
            .and_then(|s| s.previous.as_ref());
        if let Some(why) = link
            .map(|l| broken_link(&manifest.source.database, l))
            .transpose()?
            .flatten()
        {
            problems.push(problem(why));
        }
    }
    // The chain goes on through what was retired: the link each retired manifest had.
    let mut retired = Vec::new();
    for record in records.values() {
        let Ok(signer) = record.trusted_signer(trusted) else {
            continue;
        };
        if let Some(why) = record
            .previous
            .as_ref()
            .map(|l| broken_link(&record.database, l))
            .transpose()?
            .flatten()
        {
            problems.push(HistoryProblem {
                database: record.database.clone(),
                backup_id: record.backup_id.clone(),
                problem: format!("(retired) {why}"),
            });
        }
        retired.push(RetiredBackup {
            database: record.database.clone(),
            backup_id: record.backup_id.clone(),
            reason: record.reason.clone(),
            retired_at: record.retired_at,
            signer: signer.to_string(),
            statement: record.statement(signer),
        });
    }
    retired.sort_by(|a, b| a.backup_id.cmp(&b.backup_id));
    Ok(History {
        backups: catalog.manifests.len(),
        signed,
        databases: databases.len(),
        retired,
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

    #[test]
    fn retirement_and_link_records_hold_only_as_signed() {
        let (text, signer) = SigningKey::generate().expect("key");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("signing");
        std::fs::write(&path, text).expect("write");
        let key = SigningKey::read(&path).expect("read");
        let trusted = vec![signer.clone()];
        let link = PreviousLink {
            id: "20261202-000000-0001".into(),
            sha256: "ab".repeat(32),
        };
        let mut record = Retirement {
            backup_id: link.id.clone(),
            database: "pantry".into(),
            created_at: Utc::now(),
            manifest_sha256: Some(link.sha256.clone()),
            previous: None,
            reason: "retention".into(),
            detail: "keep_last".into(),
            retired_at: Utc::now(),
            signer: Some(signer.clone()),
            signature: None,
        };
        assert!(record.explains(&link, &trusted).is_err(), "unsigned");
        record.signature =
            Some(key.sign_text(RETIREMENT_CONTEXT, &record.signed_bytes().expect("bytes")));
        let said = record.explains(&link, &trusted).expect("explained");
        assert!(said.starts_with("retired by retention on "), "{said}");
        assert!(
            record
                .explains(&link, &["larder-signer-00".into()])
                .is_err()
        );
        let other = PreviousLink {
            sha256: "cd".repeat(32),
            ..link.clone()
        };
        assert!(
            record.explains(&other, &trusted).is_err(),
            "another manifest"
        );
        let mut edited = record.clone();
        edited.reason = "backup delete".into();
        assert!(edited.explains(&link, &trusted).is_err(), "edited");

        let mut record = LinkRecord {
            backup_id: link.id.clone(),
            database_tag: "tag".into(),
            created_at: Utc::now(),
            manifest_sha256: link.sha256.clone(),
            signer: signer.clone(),
            signature: String::new(),
        };
        record.signature = key.sign_text(LINK_CONTEXT, &record.signed_bytes().expect("bytes"));
        assert!(record.holds(&trusted) && record.holds(&[]));
        assert!(!record.holds(&["larder-signer-00".into()]));
        record.manifest_sha256 = "cd".repeat(32);
        assert!(!record.holds(&trusted), "edited");
    }
}
