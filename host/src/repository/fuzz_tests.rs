//! Hostile repository content never panics: the kept corpus of crafted manifests
//! (tests/corpus/manifest), then seeded random mutations of manifests and stored chunks run
//! through the manifest parser, everything that reads a parsed manifest, and the chunk reader.

use super::manifest::{ChunkRef, MAX_CHUNK_LEN, Manifest, is_chunk_id};
use super::{chunk_key, sha256_hex, verify_chunk};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

const KEY_ID: &str = "20260101-000000-0000";

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/manifest");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "the crafted-manifest corpus {} is missing: {e}",
                dir.display()
            )
        })
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, std::fs::read(&path).expect("read corpus file"))
        })
        .collect();
    out.sort();
    out
}

/// Parses and, when that succeeds, uses the manifest the way list, delete, GC and validate
/// do; returns whether it parsed. Panics (the test fails) on any panic inside.
fn exercise(name: &str, bytes: &[u8]) -> bool {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let Ok(manifest) = Manifest::parse(KEY_ID, bytes) else {
            return false;
        };
        assert_eq!(manifest.id, KEY_ID, "{name}: identity is the key");
        for chunk in manifest.chunks() {
            assert!(is_chunk_id(&chunk.id), "{name}: unchecked chunk id passed");
            assert!(
                chunk.len <= MAX_CHUNK_LEN,
                "{name}: unchecked length passed"
            );
            let key = chunk_key(&chunk.id);
            assert!(crate::targets::is_valid_key(&key), "{name}: {key}");
            let _ = verify_chunk(&key, chunk, b"\x28\xb5\x2f\xfd garbage", name);
        }
        let _ = (
            manifest.rows(),
            manifest.logical_bytes(),
            manifest.stored_bytes(),
            manifest.duration_seconds(),
            manifest.tables_digest(),
        );
        let _ = crate::engine::list::BackupSummary::from(&manifest);
        true
    }));
    match outcome {
        Ok(parsed) => parsed,
        Err(_) => panic!("{name}: reading this manifest panicked"),
    }
}

#[test]
fn the_crafted_corpus_is_refused_or_read_without_panic() {
    let usable = [
        "valid.json",
        "rows_overflow.json",
        "stream_bytes_max.json",
        "extreme_times.json",
        "odd_names.json",
    ];
    let corpus = corpus();
    assert!(corpus.len() >= 15, "corpus incomplete: {}", corpus.len());
    for (name, bytes) in &corpus {
        let parsed = exercise(name, bytes);
        assert_eq!(
            parsed,
            usable.contains(&name.as_str()),
            "{name}: parsed = {parsed}"
        );
    }
    let inner = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/corpus/manifest/inner_id_format_file.json"),
    )
    .expect("read");
    let err = Manifest::parse(KEY_ID, &inner).expect_err("forged id");
    assert!(err.contains("differs from its key"), "{err}");
}

/// Values a mutation puts in place of a JSON scalar.
const HOSTILE: &[&str] = &[
    "18446744073709551615",
    "-1",
    "0",
    "1e308",
    "\"\"",
    "\"é\"",
    "\"../../x\"",
    "null",
    "[]",
    "{}",
    "\"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\"",
    "4294967296",
];

fn mutate(rng: &mut fastrand::Rng, base: &[u8]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for _ in 0..rng.usize(1..4) {
        match rng.u8(0..4) {
            0 if !bytes.is_empty() => {
                let at = rng.usize(..bytes.len());
                bytes[at] ^= 1 << rng.u8(0..8);
            }
            1 if !bytes.is_empty() => {
                bytes.truncate(rng.usize(..bytes.len()));
            }
            _ => {
                // Replace the value after a random `": `.
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let starts: Vec<usize> = text.match_indices("\": ").map(|(i, _)| i + 3).collect();
                if let Some(&start) = starts.get(rng.usize(..starts.len().max(1))) {
                    let end = text[start..]
                        .find([',', '\n', '}'])
                        .map_or(text.len(), |e| start + e);
                    let value = HOSTILE[rng.usize(..HOSTILE.len())];
                    bytes = format!("{}{value}{}", &text[..start], &text[end..]).into_bytes();
                }
            }
        }
    }
    bytes
}

#[test]
fn mutated_manifests_never_panic() {
    let base = corpus()
        .into_iter()
        .find(|(name, _)| name == "valid.json")
        .map(|(_, bytes)| bytes)
        .expect("valid.json in the corpus");
    let mut rng = fastrand::Rng::with_seed(11);
    let mut parsed = 0;
    for i in 0..3000 {
        let bytes = mutate(&mut rng, &base);
        if exercise(&format!("mutation {i}"), &bytes) {
            parsed += 1;
        }
    }
    assert!(
        parsed > 0,
        "no mutation left a usable manifest: the mutator is too coarse"
    );
}

#[test]
fn crafted_chunks_are_refused_without_panic_or_huge_allocation() {
    let plain = b"1\tsalt\n2\tpepper\n".to_vec();
    let stored = zstd::bulk::compress(&plain, 3).expect("compress");
    let good = ChunkRef {
        id: sha256_hex(&plain),
        len: plain.len() as u64,
        stored: stored.len() as u64,
    };
    let key = chunk_key(&good.id);
    assert_eq!(
        verify_chunk(&key, &good, &stored, "t").expect("intact chunk"),
        plain
    );
    let mut rng = fastrand::Rng::with_seed(5);
    let lens = [0, 1, plain.len() as u64 - 1, MAX_CHUNK_LEN + 1, u64::MAX];
    for i in 0..2000 {
        let mut blob = stored.clone();
        match i % 3 {
            0 => {
                let at = rng.usize(..blob.len());
                blob[at] ^= 1 << rng.u8(0..8);
            }
            1 => blob.truncate(rng.usize(..blob.len())),
            _ => blob = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect(),
        }
        let chunk = ChunkRef {
            len: if i % 2 == 0 {
                good.len
            } else {
                lens[rng.usize(..lens.len())]
            },
            ..good.clone()
        };
        let result = catch_unwind(AssertUnwindSafe(|| verify_chunk(&key, &chunk, &blob, "t")));
        match result {
            Ok(Ok(read)) => assert_eq!(read, plain, "case {i}: accepted different content"),
            Ok(Err(_)) => {}
            Err(_) => panic!("case {i}: the chunk reader panicked"),
        }
    }
}
