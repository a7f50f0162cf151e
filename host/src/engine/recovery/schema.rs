//! The schema step: pg_dump's sections read back from the repository as UTF-8 scripts, and
//! the pre-data that creates the schema (a whole-database replace first drops the backup's
//! schemas, publications, event triggers and large objects).

use super::job::Job;
use crate::error::{Error, Result};
use crate::pg::ddl::{Entry, Script};
use crate::repository::manifest::{Stream, quote_ident};
use tokio_postgres::Client;

/// Reads and parses one DDL section of the backup (`--no-owner` leaves out ownership).
pub(super) async fn section(job: &Job, stream: &Stream, name: &str) -> Result<Script> {
    let sql = job
        .repo
        .read_stream(
            stream,
            &format!("{name} section, backup {}", job.manifest.id),
        )
        .await?;
    let script = Script::parse(&ddl_text(sql, name, &job.manifest.id)?).map_err(|e| {
        Error::Unsupported(format!(
            "reading the {name} section of backup {}: {e}",
            job.manifest.id
        ))
    })?;
    Ok(if job.plan.no_owner {
        script.without_ownership()
    } else {
        script
    })
}

/// Creates the schema: pg_dump's pre-data, in batches ([`Script::batches`]; a new database
/// that fails half-way is dropped, a replace runs them inside its transaction).
pub(super) async fn create(client: &Client, pre: &Script) -> Result<()> {
    for batch in pre.batches() {
        client
            .batch_execute(&batch)
            .await
            .map_err(Error::db("creating the schema (pre-data)"))?;
    }
    Ok(())
}

/// Whole-database replace: drops what the backup's pre-data and post-data create again.
pub(super) async fn drop_for_replace(
    job: &Job,
    client: &Client,
    pre: &Script,
    post: &Script,
) -> Result<()> {
    let drops: String = pre
        .entries
        .iter()
        .chain(&post.entries)
        .filter_map(Entry::drop_database_object)
        .collect();
    client.batch_execute(&drops).await.map_err(Error::db(
        "dropping the backup's publications and event triggers",
    ))?;
    for schema in &job.manifest.schemas {
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(schema)
            ))
            .await
            .map_err(Error::db(format!("dropping schema {schema}")))?;
    }
    if job.manifest.schemas.iter().any(|s| s == "public") {
        client
            .batch_execute(
                "CREATE SCHEMA public AUTHORIZATION pg_database_owner; GRANT USAGE ON SCHEMA public TO PUBLIC; \
                 COMMENT ON SCHEMA public IS 'standard public schema'",
            )
            .await
            .map_err(Error::db("recreating schema public"))?;
    }
    // The backup's large objects are replaced (pre-data creates them again); others the
    // database holds now are kept, as `pg_restore --clean` keeps them.
    if let Some(lo) = &job.manifest.large_objects {
        client
            .query(
                "SELECT count(pg_catalog.lo_unlink(oid)) FROM pg_catalog.pg_largeobject_metadata \
                 WHERE oid = ANY ($1::oid[])",
                &[&lo.oids],
            )
            .await
            .map_err(Error::db("removing the large objects the backup replaces"))?;
    }
    Ok(())
}

/// A pg_dump section as UTF-8 text whose `SET client_encoding` says so: every restore session
/// runs DDL and COPY data in UTF-8, the encoding Larder holds both in. Backups taken before
/// pg_dump was asked for UTF-8 hold a LATIN1 database's DDL in LATIN1 (converted here, byte
/// for byte); other encodings are refused rather than guessed.
fn ddl_text(sql: Vec<u8>, section: &str, backup_id: &str) -> Result<String> {
    const SET: &str = "SET client_encoding = '";
    let declared = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(SET)?.split('\'').next().map(str::to_string))
    };
    let text = match String::from_utf8(sql) {
        Ok(text) => text,
        Err(e) => {
            let bytes = e.into_bytes();
            let latin1: String = bytes.iter().map(|&b| char::from(b)).collect();
            match declared(&latin1).as_deref() {
                Some("LATIN1") => latin1,
                other => {
                    return Err(Error::Unsupported(format!(
                        "the {section} section of backup {backup_id} is not UTF-8 (pg_dump wrote it in {}); \
                         this version converts only LATIN1. Take a new backup of the source database, or restore with \
                         the version of backup-cli that took this one",
                        other.unwrap_or("an undeclared encoding")
                    )));
                }
            }
        }
    };
    Ok(match declared(&text) {
        Some(encoding) if encoding != "UTF8" => {
            text.replacen(&format!("{SET}{encoding}';"), &format!("{SET}UTF8';"), 1)
        }
        _ => text,
    })
}
