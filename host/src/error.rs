//! The library's error type: every variant names what failed, on what, and what to try next.
//!
//! The first words of several messages are fixed by the operators' runbook (Appendix A):
//! "Backup file not found", "Checksum verification failed", "Database connection failed",
//! "Insufficient disk space". Scripts grep for them; keep them stable.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached; `target` names host, port, database and user, and
    /// `hint` what to do about this kind of failure.
    #[error("Database connection failed: {target}: {reason}\n  hint: {hint}")]
    ConnectionFailed {
        target: String,
        reason: String,
        hint: String,
    },

    #[error("database error while {context}: {}", error_chain(source))]
    Database {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("Backup file not found: {object} ({detail})")]
    ObjectNotFound { object: String, detail: String },

    #[error("Checksum verification failed: {object} ({detail})")]
    ChecksumMismatch { object: String, detail: String },

    /// `backup validate` found problems; `first` is the first, in the runbook's words.
    #[error(
        "{first}\n  backup {backup_id} has {problems} problem(s); use a previous backup (`backup-cli backup list`) or a copy from another target"
    )]
    ValidationFailed {
        backup_id: String,
        first: String,
        problems: usize,
    },

    /// `backup validate` found the backup intact somewhere but a target's copy damaged or
    /// missing (the per-target report has already been printed).
    #[error("Backup Corruption: {0}")]
    CopiesDamaged(String),

    #[error("Insufficient disk space: {0}")]
    InsufficientSpace(String),

    #[error(
        "backup '{0}' not found in the repository; run `backup-cli backup list` to see the available backups"
    )]
    BackupNotFound(String),

    /// Storage failed for a reason other than a missing object.
    #[error("storage target '{target}' failed on {object}: {reason}")]
    Storage {
        target: String,
        object: String,
        reason: String,
    },

    #[error("{0}")]
    PgDump(String),

    /// A backup was written to its primary target but not copied to every other one (the
    /// report with the details has already been printed).
    #[error("{0}")]
    CopiesIncomplete(String),

    /// A `[[validators]]` plugin found an error in the rows of a backup that was just taken
    /// (or re-read by `backup validate`); the report has already been printed.
    #[error(
        "Backup Validation Failed: {first}\n  backup {backup_id} is kept but suspect ({findings} error finding(s)): `latest` and retention pass over it. Check the data (a mass DELETE? a bad load?) before trusting newer backups; `backup-cli backup list` shows it"
    )]
    BackupSuspect {
        backup_id: String,
        first: String,
        findings: usize,
    },

    /// A WebAssembly plugin could not be loaded or misbehaved; the message names it and the call.
    #[error("{0}")]
    Plugin(String),

    /// `plugin test` ran its conformance suite and some checks failed (the report is printed).
    #[error("{0}")]
    PluginTestFailed(String),

    /// A plugin file does not match the SHA-256 its entry pins.
    #[error(
        "plugin {path} does not match its pin: expected sha256 {expected}, the file has {actual}; refusing to load it (if the new file is trusted, update `sha256` after `backup-cli plugin hash {path}`)"
    )]
    PluginPin {
        path: String,
        expected: String,
        actual: String,
    },

    #[error("configuration error: {0}")]
    Config(String),

    /// The repository is missing, of an unknown format, or its data is inconsistent.
    #[error("repository error: {0}")]
    Repository(String),

    /// No repository where one was expected; `chosen` says how that place was chosen
    /// (filled in at the CLI edge, which knows the flags, environment and config file).
    #[error(
        "no repository at {location}{chosen}: run `backup-cli init` to create one, or point --repo, $BACKUP_CLI_REPO or the configuration at an existing one"
    )]
    NoRepository {
        target: String,
        location: String,
        chosen: String,
    },

    /// An encrypted repository this host cannot open (or, holding the writer key only, read):
    /// the message names the repository and what is needed.
    #[error("{0}")]
    KeyRequired(String),

    /// A manifest whose signature is broken, missing or by an untrusted signer.
    #[error("{0}")]
    SignatureRefused(String),

    #[error("repository is locked: {0}")]
    Locked(String),

    /// The operation was refused to protect data; the message says how to proceed.
    #[error("{0}")]
    Refused(String),

    /// Change tracking for incremental backups cannot go on as asked (the server's settings,
    /// privileges, an invalidated slot, DDL mid-chain); the message says what to do.
    #[error("{0}")]
    ChangeTracking(String),

    /// A table changed under a backup in a way its snapshot cannot read (dropped, or rewritten
    /// by TRUNCATE, VACUUM FULL, CLUSTER or ALTER TABLE after the snapshot); run it again.
    #[error("{0}")]
    ChangedDuringBackup(String),

    /// The database holds something this version cannot back up faithfully.
    #[error("{0}")]
    Unsupported(String),

    /// `monitor health` found failing checks (already printed).
    #[error("health check failed: {0}")]
    HealthFailed(String),

    /// `notify test` could not deliver through these channels (the report is printed).
    #[error("notification test failed: {0}")]
    NotifyFailed(String),

    /// A restore failed: `source` says why (in the runbook's words where it has them: its
    /// kind and exit code are the restore's), `state` what the destination was left in.
    #[error("{source}\n  {state}")]
    Recovery { source: Box<Error>, state: String },

    /// What a restore loaded does not match the backup (row counts, checksums, large
    /// objects, constraints left NOT VALID, broken foreign keys); the restore is undone.
    #[error("{0}")]
    Verification(String),

    /// A restore drill failed or missed its recovery-time objective (the report is printed).
    #[error("Drill Failed: {0}")]
    DrillFailed(String),

    /// A bug in backup-cli rather than a problem with the input (a worker that panicked).
    #[error("internal error (please report it): {0}")]
    Internal(String),

    /// SIGINT or SIGTERM stopped the operation; `state` says what was undone and what to do.
    #[error("interrupted by {signal}: {state}")]
    Interrupted { signal: Signal, state: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps a PostgreSQL error with what we were doing; the server's own message is kept.
    pub fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let context = context.into();
        move |source| Error::Database { context, source }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// A stable snake_case name for what kind of failure this is, for scripts (`--json`'s
    /// `kind`): never reworded, unlike the messages. Documented in the operator's guide.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ConnectionFailed { .. } => "connection_failed",
            Error::Database { .. } => "database",
            Error::ObjectNotFound { .. } => "backup_file_not_found",
            Error::ChecksumMismatch { .. } => "checksum_failed",
            Error::ValidationFailed { .. } => "validation_failed",
            Error::CopiesDamaged(_) => "copies_damaged",
            Error::InsufficientSpace(_) => "disk_space",
            Error::BackupNotFound(_) => "backup_not_found",
            Error::Storage { .. } => "storage",
            Error::PgDump(_) => "pg_dump",
            Error::CopiesIncomplete(_) => "copies_incomplete",
            Error::BackupSuspect { .. } => "backup_suspect",
            Error::Plugin(_) => "plugin",
            Error::PluginTestFailed(_) => "plugin_test_failed",
            Error::PluginPin { .. } => "plugin_pin",
            Error::Config(_) => "config",
            Error::Repository(_) => "repository",
            Error::NoRepository { .. } => "no_repository",
            Error::KeyRequired(_) => "key_required",
            Error::SignatureRefused(_) => "signature_refused",
            Error::Locked(_) => "lock_held",
            Error::Refused(_) => "refused",
            Error::ChangedDuringBackup(_) => "changed_during_backup",
            Error::Unsupported(_) => "unsupported",
            Error::ChangeTracking(_) => "change_tracking",
            Error::HealthFailed(_) => "health_failed",
            Error::NotifyFailed(_) => "notify_failed",
            Error::Recovery { source, .. } => source.kind(),
            Error::Verification(_) => "verification_failed",
            Error::DrillFailed(_) => "drill_failed",
            Error::Internal(_) => "internal",
            Error::Interrupted { .. } => "interrupted",
            Error::Io { .. } => "io",
        }
    }

    /// The process exit code `backup-cli` ends with: 2 for a usage problem or a refusal to
    /// protect data, 130/143 when SIGINT/SIGTERM stopped the operation, 1 for every failure
    /// (the runbook's messages included; [`Error::kind`] tells them apart).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted { signal, .. } => signal.exit_code(),
            Error::Recovery { source, .. } => source.exit_code(),
            Error::Refused(_) | Error::Config(_) | Error::PluginPin { .. } => 2,
            _ => 1,
        }
    }
}

/// The signal that stopped an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: Ctrl-C at the terminal.
    Interrupt,
    /// SIGTERM: `kill`, systemd, a container runtime stopping us.
    Terminate,
}

impl Signal {
    /// The shell's convention, 128 + the signal number: 130 for SIGINT, 143 for SIGTERM.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT (Ctrl-C)",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// An error's message followed by those of its causes, each once (libraries often repeat their
/// cause in their own message).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_failures_have_their_own_kinds_and_exit_with_1() {
        let cases = [
            (
                Error::ObjectNotFound {
                    object: "chunks/ab/cd".into(),
                    detail: "table public.t".into(),
                },
                "backup_file_not_found",
            ),
            (
                Error::ChecksumMismatch {
                    object: "chunks/ab/cd".into(),
                    detail: "table public.t".into(),
                },
                "checksum_failed",
            ),
            (
                Error::ConnectionFailed {
                    target: "host=h".into(),
                    reason: "refused".into(),
                    hint: "start it".into(),
                },
                "connection_failed",
            ),
            (Error::InsufficientSpace("full".into()), "disk_space"),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(error.exit_code(), 1, "{error}");
        }
    }

    #[test]
    fn refusals_and_configuration_exit_with_2_and_signals_with_128_plus_their_number() {
        assert_eq!(Error::Refused("no --force".into()).exit_code(), 2);
        assert_eq!(Error::Config("bad key".into()).exit_code(), 2);
        let stopped = Error::Interrupted {
            signal: Signal::Terminate,
            state: "rolled back".into(),
        };
        assert_eq!((stopped.kind(), stopped.exit_code()), ("interrupted", 143));
    }

    #[test]
    fn a_failed_restore_speaks_with_its_cause_first_and_keeps_its_class() {
        let failed = Error::Recovery {
            source: Box::new(Error::ChecksumMismatch {
                object: "chunks/ab/cd".into(),
                detail: "table public.t".into(),
            }),
            state: "the half-built database shop was dropped".into(),
        };
        assert!(
            failed
                .to_string()
                .starts_with("Checksum verification failed: chunks/ab/cd"),
            "{failed}"
        );
        assert_eq!((failed.kind(), failed.exit_code()), ("checksum_failed", 1));
        let refused = Error::Recovery {
            source: Box::new(Error::Refused("no".into())),
            state: "nothing was changed".into(),
        };
        assert_eq!(refused.exit_code(), 2);
    }
}
