//! Larder: the engine behind `backup-cli`.
//!
//! The folders follow the data: [`pg`] talks to PostgreSQL (snapshot, catalog, COPY streams,
//! pg_dump for DDL), [`engine`] holds one operation per file (backup, validate, delete, …),
//! [`repository`] defines the on-target format (chunks, manifests, locks, garbage collection)
//! and [`targets`] stores objects somewhere (the local filesystem today).
//! The `backup-cli` binary is a thin clap layer over this library.

pub mod config;
pub mod engine;
pub mod error;
pub mod logging;
pub mod pg;
pub mod plugin;
pub mod repository;
pub mod targets;

pub use error::{Error, Result};

/// Version of this build, recorded in every manifest.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
