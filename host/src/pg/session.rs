//! Sessions: a connection with the settings every Larder session runs under (COPY text that is
//! deterministic and complete), plus what its work adds: a backup worker's snapshot, a restore
//! session's faster commits. Backup and restore both open their connections here.

use super::ConnectionSettings;
use crate::error::{Error, Result};
use tokio_postgres::Client;

/// Session settings that make COPY text deterministic and complete (the same set pg_dump uses,
/// plus UTC so timestamps print the same whatever the server's time zone). The empty
/// `search_path` is pg_dump's too: values that name objects (`regclass`, `regproc`, …) then
/// print schema-qualified, so they read back the same under pg_dump's empty path in an export.
pub const SESSION_SETTINGS: &str = "SET DateStyle = ISO; SET IntervalStyle = postgres; \
    SET extra_float_digits = 3; SET TimeZone = 'UTC'; SET synchronize_seqscans = off; \
    SET row_security = off; SET statement_timeout = 0; SET lock_timeout = 0; \
    SET idle_in_transaction_session_timeout = 0; SET bytea_output = hex; \
    SET search_path = ''";

/// Connects and runs [`SESSION_SETTINGS`], then `more` (SQL, may be empty) in the same round
/// trip; `purpose` names the session in the error when they fail.
pub async fn open(settings: &ConnectionSettings, more: &str, purpose: &str) -> Result<Client> {
    let client = settings.connect().await?;
    let sql = if more.is_empty() {
        SESSION_SETTINGS.to_string()
    } else {
        format!("{SESSION_SETTINGS}; {more}")
    };
    client
        .batch_execute(&sql)
        .await
        .map_err(Error::db(purpose.to_string()))?;
    Ok(client)
}

/// A restore connection. `--jobs` sessions build that many indexes at once, so an index build
/// does not start parallel workers of its own: on a busy server they only add the work of
/// merging their sorts (about 7 % more server CPU for the whole sample restore, measured).
pub async fn restore(settings: &ConnectionSettings) -> Result<Client> {
    open(
        settings,
        "SET synchronous_commit = off; SET client_min_messages = warning; \
         SET maintenance_work_mem = '256MB'; SET max_parallel_maintenance_workers = 0",
        "preparing a restore session",
    )
    .await
}
