//! What encryption at rest costs: the same backup and restore of Kitchen Pantry in a plain and
//! in an encrypted repository (`[repository] encryption`, unlocked by passphrase), side by side
//! on one throwaway PostgreSQL.
//!
//! `cargo bench --bench encryption -- [--scale S] [--rounds N] [--jobs N] [--out FILE |
//! --no-out] [--only TEXT]`. Every round runs the plain and the encrypted backup back to back,
//! then the two restores, the order swapped every other round; before each backup every
//! table is read once, untimed (a restore just evicted the source from the page cache, which
//! would otherwise cost whichever backup runs first), and every backup writes into a fresh
//! repository. The report gives wall, CPU
//! (client and server), peak RSS and the ratios against the targets of issue #18: an encrypted
//! backup ≤ 1.10 × the unencrypted one's wall time, an encrypted restore ≤ 1.05 ×, peak memory
//! unchanged. The timing and the report are the shared harness in `harness/mod.rs`.

#[path = "harness/mod.rs"]
mod harness;

use harness::dataset::Dataset;
use harness::{
    BACKUP_CLI, Check, Failure, Failures, Options, Results, Server, checks_table, contenders_table,
    cpu_vs, failures_list, machine, print_sample, record_failure, rss_vs, timed, wall_vs,
    write_report,
};
use std::path::Path;
use std::time::Instant;

fn main() {
    harness::main("encryption", run);
}

const BACKUP_PLAIN: &str = "backup create (plain)";
const BACKUP_SEALED: &str = "backup create (encrypted)";
const RESTORE_PLAIN: &str = "recovery execute -s new-database (plain)";
const RESTORE_SEALED: &str = "recovery execute -s new-database (encrypted)";

/// One timed command, what runs untimed before it, and the repository it writes (measured
/// for the bytes column).
struct Contender {
    name: &'static str,
    before: Option<String>,
    script: String,
    output: Option<String>,
}

/// `COPY … TO STDOUT` of every table of `db`: read once to warm the page cache.
fn warm_script(server: &Server, db: &str) -> Result<String, Failure> {
    server.rt.block_on(async {
        let client = server.admin.connect_to(db).await?;
        let rows = client
            .query(
                "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| format!("COPY {} TO STDOUT;\n", r.get::<_, String>(0)))
            .collect())
    })
}

fn run() -> Result<(), Failure> {
    let opts = Options::parse(|_, _| Ok(false))?;
    let dataset = Dataset::Pantry;
    let db = dataset.database();
    let work = tempfile::Builder::new()
        .prefix("larder-bench-encryption-")
        .tempdir()?;
    let w = work.path().display().to_string();
    let server = Server::start()?;
    println!(
        "==> generating {} at scale {}",
        dataset.describe(),
        opts.scale
    );
    let started = Instant::now();
    let db_bytes = dataset.create(&server, opts.scale)?;
    println!(
        "    {:.2} GB on disk, generated in {:.0} s",
        db_bytes as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    // Two repositories that differ only in `encryption`; the passphrase is given to both
    // (the plain one ignores it).
    for (name, extra) in [("plain", ""), ("sealed", "encryption = true\n")] {
        std::fs::write(
            work.path().join(format!("{name}.toml")),
            format!("[repository]\npath = \"{w}/repo-{name}\"\n{extra}"),
        )?;
    }
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", server.cluster.url(db)),
        ("BACKUP_CLI_PASSPHRASE", "bench-passphrase".into()),
    ];
    std::fs::write(work.path().join("warm.sql"), warm_script(&server, db)?)?;
    let warm = format!("{} -d {db} -f {w}/warm.sql > /dev/null", server.psql());
    let cli =
        |repo: &str| format!("env -u BACKUP_CLI_REPO {BACKUP_CLI} -q --config {w}/{repo}.toml");
    let psql = server.psql();
    let jobs = opts.jobs;
    let backup = |name, repo: &str| Contender {
        name,
        before: Some(warm.clone()),
        script: format!(
            "rm -rf {w}/repo-{repo} && {} backup create --jobs {jobs}",
            cli(repo)
        ),
        output: Some(format!("{w}/repo-{repo}")),
    };
    let restore = |name, repo: &str| Contender {
        name,
        before: None,
        script: format!(
            "{psql} -d postgres -c 'DROP DATABASE IF EXISTS restored' && {} recovery execute latest -s new-database --dest-db restored --jobs {jobs} --yes",
            cli(repo)
        ),
        output: None,
    };
    let backups = [
        backup(BACKUP_PLAIN, "plain"),
        backup(BACKUP_SEALED, "sealed"),
    ];
    let restores = [
        restore(RESTORE_PLAIN, "plain"),
        restore(RESTORE_SEALED, "sealed"),
    ];
    // Untimed after every contender: the restored database goes (autovacuum on it would
    // run into the next contender's time) and a checkpoint writes out what was left dirty.
    let settle = format!("{psql} -d postgres -c 'DROP DATABASE IF EXISTS restored' -c CHECKPOINT");
    let mut results = Results::new();
    let mut failures = Failures::new();
    for round in 1..=opts.rounds {
        let swapped = round % 2 == 0;
        println!(
            "==> round {round}/{}{}",
            opts.rounds,
            if swapped { " (encrypted first)" } else { "" }
        );
        for pair in [&backups, &restores] {
            let order: Vec<&Contender> = if swapped {
                pair.iter().rev().collect()
            } else {
                pair.iter().collect()
            };
            for c in order.into_iter().filter(|c| opts.wants(c.name)) {
                let measured = c
                    .before
                    .as_deref()
                    .map_or(Ok(Default::default()), |before| timed(before, &env))
                    .and_then(|_| {
                        server.measure(&c.script, &env, &settle, c.output.as_deref().map(Path::new))
                    });
                match measured {
                    Ok(sample) => {
                        print_sample(c.name, &sample);
                        results.entry(c.name.to_string()).or_default().push(sample);
                    }
                    Err(e) => {
                        record_failure(&mut failures, c.name, &e);
                        timed(&settle, &env)?;
                    }
                }
            }
        }
    }
    drop(server);
    report(&opts, db_bytes, &results, &failures)
}

fn report(
    opts: &Options,
    db_bytes: u64,
    results: &Results,
    failures: &Failures,
) -> Result<(), Failure> {
    let checks = [
        Check::new(
            "encrypted backup wall ≤ 1.10 × unencrypted",
            wall_vs(results, BACKUP_SEALED, BACKUP_PLAIN),
            1.10,
        ),
        Check::new(
            "encrypted restore wall ≤ 1.05 × unencrypted",
            wall_vs(results, RESTORE_SEALED, RESTORE_PLAIN),
            1.05,
        ),
        Check::new(
            "encrypted backup, client + server CPU s ≤ 1.10 × unencrypted",
            cpu_vs(results, BACKUP_SEALED, BACKUP_PLAIN),
            1.10,
        ),
        Check::new(
            "encrypted restore, client + server CPU s ≤ 1.05 × unencrypted",
            cpu_vs(results, RESTORE_SEALED, RESTORE_PLAIN),
            1.05,
        ),
        Check::new(
            "encrypted backup peak RSS (median) ≤ 1.10 × unencrypted",
            rss_vs(results, BACKUP_SEALED, BACKUP_PLAIN),
            1.10,
        ),
        Check::new(
            "encrypted restore peak RSS (median) ≤ 1.10 × unencrypted",
            rss_vs(results, RESTORE_SEALED, RESTORE_PLAIN),
            1.10,
        ),
    ];
    let text = format!(
        "## Encryption at rest, side by side — run of {}: Kitchen Pantry, scale {}, {:.2} GB database, {} rounds, --jobs {}\n\n{}\n\n{}\n{}{}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        opts.scale,
        db_bytes as f64 / 1e9,
        opts.rounds,
        opts.jobs,
        machine()?,
        contenders_table(results),
        checks_table(&checks),
        if failures.is_empty() {
            String::new()
        } else {
            format!("\nFailed:\n\n{}", failures_list(failures, opts.rounds))
        }
    );
    write_report(opts, &text)
}
