//! Engine operations, one per file, named after the runbook's verbs.

pub mod alerts;
pub mod backup;
pub mod backup_run;
pub mod daemon;
pub mod delete;
pub mod drill;
pub mod export;
pub mod globals;
pub mod incremental;
pub mod interrupt;
pub mod list;
pub mod listener;
pub mod metrics;
pub mod monitor;
pub mod pin;
pub mod progress;
pub mod prune;
pub mod recovery;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod status_page;
pub mod sync;
pub mod validate;
pub mod validators;

pub use progress::Progress;

/// Default parallelism: the CPU count, at most 8.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(8)
}
