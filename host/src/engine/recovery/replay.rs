//! The replay step: the chain's change sets applied to the loaded base, transaction by
//! transaction in commit order, up to the requested incremental or point in time.
//!
//! Fast because row changes are batched: consecutive inserts of a table go into one
//! `COPY … FROM STDIN`, updates into one `UPDATE … FROM (VALUES …)` and deletes into one
//! `DELETE … USING (VALUES …)`, each table's changes kept in their order. Where no constraint
//! or trigger between tables is live (a new database or a whole replace before post-data,
//! missing-rows' scratch tables, a superuser's `replace -t`), a window of changes is grouped
//! by table before batching, which leaves every table exactly as the commit order would;
//! otherwise only consecutive changes of one table are batched. In a new database (its own
//! sessions see every loaded row) a window's tables are applied in parallel on `--jobs`
//! sessions, each table on one session in its order; foreign keys need no grouping there, as
//! none is built before the replay ends. Every update and delete must
//! match exactly the rows it names (else the destination is not the chain's state, and the
//! restore is undone), and the row count each table should have afterwards is kept for the
//! verify step.

use super::chain::Until;
use super::job::Job;
pub use super::job::Replayed;
use super::replay_plan::ReplayPlan;
use crate::engine::Progress;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::repository::changes::Change;
use crate::repository::manifest::{Manifest, TableEntry, quote_ident, quote_literal};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use indicatif::ProgressBar;
use std::collections::{HashMap, HashSet};
use tokio_postgres::Client;

/// Row changes held before they are grouped by table and applied (bounded memory).
const WINDOW: usize = 50_000;
/// Rows per `UPDATE`/`DELETE` statement (the statement's text stays a few megabytes).
const ROWS_PER_STATEMENT: usize = 2_000;
/// Rows per `COPY` of inserts.
const ROWS_PER_COPY: usize = 50_000;
type Row = Vec<Option<String>>;

/// One row change of one table, its columns by name as the change set gives them.
#[derive(Debug, Clone, PartialEq)]
enum RowChange {
    Insert {
        values: Vec<(String, Option<String>)>,
    },
    /// `set`: the columns to write (unchanged TOAST columns and key columns that keep their
    /// value left out).
    Update {
        key: Vec<(String, Option<String>)>,
        set: Vec<(String, Option<String>)>,
    },
    Delete {
        key: Vec<(String, Option<String>)>,
    },
}

/// Consecutive row changes of one table applied as one statement.
#[derive(Debug, Clone, PartialEq)]
enum Batch {
    Insert {
        columns: Vec<String>,
        rows: Vec<Row>,
    },
    Update {
        key: Vec<String>,
        set: Vec<String>,
        rows: Vec<(Row, Row)>,
    },
    Delete {
        key: Vec<String>,
        rows: Vec<Row>,
    },
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Insert { rows, .. } | Batch::Delete { rows, .. } => rows.len(),
            Batch::Update { rows, .. } => rows.len(),
        }
    }
}

fn names(values: &[(String, Option<String>)]) -> Vec<String> {
    values.iter().map(|(n, _)| n.clone()).collect()
}

fn row(values: Vec<(String, Option<String>)>) -> Row {
    values.into_iter().map(|(_, v)| v).collect()
}

/// The change record as a row change (None when it changes nothing replay writes: an update
/// of unchanged TOAST columns only).
fn row_change(change: Change) -> Option<(String, RowChange)> {
    let pairs = |values: crate::repository::changes::Row| -> Vec<(String, Option<String>)> {
        values.into_iter().collect()
    };
    match change {
        Change::Insert { table, new } => Some((table, RowChange::Insert { values: pairs(new) })),
        Change::Delete { table, key } => Some((table, RowChange::Delete { key: pairs(key) })),
        Change::Update {
            table,
            key,
            new,
            unchanged,
        } => {
            let key = pairs(key);
            let set: Vec<(String, Option<String>)> = pairs(new)
                .into_iter()
                .filter(|(column, value)| {
                    !unchanged.contains(column)
                        && !key.iter().any(|(k, v)| k == column && v == value)
                })
                .collect();
            (!set.is_empty()).then_some((table, RowChange::Update { key, set }))
        }
        _ => None,
    }
}

/// Groups one table's row changes, in order, into batches: a batch ends where the kind or the
/// columns change, where an update would touch a row the batch already updates (one
/// statement updates a row once), at an update that changes the key (it goes alone), and at
/// the size limits.
fn batches(changes: Vec<RowChange>) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    let mut keys_in_last: HashSet<Row> = HashSet::new();
    for change in changes {
        let last = out.last_mut();
        match (change, last) {
            (RowChange::Insert { values }, Some(Batch::Insert { columns, rows }))
                if rows.len() < ROWS_PER_COPY
                    && columns.len() == values.len()
                    && columns.iter().zip(&values).all(|(c, (n, _))| c == n) =>
            {
                rows.push(row(values));
            }
            (RowChange::Insert { values }, _) => out.push(Batch::Insert {
                columns: names(&values),
                rows: vec![row(values)],
            }),
            (RowChange::Delete { key }, Some(Batch::Delete { key: columns, rows }))
                if rows.len() < ROWS_PER_STATEMENT && *columns == names(&key) =>
            {
                rows.push(row(key));
            }
            (RowChange::Delete { key }, _) => out.push(Batch::Delete {
                key: names(&key),
                rows: vec![row(key)],
            }),
            (RowChange::Update { key, set }, last) => {
                let changes_key = set.iter().any(|(c, _)| key.iter().any(|(k, _)| k == c));
                let (key_columns, set_columns) = (names(&key), names(&set));
                let key_row = row(key);
                let joins = !changes_key
                    && matches!(last, Some(Batch::Update { key: k, set: s, rows })
                        if rows.len() < ROWS_PER_STATEMENT
                            && *k == key_columns
                            && *s == set_columns
                            && !keys_in_last.contains(&key_row));
                if joins && let Some(Batch::Update { rows, .. }) = out.last_mut() {
                    keys_in_last.insert(key_row.clone());
                    rows.push((key_row, row(set)));
                    continue;
                }
                keys_in_last.clear();
                keys_in_last.insert(key_row.clone());
                // An update that moves a row to another key joins nothing, and nothing joins
                // it: no update without a key change writes the key columns.
                out.push(Batch::Update {
                    key: key_columns,
                    set: set_columns,
                    rows: vec![(key_row, row(set))],
                });
            }
        }
    }
    out
}

/// One value in COPY's text format.
fn copy_value(out: &mut String, value: &Option<String>) {
    let Some(text) = value else {
        out.push_str("\\N");
        return;
    };
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// The rows of an insert batch as COPY text.
fn copy_text(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            copy_value(&mut out, value);
        }
        out.push('\n');
    }
    out
}

fn literal(value: &Option<String>) -> String {
    value.as_deref().map_or("NULL".to_string(), quote_literal)
}

/// The columns' types in the destination relation, by (unquoted) name.
type Types = HashMap<String, String>;

fn typed(types: &Types, relation: &str, column: &str) -> Result<String> {
    types.get(column).cloned().ok_or_else(|| {
        Error::Unsupported(format!(
            "the change set names column {column} of {relation}, which the restored table does not have: \
             the table's definition changed after the base backup; restore up to the incremental before the change, \
             or take a new full backup"
        ))
    })
}

/// `t.k = v.k0::type AND …` (NULL keys, possible with REPLICA IDENTITY FULL, match NULL).
fn key_match(types: &Types, relation: &str, key: &[String], rows: &[&Row]) -> Result<String> {
    let mut terms = Vec::new();
    for (i, column) in key.iter().enumerate() {
        let nullable = rows.iter().any(|r| r.get(i).is_some_and(Option::is_none));
        terms.push(format!(
            "t.{} {} v.k{i}::{}",
            quote_ident(column),
            if nullable {
                "IS NOT DISTINCT FROM"
            } else {
                "="
            },
            typed(types, relation, column)?
        ));
    }
    Ok(terms.join(" AND "))
}

fn values_list<'a>(rows: impl Iterator<Item = Vec<&'a Option<String>>>) -> String {
    rows.map(|r| {
        format!(
            "({})",
            r.into_iter().map(literal).collect::<Vec<_>>().join(", ")
        )
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// The statement of an update or delete batch (inserts go through COPY).
fn statement(relation: &str, types: &Types, batch: &Batch) -> Result<String> {
    match batch {
        Batch::Insert { columns, .. } => Ok(format!(
            "COPY {relation} ({}) FROM STDIN",
            columns
                .iter()
                .map(|c| typed(types, relation, c).map(|_| quote_ident(c)))
                .collect::<Result<Vec<_>>>()?
                .join(", ")
        )),
        Batch::Update { key, set, rows } => {
            let assignments = set
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    Ok(format!(
                        "{} = v.s{i}::{}",
                        quote_ident(c),
                        typed(types, relation, c)?
                    ))
                })
                .collect::<Result<Vec<_>>>()?
                .join(", ");
            let aliases: Vec<String> = (0..key.len())
                .map(|i| format!("k{i}"))
                .chain((0..set.len()).map(|i| format!("s{i}")))
                .collect();
            let keys: Vec<&Row> = rows.iter().map(|(k, _)| k).collect();
            Ok(format!(
                "UPDATE ONLY {relation} AS t SET {assignments} FROM (VALUES {}) AS v({}) WHERE {}",
                values_list(rows.iter().map(|(k, s)| k.iter().chain(s).collect())),
                aliases.join(", "),
                key_match(types, relation, key, &keys)?
            ))
        }
        Batch::Delete { key, rows } => {
            let aliases: Vec<String> = (0..key.len()).map(|i| format!("k{i}")).collect();
            let keys: Vec<&Row> = rows.iter().collect();
            Ok(format!(
                "DELETE FROM ONLY {relation} AS t USING (VALUES {}) AS v({}) WHERE {}",
                values_list(rows.iter().map(|r| r.iter().collect())),
                aliases.join(", "),
                key_match(types, relation, key, &keys)?
            ))
        }
    }
}

/// How the replay may order row changes of different tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Nothing between tables is live: group a window of changes by table.
    ByTable,
    /// Foreign keys between the destination's tables are live: keep the commit order across
    /// tables, batching consecutive changes of one table only.
    Commit,
}

/// Each restored table, into itself.
pub(super) fn themselves(job: &Job) -> HashMap<usize, String> {
    job.plan
        .selected
        .iter()
        .map(|&t| (t, job.manifest.tables[t].qualified()))
        .collect()
}

/// Applies the plan's chain to the loaded tables: `into` maps each restored table (its index
/// in the manifest's tables) to the relation its rows are in (itself, or missing-rows'
/// scratch table); changes of other tables are passed over.
pub(super) async fn apply(
    job: &Job,
    client: &Client,
    workers: &[Client],
    into: &HashMap<usize, String>,
    order: Order,
    indexed: bool,
) -> Result<Replayed> {
    let Some(plan) = &job.plan.replay else {
        return Ok(Replayed::default());
    };
    let bar = job.progress.item("replay", plan.bytes());
    let done = replay(
        &job.repo,
        plan,
        &job.manifest,
        Output::Database {
            client,
            workers,
            into,
            indexed,
        },
        order,
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    Ok(done)
}

/// Where replayed changes go.
pub enum Output<'a> {
    /// Run on the destination, each restored table (its index in the manifest's tables)
    /// into the relation its rows are in.
    Database {
        client: &'a Client,
        /// Other sessions to the destination, for a window's tables to be applied in
        /// parallel (none inside a transaction: they would not see its rows).
        workers: &'a [Client],
        into: &'a HashMap<usize, String>,
        /// The relations' keys are indexed already. If not (before post-data), a table
        /// updated or deleted from in more than one statement gets a temporary index on its
        /// key for the replay, so each statement finds its rows without reading the table.
        indexed: bool,
    },
    /// Written as SQL for psql, after the export's table data (every table of the manifest).
    Script(&'a mut (dyn FnMut(&[u8]) -> Result<()> + Send)),
}

/// Reads the plan's change sets in order and sends each transaction up to the plan's point
/// in time to `output`, for the tables of `manifest` (the restored one) it takes.
pub async fn replay<'a>(
    repo: &Repository,
    plan: &ReplayPlan,
    manifest: &'a Manifest,
    output: Output<'a>,
    order: Order,
    bar: &ProgressBar,
) -> Result<Replayed> {
    let tables: Vec<usize> = match &output {
        Output::Database { into, .. } => into.keys().copied().collect(),
        Output::Script(_) => (0..manifest.tables.len()).collect(),
    };
    let mut replay = Replay {
        output,
        manifest,
        by_name: tables
            .iter()
            .map(|&t| (manifest.tables[t].display_name(), t))
            .collect(),
        order,
        until: plan.until,
        window: Window::default(),
        types: HashMap::new(),
        heavy: plan
            .tables
            .iter()
            .filter(|t| t.updates + t.deletes > ROWS_PER_STATEMENT as u64)
            .map(|t| t.table.clone())
            .collect(),
        key_indexes: HashMap::new(),
        in_transaction: false,
        stopped: false,
        done: Replayed {
            rows: tables
                .iter()
                .map(|&t| (t, manifest.tables[t].rows as i64))
                .collect(),
            ..Replayed::default()
        },
    };
    for link in &plan.links {
        let Some(info) = &link.incremental else {
            continue;
        };
        replay.done.backups.push(link.id.clone());
        let context = format!("change set, backup {}", link.id);
        let mut chunks = futures_util::stream::iter(info.changes.chunks.clone())
            .map(|chunk| {
                let (repo, context) = (repo.clone(), context.clone());
                async move { repo.read_chunk(&chunk, &context).await }
            })
            .buffered(2);
        let mut carry: Vec<u8> = Vec::new();
        let mut line_no = 0u64;
        while let Some(data) = chunks.next().await {
            let data = data?;
            Progress::advance(bar, data.len() as u64);
            carry.extend_from_slice(&data);
            let mut start = 0;
            while let Some(end) = carry[start..].iter().position(|&b| b == b'\n') {
                line_no += 1;
                replay
                    .line(&carry[start..start + end], &link.id, line_no)
                    .await?;
                start += end + 1;
                if replay.stopped {
                    break;
                }
            }
            carry.drain(..start);
            if replay.stopped {
                break;
            }
        }
        if !replay.stopped && !carry.is_empty() {
            replay.line(&carry, &link.id, line_no + 1).await?;
        }
        if replay.in_transaction && !replay.stopped {
            return Err(Error::Repository(format!(
                "the change set of backup {} ends inside a transaction: it is damaged; restore the incremental before it",
                link.id
            )));
        }
        if replay.stopped {
            break;
        }
    }
    replay.flush().await?;
    replay.drop_key_indexes().await?;
    tracing::info!(
        "replayed {} change(s) of {} transaction(s) in {} statement(s)",
        replay.done.changes,
        replay.done.transactions,
        replay.done.statements
    );
    Ok(replay.done)
}

/// Row changes waiting to be applied, by table, in order.
#[derive(Default)]
struct Window {
    tables: Vec<usize>,
    changes: HashMap<usize, Vec<RowChange>>,
    len: usize,
}

struct Replay<'a> {
    output: Output<'a>,
    manifest: &'a Manifest,
    by_name: HashMap<String, usize>,
    order: Order,
    until: Option<Until>,
    window: Window,
    types: HashMap<usize, Types>,
    /// Tables the plan updates or deletes from in more than one statement.
    heavy: HashSet<String>,
    /// The temporary key indexes made for the replay, by table, to drop after it.
    key_indexes: HashMap<usize, String>,
    in_transaction: bool,
    /// A transaction beyond the point in time began: nothing more is replayed.
    stopped: bool,
    done: Replayed,
}

impl Replay<'_> {
    /// One line of a change set.
    async fn line(&mut self, line: &[u8], backup: &str, line_no: u64) -> Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let change = Change::from_line(line).map_err(|e| {
            Error::Repository(format!(
                "line {line_no} of the change set of backup {backup} is {e}: the backup is damaged"
            ))
        })?;
        match change {
            Change::Begin {
                commit_lsn,
                commit_time,
                ..
            } => {
                if self
                    .until
                    .is_some_and(|u| !u.admits(commit_lsn, commit_time))
                {
                    self.stopped = true;
                    return Ok(());
                }
                self.in_transaction = true;
                self.done.last_commit_time = Some(commit_time);
                self.done.last_commit_lsn = Some(commit_lsn);
            }
            Change::Commit { .. } => {
                self.in_transaction = false;
                self.done.transactions += 1;
            }
            Change::Truncate { tables, .. } => {
                self.outside_transaction(backup, line_no)?;
                let chosen: Vec<usize> = tables
                    .iter()
                    .filter_map(|t| self.by_name.get(t).copied())
                    .collect();
                if chosen.is_empty() {
                    return Ok(());
                }
                // Tables that reference one another are only emptied together.
                self.flush().await?;
                let relations: Vec<String> = chosen
                    .iter()
                    .map(|&t| format!("ONLY {}", self.relation(t)))
                    .collect();
                let sql = format!("TRUNCATE {}", relations.join(", "));
                match &mut self.output {
                    Output::Database { client, .. } => {
                        client.batch_execute(&sql).await.map_err(Error::db(format!(
                            "replaying TRUNCATE of {} (backup {backup})",
                            tables.join(", ")
                        )))?
                    }
                    Output::Script(out) => out(format!("{sql};\n").as_bytes())?,
                }
                self.done.statements += 1;
                self.done.changes += 1;
                for t in chosen {
                    self.done.rows.insert(t, 0);
                    self.done.changed.insert(t);
                }
            }
            Change::Schema { table, .. } => {
                return Err(Error::Unsupported(format!(
                    "backup {backup} carries a change of the definition of table {table}, and replaying definition changes is not supported yet: \
                     restore up to the incremental before it (or --until before the change), or restore a full backup taken after it"
                )));
            }
            other => {
                self.outside_transaction(backup, line_no)?;
                let Some((table, change)) = row_change(other) else {
                    return Ok(());
                };
                let Some(&t) = self.by_name.get(&table) else {
                    return Ok(());
                };
                if self.order == Order::Commit
                    && self.window.tables.last().is_some_and(|&last| last != t)
                {
                    self.flush().await?;
                }
                let window = &mut self.window;
                let queue = window.changes.entry(t).or_insert_with(|| {
                    window.tables.push(t);
                    Vec::new()
                });
                queue.push(change);
                window.len += 1;
                self.done.changes += 1;
                if window.len >= WINDOW {
                    self.flush().await?;
                }
            }
        }
        Ok(())
    }

    fn outside_transaction(&self, backup: &str, line_no: u64) -> Result<()> {
        if self.in_transaction {
            return Ok(());
        }
        Err(Error::Repository(format!(
            "line {line_no} of the change set of backup {backup} is a change outside any transaction: the backup is damaged"
        )))
    }

    /// Applies the window, table by table, each in its order: on the destination's other
    /// sessions too when there are some ([`Output::Database`]'s `workers`), each table on one
    /// session, the largest first to the least busy.
    async fn flush(&mut self) -> Result<()> {
        let window = std::mem::take(&mut self.window);
        let mut changes = window.changes;
        let mut works = Vec::new();
        for t in window.tables {
            let Some(queue) = changes.remove(&t) else {
                continue;
            };
            works.push(self.prepare(t, batches(queue)).await?);
        }
        let applied = match &mut self.output {
            Output::Script(out) => {
                for work in &works {
                    for (batch, sql) in &work.batches {
                        // psql runs it: a COPY block, or one statement.
                        match batch {
                            Batch::Insert { rows, .. } => {
                                out(format!("{sql};\n{}\\.\n", copy_text(rows)).as_bytes())?
                            }
                            _ => out(format!("{sql};\n").as_bytes())?,
                        }
                        self.done.statements += 1;
                    }
                }
                return Ok(());
            }
            Output::Database {
                client, workers, ..
            } => {
                let sessions: Vec<&Client> =
                    std::iter::once(*client).chain(workers.iter()).collect();
                in_parallel(&sessions, works).await?
            }
        };
        for a in applied {
            *self.done.rows.entry(a.t).or_default() += a.delta;
            self.done.changed.insert(a.t);
            self.done.statements += a.statements;
        }
        Ok(())
    }

    /// Table `t`'s batches with their statements, and the index on its key to make first if
    /// it is a heavily changed table without indexes and one of them updates or deletes.
    async fn prepare(&mut self, t: usize, batches: Vec<Batch>) -> Result<TableWork> {
        let relation = self.relation(t);
        if !self.types.contains_key(&t) {
            let types = match &self.output {
                Output::Database { client, .. } => column_types(client, &relation).await?,
                Output::Script(_) => recorded_types(&self.manifest.tables[t]),
            };
            self.types.insert(t, types);
        }
        let batches = batches
            .into_iter()
            .map(|b| statement(&relation, &self.types[&t], &b).map(|sql| (b, sql)))
            .collect::<Result<Vec<_>>>()?;
        let table = &self.manifest.tables[t];
        let key = batches.iter().find_map(|(b, _)| match b {
            Batch::Update { key, .. } | Batch::Delete { key, .. } => Some(key),
            Batch::Insert { .. } => None,
        });
        let index = match (&self.output, key) {
            (Output::Database { indexed: false, .. }, Some(key))
                if !self.key_indexes.contains_key(&t)
                    && self.heavy.contains(&table.display_name()) =>
            {
                let name = format!("larder_replay_key_{t}");
                let columns = key
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.key_indexes
                    .insert(t, format!("{}.{name}", quote_ident(&table.schema)));
                // The loaded table has no statistics yet: the planner would take the key as
                // far from unique and join each batch against the whole table (a hash join
                // over a sequential scan, JIT-compiled on a big table) rather than look its
                // rows up in the index. The key columns' statistics say they are unique.
                Some(format!(
                    "CREATE INDEX {name} ON {relation} ({columns}); ANALYZE {relation} ({columns})"
                ))
            }
            _ => None,
        };
        Ok(TableWork {
            t,
            relation,
            index,
            batches,
        })
    }

    /// Drops the replay's own indexes (post-data builds the table's).
    async fn drop_key_indexes(&mut self) -> Result<()> {
        if let Output::Database { client, .. } = &self.output {
            for index in self.key_indexes.values() {
                client
                    .batch_execute(&format!("DROP INDEX {index}"))
                    .await
                    .map_err(Error::db(format!("dropping the replay's index {index}")))?;
            }
        }
        self.key_indexes.clear();
        Ok(())
    }

    /// The relation table `t`'s rows are in.
    fn relation(&self, t: usize) -> String {
        match &self.output {
            Output::Database { into, .. } => into[&t].clone(),
            Output::Script(_) => self.manifest.tables[t].qualified(),
        }
    }
}

/// One table's batches of a window, ready to run on a session.
struct TableWork {
    t: usize,
    relation: String,
    /// `CREATE INDEX` on the key and `ANALYZE` of the key columns, to run first
    /// ([`Replay::prepare`]).
    index: Option<String>,
    batches: Vec<(Batch, String)>,
}

impl TableWork {
    fn rows(&self) -> usize {
        self.batches.iter().map(|(b, _)| b.len()).sum()
    }
}

/// What a session did to one table.
struct Applied {
    t: usize,
    /// Rows added (inserts) less rows deleted.
    delta: i64,
    statements: u64,
}

/// Runs each table's work on one of `sessions`: the largest table first, each to the session
/// with the fewest rows so far. Tables are independent here (no constraint or trigger between
/// them is live while the replay groups changes by table), so only each table's own order
/// matters, and one session keeps it.
async fn in_parallel(sessions: &[&Client], mut works: Vec<TableWork>) -> Result<Vec<Applied>> {
    works.sort_by_key(|w| std::cmp::Reverse(w.rows()));
    let mut queues: Vec<(usize, Vec<TableWork>)> =
        sessions.iter().map(|_| (0, Vec::new())).collect();
    for work in works {
        if let Some(queue) = queues.iter_mut().min_by_key(|(rows, _)| *rows) {
            queue.0 += work.rows();
            queue.1.push(work);
        }
    }
    let runs = queues
        .into_iter()
        .zip(sessions)
        .filter(|((_, queue), _)| !queue.is_empty())
        .map(|((_, queue), client)| async move {
            let mut applied = Vec::new();
            for work in queue {
                applied.push(execute(client, work).await?);
            }
            Ok::<_, Error>(applied)
        });
    Ok(futures_util::future::try_join_all(runs)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// Runs one table's work on `client`; every update and delete must match exactly its rows.
async fn execute(client: &Client, work: TableWork) -> Result<Applied> {
    let relation = &work.relation;
    if let Some(sql) = &work.index {
        client.batch_execute(sql).await.map_err(Error::db(format!(
            "indexing the key of {relation} for the replay"
        )))?;
    }
    let mut applied = Applied {
        t: work.t,
        delta: 0,
        statements: 0,
    };
    for (batch, sql) in &work.batches {
        let doing = |what: &str| format!("replaying {} {what} of {relation}", batch.len());
        let what = match batch {
            Batch::Insert { .. } => "insert(s)",
            Batch::Update { .. } => "update(s)",
            Batch::Delete { .. } => "delete(s)",
        };
        applied.delta += match batch {
            Batch::Insert { rows, .. } => {
                let sink = client
                    .copy_in::<_, Bytes>(sql.as_str())
                    .await
                    .map_err(Error::db(doing(what)))?;
                let mut sink = std::pin::pin!(sink);
                sink.send(Bytes::from(copy_text(rows)))
                    .await
                    .map_err(Error::db(doing(what)))?;
                sink.as_mut()
                    .finish()
                    .await
                    .map_err(Error::db(doing(what)))? as i64
            }
            Batch::Update { .. } | Batch::Delete { .. } => {
                let matched = client
                    .execute(sql.as_str(), &[])
                    .await
                    .map_err(Error::db(doing(what)))?;
                if matched != batch.len() as u64 {
                    return Err(Error::Verification(format!(
                        "replay diverged: {} {what} of {relation} matched {matched} row(s) by key: the restored rows are not \
                         the state the change set was recorded on (a table without a usable replica identity, or a damaged chain)",
                        batch.len()
                    )));
                }
                if matches!(batch, Batch::Update { .. }) {
                    0
                } else {
                    -(matched as i64)
                }
            }
        };
        applied.statements += 1;
    }
    Ok(applied)
}

/// A table's column types as the backup recorded them (`format_type` under an empty
/// search_path, so qualified wherever needed), by unquoted name.
fn recorded_types(table: &TableEntry) -> Types {
    table
        .columns
        .iter()
        .zip(&table.column_types)
        .map(|(column, kind)| (unquote(column), kind.clone()))
        .collect()
}

/// An identifier as `quote_ident` wrote it, back to its name.
fn unquote(ident: &str) -> String {
    match ident.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => ident.to_string(),
    }
}

/// The columns of `relation` and their types as this session spells them.
async fn column_types(client: &Client, relation: &str) -> Result<Types> {
    let rows = client
        .query(
            "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute \
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
            &[&relation],
        )
        .await
        .map_err(Error::db(format!("reading the columns of {relation}")))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        items
            .iter()
            .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
            .collect()
    }

    fn insert(id: &str, name: &str) -> RowChange {
        RowChange::Insert {
            values: pairs(&[("id", Some(id)), ("name", Some(name))]),
        }
    }

    fn update(id: &str, name: &str) -> RowChange {
        RowChange::Update {
            key: pairs(&[("id", Some(id))]),
            set: pairs(&[("name", Some(name))]),
        }
    }

    fn delete(id: &str) -> RowChange {
        RowChange::Delete {
            key: pairs(&[("id", Some(id))]),
        }
    }

    fn shape(batches: &[Batch]) -> Vec<(char, usize)> {
        batches
            .iter()
            .map(|b| {
                let kind = match b {
                    Batch::Insert { .. } => 'i',
                    Batch::Update { .. } => 'u',
                    Batch::Delete { .. } => 'd',
                };
                (kind, b.len())
            })
            .collect()
    }

    #[test]
    fn consecutive_changes_of_a_kind_become_one_statement_in_their_order() {
        let out = batches(vec![
            insert("1", "a"),
            insert("2", "b"),
            insert("3", "c"),
            update("1", "x"),
            update("2", "y"),
            delete("3"),
            delete("2"),
            insert("3", "again"),
        ]);
        assert_eq!(shape(&out), [('i', 3), ('u', 2), ('d', 2), ('i', 1)]);
        let Batch::Insert { columns, rows } = &out[0] else {
            panic!()
        };
        assert_eq!(columns, &["id", "name"]);
        assert_eq!(rows[2], [Some("3".into()), Some("c".into())]);
        let Batch::Update { key, set, rows } = &out[1] else {
            panic!()
        };
        assert_eq!(
            (key.as_slice(), set.as_slice()),
            (&["id".to_string()][..], &["name".to_string()][..])
        );
        assert_eq!(rows[1], (vec![Some("2".into())], vec![Some("y".into())]));
    }

    #[test]
    fn a_row_updated_twice_takes_two_statements_so_the_last_value_wins() {
        let out = batches(vec![update("1", "x"), update("2", "y"), update("1", "z")]);
        assert_eq!(shape(&out), [('u', 2), ('u', 1)]);
        let Batch::Update { rows, .. } = &out[1] else {
            panic!()
        };
        assert_eq!(rows[0].1, [Some("z".into())]);
    }

    #[test]
    fn different_columns_and_key_changes_end_a_batch() {
        let toast = RowChange::Update {
            key: pairs(&[("id", Some("5"))]),
            set: pairs(&[("id", Some("5")), ("small", Some("s"))]),
        };
        let moved = RowChange::Update {
            key: pairs(&[("id", Some("6"))]),
            set: pairs(&[("id", Some("60")), ("name", Some("m"))]),
        };
        let out = batches(vec![
            update("1", "x"),
            toast,
            moved,
            update("7", "after"),
            RowChange::Insert {
                values: pairs(&[("id", Some("8"))]),
            },
            insert("9", "n"),
        ]);
        assert_eq!(
            shape(&out),
            [('u', 1), ('u', 1), ('u', 1), ('u', 1), ('i', 1), ('i', 1)]
        );
    }

    #[test]
    fn big_runs_are_cut_at_the_statement_size() {
        let out = batches(
            (0..ROWS_PER_STATEMENT + 5)
                .map(|i| delete(&i.to_string()))
                .collect(),
        );
        assert_eq!(shape(&out), [('d', ROWS_PER_STATEMENT), ('d', 5)]);
        let out = batches(
            (0..ROWS_PER_STATEMENT * 2)
                .map(|i| update(&i.to_string(), "v"))
                .collect(),
        );
        assert_eq!(
            shape(&out),
            [('u', ROWS_PER_STATEMENT), ('u', ROWS_PER_STATEMENT)]
        );
    }

    #[test]
    fn an_update_keeps_unchanged_toast_columns_and_unchanged_keys_out_of_its_set() {
        let change: Change = serde_json::from_str(
            r#"{"op":"update","table":"public.t","key":{"id":"1"},"new":{"id":"1","name":"y","big":null},"unchanged":["big"]}"#,
        )
        .unwrap();
        let (table, change) = row_change(change).unwrap();
        assert_eq!(table, "public.t");
        assert_eq!(
            change,
            RowChange::Update {
                key: pairs(&[("id", Some("1"))]),
                set: pairs(&[("name", Some("y"))]),
            }
        );
        let only_toast: Change = serde_json::from_str(
            r#"{"op":"update","table":"public.t","key":{"id":"1"},"new":{"id":"1","big":null},"unchanged":["big"]}"#,
        )
        .unwrap();
        assert_eq!(row_change(only_toast), None, "nothing to write");
    }

    #[test]
    fn copy_text_escapes_what_copy_reads_specially() {
        let rows = vec![vec![
            Some("a\tb\\c\nd\re".to_string()),
            None,
            Some(String::new()),
        ]];
        assert_eq!(copy_text(&rows), "a\\tb\\\\c\\nd\\re\t\\N\t\n");
    }

    #[test]
    fn update_and_delete_statements_join_typed_values_by_key() {
        let types: Types = [
            ("id", "integer"),
            ("name", "text"),
            ("Odd Col", "numeric(10,2)"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let update = Batch::Update {
            key: vec!["id".into()],
            set: vec!["name".into(), "Odd Col".into()],
            rows: vec![
                (vec![Some("1".into())], vec![Some("it's".into()), None]),
                (
                    vec![Some("2".into())],
                    vec![Some("b".into()), Some("1.50".into())],
                ),
            ],
        };
        assert_eq!(
            statement("public.t", &types, &update).unwrap(),
            "UPDATE ONLY public.t AS t SET name = v.s0::text, \"Odd Col\" = v.s1::numeric(10,2) \
             FROM (VALUES ('1', 'it''s', NULL), ('2', 'b', '1.50')) AS v(k0, s0, s1) WHERE t.id = v.k0::integer"
        );
        let delete = Batch::Delete {
            key: vec!["id".into(), "name".into()],
            rows: vec![vec![Some("1".into()), None]],
        };
        assert_eq!(
            statement("public.t", &types, &delete).unwrap(),
            "DELETE FROM ONLY public.t AS t USING (VALUES ('1', NULL)) AS v(k0, k1) \
             WHERE t.id = v.k0::integer AND t.name IS NOT DISTINCT FROM v.k1::text"
        );
        let unknown = Batch::Delete {
            key: vec!["gone".into()],
            rows: vec![vec![Some("1".into())]],
        };
        let e = statement("public.t", &types, &unknown)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column gone of public.t") && e.contains("new full backup"),
            "{e}"
        );
    }
}
