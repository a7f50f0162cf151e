//! `backup export --format sql`: a plain SQL script that psql alone can restore.
//!
//! pre-data (as pg_dump wrote it), each table's rows as `COPY … FROM stdin` blocks (of an
//! incremental: the base's, then its chain's changes as COPY blocks and statements), the large
//! objects' data (loaded into a temporary table, then written with `lo_put`), sequence values,
//! then post-data. Chunks are streamed one at a time, so memory stays bounded; the
//! output is zstd-compressed when the file name ends in `.zst`.
//!
//! psql reads the script, so nothing from the backup reaches it raw: names in comments have
//! their line breaks replaced (as pg_dump 15.14+ does), and everything after pre-data runs
//! inside psql's `\restrict` mode (no meta-commands) whenever pg_dump's own sections use it.
//! Event triggers come last, as in a restore.

use crate::engine::recovery::chain::{self, Until};
use crate::engine::recovery::replay::{self, Order, Output, Replayed};
use crate::engine::recovery::replay_plan::ReplayPlan;
use crate::error::{Error, Result};
use crate::pg::catalog;
use crate::pg::ddl::Script;
use crate::repository::Repository;
use crate::repository::manifest::{Manifest, quote_ident};
use serde::Serialize;
use std::io::Write;

#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub backup_id: String,
    pub tables: usize,
    pub rows: u64,
    /// Bytes of SQL written (before compression).
    pub bytes: u64,
    pub compressed: bool,
    /// The chain's changes written after the base's rows (an incremental, or `--until`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Replayed>,
}

enum Sink {
    Plain(Box<dyn Write + Send>),
    Zstd(zstd::stream::write::Encoder<'static, Box<dyn Write + Send>>),
}

struct Counting {
    inner: Sink,
    bytes: u64,
}

impl Counting {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.bytes += data.len() as u64;
        let inner = &mut self.inner;
        tokio::task::block_in_place(|| match inner {
            Sink::Plain(w) => w.write_all(data),
            Sink::Zstd(w) => w.write_all(data),
        })
        .map_err(Error::io("writing the export"))
    }

    /// Completes the zstd frame and flushes; errors (a full disk) surface here.
    fn finish(self) -> Result<u64> {
        let bytes = self.bytes;
        tokio::task::block_in_place(|| match self.inner {
            Sink::Plain(mut w) => w.flush(),
            Sink::Zstd(w) => w.finish().and_then(|mut inner| inner.flush()),
        })
        .map_err(Error::io("finishing the export"))?;
        Ok(bytes)
    }
}

/// Text for a `--` comment line: a line break would end the comment and let psql read the
/// rest as a command (a table named `x\n\! rm …`), so breaks become spaces, as in pg_dump.
pub fn comment_text(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// A key for psql's `\restrict`: 64 hex digits from the system's random source, so nothing in
/// the backup can know it and end restricted mode early.
fn restrict_key() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::io(
            "reading /dev/urandom for the export's \\restrict key",
        ))?;
    Ok(hex::encode(bytes))
}

/// Writes the script of `requested` to `out` (of an incremental, or with `until`: the base's
/// data, then its chain's changes up to that point). `compress` wraps it in a zstd stream.
pub async fn export(
    repo: &Repository,
    requested: &Manifest,
    until: Option<Until>,
    out: Box<dyn Write + Send>,
    compress: bool,
) -> Result<ExportReport> {
    let chain = chain::resolve(repo, requested, until).await?;
    let replay = chain.map(|c| {
        let restored = c.restored(requested);
        let all: Vec<usize> = (0..restored.tables.len()).collect();
        ReplayPlan::new(&c, restored, &all)
    });
    let manifest = replay.as_ref().map_or(requested, |r| &r.restored);
    let sink = if compress {
        Sink::Zstd(zstd::stream::write::Encoder::new(out, 3).map_err(Error::io("starting zstd"))?)
    } else {
        Sink::Plain(out)
    };
    let mut w = Counting {
        inner: sink,
        bytes: 0,
    };
    w.put(
        format!(
            "--\n-- Larder export of backup {} ('{}'): database {}, PostgreSQL {}, taken {}\n\
             -- Restore into an empty database with: psql -v ON_ERROR_STOP=1 -d NEWDB -f THIS_FILE\n--\n\n",
            manifest.id,
            comment_text(&manifest.name),
            comment_text(&manifest.source.database),
            comment_text(&manifest.source.server_version),
            manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC")
        )
        .as_bytes(),
    )?;
    // pg_dump 15.14+ starts its sections with `\restrict`; a psql that reads them knows it.
    let mut restricted = false;
    for (i, chunk) in manifest.pre_data.chunks.iter().enumerate() {
        let data = repo
            .read_chunk(chunk, &format!("pre-data section, backup {}", manifest.id))
            .await?;
        if i == 0 {
            restricted = data.starts_with(b"\\restrict ")
                || memchr::memmem::find(&data, b"\n\\restrict ").is_some();
        }
        w.put(&data)?;
    }
    let key = if restricted {
        Some(restrict_key()?)
    } else {
        None
    };
    if let Some(key) = &key {
        w.put(format!("\\restrict {key}\n").as_bytes())?;
    }
    // Table data was captured as UTF-8, whatever the database encoding.
    w.put(b"\nSET client_encoding = 'UTF8';\n")?;
    if !manifest.source.qualified_data {
        // Older backups read their data with the default search path: regclass and similar
        // values name objects as that path found them.
        w.put(b"SET search_path = \"$user\", public;\n")?;
    }
    for table in &manifest.tables {
        let context = format!("table {}, backup {}", table.display_name(), manifest.id);
        let columns = if table.columns.is_empty() {
            String::new()
        } else {
            format!(" ({})", table.columns.join(", "))
        };
        w.put(
            format!(
                "\n--\n-- Data for {} ({} rows)\n--\n\nCOPY {}{columns} FROM stdin;\n",
                comment_text(&table.display_name()),
                table.rows,
                table.qualified()
            )
            .as_bytes(),
        )?;
        for part in &table.parts {
            for piece in part.pieces() {
                w.put(&repo.read_piece(piece, part.is_window(), &context).await?)?;
            }
        }
        w.put(b"\\.\n")?;
    }
    let replayed = match &replay {
        Some(plan) => {
            w.put(
                format!(
                    "\n--\n-- Changes of the chain {} up to {}\n--\n\n",
                    comment_text(&plan.describe()),
                    comment_text(&plan.point)
                )
                .as_bytes(),
            )?;
            let mut put = |data: &[u8]| w.put(data);
            let done = replay::replay(
                repo,
                plan,
                manifest,
                Output::Script(&mut put),
                Order::ByTable,
                &indicatif::ProgressBar::hidden(),
            )
            .await?;
            Some(done)
        }
        None => None,
    };
    if let Some(lo) = &manifest.large_objects {
        // pre-data created them (with owners, privileges and comments); this writes their data.
        let [create, copy, write] = catalog::LARGE_OBJECT_LOAD;
        w.put(
            format!(
                "\n--\n-- Data for large objects ({} objects)\n--\n\n{create};\n{copy};\n",
                lo.oids.len()
            )
            .as_bytes(),
        )?;
        let context = format!("large objects, backup {}", manifest.id);
        for chunk in &lo.data.chunks {
            w.put(&repo.read_chunk(chunk, &context).await?)?;
        }
        w.put(format!("\\.\n{write};\n").as_bytes())?;
    }
    w.put(b"\n--\n-- Sequence values\n--\n\n")?;
    for seq in &manifest.sequences {
        let name =
            format!("{}.{}", quote_ident(&seq.schema), quote_ident(&seq.name)).replace('\'', "''");
        w.put(
            format!(
                "SELECT pg_catalog.setval('{name}', {}, {});\n",
                seq.last_value, seq.is_called
            )
            .as_bytes(),
        )?;
    }
    w.put(b"\n")?;
    // Post-data in pg_dump's order, but with its event triggers last, as a restore creates
    // them, so nothing the script runs after them (refreshing materialized views) fires them.
    // Text that is not UTF-8 (older backups of other encodings) is written as it is.
    let context = format!("post-data section, backup {}", manifest.id);
    let post = repo.read_stream(&manifest.post_data, &context).await?;
    match std::str::from_utf8(&post) {
        Ok(text) => {
            // Parsed, pg_dump's own \restrict lines are gone: Larder's cover the rest.
            let mut script =
                Script::parse(text).map_err(|e| Error::PgDump(format!("{context}: {e}")))?;
            let triggers = script.take_event_triggers();
            w.put(script.to_sql().as_bytes())?;
            for entry in &triggers {
                w.put(format!("\n{}{}", script.preamble, entry.sql).as_bytes())?;
            }
            if let Some(key) = &key {
                w.put(format!("\n\\unrestrict {key}\n").as_bytes())?;
            }
        }
        Err(_) => {
            if let Some(key) = &key {
                w.put(format!("\\unrestrict {key}\n\n").as_bytes())?;
            }
            w.put(&post)?;
        }
    }
    let bytes = w.finish()?;
    Ok(ExportReport {
        backup_id: manifest.id.clone(),
        tables: manifest.tables.len(),
        rows: manifest.rows(),
        bytes,
        compressed: compress,
        replayed,
    })
}
