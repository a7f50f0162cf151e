//! Encryption at rest: the one place where repository objects are sealed and opened.
//!
//! An encrypted repository has an X25519 key pair and a naming key. Every chunk and manifest is
//! sealed with an AEAD (AES-256-GCM where the CPU has AES instructions, else ChaCha20-Poly1305,
//! recorded per repository) under a key agreed between a per-process ephemeral key and the
//! repository's public key, so a host that holds only the public key and the naming key (a
//! *writer key*) can seal new objects but open none. Sealed object:
//!
//! ```text
//! "LARDER\x01E" (8) | ephemeral public key (32) | nonce (12) | ciphertext | tag (16)
//! ```
//!
//! The object's key (`chunks/ab/ab…`, `backups/<id>.json`) is authenticated with it, so an
//! object moved to another name fails to open. Chunk names are the HMAC-SHA256 of the plain
//! bytes under the naming key: equal content still deduplicates, but names reveal nothing.

use super::x25519;
use crate::error::{Error, Result};
use ring::aead::{self, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// An X25519 public key (u-coordinate).
pub type PublicKey = [u8; 32];
/// An X25519 private key.
pub type SecretKey = [u8; 32];

/// The first bytes of every sealed object.
pub const SEALED_MAGIC: &[u8; 8] = b"LARDER\x01E";
const HEADER_LEN: usize = SEALED_MAGIC.len() + 32 + NONCE_LEN;
/// Bytes sealing adds to an object.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + 16;

/// The AEAD objects are sealed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cipher {
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    /// The faster of the two on this machine: AES-256-GCM with AES and carry-less multiply
    /// instructions, ChaCha20-Poly1305 without them (where AES in software is slow).
    pub fn fastest() -> Cipher {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
            {
                return Cipher::Aes256Gcm;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("aes") {
                return Cipher::Aes256Gcm;
            }
        }
        Cipher::Chacha20Poly1305
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::Chacha20Poly1305 => "chacha20-poly1305",
        })
    }
}

/// Why a sealed object could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Not a sealed object at all (too short, wrong magic).
    NotSealed,
    /// The tag does not match: altered, moved, or sealed for another repository.
    Authentication,
    /// This host holds the writer key only.
    WriteOnly,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenError::NotSealed => "not an encrypted object of this repository (no sealed header)",
            OpenError::Authentication => {
                "authentication failed: the object was altered, moved, or sealed with another key"
            }
            OpenError::WriteOnly => "this host holds the writer key only and cannot read",
        })
    }
}

/// An empty object buffer for [`Keyring::seal_in_place`]: room for the header, and capacity
/// for `capacity` bytes of content and the tag.
pub fn sealing_buffer(capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(SEAL_OVERHEAD + capacity);
    buf.resize(HEADER_LEN, 0);
    buf
}

/// 32 random bytes from the system's generator.
pub fn random32() -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    fill_random(&mut out)?;
    Ok(out)
}

pub fn fill_random(out: &mut [u8]) -> Result<()> {
    SystemRandom::new()
        .fill(out)
        .map_err(|_| Error::Internal("the system's random generator failed".into()))
}

/// HKDF output of a fixed length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 of `ikm` to 32 bytes.
pub fn derive32(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(ikm)
        .expand(info, Len(32))
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| Error::Internal("key derivation failed".into()))?;
    Ok(out)
}

fn aead_key(cipher: Cipher, bytes: &[u8; 32]) -> Result<LessSafeKey> {
    UnboundKey::new(cipher.algorithm(), bytes)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Internal("cannot build the object key".into()))
}

/// Seals `plain` under a one-off key (key slots): nonce | ciphertext | tag.
pub fn seal_with(cipher: Cipher, key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let key = aead_key(cipher, key)?;
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let mut body = out.split_off(NONCE_LEN);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| Error::Internal("sealing failed".into()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens what [`seal_with`] sealed; `None` when it does not authenticate.
pub fn open_with(cipher: Cipher, key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let key = aead_key(cipher, key).ok()?;
    let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut body = body.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut body).ok()?;
    Some(plain.to_vec())
}

/// The X25519 agreement between `secret` and `public`, refusing low-order points.
pub fn agree(secret: &SecretKey, public: &PublicKey) -> Option<[u8; 32]> {
    x25519::agree(secret, public)
}

/// The keys of one unlocked encrypted repository: enough to seal and name objects, and to open
/// them when the private key is held.
pub struct Keyring {
    repository: String,
    cipher: Cipher,
    public: PublicKey,
    naming: hmac::Key,
    naming_bytes: [u8; 32],
    secret: Option<SecretKey>,
    /// This process's ephemeral key for sealing, made on first use.
    writing: Mutex<Option<Arc<(PublicKey, LessSafeKey)>>>,
    /// Object keys agreed with ephemeral keys already seen (one per writing process).
    reading: Mutex<HashMap<[u8; 32], Arc<LessSafeKey>>>,
}

impl Keyring {
    pub fn new(
        repository: &str,
        cipher: Cipher,
        public: PublicKey,
        naming: [u8; 32],
        secret: Option<SecretKey>,
    ) -> Keyring {
        Keyring {
            repository: repository.to_string(),
            cipher,
            public,
            naming: hmac::Key::new(hmac::HMAC_SHA256, &naming),
            naming_bytes: naming,
            secret,
            writing: Mutex::new(None),
            reading: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this host can open objects (not a writer key only).
    pub fn can_read(&self) -> bool {
        self.secret.is_some()
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The repository id these keys belong to.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The private key and the naming key, when held (to wrap them in a new slot).
    pub fn secret_material(&self) -> Option<[u8; 64]> {
        let secret = self.secret.as_ref()?;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(secret);
        out[32..].copy_from_slice(&self.naming_bytes);
        Some(out)
    }

    /// The keyed, content-derived name of a chunk: HMAC-SHA256 of its bytes, hex.
    pub fn chunk_id(&self, plain: &[u8]) -> String {
        hex::encode(hmac::sign(&self.naming, plain).as_ref())
    }

    /// A keyed tag of `value` for `purpose` (such as a database's name in the plain link
    /// records a writer-key host reads): equal values give equal tags, and without the naming
    /// key a tag says nothing of its value. Keyed apart from chunk names.
    pub fn tag(&self, purpose: &str, value: &str) -> Result<String> {
        let key = derive32(
            self.repository.as_bytes(),
            &self.naming_bytes,
            &[b"larder tag", purpose.as_bytes()],
        )?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        Ok(hex::encode(hmac::sign(&key, value.as_bytes()).as_ref()))
    }

    /// A check value of the naming key (stored in the keys file to tell a writer key of
    /// another repository apart).
    pub fn naming_check(&self) -> String {
        self.chunk_id(b"larder naming key check")
    }

    fn object_key(&self, ephemeral: &PublicKey, shared: &[u8; 32]) -> Result<LessSafeKey> {
        let bytes = derive32(
            self.repository.as_bytes(),
            shared,
            &[
                b"larder object key",
                ephemeral.as_slice(),
                self.public.as_slice(),
            ],
        )?;
        aead_key(self.cipher, &bytes)
    }

    fn writing_key(&self) -> Result<Arc<(PublicKey, LessSafeKey)>> {
        let mut writing = self
            .writing
            .lock()
            .map_err(|_| Error::Internal("key state poisoned".into()))?;
        if let Some(key) = writing.as_ref() {
            return Ok(key.clone());
        }
        let ephemeral = random32()?;
        let public = x25519::public_key(&ephemeral);
        let shared = agree(&ephemeral, &self.public).ok_or_else(|| {
            Error::Repository("the repository's public key is not a usable X25519 key".into())
        })?;
        let key = Arc::new((public, self.object_key(&public, &shared)?));
        *writing = Some(key.clone());
        Ok(key)
    }

    /// Seals the object stored under `name` (a copy of `plain`; see [`Keyring::seal_in_place`]).
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let mut sealed = sealing_buffer(plain.len());
        sealed.extend_from_slice(plain);
        self.seal_in_place(name, &mut sealed)?;
        Ok(sealed)
    }

    /// Seals what follows the header's room in `buf` (made by [`sealing_buffer`], the object's
    /// bytes written after it, e.g. compressed straight into it) without copying it: the header
    /// is written in front and the tag appended.
    pub fn seal_in_place(&self, name: &str, buf: &mut Vec<u8>) -> Result<()> {
        if buf.len() < HEADER_LEN {
            return Err(Error::Internal(format!(
                "sealing {name}: the buffer has no room for the header"
            )));
        }
        let writing = self.writing_key()?;
        let (ephemeral, key) = (&writing.0, &writing.1);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        buf[..SEALED_MAGIC.len()].copy_from_slice(SEALED_MAGIC);
        buf[SEALED_MAGIC.len()..HEADER_LEN - NONCE_LEN].copy_from_slice(ephemeral);
        buf[HEADER_LEN - NONCE_LEN..HEADER_LEN].copy_from_slice(&nonce);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(name).as_slice()),
                &mut buf[HEADER_LEN..],
            )
            .map_err(|_| Error::Internal(format!("sealing {name} failed")))?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens the object stored under `name` (into a copy; see [`Keyring::open_in_place`]).
    pub fn open(&self, name: &str, sealed: &[u8]) -> std::result::Result<Vec<u8>, OpenError> {
        let (key, nonce) = self.header(sealed)?;
        let mut body = sealed[HEADER_LEN..].to_vec();
        let plain_len = key
            .open_in_place(nonce, Aad::from(aad(name).as_slice()), &mut body)
            .map_err(|_| OpenError::Authentication)?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }

    /// Opens the object stored under `name` where it lies: returns the part of `sealed`
    /// that holds its plain bytes (a chunk read from a target is decompressed from there).
    pub fn open_in_place<'a>(
        &self,
        name: &str,
        sealed: &'a mut [u8],
    ) -> std::result::Result<&'a [u8], OpenError> {
        let (key, nonce) = self.header(sealed)?;
        let plain = key
            .open_in_place(
                nonce,
                Aad::from(aad(name).as_slice()),
                &mut sealed[HEADER_LEN..],
            )
            .map_err(|_| OpenError::Authentication)?;
        Ok(plain)
    }

    /// The object key and nonce a sealed object's header names.
    fn header(&self, sealed: &[u8]) -> std::result::Result<(Arc<LessSafeKey>, Nonce), OpenError> {
        if sealed.len() < SEAL_OVERHEAD || !sealed.starts_with(SEALED_MAGIC) {
            return Err(OpenError::NotSealed);
        }
        let secret = self.secret.as_ref().ok_or(OpenError::WriteOnly)?;
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&sealed[SEALED_MAGIC.len()..HEADER_LEN - NONCE_LEN]);
        let key = self.reading_key(secret, ephemeral)?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed[HEADER_LEN - NONCE_LEN..HEADER_LEN])
            .map_err(|_| OpenError::NotSealed)?;
        Ok((key, nonce))
    }

    fn reading_key(
        &self,
        secret: &SecretKey,
        ephemeral: [u8; 32],
    ) -> std::result::Result<Arc<LessSafeKey>, OpenError> {
        let mut reading = self.reading.lock().map_err(|_| OpenError::Authentication)?;
        if let Some(key) = reading.get(&ephemeral) {
            return Ok(key.clone());
        }
        let public: PublicKey = ephemeral;
        let shared = agree(secret, &public).ok_or(OpenError::Authentication)?;
        let key = Arc::new(
            self.object_key(&public, &shared)
                .map_err(|_| OpenError::Authentication)?,
        );
        // Bounded: one entry per writing process, but a hostile repository could hold many.
        if reading.len() > 4096 {
            reading.clear();
        }
        reading.insert(ephemeral, key.clone());
        Ok(key)
    }
}

/// What an object's seal authenticates besides its bytes: the format and its name.
fn aad(name: &str) -> Vec<u8> {
    let mut aad = SEALED_MAGIC.to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(secret: Option<SecretKey>, public: PublicKey) -> Keyring {
        Keyring::new("r1", Cipher::fastest(), public, [7; 32], secret)
    }

    #[test]
    fn sealed_objects_open_only_under_their_name_and_key() {
        let secret = [3u8; 32];
        let public = x25519::public_key(&secret);
        let reader = keyring(Some(secret), public);
        let writer = keyring(None, public);
        let sealed = writer.seal("backups/a.json", b"marker-text").expect("seal");
        assert!(!sealed.windows(6).any(|w| w == b"marker"));
        assert_eq!(
            reader.open("backups/a.json", &sealed).expect("open"),
            b"marker-text"
        );
        assert_eq!(
            writer.open("backups/a.json", &sealed),
            Err(OpenError::WriteOnly)
        );
        assert_eq!(
            reader.open("backups/b.json", &sealed),
            Err(OpenError::Authentication)
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 20;
        flipped[last] ^= 1;
        assert_eq!(
            reader.open("backups/a.json", &flipped),
            Err(OpenError::Authentication)
        );
        assert_eq!(
            reader.open("backups/a.json", b"{}"),
            Err(OpenError::NotSealed)
        );
        let other = [4u8; 32];
        let stranger = keyring(Some(other), public);
        assert_eq!(
            stranger.open("backups/a.json", &sealed),
            Err(OpenError::Authentication)
        );
    }

    #[test]
    fn sealing_and_opening_in_place_match_the_copying_ones() {
        let secret = [3u8; 32];
        let reader = keyring(Some(secret), x25519::public_key(&secret));
        let mut buf = sealing_buffer(5);
        buf.extend_from_slice(b"chunk");
        reader
            .seal_in_place("chunks/ab/ab", &mut buf)
            .expect("seal");
        assert_eq!(buf.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(reader.open("chunks/ab/ab", &buf).expect("open"), b"chunk");
        let mut copied = reader.seal("chunks/ab/ab", b"chunk").expect("seal");
        assert_eq!(
            reader
                .open_in_place("chunks/ab/ab", &mut copied)
                .expect("open"),
            b"chunk"
        );
        assert_eq!(
            reader.open_in_place("chunks/ab/cd", &mut buf),
            Err(OpenError::Authentication)
        );
        assert!(reader.seal_in_place("x", &mut Vec::new()).is_err());
    }

    #[test]
    fn chunk_names_are_keyed() {
        let public = x25519::public_key(&[3u8; 32]);
        let a = keyring(None, public);
        let b = Keyring::new("r1", Cipher::fastest(), public, [8; 32], None);
        assert_eq!(a.chunk_id(b"x"), a.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x"), b.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x"), crate::repository::sha256_hex(b"x"));
        assert_eq!(a.chunk_id(b"x").len(), 64);
    }

    #[test]
    fn one_off_seals_round_trip() {
        for cipher in [Cipher::Aes256Gcm, Cipher::Chacha20Poly1305] {
            let sealed = seal_with(cipher, &[1; 32], b"slot", b"secret").expect("seal");
            assert_eq!(
                open_with(cipher, &[1; 32], b"slot", &sealed).as_deref(),
                Some(&b"secret"[..])
            );
            assert_eq!(open_with(cipher, &[2; 32], b"slot", &sealed), None);
            assert_eq!(open_with(cipher, &[1; 32], b"other", &sealed), None);
        }
    }
}
