//! Row-aligned content-defined chunking and the per-chunk facts the manifest records.
//!
//! FastCDC finds a content-defined cut near the target size; the cut is then moved forward to
//! the next line end, so chunks hold whole COPY rows, except where a row is longer than
//! [`ROW_SPAN`]: such a row is cut where FastCDC cut it, so memory stays bounded whatever the
//! values (a 50 MiB bytea is a 100 MiB line). Because the cut still depends only on the bytes
//! around it, an unchanged table produces the same chunks (deduplication). Rows are counted
//! and checksummed across chunk boundaries ([`RowHasher`]).

use memchr::memchr;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

pub const MIN_CHUNK: usize = 256 * 1024;
pub const AVG_CHUNK: usize = 1024 * 1024;
pub const MAX_CHUNK: usize = 4 * 1024 * 1024;
/// The most a chunk grows past its content-defined cut to end on a row boundary, as a
/// multiple of the largest chunk: longer rows are split between chunks.
pub const ROW_SPAN: usize = 2;

/// An order-independent checksum of a multiset of lines: the count and the wrapping sum of each
/// line's XXH3-64. Restored tables come back in any physical order; this still matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowChecksum {
    pub rows: u64,
    pub sum: u64,
}

impl RowChecksum {
    /// Adds every `\n`-terminated line of `data` (a trailing fragment counts as a line).
    pub fn add_lines(&mut self, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            let end = memchr(b'\n', rest).unwrap_or(rest.len());
            self.sum = self.sum.wrapping_add(xxh3_64(&rest[..end]));
            self.rows += 1;
            rest = rest.get(end + 1..).unwrap_or_default();
        }
    }

    pub fn of_lines(data: &[u8]) -> RowChecksum {
        let mut c = RowChecksum::default();
        c.add_lines(data);
        c
    }

    pub fn combine(&mut self, other: RowChecksum) {
        self.rows += other.rows;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// The form stored in manifests, e.g. `xxh3sum:00ab…`.
    pub fn encode(&self) -> String {
        format!("xxh3sum:{:016x}", self.sum)
    }
}

/// A [`RowChecksum`] of a stream fed in pieces of any size: a row split between pieces (or
/// between chunks) counts and hashes as one row, exactly as [`RowChecksum::add_lines`] would
/// over the whole stream.
#[derive(Default)]
pub struct RowHasher {
    sum: RowChecksum,
    /// The row begun by the previous pieces, if it has not ended yet.
    partial: Option<Box<Xxh3>>,
}

impl RowHasher {
    /// Adds `data`; returns how many rows ended in it.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        let before = self.sum.rows;
        let mut rest = data;
        while let Some(end) = memchr(b'\n', rest) {
            let line = &rest[..end];
            let hash = match self.partial.take() {
                Some(mut row) => {
                    row.update(line);
                    row.digest()
                }
                None => xxh3_64(line),
            };
            self.sum.sum = self.sum.sum.wrapping_add(hash);
            self.sum.rows += 1;
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            self.partial
                .get_or_insert_with(|| Box::new(Xxh3::new()))
                .update(rest);
        }
        self.sum.rows - before
    }

    /// The checksum of everything pushed (an unterminated last row counts as a row).
    pub fn finish(mut self) -> RowChecksum {
        if let Some(row) = self.partial.take() {
            self.sum.sum = self.sum.sum.wrapping_add(row.digest());
            self.sum.rows += 1;
        }
        self.sum
    }
}

/// Splits a byte stream into row-aligned, content-defined chunks.
///
/// Bytes wait in `buf` from `start` on. A cut is taken as soon as FastCDC finds one in what is
/// held (it is the same cut it would find with more bytes: the scan stops at the first match
/// and the mask at each position depends only on its distance from the chunk's start); only
/// when none is found yet does the chunker wait, up to `max` bytes. The consumed front of the
/// buffer is dropped when the next batch would not fit, so each byte moves about once.
pub struct RowChunker {
    buf: Vec<u8>,
    start: usize,
    /// Bytes to hold before the next scan: twice the average, or `max` after a scan found
    /// no cut (the one after that is certain), so no stretch is scanned more than twice.
    wait_for: usize,
    min: usize,
    avg: usize,
    max: usize,
}

impl Default for RowChunker {
    fn default() -> Self {
        RowChunker::with_sizes(MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
    }
}

impl RowChunker {
    pub fn with_sizes(min: usize, avg: usize, max: usize) -> RowChunker {
        let mut chunker = RowChunker {
            buf: Vec::with_capacity(ROW_SPAN * max + 2 * avg),
            start: 0,
            wait_for: 0,
            min,
            avg,
            max,
        };
        chunker.wait_for_next_chunk();
        chunker
    }

    /// Below twice the average size a cut is often not there yet: scanning then would mostly
    /// mean scanning the same bytes again.
    fn wait_for_next_chunk(&mut self) {
        self.wait_for = (2 * self.avg).min(self.max);
    }

    /// Feeds bytes; `emit` receives each chunk that is now complete.
    pub fn push<E>(
        &mut self,
        data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.start > 0 && self.buf.len() + data.len() > self.buf.capacity() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        self.drain(false, emit)
    }

    /// Emits whatever remains at the end of the stream.
    pub fn finish<E>(&mut self, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        self.drain(true, emit)
    }

    fn drain<E>(
        &mut self,
        eof: bool,
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while self.start < self.buf.len() {
            let avail = &self.buf[self.start..];
            if !eof && avail.len() < self.wait_for {
                break;
            }
            let cut = if avail.len() <= self.min {
                avail.len()
            } else {
                fastcdc::v2020::FastCDC::new(
                    avail,
                    self.min as u32,
                    self.avg as u32,
                    self.max as u32,
                )
                .cut(0, avail.len())
                .1
            };
            // No content-defined cut in what is held: a later byte may still make one.
            if !eof && cut == avail.len() && avail.len() < self.max {
                self.wait_for = self.max;
                break;
            }
            // The row's end, if it comes within the span; only the bytes of the span decide,
            // so the cut does not depend on how much happens to be held.
            let span = ROW_SPAN * self.max;
            let end = if cut >= avail.len() || avail[cut - 1] == b'\n' {
                cut
            } else {
                match memchr(b'\n', &avail[cut..avail.len().min(span)]) {
                    Some(p) => cut + p + 1,
                    None if avail.len() >= span => cut, // a row longer than the span: split it
                    None if eof => avail.len(),
                    None => {
                        self.wait_for = span; // wait until the span is held
                        break;
                    }
                }
            };
            emit(&avail[..end])?;
            self.start += end;
            self.wait_for_next_chunk();
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut out = Vec::new();
        for i in 0..n {
            let len = rng.usize(10..300);
            let text: String = (0..len).map(|_| rng.alphanumeric()).collect();
            out.extend_from_slice(format!("{i}\t{text}\n").as_bytes());
        }
        out
    }

    fn chunk_all(data: &[u8], feed: usize) -> Vec<Vec<u8>> {
        let mut chunker = RowChunker::with_sizes(4096, 16384, 65536);
        let mut out = Vec::new();
        let mut emit = |c: &[u8]| -> Result<(), ()> {
            out.push(c.to_vec());
            Ok(())
        };
        for piece in data.chunks(feed) {
            chunker.push(piece, &mut emit).expect("push");
        }
        chunker.finish(&mut emit).expect("finish");
        out
    }

    #[test]
    fn chunks_hold_whole_rows_and_reassemble_exactly() {
        let data = rows(20_000, 7);
        let chunks = chunk_all(&data, 1000);
        assert!(
            chunks.len() > 10,
            "expected many chunks, got {}",
            chunks.len()
        );
        assert!(chunks.iter().all(|c| c.ends_with(b"\n")));
        assert_eq!(chunks.concat(), data);
    }

    #[test]
    fn cuts_do_not_depend_on_how_the_stream_was_fed() {
        let data = rows(20_000, 9);
        let whole = chunk_all(&data, data.len());
        assert_eq!(chunk_all(&data, 1000), whole);
        assert_eq!(chunk_all(&data, 77_777), whole);
    }

    #[test]
    fn an_insert_in_the_middle_changes_few_chunks() {
        let data = rows(40_000, 11);
        let mut edited = data.clone();
        let mid = data.len() / 2;
        let line_start = mid + memchr(b'\n', &data[mid..]).expect("newline") + 1;
        edited.splice(
            line_start..line_start,
            b"999999\tinserted row\n".iter().copied(),
        );
        let a = chunk_all(&data, 4096);
        let b = chunk_all(&edited, 4096);
        let shared = b.iter().filter(|c| a.contains(c)).count();
        assert!(
            shared + 3 >= b.len(),
            "only {shared} of {} chunks shared",
            b.len()
        );
    }

    #[test]
    fn rows_longer_than_the_span_are_split_and_still_count_as_one_row() {
        let mut data = rows(2_000, 5);
        let long: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 23) as u8).collect();
        data.extend_from_slice(b"7\t");
        data.extend_from_slice(&long);
        data.extend_from_slice(b"\n");
        data.extend_from_slice(&rows(2_000, 6));
        let chunks = chunk_all(&data, 1000);
        assert!(
            chunks.iter().all(|c| c.len() <= ROW_SPAN * 65536),
            "chunks stay bounded"
        );
        assert!(
            chunks.iter().any(|c| !c.ends_with(b"\n")),
            "the long row is split"
        );
        assert_eq!(chunks.concat(), data);
        assert_eq!(
            chunk_all(&data, 77_777),
            chunks,
            "cuts do not depend on feeding"
        );
        let mut hasher = RowHasher::default();
        let rows: u64 = chunks.iter().map(|c| hasher.push(c)).sum();
        assert_eq!(rows, 4_001);
        assert_eq!(hasher.finish(), RowChecksum::of_lines(&data));
        let mut unterminated = RowHasher::default();
        unterminated.push(b"1\ta\n2\t");
        unterminated.push(b"b");
        assert_eq!(unterminated.finish(), RowChecksum::of_lines(b"1\ta\n2\tb"));
    }

    #[test]
    fn checksum_ignores_row_order() {
        let a = RowChecksum::of_lines(b"1\ta\n2\tb\n3\tc\n");
        let b = RowChecksum::of_lines(b"3\tc\n1\ta\n2\tb\n");
        assert_eq!(a, b);
        assert_eq!(a.rows, 3);
        assert_ne!(a, RowChecksum::of_lines(b"1\ta\n2\tb\n3\td\n"));
    }
}
