//! Writing one byte stream (a table range's COPY text, a DDL section) into the repository.
//!
//! The async side hands over batches of bytes through a small bounded channel; a blocking
//! thread chunks them, counts rows, hashes, compresses and stores each chunk. Memory per stream
//! is bounded by the channel (two batches) plus one chunk in flight, whatever the table size.

use super::chunker::{RowChecksum, RowChunker, RowHasher};
use super::manifest::{
    ChunkRef, OBJECT_LIST_APART_BYTES, SequenceValue, Stream, TableEntry, object_list_json,
};
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

/// Called after each chunk with (rows, bytes): the rows read since the previous call and
/// the chunk's bytes.
pub type ChunkObserver = Box<dyn Fn(u64, u64) + Send>;

/// What writing a stream produced.
#[derive(Debug, Clone)]
pub struct Stored {
    pub stream: Stream,
    pub checksum: RowChecksum,
    /// Compressed bytes of chunks that were not in the repository before.
    pub new_bytes: u64,
}

/// What the async side hands to the chunking thread.
enum Item {
    Batch(Vec<Bytes>),
    /// The end of a window: the bytes since the previous mark are one stream of their own.
    Mark,
}

/// A window's span in the whole stream and the checksum of its rows.
struct Window {
    start: u64,
    end: u64,
    checksum: RowChecksum,
}

/// A stream being written: send batches, then `finish`. Streams too small for chunks of
/// their own are written one after another into one writer, each ended by `mark`, and come
/// back from `finish_windows` as windows on the chunks they share (each window's rows hashed
/// on their own, the whole stream's not at all).
pub struct StreamWriter {
    tx: mpsc::Sender<Item>,
    worker: JoinHandle<Result<(Stored, Vec<Window>)>>,
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
        let (tx, rx) = mpsc::channel::<Item>(2);
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
        self.hand(Item::Batch(batch)).await
    }

    /// Ends a window: what was sent since the previous mark is one stream.
    pub async fn mark(&self) -> Result<()> {
        self.hand(Item::Mark).await
    }

    async fn hand(&self, item: Item) -> Result<()> {
        if self.tx.send(item).await.is_err() {
            // The worker stopped early; its error is reported by `finish`.
            return Err(Error::Repository("stream writer stopped".into()));
        }
        Ok(())
    }

    /// Closes the stream and returns what was stored.
    pub async fn finish(self) -> Result<Stored> {
        Ok(self.close().await?.0)
    }

    /// Closes the stream and returns each marked window as a stream of its own (the new
    /// chunks' bytes are counted in the first window).
    pub async fn finish_windows(self) -> Result<Vec<Stored>> {
        let (whole, windows) = self.close().await?;
        let mut new_bytes = whole.new_bytes;
        Ok(windows
            .into_iter()
            .map(|w| Stored {
                stream: window(&whole.stream.chunks, &w),
                checksum: w.checksum,
                new_bytes: std::mem::take(&mut new_bytes),
            })
            .collect())
    }

    async fn close(self) -> Result<(Stored, Vec<Window>)> {
        self.finished.store(true, Ordering::SeqCst);
        drop(self.tx);
        self.worker
            .await
            .map_err(|e| Error::Repository(format!("chunking worker failed: {e}")))?
    }

    /// The error to report for a stream that stopped with `e`: the worker's own when it
    /// stopped first (`e` is then only the closed channel's), else `e`, the writer dropped
    /// (its thread stores nothing more).
    pub async fn failed(self, e: Error) -> Error {
        if self.tx.is_closed() {
            self.abort().await
        } else {
            e
        }
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
    mut rx: mpsc::Receiver<Item>,
    finished: Arc<AtomicBool>,
    handle: tokio::runtime::Handle,
) -> Result<(Stored, Vec<Window>)> {
    let abandoned = |rx: &mpsc::Receiver<Item>| rx.is_closed() && !finished.load(Ordering::SeqCst);
    let mut chunker = RowChunker::default();
    let mut summary = Stream::default();
    // The rows' checksum: of the whole stream, or of the window being written (then the
    // whole stream's is not needed and its bytes are hashed once, not twice).
    let mut rows = RowHasher::default();
    let read = std::cell::Cell::new(0u64);
    let mut new_bytes = 0u64;
    let mut compressor = spare_compressor(level)?;
    let mut emit = |data: &[u8]| -> Result<()> {
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
        observer(read.take(), data.len() as u64);
        Ok(())
    };
    let (mut windows, mut start, mut pos) = (Vec::new(), 0, 0);
    while let Some(item) = rx.blocking_recv() {
        if abandoned(&rx) {
            return Err(Error::Repository("stream abandoned".into()));
        }
        let batch = match item {
            Item::Batch(batch) => batch,
            Item::Mark => {
                windows.push(Window {
                    start,
                    end: pos,
                    checksum: std::mem::take(&mut rows).finish(),
                });
                start = pos;
                continue;
            }
        };
        // A single COPY row can be one huge piece: fed in batch-sized slices, the chunker
        // holds no more than its span.
        for slice in batch.iter().flat_map(|piece| piece.chunks(BATCH_BYTES)) {
            read.set(read.get() + rows.push(slice));
            pos += slice.len() as u64;
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
    Ok((
        Stored {
            stream: summary,
            checksum,
            new_bytes,
        },
        windows,
    ))
}

/// The stream of one window: the chunks that hold any of its bytes, and where in the first
/// one it starts. An empty window holds no chunks.
fn window(chunks: &[ChunkRef], w: &Window) -> Stream {
    let mut at = 0u64;
    let mut skip = 0;
    let mut held = Vec::new();
    for chunk in chunks {
        let end = at + chunk.len;
        if w.start < w.end && at < w.end && end > w.start {
            if held.is_empty() {
                skip = w.start - at;
            }
            held.push(chunk.clone());
        }
        at = end;
    }
    Stream {
        rows: w.checksum.rows,
        bytes: w.end - w.start,
        checksum: w.checksum.encode(),
        chunks: held,
        skip: Some(skip),
    }
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

/// Stores a backup's tables and sequences as a stream of their own when their JSON is larger
/// than [`OBJECT_LIST_APART_BYTES`] (see [`super::manifest::Manifest::object_list`]); None
/// when they stay in the manifest.
pub async fn store_object_list(
    repo: &Repository,
    index: Arc<ChunkIndex>,
    level: i32,
    (tables, sequences): (&[TableEntry], &[SequenceValue]),
) -> Result<Option<Stored>> {
    let json = object_list_json(tables, sequences)
        .map_err(|e| Error::Internal(format!("encoding the object list: {e}")))?;
    if json.len() <= OBJECT_LIST_APART_BYTES {
        return Ok(None);
    }
    store_bytes(repo, index, level, json).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::fs::FsTarget;

    /// Rows `from..to` as COPY text, each `width` bytes wide or so.
    fn rows(from: u32, to: u32, width: usize) -> Vec<u8> {
        (from..to)
            .flat_map(|i| format!("{i}\t{}\n", "x".repeat(width)).into_bytes())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn windows_read_back_as_the_streams_written_and_share_their_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(FsTarget::open("local", dir.path()).unwrap());
        let repo = Repository::open_or_init(target).await.unwrap();
        let index = Arc::new(repo.chunk_index().await.unwrap());
        // Small tables, an empty one, and one that spans several chunks.
        let tables = [
            rows(0, 3, 10),
            Vec::new(),
            rows(3, 40_000, 100),
            rows(40_000, 40_001, 5),
        ];
        let writer = StreamWriter::start(repo.clone(), index, 3, Box::new(|_, _| {}));
        for table in &tables {
            for piece in table.chunks(1000) {
                writer
                    .send(vec![Bytes::copy_from_slice(piece)])
                    .await
                    .unwrap();
            }
            writer.mark().await.unwrap();
        }
        let stored = writer.finish_windows().await.unwrap();
        assert_eq!(stored.len(), tables.len());
        for (table, stored) in tables.iter().zip(&stored) {
            let stream = &stored.stream;
            assert_eq!(stream.bytes, table.len() as u64);
            assert_eq!(stored.checksum, RowChecksum::of_lines(table));
            assert_eq!(stream.rows, stored.checksum.rows);
            let back = repo.read_stream(stream, "test").await.unwrap();
            assert!(back == *table, "a window read back other bytes");
        }
        assert!(stored[1].stream.chunks.is_empty(), "{:?}", stored[1].stream);
        assert!(stored[2].stream.chunks.len() > 1, "{:?}", stored[2].stream);
        // The first small table shares the big one's first chunk; the last its last chunk.
        assert_eq!(stored[0].stream.chunks[0], stored[2].stream.chunks[0]);
        assert_eq!(
            stored[3].stream.chunks.last(),
            stored[2].stream.chunks.last()
        );
        assert!(stored[3].stream.skip.is_some_and(|s| s > 0));
        assert!(stored[0].new_bytes > 0);
        assert!(stored[1..].iter().all(|s| s.new_bytes == 0));
    }
}
