//! The new-database restore as one dependency-aware work queue over N connections.
//!
//! A table's index builds start as soon as its last range is loaded, and its ANALYZE and
//! checksum verification as soon as its indexes exist, overlapping with the loads of bigger
//! tables, the way pg_restore's scheduler overlaps its steps. Loads are handed out in the
//! interleaved order the caller chose; ready builds and checks go first.

use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::pg::ddl::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::Client;

#[derive(Debug, Clone)]
pub(super) enum Task {
    Load { table: usize, part: usize },
    Build { table: usize, entry: Entry },
    Check { table: usize },
}

enum Next {
    Run(Task),
    Wait,
    Done,
}

#[derive(Default)]
struct State {
    loads: VecDeque<(usize, usize)>,
    ready: VecDeque<Task>,
    parts_left: HashMap<usize, usize>,
    builds_waiting: HashMap<usize, Vec<Entry>>,
    builds_left: HashMap<usize, usize>,
    in_flight: usize,
    failed: bool,
}

pub(super) struct Pipeline {
    state: Mutex<State>,
}

impl Pipeline {
    /// `loads` in the order to hand them out; `builds` per table; every table in `tables`
    /// gets a check once its loads and builds are done.
    pub(super) fn new(
        loads: Vec<(usize, usize)>,
        mut builds: HashMap<usize, Vec<Entry>>,
        tables: &[usize],
    ) -> Pipeline {
        let mut state = State::default();
        for &(table, _) in &loads {
            *state.parts_left.entry(table).or_default() += 1;
        }
        for &table in tables {
            let waiting = builds.remove(&table).unwrap_or_default();
            state.builds_left.insert(table, waiting.len());
            if state.parts_left.get(&table).copied().unwrap_or(0) == 0 {
                // Nothing to load (an empty table still has one range; this is a safeguard).
                state.ready.extend(
                    waiting
                        .into_iter()
                        .map(|entry| Task::Build { table, entry }),
                );
                if state.builds_left[&table] == 0 {
                    state.ready.push_back(Task::Check { table });
                }
            } else {
                state.builds_waiting.insert(table, waiting);
            }
        }
        state.loads = loads.into();
        Pipeline {
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Recovery("restore scheduler poisoned".into()))
    }

    fn next(&self) -> Result<Next> {
        let mut s = self.lock()?;
        if s.failed {
            return Ok(Next::Done);
        }
        let task = match s.ready.pop_front() {
            Some(task) => task,
            None => match s.loads.pop_front() {
                Some((table, part)) => Task::Load { table, part },
                None if s.in_flight == 0 => return Ok(Next::Done),
                None => return Ok(Next::Wait),
            },
        };
        s.in_flight += 1;
        Ok(Next::Run(task))
    }

    fn finished(&self, task: &Task) -> Result<()> {
        let mut s = self.lock()?;
        s.in_flight -= 1;
        match task {
            Task::Load { table, .. } => {
                let left = s.parts_left.get_mut(table).map(|n| {
                    *n -= 1;
                    *n
                });
                if left == Some(0) {
                    let builds = s.builds_waiting.remove(table).unwrap_or_default();
                    if builds.is_empty() {
                        s.ready.push_back(Task::Check { table: *table });
                    }
                    // Builds jump the queue: they unblock this table's check.
                    for entry in builds.into_iter().rev() {
                        s.ready.push_front(Task::Build {
                            table: *table,
                            entry,
                        });
                    }
                }
            }
            Task::Build { table, .. } => {
                let left = s.builds_left.get_mut(table).map(|n| {
                    *n -= 1;
                    *n
                });
                if left == Some(0) {
                    s.ready.push_back(Task::Check { table: *table });
                }
            }
            Task::Check { .. } => {}
        }
        Ok(())
    }

    fn fail(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.failed = true;
        }
    }
}

/// Runs the pipeline on `jobs` connections; `work` returns a value for the tasks that
/// produce one (checks). The first error stops every worker.
pub(super) async fn run<R, F, Fut>(
    settings: &ConnectionSettings,
    jobs: usize,
    pipeline: Pipeline,
    work: F,
) -> Result<Vec<R>>
where
    R: Send + 'static,
    F: Fn(Arc<Client>, Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<R>>> + Send,
{
    let pipeline = Arc::new(pipeline);
    let work = Arc::new(work);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..jobs.max(1) {
        let (settings, pipeline, work) = (settings.clone(), pipeline.clone(), work.clone());
        set.spawn(async move {
            let client = Arc::new(super::session(&settings).await?);
            let mut out = Vec::new();
            loop {
                match pipeline.next()? {
                    Next::Done => break,
                    Next::Wait => tokio::time::sleep(Duration::from_millis(10)).await,
                    Next::Run(task) => match work(client.clone(), task.clone()).await {
                        Ok(value) => {
                            out.extend(value);
                            pipeline.finished(&task)?;
                        }
                        Err(e) => {
                            pipeline.fail();
                            return Err(e);
                        }
                    },
                }
            }
            Ok::<_, Error>(out)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        results
            .extend(joined.map_err(|e| Error::Recovery(format!("restore worker failed: {e}")))??);
    }
    Ok(results)
}

/// The table a post-data statement works on, as pg_dump wrote its name
/// (`ALTER TABLE ONLY public.t …`, `CREATE INDEX i ON public.t …`).
pub(super) fn table_of(entry: &Entry) -> Option<String> {
    let sql = entry.sql.trim_start_matches(['\n', ' ']);
    let rest = if let Some(rest) = sql.strip_prefix("ALTER TABLE ") {
        rest.strip_prefix("ONLY ").unwrap_or(rest)
    } else if sql.starts_with("CREATE ") {
        let at = sql.find(" ON ")?;
        let rest = &sql[at + 4..];
        rest.strip_prefix("ONLY ").unwrap_or(rest)
    } else {
        return None;
    };
    qualified_prefix(rest).map(str::to_string)
}

/// The `schema.name` identifier pair at the start of `s`, quotes included.
fn qualified_prefix(s: &str) -> Option<&str> {
    let first = identifier_len(s)?;
    let rest = s.get(first..)?.strip_prefix('.')?;
    let second = identifier_len(rest)?;
    Some(&s[..first + 1 + second])
}

fn identifier_len(s: &str) -> Option<usize> {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut i = 0;
        let bytes = quoted.as_bytes();
        while i < bytes.len() {
            if bytes[i] == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return Some(i + 2);
            }
            i += 1;
        }
        None
    } else {
        let len = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        (len > 0).then_some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, sql: &str) -> Entry {
        Entry {
            kind: kind.into(),
            name: "x".into(),
            sql: sql.into(),
        }
    }

    #[test]
    fn statements_name_their_table() {
        assert_eq!(
            table_of(&entry("CONSTRAINT", "\nALTER TABLE ONLY public.contacts\n    ADD CONSTRAINT contacts_pkey PRIMARY KEY (id);\n")).as_deref(),
            Some("public.contacts")
        );
        assert_eq!(
            table_of(&entry(
                "INDEX",
                "\nCREATE INDEX contacts_idx ON public.contacts USING btree (lower(last_name));\n"
            ))
            .as_deref(),
            Some("public.contacts")
        );
        assert_eq!(
            table_of(&entry("INDEX", "CREATE UNIQUE INDEX u ON ONLY \"Mixed Case\".\"Weird \"\"Table\"\"\" USING btree (id);")).as_deref(),
            Some("\"Mixed Case\".\"Weird \"\"Table\"\"\"")
        );
        assert_eq!(
            table_of(&entry(
                "TRIGGER",
                "CREATE TRIGGER t BEFORE UPDATE ON public.c FOR EACH ROW EXECUTE FUNCTION f();"
            ))
            .as_deref(),
            Some("public.c")
        );
        assert_eq!(
            table_of(&entry("COMMENT", "COMMENT ON INDEX public.i IS 'x';")),
            None
        );
    }

    #[test]
    fn a_tables_check_waits_for_its_loads_and_builds() {
        let builds = HashMap::from([(
            0,
            vec![entry(
                "INDEX",
                "CREATE INDEX i ON public.a USING btree (x);",
            )],
        )]);
        let p = Pipeline::new(vec![(0, 0), (1, 0), (0, 1)], builds, &[0, 1]);
        let take = |p: &Pipeline| match p.next().expect("next") {
            Next::Run(t) => Some(t),
            _ => None,
        };
        let a0 = take(&p).expect("load a0");
        let b0 = take(&p).expect("load b0");
        p.finished(&b0).expect("done");
        assert!(
            matches!(take(&p), Some(Task::Check { table: 1 })),
            "b has no builds: its check is ready"
        );
        let a1 = take(&p).expect("load a1");
        assert!(
            matches!(p.next().expect("next"), Next::Wait),
            "a's build waits for both ranges"
        );
        p.finished(&a0).expect("done");
        p.finished(&a1).expect("done");
        let build = take(&p).expect("build");
        assert!(matches!(build, Task::Build { table: 0, .. }));
        p.finished(&build).expect("done");
        assert!(matches!(take(&p), Some(Task::Check { table: 0 })));
    }
}
