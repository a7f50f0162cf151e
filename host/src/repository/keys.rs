//! The keys file of an encrypted repository (`keys.json`), its key slots, and where this host
//! finds what opens them.
//!
//! The repository's secret (its X25519 private key and its naming key, 64 bytes) is stored
//! only wrapped, once per slot:
//! - a **passphrase** slot: wrapped under a key derived from the passphrase with argon2id
//!   (19 MiB, 2 passes, 1 lane: OWASP's configuration); the slot records its KDF and cost, so
//!   slots made with PBKDF2-HMAC-SHA256 (600,000 iterations) before argon2id still open;
//! - a **recipient** slot: wrapped to an X25519 public key (age-style), opened with the
//!   matching identity file.
//!
//! A **writer key** (`key add --writer`) holds only the public key and the naming key: a
//! backup host with it seals and deduplicates new objects but opens none.
//!
//! What opens the repository comes from `[repository]` (`passphrase_file`, `identity_file`,
//! `writer_key_file`), `BACKUP_CLI_PASSPHRASE`, or a prompt on a terminal, tried in that
//! order: identity, passphrase, writer key. An unlocked repository is kept for the process, so
//! the passphrase is asked and stretched once.

use super::crypto::{self, Cipher, Keyring};
use super::crypto::{PublicKey, SecretKey};
use super::x25519;
use crate::error::{Error, Result};
use crate::targets::{Target, TargetError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The keys file's object key.
pub const KEYS_KEY: &str = "keys.json";
/// The passphrase's environment variable.
pub const PASSPHRASE_ENV: &str = "BACKUP_CLI_PASSPHRASE";
const KEYS_FORMAT: u32 = 1;
const IDENTITY_PREFIX: &str = "LARDER-IDENTITY-";
const RECIPIENT_PREFIX: &str = "larder-recipient-";
const WRITER_PREFIX: &str = "LARDER-WRITER-";
/// The passphrase KDF of new slots and its cost: OWASP's argon2id configuration of 19 MiB,
/// 2 passes, 1 lane (RFC 9106's 64 MiB would make opening the repository the process's peak
/// memory, 90 MiB, above a restore's own; this costs about 0.05 s of CPU, once per process).
const ARGON2ID: &str = "argon2id";
const ARGON2ID_MEMORY_KIB: u32 = 19 * 1024;
const ARGON2ID_PASSES: u32 = 2;
const ARGON2ID_LANES: u32 = 1;
/// The most memory a slot may ask argon2id for: a keys file is input, and one asking for more
/// would only serve to exhaust the host's memory.
const ARGON2ID_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// argon2id's working memory of `blocks` KiB, reserved at least [`ARGON2ID_RESERVE`]
/// (only the blocks used are touched, so the rest costs address space, not memory).
///
/// Why the reserve: glibc's malloc serves a large allocation with its own mmap, and when one
/// is freed it raises its mmap threshold to that size, and the heap's trim threshold to twice
/// it, for the rest of the process; only allocations above 32 MiB leave the thresholds alone.
/// Freeing the 19 MiB of a slot's unlock used to raise them from the few MiB of a chunk to
/// 19 and 38 MiB, so every chunk buffer after it came from the heap, which kept up to 38 MiB
/// of freed buffers resident: the encrypted restore's peak RSS was 12 MiB above the plain
/// one's (benches/encryption.rs). With the reserve the unlock changes neither threshold.
fn argon2_memory(blocks: usize) -> Vec<argon2::Block> {
    let mut memory = Vec::with_capacity(blocks.max(ARGON2ID_RESERVE / argon2::Block::SIZE));
    memory.resize(blocks, argon2::Block::new());
    memory
}

/// Just above glibc's largest dynamic mmap threshold (`DEFAULT_MMAP_THRESHOLD_MAX`, 32 MiB
/// on 64-bit systems); see [`argon2_memory`].
const ARGON2ID_RESERVE: usize = 33 * 1024 * 1024;

/// The passphrase KDF of slots made before argon2id (still read, no longer made).
const PBKDF2: &str = "pbkdf2-hmac-sha256";

/// `keys.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    pub format: u32,
    /// The repository's random id: salt of its key derivations, and what tells copies of the
    /// same repository apart from another one.
    pub repository: String,
    pub cipher: Cipher,
    /// The repository's public key (a recipient), for reference.
    pub public_key: String,
    /// A check value of the naming key, to recognise this repository's writer keys.
    pub naming_check: String,
    pub slots: Vec<Slot>,
}

/// One way to open the repository (`kind` and its fields flattened in).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slot {
    /// Short hex id (`key remove ID`).
    pub id: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: SlotKind,
    /// The repository's secret sealed under the slot's key: nonce, ciphertext, tag (hex).
    pub wrapped: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SlotKind {
    Passphrase {
        /// `argon2id`, or `pbkdf2-hmac-sha256` in slots made before argon2id.
        kdf: String,
        salt: String,
        /// argon2id's passes over its memory, or PBKDF2's iterations.
        iterations: u32,
        /// argon2id's memory in KiB.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory_kib: Option<u32>,
        /// argon2id's lanes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lanes: Option<u32>,
    },
    Recipient {
        recipient: String,
        /// The ephemeral public key the secret was wrapped with.
        ephemeral: String,
    },
}

impl Slot {
    /// `passphrase` or `recipient`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SlotKind::Passphrase { .. } => "passphrase",
            SlotKind::Recipient { .. } => "recipient",
        }
    }
}

/// Where this host finds its keys (`[repository]`), set once by the command line.
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    /// `[repository] encryption`: new repositories are encrypted and a plain one is refused.
    pub encryption: bool,
    pub passphrase_file: Option<PathBuf>,
    pub identity_file: Option<PathBuf>,
    pub writer_key_file: Option<PathBuf>,
    /// `[repository] signing_key_file`: this host signs the manifests it writes.
    pub signing_key_file: Option<PathBuf>,
    /// `[repository] trusted_signers`: whose signatures readers accept.
    pub trusted_signers: Vec<String>,
}

static SOURCE: Mutex<Option<KeySource>> = Mutex::new(None);
/// Repositories unlocked by this process, by repository id.
static UNLOCKED: Mutex<Vec<(String, Arc<Keyring>)>> = Mutex::new(Vec::new());

/// Sets where this process finds its keys.
pub fn configure(source: KeySource) {
    if let Ok(mut slot) = SOURCE.lock() {
        *slot = Some(source);
    }
}

/// Where this process finds its keys (nothing configured: the environment and a terminal).
pub fn source() -> KeySource {
    SOURCE
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .unwrap_or_default()
}

/// The 64 secret bytes a slot wraps.
struct Secret {
    private: [u8; 32],
    naming: [u8; 32],
}

impl Secret {
    fn generate() -> Result<Secret> {
        Ok(Secret {
            private: crypto::random32()?,
            naming: crypto::random32()?,
        })
    }

    fn bytes(&self) -> Vec<u8> {
        [self.private, self.naming].concat()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Secret> {
        let (private, naming) = bytes.split_at_checked(32)?;
        Some(Secret {
            private: private.try_into().ok()?,
            naming: naming.try_into().ok()?,
        })
    }

    fn keyring(&self, keys: &KeysFile) -> Keyring {
        Keyring::new(
            &keys.repository,
            keys.cipher,
            x25519::public_key(&self.private),
            self.naming,
            Some(self.private),
        )
    }
}

/// An X25519 identity's text: `LARDER-IDENTITY-<hex>`; its recipient `larder-recipient-<hex>`.
pub fn new_identity() -> Result<(String, String)> {
    let secret = crypto::random32()?;
    Ok((
        format!("{IDENTITY_PREFIX}{}", hex::encode(secret)),
        recipient_text(&x25519::public_key(&secret)),
    ))
}

fn recipient_text(public: &PublicKey) -> String {
    format!("{RECIPIENT_PREFIX}{}", hex::encode(public))
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Parses a recipient (`larder-recipient-<64 hex>`).
pub fn parse_recipient(text: &str) -> Result<PublicKey> {
    text.trim()
        .strip_prefix(RECIPIENT_PREFIX)
        .and_then(hex32)
        .ok_or_else(|| {
            Error::Config(format!(
                "'{}' is not a recipient: expected {RECIPIENT_PREFIX} and 64 hex digits (`backup-cli key identity` makes one)",
                text.trim()
            ))
        })
}

fn parse_identity(text: &str, path: &Path) -> Result<SecretKey> {
    text.lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(IDENTITY_PREFIX))
        .and_then(hex32)
        .ok_or_else(|| {
            Error::Config(format!(
                "{} holds no identity (a line {IDENTITY_PREFIX}<64 hex digits>)",
                path.display()
            ))
        })
}

fn read_secret_file(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", path.display())))
}

impl KeysFile {
    /// A new repository's keys with one passphrase slot; returns its keyring too.
    pub fn create(passphrase: &str, label: &str) -> Result<(KeysFile, Arc<Keyring>)> {
        let secret = Secret::generate()?;
        let mut id = [0u8; 16];
        crypto::fill_random(&mut id)?;
        let mut keys = KeysFile {
            format: KEYS_FORMAT,
            repository: hex::encode(id),
            cipher: Cipher::fastest(),
            public_key: String::new(),
            naming_check: String::new(),
            slots: Vec::new(),
        };
        let keyring = secret.keyring(&keys);
        keys.public_key = recipient_text(&x25519::public_key(&secret.private));
        keys.naming_check = keyring.naming_check();
        keys.add_passphrase(&secret, passphrase, label)?;
        let keyring = remember(&keys.repository, keyring);
        Ok((keys, keyring))
    }

    fn slot_aad(&self, slot_id: &str) -> Vec<u8> {
        format!("larder key slot {} {slot_id}", self.repository).into_bytes()
    }

    fn new_slot_id(&self) -> Result<String> {
        loop {
            let mut id = [0u8; 4];
            crypto::fill_random(&mut id)?;
            let id = hex::encode(id);
            if !self.slots.iter().any(|s| s.id == id) {
                return Ok(id);
            }
        }
    }

    fn add_passphrase(&mut self, secret: &Secret, passphrase: &str, label: &str) -> Result<String> {
        let id = self.new_slot_id()?;
        let mut salt = [0u8; 16];
        crypto::fill_random(&mut salt)?;
        let kind = SlotKind::Passphrase {
            kdf: ARGON2ID.into(),
            salt: hex::encode(salt),
            iterations: ARGON2ID_PASSES,
            memory_kib: Some(ARGON2ID_MEMORY_KIB),
            lanes: Some(ARGON2ID_LANES),
        };
        let kek = passphrase_key(&kind, passphrase)?;
        self.push_slot(id, label, kind, &kek, secret)
    }

    fn add_recipient(
        &mut self,
        secret: &Secret,
        recipient: &PublicKey,
        label: &str,
    ) -> Result<String> {
        let id = self.new_slot_id()?;
        let ephemeral = crypto::random32()?;
        let ephemeral_public = x25519::public_key(&ephemeral);
        let kek = recipient_key(&self.repository, &ephemeral, &ephemeral_public, recipient)?;
        let kind = SlotKind::Recipient {
            recipient: recipient_text(recipient),
            ephemeral: hex::encode(ephemeral_public),
        };
        self.push_slot(id, label, kind, &kek, secret)
    }

    fn push_slot(
        &mut self,
        id: String,
        label: &str,
        kind: SlotKind,
        kek: &[u8; 32],
        secret: &Secret,
    ) -> Result<String> {
        let wrapped = crypto::seal_with(self.cipher, kek, &self.slot_aad(&id), &secret.bytes())?;
        self.slots.push(Slot {
            id: id.clone(),
            label: label.to_string(),
            created_at: Utc::now(),
            kind,
            wrapped: hex::encode(wrapped),
        });
        Ok(id)
    }

    fn unwrap(&self, slot: &Slot, kek: &[u8; 32]) -> Option<Secret> {
        let wrapped = hex::decode(&slot.wrapped).ok()?;
        let plain = crypto::open_with(self.cipher, kek, &self.slot_aad(&slot.id), &wrapped)?;
        Secret::from_bytes(&plain)
    }

    /// The secret through the passphrase slots.
    fn open_with_passphrase(&self, passphrase: &str) -> Result<Option<Secret>> {
        for slot in &self.slots {
            if matches!(slot.kind, SlotKind::Passphrase { .. }) {
                let kek = passphrase_key(&slot.kind, passphrase)?;
                if let Some(secret) = self.unwrap(slot, &kek) {
                    return Ok(Some(secret));
                }
            }
        }
        Ok(None)
    }

    fn open_with_identity(&self, identity: &SecretKey) -> Result<Option<Secret>> {
        let mine = recipient_text(&x25519::public_key(identity));
        for slot in &self.slots {
            if let SlotKind::Recipient {
                recipient,
                ephemeral,
            } = &slot.kind
                && *recipient == mine
                && let Some(ephemeral) = hex32(ephemeral)
            {
                let kek = recipient_key_open(&self.repository, identity, &ephemeral)?;
                if let Some(secret) = self.unwrap(slot, &kek) {
                    return Ok(Some(secret));
                }
            }
        }
        Ok(None)
    }

    fn passphrase_slots(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.kind, SlotKind::Passphrase { .. }))
            .count()
    }
}

fn passphrase_key(kind: &SlotKind, passphrase: &str) -> Result<[u8; 32]> {
    let SlotKind::Passphrase {
        kdf,
        salt,
        iterations,
        memory_kib,
        lanes,
    } = kind
    else {
        return Err(Error::Internal("not a passphrase slot".into()));
    };
    let unreadable = || {
        Error::Repository(format!(
            "a key slot uses the passphrase KDF '{kdf}' with {iterations} iterations, {memory_kib:?} KiB and {lanes:?} lanes, which this backup-cli does not read"
        ))
    };
    let salt =
        hex::decode(salt).map_err(|_| Error::Repository("a key slot's salt is not hex".into()))?;
    let mut out = [0u8; 32];
    match kdf.as_str() {
        ARGON2ID => {
            let memory = memory_kib
                .filter(|&m| m <= ARGON2ID_MAX_MEMORY_KIB)
                .ok_or_else(unreadable)?;
            let params = argon2::Params::new(memory, *iterations, lanes.unwrap_or(1), Some(32))
                .map_err(|_| unreadable())?;
            let mut blocks = argon2_memory(params.block_count());
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into_with_memory(passphrase.as_bytes(), &salt, &mut out, &mut blocks)
                .map_err(|e| Error::Repository(format!("argon2id failed: {e}")))?;
        }
        PBKDF2 => {
            let iterations = std::num::NonZeroU32::new(*iterations).ok_or_else(unreadable)?;
            ring::pbkdf2::derive(
                ring::pbkdf2::PBKDF2_HMAC_SHA256,
                iterations,
                &salt,
                passphrase.as_bytes(),
                &mut out,
            );
        }
        _ => return Err(unreadable()),
    }
    Ok(out)
}

fn recipient_key(
    repository: &str,
    ephemeral: &SecretKey,
    ephemeral_public: &PublicKey,
    recipient: &PublicKey,
) -> Result<[u8; 32]> {
    let shared = crypto::agree(ephemeral, recipient)
        .ok_or_else(|| Error::Config("the recipient is not a usable X25519 public key".into()))?;
    crypto::derive32(
        repository.as_bytes(),
        &shared,
        &[b"larder recipient slot", ephemeral_public, recipient],
    )
}

fn recipient_key_open(
    repository: &str,
    identity: &SecretKey,
    ephemeral: &PublicKey,
) -> Result<[u8; 32]> {
    let shared = crypto::agree(identity, ephemeral)
        .ok_or_else(|| Error::Repository("a recipient slot's ephemeral key is unusable".into()))?;
    crypto::derive32(
        repository.as_bytes(),
        &shared,
        &[
            b"larder recipient slot",
            ephemeral,
            &x25519::public_key(identity),
        ],
    )
}

fn remember(repository: &str, keyring: Keyring) -> Arc<Keyring> {
    let keyring = Arc::new(keyring);
    if let Ok(mut unlocked) = UNLOCKED.lock() {
        unlocked.retain(|(id, _)| id != repository);
        unlocked.push((repository.to_string(), keyring.clone()));
    }
    keyring
}

fn remembered(repository: &str) -> Option<Arc<Keyring>> {
    UNLOCKED
        .lock()
        .ok()?
        .iter()
        .find(|(id, _)| id == repository)
        .map(|(_, k)| k.clone())
}

/// Reads `keys.json` from `target`.
pub async fn read(target: &Arc<dyn Target>) -> Result<KeysFile> {
    let bytes = match target.get(KEYS_KEY).await {
        Ok(bytes) => bytes,
        Err(TargetError::NotFound { .. }) => {
            return Err(Error::Repository(format!(
                "the repository at {} is encrypted but its {KEYS_KEY} is missing; copy it from another target of the repository",
                target.location()
            )));
        }
        Err(e) => return Err(e.at(KEYS_KEY, "reading the repository's keys")),
    };
    let keys: KeysFile = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Repository(format!(
            "{KEYS_KEY} on {} is unreadable: {e}",
            target.location()
        ))
    })?;
    if keys.format != KEYS_FORMAT {
        return Err(Error::Repository(format!(
            "{KEYS_KEY} on {} has format {}, this backup-cli reads {KEYS_FORMAT}",
            target.location(),
            keys.format
        )));
    }
    Ok(keys)
}

/// Writes `keys.json` to `target`.
pub async fn write(target: &Arc<dyn Target>, keys: &KeysFile) -> Result<()> {
    let body = serde_json::to_vec_pretty(keys)
        .map_err(|e| Error::Internal(format!("encoding {KEYS_KEY}: {e}")))?;
    target
        .put(KEYS_KEY, Bytes::from(body))
        .await
        .map_err(|e| e.at(KEYS_KEY, "writing the repository's keys"))?;
    target
        .flush()
        .await
        .map_err(|e| e.at(KEYS_KEY, "writing the repository's keys"))
}

/// This host's passphrase: `BACKUP_CLI_PASSPHRASE`, else `[repository] passphrase_file`,
/// else a prompt when a terminal is attached (`confirm`: asked twice).
pub fn passphrase(purpose: &str, confirm: bool) -> Result<Option<String>> {
    if let Ok(value) = std::env::var(PASSPHRASE_ENV)
        && !value.is_empty()
    {
        return Ok(Some(value));
    }
    if let Some(path) = source().passphrase_file {
        return read_secret_file(&path, "passphrase file").map(Some);
    }
    if confirm {
        prompt_new(purpose)
    } else {
        prompt(&format!("Passphrase {purpose}: "))
    }
}

/// A new passphrase typed twice on the terminal, if there is one.
pub fn prompt_new(purpose: &str) -> Result<Option<String>> {
    let Some(first) = prompt(&format!("New passphrase {purpose}: "))? else {
        return Ok(None);
    };
    if prompt("New passphrase again: ")?.as_deref() != Some(first.as_str()) {
        return Err(Error::Refused(
            "the two passphrases differ; nothing was changed".into(),
        ));
    }
    Ok(Some(first))
}

/// Reads a line without echo from the terminal, if there is one (`stty -echo` while typing).
fn prompt(text: &str) -> Result<Option<String>> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(Error::io("opening the terminal for the passphrase"))?;
    let stty = |mode: &str| {
        tty.try_clone().and_then(|t| {
            std::process::Command::new("stty")
                .arg(mode)
                .stdin(t)
                .status()
        })
    };
    stty("-echo").map_err(Error::io("switching terminal echo off (stty)"))?;
    let mut writer = &tty;
    let _ = write!(writer, "{text}");
    let _ = writer.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = stty("echo");
    let _ = writeln!(writer);
    read.map_err(Error::io("reading the passphrase"))?;
    Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
}

/// Opens the repository at `location` whose keys are `keys`, with what this host holds.
pub fn unlock(keys: &KeysFile, location: &str) -> Result<Arc<Keyring>> {
    if let Some(keyring) = remembered(&keys.repository) {
        return Ok(keyring);
    }
    let source = source();
    let mut tried = Vec::new();
    if let Some(path) = &source.identity_file {
        let identity = parse_identity(&read_secret_file(path, "identity file")?, path)?;
        if let Some(secret) = keys.open_with_identity(&identity)? {
            return Ok(remember(&keys.repository, secret.keyring(keys)));
        }
        tried.push(format!(
            "the identity {} matches none of its recipient slots",
            path.display()
        ));
    }
    if keys.passphrase_slots() > 0 {
        match passphrase(&format!("for the repository at {location}"), false)? {
            Some(passphrase) => {
                if let Some(secret) = keys.open_with_passphrase(&passphrase)? {
                    return Ok(remember(&keys.repository, secret.keyring(keys)));
                }
                tried.push(format!(
                    "the passphrase opens none of its {} passphrase slot(s)",
                    keys.passphrase_slots()
                ));
            }
            None => tried.push(format!(
                "no passphrase given (set {PASSPHRASE_ENV}, [repository] passphrase_file, or run on a terminal)"
            )),
        }
    }
    if let Some(path) = &source.writer_key_file {
        let text = read_secret_file(path, "writer key file")?;
        match writer_keyring(keys, &text) {
            Some(keyring) => return Ok(remember(&keys.repository, keyring)),
            None => tried.push(format!(
                "the writer key {} belongs to another repository",
                path.display()
            )),
        }
    }
    if tried.is_empty() {
        tried.push("no identity_file, passphrase or writer_key_file is configured".into());
    }
    Err(Error::KeyRequired(format!(
        "the repository at {location} is encrypted and this host cannot open it: {}; nothing was written",
        tried.join("; ")
    )))
}

/// The writer key of an unlocked repository: its public key and naming key.
pub fn writer_key(keys: &KeysFile, keyring: &Keyring) -> Result<String> {
    let secret = keyring
        .secret_material()
        .and_then(|b| Secret::from_bytes(&b))
        .ok_or_else(|| write_only("make a writer key"))?;
    let public = x25519::public_key(&secret.private);
    Ok(format!(
        "{WRITER_PREFIX}{}-{}{}",
        keys.repository,
        hex::encode(public),
        hex::encode(secret.naming)
    ))
}

fn writer_keyring(keys: &KeysFile, text: &str) -> Option<Keyring> {
    let body = text.trim().strip_prefix(WRITER_PREFIX)?;
    let (repository, rest) = body.split_once('-')?;
    if repository != keys.repository || rest.len() != 128 {
        return None;
    }
    let public = hex32(&rest[..64])?;
    let naming = hex32(&rest[64..])?;
    let keyring = Keyring::new(&keys.repository, keys.cipher, public, naming, None);
    (keyring.naming_check() == keys.naming_check).then_some(keyring)
}

/// The refusal a write-only host gets for anything that reads.
pub fn write_only(what: &str) -> Error {
    Error::KeyRequired(format!(
        "this host holds only the repository's writer key, so it cannot {what}: a write-only backup host creates backups but cannot read or restore any; run this on a host with the passphrase or an identity of the repository"
    ))
}

/// Adds a slot: a passphrase (`recipient: None`) or an X25519 recipient. Needs the secret.
pub fn add_slot(
    keys: &mut KeysFile,
    keyring: &Keyring,
    recipient: Option<&PublicKey>,
    passphrase: Option<&str>,
    label: &str,
) -> Result<String> {
    let secret = keyring
        .secret_material()
        .and_then(|b| Secret::from_bytes(&b))
        .ok_or_else(|| write_only("add a key slot"))?;
    match (recipient, passphrase) {
        (Some(recipient), _) => keys.add_recipient(&secret, recipient, label),
        (None, Some(passphrase)) => keys.add_passphrase(&secret, passphrase, label),
        (None, None) => Err(Error::Refused(
            "a new slot needs a passphrase or a recipient".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_open_with_their_passphrase_or_identity_only() {
        let (mut keys, keyring) = KeysFile::create("right horse", "first").expect("create");
        assert!(
            keys.open_with_passphrase("right horse")
                .expect("kdf")
                .is_some()
        );
        assert!(
            keys.open_with_passphrase("wrong horse")
                .expect("kdf")
                .is_none()
        );
        let (identity, recipient) = new_identity().expect("identity");
        let recipient = parse_recipient(&recipient).expect("recipient");
        add_slot(&mut keys, &keyring, Some(&recipient), None, "laptop").expect("add");
        let identity = parse_identity(&identity, Path::new("id")).expect("parse");
        let opened = keys
            .open_with_identity(&identity)
            .expect("open")
            .expect("slot");
        assert_eq!(
            opened.bytes(),
            keyring.secret_material().expect("secret").to_vec()
        );
        let stranger = [9u8; 32];
        assert!(keys.open_with_identity(&stranger).expect("open").is_none());
        // A writer key seals what the full key opens, and opens nothing itself.
        let writer =
            writer_keyring(&keys, &writer_key(&keys, &keyring).expect("writer")).expect("ours");
        let sealed = writer.seal("backups/x.json", b"{}").expect("seal");
        assert_eq!(
            keyring.open("backups/x.json", &sealed).expect("open"),
            b"{}"
        );
        assert!(!writer.can_read());
        assert_eq!(writer.chunk_id(b"a"), keyring.chunk_id(b"a"));
        let other = KeysFile::create("x", "other").expect("create").0;
        assert!(writer_keyring(&other, &writer_key(&keys, &keyring).expect("w")).is_none());
    }

    #[test]
    fn new_passphrase_slots_use_argon2id_and_pbkdf2_slots_still_open() {
        let (mut keys, keyring) = KeysFile::create("new horse", "first").expect("create");
        assert!(matches!(
            &keys.slots[0].kind,
            SlotKind::Passphrase { kdf, memory_kib: Some(_), .. } if kdf == ARGON2ID
        ));
        let secret =
            Secret::from_bytes(&keyring.secret_material().expect("secret")).expect("secret");
        // A slot as backup-cli wrote them before argon2id (no memory or lanes recorded).
        let kind: SlotKind = serde_json::from_str(&format!(
            r#"{{"kind": "passphrase", "kdf": "{PBKDF2}", "salt": "{}", "iterations": 1000}}"#,
            hex::encode([5u8; 16])
        ))
        .expect("old slot");
        let kek = passphrase_key(&kind, "old horse").expect("kdf");
        let id = keys.new_slot_id().expect("id");
        keys.push_slot(id, "before argon2id", kind, &kek, &secret)
            .expect("slot");
        let opened = keys
            .open_with_passphrase("old horse")
            .expect("kdf")
            .expect("opens");
        assert_eq!(opened.bytes(), secret.bytes());
        assert!(
            keys.open_with_passphrase("new horse")
                .expect("kdf")
                .is_some()
        );
        // A slot asking argon2id for absurd memory is refused, not attempted.
        let greedy = SlotKind::Passphrase {
            kdf: ARGON2ID.into(),
            salt: hex::encode([5u8; 16]),
            iterations: 1,
            memory_kib: Some(u32::MAX),
            lanes: Some(1),
        };
        assert!(passphrase_key(&greedy, "x").is_err());
    }
}
