//! The database side: connections, the exported snapshot, the catalog, COPY streams, pg_dump
//! for DDL sections, the replication stream of incremental backups, and throwaway clusters for demos, drills and tests.

pub mod catalog;
pub mod connect;
pub mod conninfo;
pub mod ddl;
pub mod ephemeral;
pub mod globals;
pub mod pg_dump;
pub mod pool;
pub mod replication;
pub mod session;
pub mod snapshot;

pub use connect::{ConnectionSettings, SslMode};
