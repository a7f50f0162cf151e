//! Incremental backups and replay (#15) on the Kitchen Pantry dataset, on a throwaway
//! PostgreSQL (`wal_level = logical`).
//!
//! `cargo bench --bench incremental -- [--scale S] [--rounds N] [--jobs N] [--out FILE |
//! --no-out] [--only TEXT]`. Each round, in a fresh repository with `[incremental] enabled`:
//! a first full backup; 1 % of the rows changed (updates, inserts and deletes in
//! `interactions`, updates in `contacts` and `orders`, in transactions of about 1,000 rows)
//! and an incremental of them; five more incrementals of 0.2 % each; a restore of the base
//! plus the 6 incrementals into a new database; a full backup of that end state (it reuses
//! the tables no change touched) and its restore; one table changed (`pantry_items`) and a
//! full after it. Targets (issue #15): the 1 % incremental ≤ 0.05 × the first full's wall
//! time, its stored bytes ≤ 3 × the COPY text of the rows it changed (deleted rows counted
//! whole), the chain's restore ≤ 1.3 × the end state's full restore, the full after one
//! table changed ≤ 0.3 × the first full, peak RSS ≤ 256 MiB; replay throughput (changes per
//! second of the replay step) is reported beside them. Timing, the server's CPU, the tables
//! and the report are the shared harness (`harness/mod.rs`).

#[path = "harness/mod.rs"]
mod harness;

use futures_util::StreamExt;
use harness::dataset::Dataset;
use harness::{
    BACKUP_CLI, Check, Failure, Options, Ratio, Results, Sample, Server, checks_table,
    contenders_table, machine, median, peak_rss_mib, print_sample, size_of, spread, wall_vs,
    write_report,
};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

fn main() {
    harness::main("incremental", run);
}

const FULL: &str = "full backup (first)";
const INCREMENTAL: &str = "incremental, 1 % of rows changed";
const SMALL: &str = "incremental, 0.2 % of rows changed (5 of them)";
const CHAIN_RESTORE: &str = "restore base + 6 incrementals";
const END_FULL: &str = "full backup of the end state (reuse)";
const FULL_RESTORE: &str = "restore of that full";
const ONE_TABLE: &str = "full backup after one table changed";

/// A change workload's rows per table, from a fraction of the database's rows.
struct Workload {
    interactions_updated: i64,
    interactions_inserted: i64,
    interactions_deleted: i64,
    contacts_updated: i64,
    orders_updated: i64,
}

impl Workload {
    fn of(rows: i64, fraction: f64) -> Workload {
        let n = |share: f64| ((rows as f64 * fraction * share).round() as i64).max(1);
        Workload {
            interactions_updated: n(0.30),
            interactions_inserted: n(0.18),
            interactions_deleted: n(0.12),
            contacts_updated: n(0.20),
            orders_updated: n(0.20),
        }
    }

    fn rows(&self) -> i64 {
        self.interactions_updated
            + self.interactions_inserted
            + self.interactions_deleted
            + self.contacts_updated
            + self.orders_updated
    }
}

/// Bytes of `COPY (query) TO STDOUT` in text format.
async fn copy_text(client: &tokio_postgres::Client, query: &str) -> Result<u64, Failure> {
    let stream = client
        .copy_out(&format!("COPY ({query}) TO STDOUT"))
        .await?;
    let mut stream = std::pin::pin!(stream);
    let mut bytes = 0;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok(bytes)
}

/// Applies a workload in transactions of about 1,000 rows; `phase` picks other rows each
/// time. Returns the COPY text size of the rows it changed (inserted and updated rows as
/// they are after it, deleted ones as they were before).
fn apply(server: &Server, db: &str, w: &Workload, phase: i64) -> Result<u64, Failure> {
    server.rt.block_on(async {
        let client = server.admin.connect_to(db).await?;
        let count = |table: &'static str| {
            let client = &client;
            async move {
                let n: i64 = client
                    .query_one(&format!("SELECT max(id) FROM {table}"), &[])
                    .await?
                    .get(0);
                Ok::<i64, Failure>(n)
            }
        };
        let (interactions, contacts, orders) =
            (count("interactions").await?, count("contacts").await?, count("orders").await?);
        // Rows `id % step = phase` (spread over the table), in id ranges of ~1,000 of them.
        let spread_over = |table: &str, max: i64, wanted: i64, offset: i64| {
            let step = (max / wanted).max(2);
            let rem = (phase + offset) % step;
            let per_batch = 1000 * step;
            let selections: Vec<String> = (0..=max / per_batch)
                .map(|b| {
                    format!(
                        "{table}.id % {step} = {rem} AND {table}.id > {} AND {table}.id <= {}",
                        b * per_batch,
                        (b + 1) * per_batch
                    )
                })
                .collect();
            (format!("{table}.id % {step} = {rem}"), selections)
        };
        let (deleted, delete_batches) =
            spread_over("interactions", interactions, w.interactions_deleted, 7);
        let (updated, update_batches) =
            spread_over("interactions", interactions, w.interactions_updated, 3);
        let (contacts_sel, contact_batches) =
            spread_over("contacts", contacts, w.contacts_updated, 5);
        let (orders_sel, order_batches) = spread_over("orders", orders, w.orders_updated, 1);
        let mut text = copy_text(
            &client,
            &format!("SELECT * FROM interactions WHERE {deleted}"),
        )
        .await?;
        for s in &delete_batches {
            client
                .batch_execute(&format!("DELETE FROM interactions WHERE {s}"))
                .await?;
        }
        for s in &update_batches {
            client
                .batch_execute(&format!(
                    "UPDATE interactions SET summary = summary || ' (edited)', \
                     details = coalesce(details, '{{}}') || '{{\"edited\": true}}' WHERE {s} AND NOT ({deleted})"
                ))
                .await?;
        }
        for start in (0..w.interactions_inserted).step_by(1000) {
            let end = (start + 1000).min(w.interactions_inserted);
            client
                .batch_execute(&format!(
                    "INSERT INTO interactions (contact_id, user_id, kind, occurred_at, summary, details) \
                     SELECT 1 + (g * 7919) % {contacts}, NULL, 'note', now(), \
                            'follow-up ' || md5(g::text) || ' ' || md5((g * 3)::text), \
                            jsonb_build_object('ticket', md5((g + {phase})::text)) \
                     FROM generate_series({start}, {end} - 1) g"
                ))
                .await?;
        }
        for s in &contact_batches {
            client
                .batch_execute(&format!(
                    "UPDATE contacts SET notes = coalesce(notes, '') || ' called back', updated_at = now() WHERE {s}"
                ))
                .await?;
        }
        for s in &order_batches {
            client
                .batch_execute(&format!(
                    "UPDATE orders SET status = 'shipped' WHERE {s}"
                ))
                .await?;
        }
        text += copy_text(
            &client,
            &format!("SELECT * FROM interactions WHERE ({updated}) OR id > {interactions}"),
        )
        .await?;
        text += copy_text(&client, &format!("SELECT * FROM contacts WHERE {contacts_sel}")).await?;
        text += copy_text(&client, &format!("SELECT * FROM orders WHERE {orders_sel}")).await?;
        Ok(text)
    })
}

/// The report of a `--json` run written to `path`: the envelope's one key beside status,
/// kind and error.
fn report_in(path: &Path) -> Result<serde_json::Value, Failure> {
    let envelope: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(envelope
        .as_object()
        .into_iter()
        .flatten()
        .find(|(key, _)| !["status", "kind", "error"].contains(&key.as_str()))
        .map(|(_, value)| value.clone())
        .unwrap_or_default())
}

/// The id of the backup a `backup create --json` run wrote to `path`.
fn created(path: &Path) -> Result<String, Failure> {
    let report = report_in(path)?;
    report["backup"]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no backup id in {report}").into())
}

/// What a restore's `--json` report says of its replay: changes replayed and the replay
/// step's seconds.
fn replayed(path: &Path) -> Result<(f64, f64), Failure> {
    let report = report_in(path)?;
    let changes = report["replayed"]["changes"].as_f64().unwrap_or(0.0);
    let seconds = report["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "replay"))
        .and_then(|s| s["seconds"].as_f64())
        .unwrap_or(f64::NAN);
    Ok((changes, seconds))
}

/// One round's figures beside the timed samples.
struct Round {
    /// Bytes the 1 % incremental added to the repository over the COPY text of its rows.
    stored_over_text: f64,
    stored: u64,
    text: u64,
    changed_rows: i64,
    /// Changes replayed and the replay step's seconds, of the chain's restore.
    replay: (f64, f64),
}

fn run() -> Result<(), Failure> {
    let opts = Options::parse(|_, _| Ok(false))?;
    let dataset = Dataset::Pantry;
    let db = dataset.database();
    let work = tempfile::Builder::new()
        .prefix("larder-bench-incremental-")
        .tempdir()?;
    let w = work.path().display().to_string();
    let server = Server::start()?;
    println!("==> generating Kitchen Pantry at scale {}", opts.scale);
    let started = Instant::now();
    let db_bytes = dataset.create(&server, opts.scale)?;
    println!(
        "    {:.2} GB on disk, generated in {:.0} s",
        db_bytes as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    let rows: i64 = server.rt.block_on(async {
        let client = server.admin.connect_to(db).await?;
        let n: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM organizations) + (SELECT count(*) FROM users) \
                 + (SELECT count(*) FROM contacts) + (SELECT count(*) FROM interactions) \
                 + (SELECT count(*) FROM pantry_items) + (SELECT count(*) FROM orders) \
                 + (SELECT count(*) FROM order_items)",
                &[],
            )
            .await?
            .get(0);
        Ok::<i64, Failure>(n)
    })?;
    println!("    {rows} rows");
    std::fs::write(
        work.path().join("backup-cli.toml"),
        format!("[repository]\npath = \"{w}/repo\"\n\n[incremental]\nenabled = true\n"),
    )?;
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", server.cluster.url(db)),
        ("BACKUP_CLI_CONFIG", format!("{w}/backup-cli.toml")),
    ];
    let jobs = opts.jobs;
    let psql = server.psql();
    let restore = |id: &str, dest: &str, report: &str| {
        format!(
            "{psql} -d postgres -c 'DROP DATABASE IF EXISTS {dest}' && {BACKUP_CLI} --json recovery execute {id} -s new-database --dest-db {dest} --jobs {jobs} --yes > {w}/{report}"
        )
    };
    let mut results = Results::new();
    let mut rounds = Vec::new();
    let big = Workload::of(rows, 0.01);
    let small = Workload::of(rows, 0.002);
    let mut phase = 0;
    for round in 1..=opts.rounds {
        println!("==> round {round}");
        std::fs::remove_dir_all(work.path().join("repo")).ok();
        let mut record = |name: &str, sample: Sample| {
            print_sample(name, &sample);
            results.entry(name.to_string()).or_default().push(sample);
        };
        let backup = format!("{BACKUP_CLI} --json backup create --jobs {jobs} > {w}/created.json");
        let created_id = || created(&work.path().join("created.json"));
        record(FULL, server.measure(&backup, &env, "true", None)?);
        phase += 1;
        let text = apply(&server, db, &big, phase)?;
        let before = size_of(&work.path().join("repo"));
        let incremental =
            format!("{BACKUP_CLI} --json backup create --type incremental > {w}/created.json");
        record(
            INCREMENTAL,
            server.measure(&incremental, &env, "true", None)?,
        );
        let stored = size_of(&work.path().join("repo")) - before;
        for _ in 0..5 {
            phase += 1;
            apply(&server, db, &small, phase)?;
            record(SMALL, server.measure(&incremental, &env, "true", None)?);
        }
        let chain = created_id()?;
        record(
            CHAIN_RESTORE,
            server.measure(
                &restore(&chain, "chain_restored", "chain.json"),
                &env,
                "true",
                None,
            )?,
        );
        let replay = replayed(&work.path().join("chain.json"))?;
        record(END_FULL, server.measure(&backup, &env, "true", None)?);
        let end = created_id()?;
        record(
            FULL_RESTORE,
            server.measure(
                &restore(&end, "full_restored", "full.json"),
                &env,
                "true",
                None,
            )?,
        );
        server.execute(
            db,
            "UPDATE pantry_items SET quantity = quantity + 1 WHERE id % 50 = 0",
        )?;
        record(ONE_TABLE, server.measure(&backup, &env, "true", None)?);
        for dest in ["chain_restored", "full_restored"] {
            server.execute("postgres", &format!("DROP DATABASE IF EXISTS {dest}"))?;
        }
        println!(
            "    1 % incremental: {stored} bytes stored for {text} bytes of COPY text ({} rows); replay {:.0} changes in {:.2} s",
            big.rows(),
            replay.0,
            replay.1
        );
        rounds.push(Round {
            stored_over_text: stored as f64 / text as f64,
            stored,
            text,
            changed_rows: big.rows(),
            replay,
        });
    }
    report(&opts, db_bytes, rows, &results, &rounds)
}

fn report(
    opts: &Options,
    db_bytes: u64,
    rows: i64,
    results: &Results,
    rounds: &[Round],
) -> Result<(), Failure> {
    let all = [
        FULL,
        INCREMENTAL,
        SMALL,
        CHAIN_RESTORE,
        END_FULL,
        FULL_RESTORE,
        ONE_TABLE,
    ];
    let peak = peak_rss_mib(results, &all);
    let checks = [
        Check::new(
            "incremental (1 % of rows) / first full, wall",
            wall_vs(results, INCREMENTAL, FULL),
            0.05,
        ),
        Check::new(
            "incremental's stored bytes / COPY text of the rows it changed",
            Ratio {
                of_rounds: spread(rounds.iter().map(|r| r.stored_over_text).collect()),
                cpu_bound: f64::NAN,
            },
            3.0,
        ),
        Check::new(
            "restore base + 6 incrementals / restore of a full of the same end state, wall",
            wall_vs(results, CHAIN_RESTORE, FULL_RESTORE),
            1.3,
        ),
        Check::new(
            "full after one table changed / first full, wall",
            wall_vs(results, ONE_TABLE, FULL),
            0.3,
        ),
    ];
    let mut notes = String::new();
    for (n, r) in rounds.iter().enumerate() {
        let _ = writeln!(
            notes,
            "- round {}: the 1 % incremental changed {} rows, {:.1} MB of COPY text, and added {:.2} MB to the repository; the chain's replay applied {:.0} changes in {:.2} s ({:.0} changes/s)",
            n + 1,
            r.changed_rows,
            r.text as f64 / 1e6,
            r.stored as f64 / 1e6,
            r.replay.0,
            r.replay.1,
            r.replay.0 / r.replay.1
        );
    }
    let (full_wall, _, _) = median(results.get(FULL).map_or(&[][..], Vec::as_slice), |s| s.wall);
    let text = format!(
        "## Incremental backups and replay — run of {}, Kitchen Pantry scale {}, {:.2} GB, {rows} rows, {} rounds, --jobs {}\n\n\
         Command: `cargo bench --bench incremental -- --scale {} --rounds {} --jobs {}` (not niced; builds niced).\n\n{}\n\n\
         Each round: a first full ({full_wall:.2} s median), 1 % of the rows changed (updates, inserts and deletes of `interactions`, updates of `contacts` and `orders`, ~1,000 rows a transaction) and an incremental; five incrementals of 0.2 % each; the chain (base + 6) restored into a new database; a full of that end state (reusing the untouched tables) and its restore; `pantry_items` changed and a full.\n\n{}\n{}\nPeak RSS of every run: {peak} MiB (target ≤ 256: {}).\n\n{notes}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        opts.scale,
        db_bytes as f64 / 1e9,
        opts.rounds,
        opts.jobs,
        opts.scale,
        opts.rounds,
        opts.jobs,
        machine()?,
        contenders_table(results),
        checks_table(&checks),
        if peak <= 256 { "met" } else { "**not met**" },
    );
    write_report(opts, &text)
}
