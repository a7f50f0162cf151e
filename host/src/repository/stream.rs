//! Writing one byte stream (a table range's COPY text, a DDL section) into the repository.
//!
//! The async side hands over batches of bytes through a small bounded channel; a blocking
//! thread chunks them, counts rows, hashes, compresses and stores each chunk. Memory per stream
//! is bounded by the channel (two batches) plus one chunk in flight, whatever the table size.

use super::chunker::{RowChecksum, RowChunker, RowHasher};
use super::manifest::{ChunkRef, Stream};
use super::{ChunkIndex, Repository};
use crate::error::{Error, Result};
use crate::targets::InFlight;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes per batch handed from the COPY reader to the chunking thread.
pub const BATCH_BYTES: usize = 1024 * 1024;

/// Called after each chunk with (rows, bytes) it held.
pub type ChunkObserver = Box<dyn Fn(u64, u64) + Send>;

/// What writing a stream produced.
#[derive(Debug, Clone)]
pub struct Stored {
    pub stream: Stream,
    pub checksum: RowChecksum,
    /// Compressed bytes of chunks that were not in the repository before.
    pub new_bytes: u64,
}

/// A stream being written: send batches, then `finish`.
pub struct StreamWriter {
    tx: mpsc::Sender<Vec<Bytes>>,
    worker: JoinHandle<Result<Stored>>,
    /// Set by `finish`: the channel closing then means the stream's end. Closed without it,
    /// the writer was dropped (a stopped backup) and the thread stores nothing more.
    finished: Arc<AtomicBool>,
}

impl StreamWriter {
    pub fn start(
        repo: Repository,
        index: Arc<ChunkIndex>,
        level: i32,
        observer: ChunkObserver,
    ) -> StreamWriter {
        let (tx, rx) = mpsc::channel::<Vec<Bytes>>(2);
        let handle = tokio::runtime::Handle::current();
        let finished = Arc::new(AtomicBool::new(false));
        let ended = finished.clone();
        let running = InFlight::start();
        let worker = tokio::task::spawn_blocking(move || {
            let _running = running;
            store(repo, index, level, observer, rx, ended, handle)
        });
        StreamWriter {
            tx,
            worker,
            finished,
        }
    }

    /// Queues a batch of pieces (shared, not copied); waits when the chunking thread is
    /// behind (back-pressure).
    pub async fn send(&self, batch: Vec<Bytes>) -> Result<()> {
        if self.tx.send(batch).await.is_err() {
            // The worker stopped early; its error is reported by `finish`.
            return Err(Error::Repository("stream writer stopped".into()));
        }
        Ok(())
    }

    /// Closes the stream and returns what was stored.
    pub async fn finish(self) -> Result<Stored> {
        self.finished.store(true, Ordering::SeqCst);
        drop(self.tx);
        self.worker
            .await
            .map_err(|e| Error::Repository(format!("chunking worker failed: {e}")))?
    }

    /// Waits for the worker after a failed `send`, to surface its real error.
    pub async fn abort(self) -> Error {
        match self.finish().await {
            Err(e) => e,
            Ok(_) => Error::Repository("stream ended early".into()),
        }
    }
}

fn store(
    repo: Repository,
    index: Arc<ChunkIndex>,
    level: i32,
    observer: ChunkObserver,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    finished: Arc<AtomicBool>,
    handle: tokio::runtime::Handle,
) -> Result<Stored> {
    let abandoned =
        |rx: &mpsc::Receiver<Vec<Bytes>>| rx.is_closed() && !finished.load(Ordering::SeqCst);
    let mut chunker = RowChunker::default();
    let mut summary = Stream::default();
    let mut rows = RowHasher::default();
    let mut new_bytes = 0u64;
    let mut compressor = spare_compressor(level)?;
    let mut emit = |data: &[u8]| -> Result<()> {
        let ended = rows.push(data);
        let id = repo.chunk_id(data);
        let stored = match index.stored_size(&id) {
            Some(size) => size,
            None => {
                let stored = repo.encode_chunk(&id, &mut compressor, data)?;
                let size = handle.block_on(repo.put_chunk(&id, stored))?;
                index.record(&id, size);
                new_bytes += size;
                size
            }
        };
        summary.bytes += data.len() as u64;
        summary.chunks.push(ChunkRef {
            id,
            len: data.len() as u64,
            stored,
        });
        observer(ended, data.len() as u64);
        Ok(())
    };
    while let Some(batch) = rx.blocking_recv() {
        if abandoned(&rx) {
            return Err(Error::Repository("stream abandoned".into()));
        }
        // A single COPY row can be one huge piece: fed in batch-sized slices, the chunker
        // holds no more than its span.
        for slice in batch.iter().flat_map(|piece| piece.chunks(BATCH_BYTES)) {
            chunker.push(slice, &mut emit)?;
        }
    }
    if abandoned(&rx) {
        return Err(Error::Repository("stream abandoned".into()));
    }
    chunker.finish(&mut emit)?;
    keep_compressor(level, compressor);
    let checksum = rows.finish();
    summary.rows = checksum.rows;
    summary.checksum = checksum.encode();
    Ok(Stored {
        stream: summary,
        checksum,
        new_bytes,
    })
}

thread_local! {
    /// The compression context of this chunking thread's last stream, kept for the next one:
    /// a backup of thousands of small tables writes a stream per table, and creating a zstd
    /// context (its tables allocated and cleared) per stream was 2.5 % of such a backup's
    /// samples. Blocking threads are pooled, so a worker's streams mostly land on a thread
    /// that has one.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// A zstd context at `level`: this thread's spare when it has one at that level, else a new one.
fn spare_compressor(level: i32) -> Result<zstd::bulk::Compressor<'static>> {
    match COMPRESSOR.with(|slot| slot.borrow_mut().take()) {
        Some((at, compressor)) if at == level => Ok(compressor),
        _ => zstd::bulk::Compressor::new(level)
            .map_err(|e| Error::Repository(format!("zstd level {level}: {e}"))),
    }
}

/// Keeps `compressor` as this thread's spare for its next stream.
fn keep_compressor(level: i32, compressor: zstd::bulk::Compressor<'static>) {
    COMPRESSOR.with(|slot| *slot.borrow_mut() = Some((level, compressor)));
}

/// Writes a whole in-memory buffer as one stream (used for DDL sections).
pub async fn store_bytes(
    repo: &Repository,
    index: Arc<ChunkIndex>,
    level: i32,
    data: Vec<u8>,
) -> Result<Stored> {
    let writer = StreamWriter::start(repo.clone(), index, level, Box::new(|_, _| {}));
    for piece in data.chunks(BATCH_BYTES) {
        if writer
            .send(vec![Bytes::copy_from_slice(piece)])
            .await
            .is_err()
        {
            return Err(writer.abort().await);
        }
    }
    writer.finish().await
}
