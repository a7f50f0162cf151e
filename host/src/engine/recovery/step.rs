//! The steps of a recovery: one list per strategy that `recovery plan` prints and
//! `recovery execute` runs, logs ("step 4/8: post-data") and times, so the two cannot drift
//! apart. [`steps`] gives each strategy's order (the strategy's file runs it); each step's SQL
//! lives in the file named after the step.

use super::request::Strategy;
use crate::error::Result;
use serde::Serialize;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

/// One step of a recovery, named as an operator would name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Check every chunk the restore reads (SHA-256, decompression) before touching the
    /// destination.
    VerifyChunks,
    /// Create the new database under a temporary name (and the roles `--create-roles` adds).
    CreateDatabase,
    /// The schema from pg_dump's pre-data (a whole-database replace drops it first).
    Schema,
    /// Empty the chosen tables (`replace -t`), their user triggers switched off.
    EmptyTables,
    /// The tables' rows with `COPY … FROM STDIN` (and the large objects' data).
    Load,
    /// The chain's changes after the base full, up to the backup or point in time asked for.
    Replay,
    /// Indexes, constraints, foreign keys, triggers and the rest of pg_dump's post-data.
    PostData,
    /// Check the restored rows against the foreign keys, then switch user triggers back on.
    CheckForeignKeys,
    /// Sequence values as the backup recorded them.
    Sequences,
    /// ANALYZE each new table (VACUUM (ANALYZE) where a key's validation can then read an
    /// index alone), then validate the foreign keys on it.
    VacuumAnalyze,
    /// pg_dump's event triggers, last, so nothing the restore runs fires them.
    EventTriggers,
    /// Row counts (and checksums), large objects, no constraint left NOT VALID.
    Verify,
    /// Give the verified database its name, then the source's comment and settings.
    Rename,
    /// Commit the recovery transaction.
    Commit,
    /// ANALYZE the restored tables.
    Analyze,
}

impl Step {
    /// The step's stable name (JSON, logs).
    pub fn name(self) -> &'static str {
        match self {
            Step::VerifyChunks => "verify-chunks",
            Step::CreateDatabase => "create-database",
            Step::Schema => "schema",
            Step::EmptyTables => "empty-tables",
            Step::Load => "load",
            Step::Replay => "replay",
            Step::PostData => "post-data",
            Step::CheckForeignKeys => "check-foreign-keys",
            Step::Sequences => "sequences",
            Step::VacuumAnalyze => "vacuum-analyze",
            Step::EventTriggers => "event-triggers",
            Step::Verify => "verify",
            Step::Rename => "rename",
            Step::Commit => "commit",
            Step::Analyze => "analyze",
        }
    }

    /// What the restore is doing during the step, as in "stopped while loading the data".
    pub fn doing(self) -> &'static str {
        match self {
            Step::VerifyChunks => "verifying the chunks",
            Step::CreateDatabase => "creating the database",
            Step::Schema => "creating the schema (pre-data)",
            Step::EmptyTables => "emptying the tables",
            Step::Load => "loading the data",
            Step::Replay => "replaying the changes",
            Step::PostData => "building indexes, constraints and triggers (post-data)",
            Step::CheckForeignKeys => "checking foreign keys",
            Step::Sequences => "setting sequence values",
            Step::VacuumAnalyze => "vacuuming and validating foreign keys",
            Step::EventTriggers => "creating event triggers",
            Step::Verify => "verifying the restored tables",
            Step::Rename => "renaming the database into place",
            Step::Commit => "committing",
            Step::Analyze => "analyzing the restored tables",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The steps a strategy runs, in order; `subset` is a `-t` restore, `replay` one of an
/// incremental chain (the replay step follows the load: before post-data builds keys and
/// indexes where the strategy builds them). Each strategy's file holds its list and runs it.
pub fn steps(strategy: Strategy, subset: bool, replay: bool) -> Vec<Step> {
    let list = match (strategy, subset) {
        (Strategy::NewDatabase, _) => NEW_DATABASE,
        (Strategy::Replace, false) => REPLACE,
        (Strategy::Replace, true) => REPLACE_TABLES,
        (Strategy::MissingRows, _) => MISSING_ROWS,
    };
    let mut list = list.to_vec();
    if replay && let Some(load) = list.iter().position(|&s| s == Step::Load) {
        list.insert(load + 1, Step::Replay);
    }
    list
}

/// new-database: built under a temporary name, renamed once verified (`new_database.rs`).
const NEW_DATABASE: &[Step] = &[
    Step::CreateDatabase,
    Step::Schema,
    Step::Load,
    Step::PostData,
    Step::Sequences,
    Step::VacuumAnalyze,
    Step::EventTriggers,
    Step::Verify,
    Step::Rename,
];

/// A whole-database replace, in one transaction (`replace.rs`).
const REPLACE: &[Step] = &[
    Step::VerifyChunks,
    Step::Schema,
    Step::Load,
    Step::PostData,
    Step::Sequences,
    Step::EventTriggers,
    Step::Verify,
    Step::Commit,
    Step::Analyze,
];

/// A table replace (`-t`), in one transaction (`replace.rs`).
const REPLACE_TABLES: &[Step] = &[
    Step::VerifyChunks,
    Step::EmptyTables,
    Step::Load,
    Step::CheckForeignKeys,
    Step::Sequences,
    Step::Verify,
    Step::Commit,
    Step::Analyze,
];

/// missing-rows, in one transaction (`missing_rows.rs`).
const MISSING_ROWS: &[Step] = &[
    Step::VerifyChunks,
    Step::Load,
    Step::CheckForeignKeys,
    Step::Verify,
    Step::Commit,
    Step::Analyze,
];

/// How long one step took, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: Step,
    pub seconds: f64,
}

/// Runs one strategy's steps: numbers and logs each as it starts, times it, and remembers the
/// one under way (for the message when a signal stops the restore).
#[derive(Debug)]
pub struct Progression {
    list: Vec<Step>,
    current: Mutex<Option<Step>>,
    done: Mutex<Vec<StepReport>>,
}

impl Progression {
    pub fn new(list: Vec<Step>) -> Progression {
        Progression {
            list,
            current: Mutex::new(None),
            done: Mutex::new(Vec::new()),
        }
    }

    /// Runs `work` as `step`, logged as "step 4/8: post-data" and timed.
    pub async fn run<T>(&self, step: Step, work: impl Future<Output = Result<T>>) -> Result<T> {
        let number = self
            .list
            .iter()
            .position(|&s| s == step)
            .map_or(0, |i| i + 1);
        if let Ok(mut current) = self.current.lock() {
            // The strategy's code and its list must agree, or the plan would print one order
            // and execute run another.
            let previous = current.and_then(|c| self.list.iter().position(|&s| s == c));
            debug_assert_eq!(
                number,
                previous.map_or(1, |i| i + 2),
                "{step} run out of the order {:?}",
                self.list
            );
            *current = Some(step);
        }
        tracing::info!("step {number}/{}: {step}", self.list.len());
        let started = Instant::now();
        let out = work.await;
        let seconds = started.elapsed().as_secs_f64();
        if out.is_ok()
            && let Ok(mut done) = self.done.lock()
        {
            done.push(StepReport {
                name: step,
                seconds,
            });
        }
        out
    }

    /// The step under way (or the last one started).
    pub fn current(&self) -> Option<Step> {
        self.current.lock().ok().and_then(|c| *c)
    }

    /// The steps finished so far, in the order they ran.
    pub fn reports(&self) -> Vec<StepReport> {
        self.done.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [(Strategy, bool); 4] = [
        (Strategy::NewDatabase, false),
        (Strategy::Replace, false),
        (Strategy::Replace, true),
        (Strategy::MissingRows, false),
    ];

    #[test]
    fn a_chain_is_replayed_right_after_the_load_and_before_keys_and_checks() {
        for (strategy, subset) in ALL {
            let plain = steps(strategy, subset, false);
            assert!(!plain.contains(&Step::Replay), "{plain:?}");
            let list = steps(strategy, subset, true);
            assert_eq!(list.len(), plain.len() + 1);
            assert_eq!(
                at(&list, Step::Replay),
                at(&list, Step::Load) + 1,
                "{list:?}"
            );
            for after in [
                Step::PostData,
                Step::CheckForeignKeys,
                Step::Sequences,
                Step::Verify,
            ] {
                if list.contains(&after) {
                    assert!(at(&list, Step::Replay) < at(&list, after), "{list:?}");
                }
            }
        }
    }

    fn at(list: &[Step], step: Step) -> usize {
        list.iter()
            .position(|&s| s == step)
            .unwrap_or_else(|| panic!("{step} missing from {list:?}"))
    }

    #[test]
    fn every_strategy_loads_then_verifies_each_step_once() {
        for (strategy, subset) in ALL {
            let list = &steps(strategy, subset, false);
            let mut seen = std::collections::HashSet::new();
            assert!(list.iter().all(|s| seen.insert(*s)), "{list:?}");
            assert!(at(list, Step::Load) < at(list, Step::Verify), "{list:?}");
        }
    }

    #[test]
    fn an_existing_database_is_touched_only_after_every_chunk_is_verified() {
        for (strategy, subset) in ALL {
            let list = &steps(strategy, subset, false);
            if strategy == Strategy::NewDatabase {
                // The load checks each chunk before its rows are sent; a failure drops the
                // new database, so there is no separate pass.
                assert!(!list.contains(&Step::VerifyChunks), "{list:?}");
            } else {
                assert_eq!(list[0], Step::VerifyChunks, "{list:?}");
                let n = list.len();
                assert_eq!(&list[n - 3..], [Step::Verify, Step::Commit, Step::Analyze]);
            }
        }
    }

    #[test]
    fn the_schema_comes_before_the_data_and_post_data_after_it() {
        for (strategy, subset) in [(Strategy::NewDatabase, false), (Strategy::Replace, false)] {
            let list = &steps(strategy, subset, false);
            assert!(at(list, Step::Schema) < at(list, Step::Load));
            assert!(at(list, Step::Load) < at(list, Step::PostData));
            assert!(at(list, Step::PostData) < at(list, Step::Sequences));
            // Event triggers are the last DDL, after every ALTER the restore itself runs.
            assert!(at(list, Step::Sequences) < at(list, Step::EventTriggers));
        }
        let new = &steps(Strategy::NewDatabase, false, false);
        assert_eq!(new[0], Step::CreateDatabase);
        assert!(at(new, Step::VacuumAnalyze) < at(new, Step::EventTriggers));
        assert_eq!(
            new.last(),
            Some(&Step::Rename),
            "renamed only once verified"
        );
    }

    #[test]
    fn existing_tables_are_checked_against_foreign_keys_after_their_load() {
        for (strategy, subset) in [(Strategy::Replace, true), (Strategy::MissingRows, false)] {
            let list = &steps(strategy, subset, false);
            assert!(at(list, Step::Load) < at(list, Step::CheckForeignKeys));
            assert!(!list.contains(&Step::Schema) && !list.contains(&Step::PostData));
        }
        let subset = &steps(Strategy::Replace, true, false);
        assert!(at(subset, Step::EmptyTables) < at(subset, Step::Load));
    }

    #[tokio::test]
    async fn a_progression_times_the_steps_it_ran_and_knows_the_current_one() {
        let run = Progression::new(steps(Strategy::MissingRows, false, false));
        run.run(Step::VerifyChunks, async { Ok(()) }).await.unwrap();
        let failed: Result<()> = run
            .run(Step::Load, async {
                Err(crate::error::Error::Refused("stop".into()))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(run.current(), Some(Step::Load));
        let reports = run.reports();
        assert_eq!(reports.len(), 1, "a failed step is not reported as done");
        assert_eq!(reports[0].name, Step::VerifyChunks);
        assert_eq!(
            serde_json::to_value(&reports[0]).unwrap()["name"],
            "verify-chunks"
        );
    }
}
