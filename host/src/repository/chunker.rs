//! Row-aligned content-defined chunking and the per-chunk facts the manifest records.
//!
//! FastCDC finds a content-defined cut near the target size; the cut is then moved forward to
//! the next line end, so every chunk holds whole COPY rows. Because the cut still depends only
//! on the bytes around it, an unchanged table produces the same chunks (deduplication), and
//! because chunks hold whole rows, validation and restore can process chunks independently.

use memchr::memchr;
use xxhash_rust::xxh3::xxh3_64;

pub const MIN_CHUNK: usize = 256 * 1024;
pub const AVG_CHUNK: usize = 1024 * 1024;
pub const MAX_CHUNK: usize = 4 * 1024 * 1024;

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
            buf: Vec::with_capacity(max + 2 * avg),
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
            let end = if cut >= avail.len() || avail[cut - 1] == b'\n' {
                cut
            } else {
                match memchr(b'\n', &avail[cut..]) {
                    Some(p) => cut + p + 1,
                    None if eof => avail.len(),
                    None => break, // a row longer than what we hold: wait for its end
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
    fn checksum_ignores_row_order() {
        let a = RowChecksum::of_lines(b"1\ta\n2\tb\n3\tc\n");
        let b = RowChecksum::of_lines(b"3\tc\n1\ta\n2\tb\n");
        assert_eq!(a, b);
        assert_eq!(a.rows, 3);
        assert_ne!(a, RowChecksum::of_lines(b"1\ta\n2\tb\n3\td\n"));
    }
}
