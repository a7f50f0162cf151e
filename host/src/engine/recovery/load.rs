//! The load step: each stored range of a table sent with `COPY … FROM STDIN` (each chunk
//! checked as it is read), in parallel over `--jobs` sessions into a new database or in
//! foreign-key order into an existing one, and the large objects' data.

use super::job::Job;
use crate::engine::Progress;
use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::pg::catalog;
use crate::repository::Repository;
use crate::repository::manifest::{Manifest, Stream, TableEntry};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use indicatif::ProgressBar;
use std::collections::{HashMap, HashSet, VecDeque};
use tokio_postgres::Client;

/// Loads every stored range of the selected tables into a new database over `--jobs`
/// sessions, largest first and interleaved by table; the rows each table received. The tables
/// in `freeze` are loaded frozen (see [`range`]).
pub(super) async fn in_parallel(
    job: &Job,
    destination: &ConnectionSettings,
    freeze: &HashSet<usize>,
) -> Result<HashMap<usize, u64>> {
    let parts: Vec<(usize, usize, u64)> = job
        .plan
        .selected
        .iter()
        .flat_map(|&t| {
            job.manifest.tables[t]
                .parts
                .iter()
                .enumerate()
                // Windows on shared chunks (small tables) go last, in the order they were
                // stored, so each shared chunk is read once for all of its windows.
                .map(move |(p, s)| (t, p, if s.is_window() { 0 } else { s.bytes }))
        })
        .collect();
    let parts = interleave_by_table(parts);
    let overall = job.overall();
    let worker = job.clone();
    let bar = overall.clone();
    let freeze = std::sync::Arc::new(freeze.clone());
    let loaded = job
        .in_parallel(destination, parts, move |client, (t, p, _)| {
            let (job, overall, freeze) = (worker.clone(), bar.clone(), freeze.clone());
            async move {
                let rows = range(&job, &client, t, p, freeze.contains(&t), &overall).await?;
                Ok((t, rows))
            }
        })
        .await?;
    let mut rows_loaded: HashMap<usize, u64> = HashMap::new();
    for (t, rows) in loaded {
        *rows_loaded.entry(t).or_default() += rows;
    }
    overall.finish_and_clear();
    Ok(rows_loaded)
}

/// Loads stored range `p` of table `t` into the table itself; the rows it sent.
///
/// `freeze` (a table the new-database restore created and stores in this one range): the
/// table is emptied with `TRUNCATE ONLY` and loaded with `COPY … FREEZE` in one transaction,
/// which FREEZE requires, so its rows are frozen and its pages all-visible as they are
/// written: no vacuum is needed for index-only scans, and no later pass sets hint bits. A
/// role that may load the table but not truncate it (the source revoked TRUNCATE from the
/// owner) loads it as any other.
pub(super) async fn range(
    job: &Job,
    client: &Client,
    t: usize,
    p: usize,
    freeze: bool,
    overall: &ProgressBar,
) -> Result<u64> {
    let table = &job.manifest.tables[t];
    let part = &table.parts[p];
    let into = table.qualified();
    let item = job.progress.item(&into, part.bytes);
    let freeze = freeze && emptied_for_freeze(client, &into).await?;
    let rows = load_part(
        client,
        &job.repo,
        &job.manifest.id,
        table,
        part,
        &copy_in_sql(&into, &table.columns, freeze),
        &item,
    )
    .await?;
    if freeze {
        client
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db(format!("loading {}", table.display_name())))?;
    }
    Progress::advance(overall, part.bytes);
    item.finish_and_clear();
    Ok(rows)
}

/// Opens the transaction a frozen load of `into` runs in and empties the table in it; false
/// (and no transaction) when the role may not truncate it.
async fn emptied_for_freeze(client: &Client, into: &str) -> Result<bool> {
    match client
        .batch_execute(&format!("BEGIN; TRUNCATE ONLY {into}"))
        .await
    {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::debug!("{into} is loaded without FREEZE: {e}");
            client
                .batch_execute("ROLLBACK")
                .await
                .map_err(Error::db(format!("loading {into}")))?;
            Ok(false)
        }
    }
}

/// Loads every stored range of table `t` into `into` on one connection.
pub(super) async fn table(
    job: &Job,
    client: &Client,
    t: usize,
    into: &str,
    overall: &ProgressBar,
) -> Result<()> {
    let table = &job.manifest.tables[t];
    let item = job.progress.item(&table.qualified(), table.logical_bytes);
    for part in &table.parts {
        load_part(
            client,
            &job.repo,
            &job.manifest.id,
            table,
            part,
            &copy_in_sql(into, &table.columns, false),
            &item,
        )
        .await?;
    }
    Progress::advance(overall, table.logical_bytes);
    item.finish_and_clear();
    Ok(())
}

/// Loads the tables, in `order`, into themselves on one connection.
pub(super) async fn in_order(job: &Job, client: &Client, order: &[usize]) -> Result<()> {
    let overall = job.overall();
    for &t in order {
        table(
            job,
            client,
            t,
            &job.manifest.tables[t].qualified(),
            &overall,
        )
        .await?;
    }
    overall.finish_and_clear();
    Ok(())
}

/// Writes the large objects' data into the objects pre-data created.
pub(super) async fn large_objects(job: &Job, client: &Client) -> Result<()> {
    let Some(lo) = &job.manifest.large_objects else {
        return Ok(());
    };
    let [create, copy, write] = catalog::LARGE_OBJECT_LOAD;
    client
        .batch_execute(create)
        .await
        .map_err(Error::db("preparing to load large objects"))?;
    let bar = job.progress.item("large objects", lo.data.bytes);
    copy_stream(
        client,
        &job.repo,
        copy,
        &lo.data,
        &format!("large objects, backup {}", job.manifest.id),
        "loading large objects",
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    client
        .batch_execute(write)
        .await
        .map_err(Error::db("writing large objects"))
}

/// `COPY into (columns) FROM STDIN`, `WITH (FREEZE)` when `freeze`.
fn copy_in_sql(into: &str, columns: &[String], freeze: bool) -> String {
    let columns = if columns.is_empty() {
        String::new()
    } else {
        format!(" ({})", columns.join(", "))
    };
    let options = if freeze { " WITH (FREEZE)" } else { "" };
    format!("COPY {into}{columns} FROM STDIN{options}")
}

/// Streams one stored range of a table to `copy_in` (its [`copy_in_sql`]), reading a chunk
/// ahead.
async fn load_part(
    client: &Client,
    repo: &Repository,
    backup_id: &str,
    table: &TableEntry,
    part: &Stream,
    copy_in: &str,
    bar: &ProgressBar,
) -> Result<u64> {
    copy_stream(
        client,
        repo,
        copy_in,
        part,
        &format!("table {}, backup {backup_id}", table.display_name()),
        &format!("loading {}", table.display_name()),
        bar,
    )
    .await
}

/// Sends a stored stream to `copy_in` (`COPY … FROM STDIN`), reading a chunk ahead.
/// `context` names the stream in chunk errors, `loading` the step in server errors.
async fn copy_stream(
    client: &Client,
    repo: &Repository,
    copy_in: &str,
    stream: &Stream,
    context: &str,
    loading: &str,
    bar: &ProgressBar,
) -> Result<u64> {
    let (pieces, window): (Vec<_>, _) = (
        stream.pieces().map(|(c, r)| (c.clone(), r)).collect(),
        stream.is_window(),
    );
    let mut chunks = futures_util::stream::iter(pieces)
        .map(|(chunk, range)| {
            let (repo, context) = (repo.clone(), context.to_string());
            async move { repo.read_piece((&chunk, range), window, &context).await }
        })
        .buffered(2);
    // The first chunks are read while the server opens the COPY.
    let (sink, mut next) = futures_util::join!(client.copy_in::<_, Bytes>(copy_in), chunks.next());
    let sink = sink.map_err(Error::db(loading.to_string()))?;
    let mut sink = std::pin::pin!(sink);
    while let Some(data) = next {
        let data = data?;
        let len = data.len() as u64;
        sink.send(data)
            .await
            .map_err(Error::db(loading.to_string()))?;
        Progress::advance(bar, len);
        next = chunks.next().await;
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(Error::db(loading.to_string()))
}

/// Orders COPY work so concurrent workers load different tables: one range of each table in
/// turn, biggest tables first. Two sessions appending to the same heap queue on its
/// relation-extension lock, so spreading the ranges keeps both busy.
pub(super) fn interleave_by_table(mut parts: Vec<(usize, usize, u64)>) -> Vec<(usize, usize, u64)> {
    let mut sizes: HashMap<usize, u64> = HashMap::new();
    for &(t, _, bytes) in &parts {
        *sizes.entry(t).or_default() += bytes;
    }
    parts.sort_by_key(|&(t, p, _)| (std::cmp::Reverse(sizes[&t]), t, p));
    let mut queues: Vec<VecDeque<(usize, usize, u64)>> = Vec::new();
    for part in parts {
        match queues
            .iter_mut()
            .find(|q| q.front().is_some_and(|f| f.0 == part.0))
        {
            Some(queue) => queue.push_back(part),
            None => queues.push(VecDeque::from([part])),
        }
    }
    let mut out = Vec::new();
    while queues.iter().any(|q| !q.is_empty()) {
        for queue in &mut queues {
            if let Some(part) = queue.pop_front() {
                out.push(part);
            }
        }
    }
    out
}

/// Tables ordered so that referenced tables come before the tables referencing them.
pub(super) fn parents_first(manifest: &Manifest, selected: &[usize]) -> Vec<usize> {
    let chosen: HashSet<usize> = selected.iter().copied().collect();
    let index: HashMap<String, usize> = selected
        .iter()
        .map(|&i| (manifest.tables[i].display_name(), i))
        .collect();
    let deps: Vec<(usize, usize)> = manifest
        .foreign_keys
        .iter()
        .filter_map(|fk| Some((*index.get(&fk.table)?, *index.get(&fk.references)?)))
        .filter(|(c, p)| c != p)
        .collect();
    let mut order = Vec::new();
    let mut placed = HashSet::new();
    while placed.len() < chosen.len() {
        let before = placed.len();
        for &i in selected {
            if !placed.contains(&i) && deps.iter().all(|&(c, p)| c != i || placed.contains(&p)) {
                placed.insert(i);
                order.push(i);
            }
        }
        if placed.len() == before {
            // A cycle: place the rest as they come (triggers are off or checked afterwards).
            for &i in selected {
                if placed.insert(i) {
                    order.push(i);
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::manifest::{ForeignKey, sample_manifest};

    fn manifest(tables: &[&str], keys: &[(&str, &str)]) -> Manifest {
        let mut m = sample_manifest("20260101-000000-000");
        m.tables = tables
            .iter()
            .map(|name| TableEntry {
                schema: "public".into(),
                name: name.to_string(),
                columns: Vec::new(),
                column_types: Vec::new(),
                partition_of: None,
                filter: None,
                rows: 0,
                logical_bytes: 0,
                checksum: String::new(),
                parts: Vec::new(),
                tracked: None,
            })
            .collect();
        m.foreign_keys = keys
            .iter()
            .map(|(table, references)| ForeignKey {
                name: format!("{table}_fk"),
                table: format!("public.{table}"),
                references: format!("public.{references}"),
            })
            .collect();
        m
    }

    fn names(m: &Manifest, order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| m.tables[i].name.clone()).collect()
    }

    #[test]
    fn parents_first_puts_referenced_tables_before_their_referencing_ones() {
        // order_lines → orders → customers, order_lines → products; listed children first.
        let m = manifest(
            &["order_lines", "orders", "customers", "products"],
            &[
                ("order_lines", "orders"),
                ("orders", "customers"),
                ("order_lines", "products"),
            ],
        );
        let order = names(&m, &parents_first(&m, &[0, 1, 2, 3]));
        let at = |n: &str| order.iter().position(|o| o == n).unwrap();
        assert!(at("customers") < at("orders"), "{order:?}");
        assert!(at("orders") < at("order_lines"), "{order:?}");
        assert!(at("products") < at("order_lines"), "{order:?}");
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn parents_first_ignores_keys_leaving_the_selection_and_self_references() {
        let m = manifest(
            &["employees", "orders", "customers"],
            &[("employees", "employees"), ("orders", "customers")],
        );
        // customers is not selected: orders has no parent to wait for.
        assert_eq!(
            names(&m, &parents_first(&m, &[1, 0])),
            ["orders", "employees"]
        );
    }

    #[test]
    fn parents_first_places_a_cycle_rather_than_losing_tables() {
        let m = manifest(&["a", "b", "c"], &[("a", "b"), ("b", "a"), ("c", "a")]);
        let order = names(&m, &parents_first(&m, &[0, 1, 2]));
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["a", "b", "c"],
            "every table exactly once: {order:?}"
        );
    }

    #[test]
    fn interleave_by_table_takes_one_range_of_each_table_in_turn_biggest_first() {
        // Table 1 (300 bytes in 3 ranges) is bigger than table 0 (200 in 2); table 2 has one.
        let parts = vec![
            (0, 0, 100),
            (0, 1, 100),
            (1, 0, 100),
            (1, 1, 100),
            (1, 2, 100),
            (2, 0, 50),
        ];
        let order: Vec<(usize, usize)> = interleave_by_table(parts)
            .into_iter()
            .map(|(t, p, _)| (t, p))
            .collect();
        assert_eq!(order, [(1, 0), (0, 0), (2, 0), (1, 1), (0, 1), (1, 2)]);
    }

    #[test]
    fn interleave_by_table_keeps_every_range_once() {
        assert!(interleave_by_table(Vec::new()).is_empty());
        let parts: Vec<(usize, usize, u64)> = (0..5)
            .flat_map(|t| (0..t + 1).map(move |p| (t, p, 10)))
            .collect();
        let mut out = interleave_by_table(parts.clone());
        assert_eq!(out.len(), parts.len());
        out.sort();
        assert_eq!(out, parts);
    }
}
