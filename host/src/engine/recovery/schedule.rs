//! The dependency-aware queue of a new database's load step: every stored range of the
//! selected tables and post-data's index and key builds in one queue over `--jobs` sessions.
//! A table's builds are ready the moment its last range is in and go before any range still
//! waiting (biggest table first); ranges go biggest table first, a whole table before the
//! next. The biggest table's builds, the longest chain after the load, then start while the
//! other tables load instead of after all of them (the dominant-table benchmark: one session
//! sorted `contact_events_occurred_idx` alone after everything else was done).

use super::job::Job;
use super::load;
use super::post_data::{Build, run_entry};
use crate::error::{Error, Result};
use crate::pg::{ConnectionSettings, ddl::Entry, session};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// One unit of work on one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    /// Range `part` of table `table` (indexes into the manifest).
    Load { table: usize, part: usize },
    /// The build at this position of the build order.
    Build(usize),
}

/// What is left to do and what waits for what.
#[derive(Debug)]
struct Queue {
    loads: VecDeque<(usize, usize)>,
    /// Per table, its ranges not loaded yet (waiting or in flight).
    unloaded: HashMap<usize, usize>,
    /// Ranges not loaded yet, of all tables.
    loads_left: usize,
    /// Builds waiting for their table's last range (`None`: for every table's: a build on a
    /// table the restore does not load, or one whose table is not recognised).
    waiting: HashMap<Option<usize>, Vec<usize>>,
    /// Builds ready to run, by their position in the build order.
    ready: BTreeSet<usize>,
}

impl Queue {
    /// `tables` are the selected tables with their number of ranges, biggest first; `builds`
    /// the table each build is on, in build order.
    fn new(tables: &[(usize, usize)], builds: &[Option<usize>]) -> Queue {
        let unloaded: HashMap<usize, usize> = tables.iter().copied().collect();
        let mut queue = Queue {
            loads: tables
                .iter()
                .flat_map(|&(t, parts)| (0..parts).map(move |p| (t, p)))
                .collect(),
            loads_left: tables.iter().map(|&(_, parts)| parts).sum(),
            unloaded,
            waiting: HashMap::new(),
            ready: BTreeSet::new(),
        };
        for (b, table) in builds.iter().enumerate() {
            let after = table.filter(|t| queue.unloaded.contains_key(t));
            queue.waiting.entry(after).or_default().push(b);
        }
        for &(t, parts) in tables {
            if parts == 0 {
                queue.release(Some(t));
            }
        }
        if queue.loads_left == 0 {
            queue.release(None);
        }
        queue
    }

    /// The next task: a ready build first, else the next range.
    fn next(&mut self) -> Option<Task> {
        match self.ready.pop_first() {
            Some(b) => Some(Task::Build(b)),
            None => self
                .loads
                .pop_front()
                .map(|(table, part)| Task::Load { table, part }),
        }
    }

    /// Whether no task is left to hand out, now or later (some may still be running).
    fn drained(&self) -> bool {
        self.loads.is_empty() && self.ready.is_empty() && self.waiting.is_empty()
    }

    /// A range of `table` is in: its builds are ready once it was the table's last, and the
    /// builds waiting for every table once it was the last of all.
    fn loaded(&mut self, table: usize) {
        if let Some(left) = self.unloaded.get_mut(&table) {
            *left -= 1;
            if *left == 0 {
                self.release(Some(table));
            }
        }
        self.loads_left -= 1;
        if self.loads_left == 0 {
            self.release(None);
        }
    }

    fn release(&mut self, after: Option<usize>) {
        self.ready
            .extend(self.waiting.remove(&after).unwrap_or_default());
    }
}

/// Loads every stored range of the selected tables and runs `builds` (indexes and keys with
/// the table each is on, in build order: see `post_data::builds`) over `--jobs` sessions,
/// each build as soon as its table is loaded; the rows each table received. The tables in
/// `freeze` are loaded frozen (see [`load::range`]).
pub(super) async fn load_and_build(
    job: &Job,
    destination: &ConnectionSettings,
    preamble: &str,
    builds: Vec<Build>,
    freeze: &HashSet<usize>,
) -> Result<HashMap<usize, u64>> {
    let mut tables: Vec<(usize, usize)> = job
        .plan
        .selected
        .iter()
        .map(|&t| (t, job.manifest.tables[t].parts.len()))
        .collect();
    // Stable: the selection's order among tables of one size. Small tables stored as windows
    // on shared chunks go last, in the order they were stored, so each shared chunk is read
    // once for all of its windows.
    tables.sort_by_key(|&(t, _)| {
        let table = &job.manifest.tables[t];
        let windows = table.parts.iter().any(|p| p.is_window());
        std::cmp::Reverse(if windows { 0 } else { table.logical_bytes })
    });
    let by_name: HashMap<(&str, &str), usize> = job
        .plan
        .selected
        .iter()
        .map(|&t| {
            let table = &job.manifest.tables[t];
            ((table.schema.as_str(), table.name.as_str()), t)
        })
        .collect();
    let on: Vec<Option<usize>> = builds
        .iter()
        .map(|(table, _)| {
            table
                .as_ref()
                .and_then(|(schema, name)| by_name.get(&(schema.as_str(), name.as_str())).copied())
        })
        .collect();
    let builds: Vec<Entry> = builds.into_iter().map(|(_, e)| e).collect();
    let queue = Arc::new(Mutex::new(Queue::new(&tables, &on)));
    let tasks = builds.len() + tables.iter().map(|&(_, parts)| parts).sum::<usize>();
    let builds = Arc::new(builds);
    let freeze = Arc::new(freeze.clone());
    let wake = Arc::new(tokio::sync::Notify::new());
    let overall = job.overall();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..job.jobs.clamp(1, tasks.max(1)) {
        let (job, destination, preamble) = (job.clone(), destination.clone(), preamble.to_string());
        let (queue, builds, wake, overall, freeze) = (
            queue.clone(),
            builds.clone(),
            wake.clone(),
            overall.clone(),
            freeze.clone(),
        );
        set.spawn(async move {
            let client = session::restore(&destination).await?;
            let mut rows: Vec<(usize, u64)> = Vec::new();
            loop {
                // Registered before looking, so a release between the look and the wait
                // still wakes this session.
                let woken = wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let (next, drained) = {
                    // Nothing below can panic while holding the lock: a poisoned one is sound.
                    let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
                    let next = q.next();
                    (next, q.drained())
                };
                let Some(next) = next else {
                    if drained {
                        break;
                    }
                    woken.await;
                    continue;
                };
                match next {
                    Task::Load { table, part } => {
                        let frozen = freeze.contains(&table);
                        let sent =
                            load::range(&job, &client, table, part, frozen, &overall).await?;
                        rows.push((table, sent));
                        queue
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .loaded(table);
                        wake.notify_waiters();
                    }
                    Task::Build(b) => run_entry(&client, &preamble, &builds[b]).await?,
                }
            }
            Ok::<_, Error>(rows)
        });
    }
    let mut rows_loaded: HashMap<usize, u64> = HashMap::new();
    while let Some(joined) = set.join_next().await {
        let rows = joined.map_err(|e| Error::Internal(format!("restore worker failed: {e}")))??;
        for (t, sent) in rows {
            *rows_loaded.entry(t).or_default() += sent;
        }
    }
    overall.finish_and_clear();
    Ok(rows_loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the queue to the end with `sessions` sessions taking turns, each task finishing
    /// before the next session takes one; the order tasks were handed out in.
    fn run(mut queue: Queue) -> Vec<Task> {
        let mut order = Vec::new();
        while let Some(task) = queue.next() {
            order.push(task);
            if let Task::Load { table, .. } = task {
                queue.loaded(table);
            }
        }
        assert!(queue.drained(), "{queue:?}");
        order
    }

    #[test]
    fn the_biggest_tables_builds_go_before_the_other_tables_ranges() {
        // Table 7 (3 ranges) is the biggest, then 2 (1 range); builds 0 and 1 are on 7, build
        // 2 on table 2, build 3 on a table the restore does not load.
        let order = run(Queue::new(
            &[(7, 3), (2, 1)],
            &[Some(7), Some(7), Some(2), Some(99)],
        ));
        assert_eq!(
            order,
            [
                Task::Load { table: 7, part: 0 },
                Task::Load { table: 7, part: 1 },
                Task::Load { table: 7, part: 2 },
                Task::Build(0),
                Task::Build(1),
                Task::Load { table: 2, part: 0 },
                Task::Build(2),
                Task::Build(3),
            ]
        );
    }

    #[test]
    fn builds_on_empty_tables_are_ready_at_once_and_unknown_ones_after_every_load() {
        let mut queue = Queue::new(&[(0, 2), (1, 0)], &[None, Some(1), Some(0)]);
        assert_eq!(queue.next(), Some(Task::Build(1)));
        assert_eq!(queue.next(), Some(Task::Load { table: 0, part: 0 }));
        assert_eq!(queue.next(), Some(Task::Load { table: 0, part: 1 }));
        // Both ranges handed out, neither in: nothing to hand out, but not drained.
        assert_eq!(queue.next(), None);
        assert!(!queue.drained());
        queue.loaded(0);
        assert_eq!(queue.next(), None);
        queue.loaded(0);
        assert_eq!(queue.next(), Some(Task::Build(0)));
        assert_eq!(queue.next(), Some(Task::Build(2)));
        assert_eq!(queue.next(), None);
        assert!(queue.drained());
    }

    #[test]
    fn nothing_to_load_leaves_every_build_ready() {
        let order = run(Queue::new(&[], &[None, Some(3)]));
        assert_eq!(order, [Task::Build(0), Task::Build(1)]);
    }
}
