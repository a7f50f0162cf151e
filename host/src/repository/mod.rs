//! The repository format, the same on every target.
//!
//! ```text
//! larder-repository.json        format version and whether it is encrypted (written once, by init)
//! keys.json                     an encrypted repository's key slots (see keys.rs)
//! chunks/<2 hex>/<sha256>       zstd-compressed content, addressed by the SHA-256 of the plain bytes
//!                               (encrypted: by its keyed HMAC, and sealed; see crypto.rs)
//! backups/<backup-id>.json      one manifest per backup, written last and atomically (format 1;
//!                               format 2 when it holds windows: small tables stored one after
//!                               another in shared chunks, each table a window on them; format
//!                               3 when its tables and sequences, thousands of them, are a
//!                               stream of chunks apart, the manifest naming them and the
//!                               tables' chunks)
//! locks/<name>.json             running backups (shared) and garbage collection (exclusive)
//! restores/<timestamp>.json     measured restore durations, for estimates (recovery)
//! ```
//! Chunks are shared by all backups; a chunk already present is never written again.
//! In an encrypted repository every chunk and manifest passes through [`crypto::Keyring`] at
//! the one read/write boundary here (`put_chunk`, `write_manifest`, `ChunkCheck`,
//! `manifest_from`), and every record of `history` and `pins` at theirs (`put_json`,
//! `open_record`).

pub mod changes;
pub mod chunker;
mod copies;
pub mod crypto;
#[cfg(test)]
mod fuzz_tests;
pub mod gc;
pub mod history;
pub mod id;
pub mod keys;
pub mod latest;
pub mod lock;
pub mod manifest;
pub mod pins;
pub mod signing;
pub mod stream;
pub mod verify;
pub mod x25519;

use crate::error::{Error, Result};
use crate::targets::{Target, TargetError};
use bytes::Bytes;
use crypto::{Keyring, OpenError};
use manifest::{ChunkRef, Manifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const FORMAT_KEY: &str = "larder-repository.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct FormatFile {
    format: u32,
    created_at: chrono::DateTime<chrono::Utc>,
    created_by: String,
    /// Chunks and manifests are sealed; `keys.json` holds the key slots.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    encrypted: bool,
}

/// Which chunks a backup can reuse, and the ones it has written itself.
pub struct ChunkIndex {
    known: HashMap<String, u64>,
    fresh: Mutex<HashMap<String, u64>>,
}

impl ChunkIndex {
    /// The stored size of a chunk already in the repository.
    pub fn stored_size(&self, id: &str) -> Option<u64> {
        self.known.get(id).copied().or_else(|| {
            self.fresh
                .lock()
                .ok()
                .and_then(|fresh| fresh.get(id).copied())
        })
    }

    pub fn record(&self, id: &str, stored: u64) {
        if let Ok(mut fresh) = self.fresh.lock() {
            fresh.insert(id.to_string(), stored);
        }
    }
}

/// A repository on one target, optionally with copies on others to read from when an object
/// is missing or corrupt here. Cheap to clone.
#[derive(Clone)]
pub struct Repository {
    target: Arc<dyn Target>,
    fallbacks: Vec<Arc<dyn Target>>,
    notices: Arc<Mutex<Vec<String>>>,
    /// An encrypted repository's keys as this host holds them.
    keyring: Option<Arc<Keyring>>,
    /// The retention date of the backup being written through this handle
    /// ([`Repository::retaining`]): its chunks and manifest are stored with it.
    retain_until: Option<chrono::DateTime<chrono::Utc>>,
    /// The chunks windowed streams shared most recently, read once for all their windows.
    shared: Arc<Mutex<SharedChunks>>,
}

/// Plain bytes of chunks that hold several streams' windows, the oldest evicted first.
#[derive(Default)]
struct SharedChunks {
    chunks: std::collections::VecDeque<(String, Bytes)>,
    bytes: usize,
}

/// Plain bytes [`SharedChunks`] keeps: the chunks of many small tables' windows, which a
/// restore or validation reads one table after another.
const SHARED_CHUNK_BYTES: usize = 48 << 20;

impl SharedChunks {
    fn get(&self, id: &str) -> Option<Bytes> {
        self.chunks
            .iter()
            .find(|(held, _)| held == id)
            .map(|(_, data)| data.clone())
    }

    fn keep(&mut self, id: &str, data: Bytes) {
        if self.get(id).is_some() {
            return;
        }
        self.bytes += data.len();
        self.chunks.push_back((id.to_string(), data));
        while self.bytes > SHARED_CHUNK_BYTES {
            match self.chunks.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

/// The object key of a chunk. Ids come from checked manifests (hex); anything else still
/// yields a key, which the target then refuses, rather than a panic.
pub fn chunk_key(id: &str) -> String {
    format!("chunks/{}/{}", id.get(..2).unwrap_or_default(), id)
}

pub fn manifest_key(backup_id: &str) -> String {
    format!("backups/{backup_id}.json")
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl Repository {
    /// Opens an existing repository; fails with a hint when there is none.
    pub async fn open(target: Arc<dyn Target>) -> Result<Repository> {
        let repo = Repository::on(target);
        match repo.target.get(FORMAT_KEY).await {
            Ok(bytes) => {
                let format: FormatFile = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Repository(format!(
                        "{FORMAT_KEY} on {} is unreadable ({e}); is this a Larder repository?",
                        repo.target.location()
                    ))
                })?;
                if format.format != FORMAT_VERSION {
                    return Err(Error::Repository(format!(
                        "repository at {} has format {}, this backup-cli reads format {FORMAT_VERSION}; use a matching backup-cli version",
                        repo.target.location(),
                        format.format
                    )));
                }
                repo.unlocked(format.encrypted).await
            }
            Err(TargetError::NotFound { .. }) => Err(Error::NoRepository {
                target: repo.target.name().to_string(),
                location: repo.target.location(),
                chosen: String::new(),
            }),
            Err(e) => Err(e.at(FORMAT_KEY, "opening the repository")),
        }
    }

    /// Opens the repository for reading on the first of `targets` that holds one, with the
    /// others as fallbacks: after losing the primary storage, its copies still serve.
    pub async fn open_for_reading(targets: &[Arc<dyn Target>]) -> Result<Repository> {
        let mut first_error = None;
        for target in targets {
            match Repository::open(target.clone()).await {
                Ok(repo) => {
                    let repo = repo.with_fallbacks(targets.to_vec());
                    if let Some(e) = &first_error {
                        repo.notice(format!(
                            "{e}; reading from target '{}' instead",
                            target.name()
                        ));
                    }
                    return Ok(repo);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Error::Config("no storage target is configured".into())))
    }

    /// With the keys of an encrypted repository (refusing a plain one when
    /// `[repository] encryption` asks for encryption).
    async fn unlocked(mut self, encrypted: bool) -> Result<Repository> {
        if encrypted {
            let keys = keys::read(&self.target).await?;
            self.keyring = Some(keys::unlock(&keys, &self.target.location())?);
        } else if keys::source().encryption {
            return Err(Error::Refused(format!(
                "the repository at {} is not encrypted but [repository] encryption = true; refusing to use it (point the configuration at an encrypted repository, or set encryption = false)",
                self.target.location()
            )));
        }
        Ok(self)
    }

    /// Opens the repository, creating it first if the target is empty (encrypted when
    /// `[repository] encryption` or `init --encrypt` asks for it).
    pub async fn open_or_init(target: Arc<dyn Target>) -> Result<Repository> {
        match target.stat(FORMAT_KEY).await {
            Ok(Some(_)) => return Repository::open(target).await,
            Ok(None) => {}
            Err(e) => return Err(e.at(FORMAT_KEY, "opening the repository")),
        }
        let keys = if keys::source().encryption {
            let passphrase = keys::passphrase("for the new repository", true)?.ok_or_else(|| {
                Error::KeyRequired(format!(
                    "creating an encrypted repository at {} needs a passphrase: set {}, [repository] passphrase_file, or run on a terminal; nothing was written",
                    target.location(),
                    keys::PASSPHRASE_ENV
                ))
            })?;
            Some(keys::KeysFile::create(&passphrase, "initial passphrase")?)
        } else {
            None
        };
        Repository::open_or_create(target, keys).await
    }

    /// Opens the repository on `target` as a copy of `like` (same keys), creating it there,
    /// with `like`'s keys file, when the target is empty.
    pub async fn open_or_init_copy(
        target: Arc<dyn Target>,
        like: &Repository,
    ) -> Result<Repository> {
        let keys = match &like.keyring {
            Some(_) => Some(keys::read(&like.target).await?),
            None => None,
        };
        let repo = match (keys, target.stat(FORMAT_KEY).await) {
            (Some(keys), Ok(None)) => {
                keys::write(&target, &keys).await?;
                let keyring = keys::unlock(&keys, &target.location())?;
                Repository::open_or_create(target, Some((keys, keyring))).await?
            }
            _ => Repository::open_or_init(target).await?,
        };
        let id = |r: &Repository| r.keyring.as_ref().map(|k| k.repository().to_string());
        if id(&repo) != id(like) {
            return Err(Error::Repository(format!(
                "target '{}' holds another repository ({}) than target '{}' ({}): copies share one repository's keys; use an empty target for the copy",
                repo.target.name(),
                id(&repo).unwrap_or_else(|| "not encrypted".into()),
                like.target.name(),
                id(like).unwrap_or_else(|| "not encrypted".into()),
            )));
        }
        Ok(repo)
    }

    async fn open_or_create(
        target: Arc<dyn Target>,
        keys: Option<(keys::KeysFile, Arc<Keyring>)>,
    ) -> Result<Repository> {
        match target.stat(FORMAT_KEY).await {
            Ok(Some(_)) => Repository::open(target).await,
            Ok(None) => {
                if let Some((keys, _)) = &keys {
                    keys::write(&target, keys).await?;
                }
                let format = FormatFile {
                    format: FORMAT_VERSION,
                    created_at: chrono::Utc::now(),
                    created_by: format!("backup-cli {}", crate::TOOL_VERSION),
                    encrypted: keys.is_some(),
                };
                let body = serde_json::to_vec_pretty(&format)
                    .map_err(|e| Error::Repository(format!("encoding {FORMAT_KEY}: {e}")))?;
                target
                    .put(FORMAT_KEY, Bytes::from(body))
                    .await
                    .map_err(|e| e.at(FORMAT_KEY, "initialising the repository"))?;
                let mut repo = Repository::on(target);
                repo.keyring = keys.map(|(_, keyring)| keyring);
                repo.flush().await?;
                Ok(repo)
            }
            Err(e) => Err(e.at(FORMAT_KEY, "opening the repository")),
        }
    }

    fn on(target: Arc<dyn Target>) -> Repository {
        Repository {
            target,
            fallbacks: Vec::new(),
            notices: Arc::new(Mutex::new(Vec::new())),
            keyring: None,
            retain_until: None,
            shared: Arc::default(),
        }
    }

    /// This repository for writing one backup whose retention ends at `until`: its objects
    /// are stored with that date ([`Target::put_until`]), which S3 Object Lock targets lock
    /// them until.
    pub fn retaining(mut self, until: Option<chrono::DateTime<chrono::Utc>>) -> Repository {
        self.retain_until = until;
        self
    }

    /// Whether chunks and manifests are sealed.
    pub fn is_encrypted(&self) -> bool {
        self.keyring.is_some()
    }

    /// Whether this host can read backups (not an encrypted repository's writer key only).
    pub fn can_read(&self) -> bool {
        self.keyring.as_ref().is_none_or(|k| k.can_read())
    }

    /// The keys this host holds of an encrypted repository.
    pub fn keyring(&self) -> Option<&Arc<Keyring>> {
        self.keyring.as_ref()
    }

    /// The content address of a chunk: its SHA-256, or in an encrypted repository its keyed
    /// HMAC.
    pub fn chunk_id(&self, plain: &[u8]) -> String {
        match &self.keyring {
            Some(keyring) => keyring.chunk_id(plain),
            None => sha256_hex(plain),
        }
    }

    /// What checks a stored chunk of this repository (cheap to clone, for worker threads).
    pub fn chunk_check(&self) -> ChunkCheck {
        ChunkCheck {
            keyring: self.keyring.clone(),
        }
    }

    pub fn target(&self) -> &Arc<dyn Target> {
        &self.target
    }

    /// Reads fall back to these targets, in order, when an object is missing or corrupt on
    /// this one (restore, validate, export). Writers never use fallbacks.
    pub fn with_fallbacks(mut self, fallbacks: Vec<Arc<dyn Target>>) -> Repository {
        self.fallbacks = fallbacks
            .into_iter()
            .filter(|t| t.name() != self.target.name())
            .collect();
        self
    }

    /// What had to be read from a fallback target, one line each, for the report.
    pub fn notices(&self) -> Vec<String> {
        self.notices.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn notice(&self, text: String) {
        tracing::warn!("{text}");
        if let Ok(mut notices) = self.notices.lock() {
            notices.push(text);
        }
    }

    /// The chunks that backups reference, with their stored sizes: a new backup reuses these
    /// instead of writing them again. Orphans of interrupted backups are not in it (they may
    /// never have been made durable), so they are rewritten.
    /// A write-only host cannot read manifests: it deduplicates against the chunks listed.
    pub async fn chunk_index(&self) -> Result<ChunkIndex> {
        let mut known = HashMap::new();
        if !self.can_read() {
            let listed = self
                .target
                .list("chunks/")
                .await
                .map_err(|e| e.at("chunks/", "listing chunks"))?;
            for object in listed {
                if let Some((_, id)) = object.key.rsplit_once('/') {
                    known.insert(id.to_string(), object.size);
                }
            }
            return Ok(ChunkIndex {
                known,
                fresh: Mutex::new(HashMap::new()),
            });
        }
        for manifest in self.manifests().await? {
            for chunk in manifest.chunks() {
                known.insert(chunk.id.clone(), chunk.stored);
            }
        }
        Ok(ChunkIndex {
            known,
            fresh: Mutex::new(HashMap::new()),
        })
    }

    /// Makes all objects written so far durable.
    pub async fn flush(&self) -> Result<()> {
        self.target
            .flush()
            .await
            .map_err(|e| e.at("(flush)", "making written chunks durable"))
    }

    /// A chunk as it is stored: compressed, and in an encrypted repository sealed in the same
    /// buffer (compressed straight after the seal's header room, then sealed in place, so
    /// encryption adds no copy and no second buffer).
    pub fn encode_chunk(
        &self,
        id: &str,
        compressor: &mut zstd::bulk::Compressor<'_>,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let failed = |e: std::io::Error| Error::Repository(format!("compressing chunk {id}: {e}"));
        let Some(keyring) = &self.keyring else {
            return compressor.compress(data).map_err(failed);
        };
        let bound = zstd::zstd_safe::compress_bound(data.len());
        let mut out = std::io::Cursor::new(crypto::sealing_buffer(bound));
        out.set_position(out.get_ref().len() as u64);
        compressor
            .compress_to_buffer(data, &mut out)
            .map_err(failed)?;
        let mut sealed = out.into_inner();
        keyring.seal_in_place(&chunk_key(id), &mut sealed)?;
        Ok(sealed)
    }

    /// Stores a chunk as [`Repository::encode_chunk`] made it; returns its stored size.
    pub async fn put_chunk(&self, id: &str, stored: Vec<u8>) -> Result<u64> {
        let key = chunk_key(id);
        let size = stored.len() as u64;
        self.target
            .put_until(&key, Bytes::from(stored), self.retain_until)
            .await
            .map_err(|e| e.at(&key, "writing chunk"))?;
        Ok(size)
    }

    /// Reads a chunk, decompresses it and checks its SHA-256. `context` names the table and
    /// backup for the error message.
    pub async fn read_chunk(&self, chunk: &ChunkRef, context: &str) -> Result<Vec<u8>> {
        let key = chunk_key(&chunk.id);
        self.first_good(&key, |source| {
            self.fetch_plain(source, &key, chunk, context)
        })
        .await
    }

    /// The plain bytes of one piece of a stream (see [`manifest::Stream::pieces`]). A window's
    /// chunks are shared with other streams and kept for them; other chunks are read afresh.
    pub async fn read_piece(
        &self,
        (chunk, range): manifest::Piece<'_>,
        window: bool,
        context: &str,
    ) -> Result<Bytes> {
        if !window {
            return Ok(Bytes::from(self.read_chunk(chunk, context).await?));
        }
        let held = self.shared.lock().ok().and_then(|s| s.get(&chunk.id));
        let plain = match held {
            Some(plain) => plain,
            None => {
                let plain = Bytes::from(self.read_chunk(chunk, context).await?);
                if let Ok(mut shared) = self.shared.lock() {
                    shared.keep(&chunk.id, plain.clone());
                }
                plain
            }
        };
        // The range was checked against the manifest's length, which the read verified.
        plain
            .get(range.clone())
            .map(|_| plain.slice(range))
            .ok_or_else(|| {
                Error::Repository(format!(
                    "{context}: chunk {} is shorter than its window",
                    chunk.id
                ))
            })
    }

    /// Like [`Repository::read_chunk`], then runs `inspect` on the verified bytes off the
    /// async threads (for row counting and checksums).
    pub async fn read_chunk_with<T: Send + 'static>(
        &self,
        chunk: &ChunkRef,
        context: &str,
        inspect: impl FnOnce(Vec<u8>) -> T + Send + 'static,
    ) -> Result<T> {
        let plain = self.read_chunk(chunk, context).await?;
        tokio::task::spawn_blocking(move || inspect(plain))
            .await
            .map_err(|e| Error::Repository(format!("chunk worker failed: {e}")))
    }

    /// A chunk's verified plain bytes from `target`, opened where it was read (no copy).
    async fn fetch_plain(
        &self,
        target: Arc<dyn Target>,
        key: &str,
        chunk: &ChunkRef,
        context: &str,
    ) -> Result<Vec<u8>> {
        let stored = target.get(key).await.map_err(|e| e.at(key, context))?;
        let check = self.chunk_check();
        let (key, chunk, context) = (key.to_string(), chunk.clone(), context.to_string());
        verify(stored.len(), move || {
            check.check_owned(&key, &chunk, Vec::from(stored), &context)
        })
        .await
    }

    /// A chunk as stored on `target` and its verified plain bytes.
    async fn fetch_chunk(
        &self,
        target: Arc<dyn Target>,
        key: &str,
        chunk: &ChunkRef,
        context: &str,
    ) -> Result<(Bytes, Vec<u8>)> {
        let stored = target.get(key).await.map_err(|e| e.at(key, context))?;
        let check = self.chunk_check();
        let (key, chunk, context) = (key.to_string(), chunk.clone(), context.to_string());
        verify(stored.len(), move || {
            check
                .check(&key, &chunk, &stored, &context)
                .map(|plain| (stored, plain))
        })
        .await
    }

    /// Copies a stored chunk to `dest` as it is, after checking it (nothing corrupt is
    /// copied). Returns the stored size.
    pub async fn copy_chunk(
        &self,
        chunk: &ChunkRef,
        dest: &Repository,
        context: &str,
    ) -> Result<u64> {
        let key = chunk_key(&chunk.id);
        let (stored, _) = self
            .first_good(&key, |source| {
                self.fetch_chunk(source, &key, chunk, context)
            })
            .await?;
        let size = stored.len() as u64;
        dest.target
            .put_until(&key, stored, dest.retain_until)
            .await
            .map_err(|e| e.at(&key, format!("copying to target '{}'", dest.target.name())))?;
        Ok(size)
    }

    /// Reads a whole stream (a DDL section, or a table range in tests) into memory.
    pub async fn read_stream(&self, stream: &manifest::Stream, context: &str) -> Result<Vec<u8>> {
        // Sized by the chunks actually read, not by a size the manifest claims.
        let mut out = Vec::new();
        for piece in stream.pieces() {
            out.extend_from_slice(&self.read_piece(piece, stream.is_window(), context).await?);
        }
        Ok(out)
    }

    /// Keeps every object `manifest` needs here (its chunks, the format file and key slots)
    /// stored until its retention date: a chunk an older backup wrote, locked for that
    /// backup's shorter time, has its S3 Object Lock extended ([`Target::hold_until`]; one
    /// HEAD per chunk on such a target, nothing on others). Before the manifest is written,
    /// so a visible backup never needs an object that is unlocked sooner than it is.
    async fn hold_for(&self, manifest: &Manifest) -> Result<()> {
        use futures_util::{StreamExt, TryStreamExt};
        let mut keys: Vec<String> = manifest.chunks().map(|c| chunk_key(&c.id)).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.push(FORMAT_KEY.to_string());
        if self.keyring.is_some() {
            keys.push(keys::KEYS_KEY.to_string());
        }
        let until = manifest.retain_until;
        keys.extend(self.chain_keys(manifest).await?);
        futures_util::stream::iter(keys.iter())
            .map(|key| async move {
                self.target
                    .hold_until(key, until)
                    .await
                    .map_err(|e| e.at(key, format!("keeping it locked for backup {}", manifest.id)))
            })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await
    }

    /// What an incremental's restore needs besides its own objects, on a target that locks
    /// them: the manifests of the backups it is built on (parent to base) and their chunks,
    /// so that none is unlocked sooner than the incremental (an incremental is often kept
    /// longer than its base by a finer schedule, or the base's lock is shorter). Nothing for
    /// a full or schema-only backup, for a backup without a retention date, or where the
    /// format file carries no lock (targets without Object Lock: no reads at all). A host
    /// that cannot read the repository (public key only) holds the parent's and base's
    /// manifests, whose ids the incremental names, but cannot list their chunks.
    async fn chain_keys(&self, manifest: &Manifest) -> Result<Vec<String>> {
        let Some(chain) = &manifest.chain else {
            return Ok(Vec::new());
        };
        if manifest.retain_until.is_none()
            || self
                .target
                .retention(FORMAT_KEY)
                .await
                .map_err(|e| e.at(FORMAT_KEY, "reading its Object Lock"))?
                .is_none()
        {
            return Ok(Vec::new());
        }
        let mut keys = vec![manifest_key(&chain.parent), manifest_key(&chain.base)];
        if !self.can_read() {
            return Ok(keys);
        }
        let mut seen = std::collections::HashSet::new();
        let mut next = Some(chain.parent.clone());
        while let Some(id) = next.take() {
            if !seen.insert(id.clone()) {
                break;
            }
            let ancestor = self.read_manifest(&id).await?;
            keys.push(manifest_key(&ancestor.id));
            keys.extend(ancestor.chunks().map(|c| chunk_key(&c.id)));
            next = ancestor.chain.map(|c| c.parent);
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Writes a manifest, signed first when this host has a signing key and it is not yet
    /// signed (a copy keeps its writer's signature); returns it as written.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<Manifest> {
        let key = manifest_key(&manifest.id);
        let mut manifest = manifest.clone();
        let signing = signing::SigningKey::configured()?;
        if manifest.signature.is_none()
            && let Some(signing) = &signing
        {
            // A write-only host cannot open the previous manifest: it links to the newest
            // signed link record of its database instead.
            let previous = if self.can_read() {
                self.manifests()
                    .await?
                    .into_iter()
                    .filter(|m| {
                        m.source.database == manifest.source.database && m.id != manifest.id
                    })
                    .filter(|m| m.created_at <= manifest.created_at)
                    .max_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
                    .map(|m| signing::link_to(&m))
                    .transpose()?
            } else {
                signing::newest_link(self, &manifest, &keys::source().trusted_signers).await?
            };
            signing::sign(&mut manifest, previous, signing)?;
        }
        let body = manifest
            .stored_json()
            .map_err(|e| Error::Repository(format!("encoding manifest {}: {e}", manifest.id)))?;
        let body = match &self.keyring {
            Some(keyring) => keyring.seal(&key, &body)?,
            None => body,
        };
        // Chunks first, then the manifest: a visible manifest never refers to a lost chunk.
        self.flush().await?;
        self.hold_for(&manifest).await?;
        self.target
            .put_until(&key, Bytes::from(body), manifest.retain_until)
            .await
            .map_err(|e| e.at(&key, format!("writing manifest of backup {}", manifest.id)))?;
        if manifest.signature.is_some()
            && let Some(signing) = &signing
        {
            signing::record_link(self, &manifest, signing).await?;
        }
        self.flush().await?;
        Ok(manifest)
    }

    pub async fn read_manifest(&self, backup_id: &str) -> Result<Manifest> {
        if !id::is_valid_backup_id(backup_id) {
            return Err(Error::BackupNotFound(backup_id.to_string()));
        }
        let key = manifest_key(backup_id);
        self.first_good(&key, |source| self.manifest_from(source, backup_id))
            .await
    }

    async fn manifest_from(&self, target: Arc<dyn Target>, backup_id: &str) -> Result<Manifest> {
        let key = manifest_key(backup_id);
        let bytes = match target.get(&key).await {
            Ok(bytes) => bytes,
            Err(TargetError::NotFound { .. }) => {
                return Err(Error::BackupNotFound(backup_id.to_string()));
            }
            Err(e) => return Err(e.at(&key, format!("backup {backup_id}"))),
        };
        let bytes = match &self.keyring {
            Some(keyring) => match keyring.open(&key, &bytes) {
                Ok(plain) => Bytes::from(plain),
                Err(OpenError::WriteOnly) => {
                    return Err(keys::write_only(&format!("read backup {backup_id}")));
                }
                Err(why) => {
                    return Err(Error::ChecksumMismatch {
                        object: key.clone(),
                        detail: format!(
                            "the manifest of backup {backup_id} on target '{}': {why}",
                            target.name()
                        ),
                    });
                }
            },
            None => bytes,
        };
        let damaged = |why: String| Error::ChecksumMismatch {
            object: key.clone(),
            detail: format!(
                "the manifest of backup {backup_id} on target '{}' is damaged: {why}",
                target.name()
            ),
        };
        let mut manifest = Manifest::parse(backup_id, &bytes).map_err(damaged)?;
        if let Some(list) = &manifest.object_list {
            // A list lost or damaged is a damaged manifest (garbage collection keeps the
            // chunks its text names); a target that fails is that target's error.
            let json = match self
                .read_stream(
                    list,
                    &format!("the object list (tables and sequences) of backup {backup_id}"),
                )
                .await
            {
                Ok(json) => json,
                Err(e @ (Error::ObjectNotFound { .. } | Error::ChecksumMismatch { .. })) => {
                    return Err(damaged(e.to_string()));
                }
                Err(e) => return Err(e),
            };
            manifest.attach_objects(backup_id, &json).map_err(damaged)?;
        }
        Ok(manifest)
    }

    /// Every visible backup, read one by one: a damaged manifest is reported as such and does
    /// not hide the others. Manifests deleted while listing are skipped; a target that
    /// cannot be read fails the whole listing (nothing can be said then).
    pub async fn catalog(&self) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        for id in self.backup_ids().await? {
            match self.read_manifest(&id).await {
                Ok(manifest) => catalog.manifests.push(manifest),
                Err(Error::BackupNotFound(_)) => {}
                Err(error @ Error::ChecksumMismatch { .. }) => {
                    let key = manifest_key(&id);
                    let mentioned_chunks = match self.target.get(&key).await {
                        Ok(bytes) => mentioned_chunk_ids(&bytes),
                        Err(_) => Vec::new(),
                    };
                    catalog.damaged.push(DamagedManifest {
                        backup_id: id,
                        object: key,
                        error: error.to_string(),
                        mentioned_chunks,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        catalog
            .manifests
            .sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(catalog)
    }

    /// Ids of all visible backups (ids sort by creation second; use [`Repository::manifests`]
    /// for exact order). With fallbacks, backups found only on a fallback count too (the
    /// primary copy may be lost).
    pub async fn backup_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for listed in self
            .list_everywhere(|target| async move { backup_ids_on(&target).await })
            .await?
        {
            ids.extend(listed);
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// All usable backups, oldest first; damaged manifests are left out with a warning
    /// ([`Repository::catalog`] lists them).
    pub async fn manifests(&self) -> Result<Vec<Manifest>> {
        let catalog = self.catalog().await?;
        for damaged in &catalog.damaged {
            tracing::warn!("{}", damaged.error);
        }
        Ok(catalog.manifests)
    }

    /// Removes a backup's manifest from this target, after recording why and by whom
    /// ([`signing::record_retirement`]), so that `backup verify-history` tells this removal
    /// from one behind the tool's back.
    pub async fn delete_manifest(&self, backup_id: &str, why: &signing::RetiredBy) -> Result<()> {
        signing::record_retirement(self, backup_id, why).await?;
        let key = manifest_key(backup_id);
        self.target
            .delete(&key)
            .await
            .map_err(|e| e.at(&key, format!("deleting backup {backup_id}")))
    }
}

/// The backups of a repository: the usable ones, oldest first, and the damaged ones.
#[derive(Debug, Default)]
pub struct Catalog {
    pub manifests: Vec<Manifest>,
    pub damaged: Vec<DamagedManifest>,
}

/// A manifest that is there but cannot be used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedManifest {
    pub backup_id: String,
    pub object: String,
    /// The full message, in the runbook's words ("Checksum verification failed: …").
    pub error: String,
    /// Chunk ids its text still names: garbage collection keeps them, so the backup can come
    /// back when its manifest is repaired or copied from another target.
    #[serde(skip)]
    pub mentioned_chunks: Vec<String>,
}

/// Every 64-hex-digit word in `bytes`: the chunk ids a damaged manifest may still refer to.
fn mentioned_chunk_ids(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| !b.is_ascii_hexdigit())
        .filter(|word| word.len() == 64)
        .filter_map(|word| std::str::from_utf8(word).ok())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Ids of the backups whose manifests are on `target`.
pub async fn backup_ids_on(target: &Arc<dyn Target>) -> Result<Vec<String>> {
    let objects = target
        .list("backups/")
        .await
        .map_err(|e| e.at("backups/", "listing backups"))?;
    let mut ids: Vec<String> = objects
        .iter()
        .filter_map(|o| o.key.strip_prefix("backups/")?.strip_suffix(".json"))
        .filter(|id| id::is_valid_backup_id(id))
        .map(str::to_string)
        .collect();
    ids.sort();
    Ok(ids)
}

/// Decompresses a stored chunk of a plain repository and checks it against its reference.
pub fn verify_chunk(key: &str, chunk: &ChunkRef, stored: &[u8], context: &str) -> Result<Vec<u8>> {
    ChunkCheck::default().check(key, chunk, stored, context)
}

/// Checks stored chunks of one repository: opens them when it is encrypted (an object that
/// fails authentication is a checksum failure), decompresses, and compares the content
/// address.
#[derive(Clone, Default)]
pub struct ChunkCheck {
    keyring: Option<Arc<Keyring>>,
}

impl ChunkCheck {
    /// The plain bytes of a stored chunk, checked.
    pub fn check(
        &self,
        key: &str,
        chunk: &ChunkRef,
        stored: &[u8],
        context: &str,
    ) -> Result<Vec<u8>> {
        match &self.keyring {
            Some(keyring) => {
                let opened = keyring
                    .open(key, stored)
                    .map_err(|why| open_failed(key, context, why))?;
                self.verify(key, chunk, &opened, context)
            }
            None => self.verify(key, chunk, stored, context),
        }
    }

    /// [`ChunkCheck::check`] of a chunk this process owns as read: an encrypted one is opened
    /// where it lies instead of into a copy.
    pub fn check_owned(
        &self,
        key: &str,
        chunk: &ChunkRef,
        mut stored: Vec<u8>,
        context: &str,
    ) -> Result<Vec<u8>> {
        match &self.keyring {
            Some(keyring) => {
                let opened = keyring
                    .open_in_place(key, &mut stored)
                    .map_err(|why| open_failed(key, context, why))?;
                self.verify(key, chunk, opened, context)
            }
            None => self.verify(key, chunk, &stored, context),
        }
    }

    /// Decompresses an opened chunk and compares its content address.
    fn verify(&self, key: &str, chunk: &ChunkRef, opened: &[u8], context: &str) -> Result<Vec<u8>> {
        let mismatch = |why: String| Error::ChecksumMismatch {
            object: key.to_string(),
            detail: format!("{context}: {why}"),
        };
        let plain = decompress_checked(opened, chunk, mismatch)?;
        match &self.keyring {
            Some(keyring) if keyring.chunk_id(&plain) != chunk.id => {
                Err(mismatch("its keyed content address does not match".into()))
            }
            Some(_) => Ok(plain),
            None => {
                let actual = sha256_hex(&plain);
                if actual != chunk.id {
                    return Err(mismatch(format!("SHA-256 is {actual}")));
                }
                Ok(plain)
            }
        }
    }
}

/// Why a sealed chunk did not open, as the error a reader reports: a writer key cannot read,
/// anything else is a checksum failure.
fn open_failed(key: &str, context: &str, why: OpenError) -> Error {
    match why {
        OpenError::WriteOnly => keys::write_only("read chunks"),
        why => Error::ChecksumMismatch {
            object: key.to_string(),
            detail: format!("{context}: {why}"),
        },
    }
}

/// Stored chunks up to this size are verified on the calling thread, not a blocking one.
const INLINE_CHECK_BYTES: usize = 64 << 10;

/// Runs a chunk's verification (hash, decompression) of `stored` bytes: on a blocking thread,
/// or here for a small chunk, where handing it to a blocking thread and back costs more than
/// the work (a restore of thousands of small tables).
async fn verify<T: Send + 'static>(
    stored: usize,
    check: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if stored <= INLINE_CHECK_BYTES {
        return check();
    }
    tokio::task::spawn_blocking(check)
        .await
        .map_err(|e| Error::Internal(format!("chunk verification worker failed: {e}")))?
}

thread_local! {
    /// This thread's decompression context, kept for its next chunk: creating one per chunk
    /// was 4 % of the client's samples in a restore of 5,000 small tables.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses a chunk's zstd frame, checking its sizes against the reference first.
fn decompress_checked(
    stored: &[u8],
    chunk: &ChunkRef,
    mismatch: impl Fn(String) -> Error,
) -> Result<Vec<u8>> {
    // The capacity comes from the manifest: check it against the format's limit and the
    // size the compressed frame itself declares before allocating it.
    if chunk.len > manifest::MAX_CHUNK_LEN {
        return Err(mismatch(format!(
            "the manifest gives it {} bytes, beyond the format's limit",
            chunk.len
        )));
    }
    match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(declared)) if declared == chunk.len => {}
        Ok(Some(declared)) => {
            return Err(mismatch(format!(
                "expected {} bytes, the stored frame holds {declared}",
                chunk.len
            )));
        }
        Ok(None) | Err(_) => {
            return Err(mismatch(
                "cannot decompress: not a zstd frame of known size".into(),
            ));
        }
    }
    let plain = DECOMPRESSOR
        .with(|slot| {
            let mut slot = slot.borrow_mut();
            let decompressor = match slot.as_mut() {
                Some(d) => d,
                None => slot.insert(zstd::bulk::Decompressor::new()?),
            };
            decompressor.decompress(stored, chunk.len as usize)
        })
        .map_err(|e| mismatch(format!("cannot decompress: {e}")))?;
    if plain.len() as u64 != chunk.len {
        return Err(mismatch(format!(
            "expected {} bytes, found {}",
            chunk.len,
            plain.len()
        )));
    }
    Ok(plain)
}
