//! Side-by-side benchmark of backup-cli against pg_dump / pg_restore and pgBackRest, on a
//! throwaway PostgreSQL.
//!
//! `cargo bench --bench compare -- [--dataset pantry|dominant|many-tables] [--tables N]
//! [--scale S] [--rounds N] [--jobs N] [--out FILE | --no-out] [--only TEXT]`. The datasets
//! (`harness/dataset.rs`): Kitchen Pantry (the default), the same with one dominant table,
//! and `--tables` small tables (5,000 unless told). `--only` runs just the contenders whose
//! name contains TEXT (or one of its `|`-separated parts), for quick comparisons while
//! optimising; such runs are never written to the report file. With `LARDER_BASELINE_CLI` set
//! to another build of backup-cli (main's, say), its new-database restore runs beside ours in
//! every round, for an A/B of a restore change on one cluster.
//!
//! Every round runs each contender once, in the same order, so machine noise spreads evenly;
//! the report gives medians with min–max and ratios against the peers, and is written with
//! the machine's description into BENCHMARKS.md. The timing (GNU time, the server's CPU from
//! /proc), sizes, summaries and the report are the shared harness in `harness/mod.rs`. A
//! contender that fails is reported as failed and the run goes on (thousands of tables can
//! exhaust a default server's lock table for any tool).

#[path = "harness/mod.rs"]
mod harness;

use harness::dataset::{DEFAULT_TABLES, Dataset};
use harness::{
    BACKUP_CLI, Check, Failure, Failures, Options, Results, Server, bytes_vs, checks_table,
    contenders_table, failures_list, machine, median, peak_rss_mib, print_sample, record_failure,
    size_of, timed, wall_vs, write_report,
};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

fn main() {
    harness::main("compare", run);
}

/// One contender: its timed script, an untimed preparation before it, what it wrote (for
/// the bytes column), and whether it runs on every dataset or only on Kitchen Pantry (the
/// variants of our own backup: plugin target, validator, encryption, `--verify checksums`).
struct Contender {
    name: &'static str,
    script: String,
    before: Option<String>,
    output: Option<String>,
    every_dataset: bool,
}

fn contender(name: &'static str, script: String) -> Contender {
    Contender {
        name,
        script,
        before: None,
        output: None,
        every_dataset: true,
    }
}

impl Contender {
    fn writes(mut self, path: String) -> Contender {
        self.output = Some(path);
        self
    }

    fn prepared_by(mut self, script: String) -> Contender {
        self.before = Some(script);
        self
    }

    fn pantry_only(mut self) -> Contender {
        self.every_dataset = false;
        self
    }
}

/// The COPY floor's two scripts: every table split in two block ranges, one per connection.
fn floor_scripts(server: &Server, db: &str) -> Result<[String; 2], Failure> {
    server.rt.block_on(async {
        let client = server.admin.connect_to(db).await?;
        let rows = client
            .query("SELECT c.oid::regclass::text, pg_relation_size(c.oid) / 8192 FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace", &[])
            .await?;
        let mut halves = [String::new(), String::new()];
        for r in rows {
            let (table, pages): (String, i64) = (r.get(0), r.get(1));
            let mid = pages / 2;
            writeln!(halves[0], "COPY (SELECT * FROM {table} WHERE ctid < '({mid},0)'::tid) TO STDOUT;")?;
            writeln!(halves[1], "COPY (SELECT * FROM {table} WHERE ctid >= '({mid},0)'::tid) TO STDOUT;")?;
        }
        Ok(halves)
    })
}

fn run() -> Result<(), Failure> {
    let mut dataset = "pantry".to_string();
    let mut tables = DEFAULT_TABLES;
    let opts = Options::parse(|flag, value| {
        match flag {
            "--dataset" => dataset = value()?,
            "--tables" => tables = value()?.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let dataset = Dataset::parse(&dataset, tables)?;
    let db = dataset.database();
    let work = tempfile::Builder::new().prefix("larder-bench-").tempdir()?;
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
    for (i, h) in floor_scripts(&server, db)?.iter().enumerate() {
        std::fs::write(work.path().join(format!("floor{i}.sql")), h)?;
    }
    let psql = server.psql();
    let conn = server.conn();
    let pg_dump = server.bin("pg_dump");
    let pg_restore = server.bin("pg_restore");
    // How compressible the data is: the uncompressed custom-format dump's size (untimed);
    // the zstd contender gives the compressed size.
    timed(
        &format!("{pg_dump} {conn} -Fc -Z0 -f {w}/plain.fc {db}"),
        &[],
    )?;
    let dump_bytes = size_of(&work.path().join("plain.fc"));
    std::fs::remove_file(work.path().join("plain.fc"))?;

    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", server.cluster.url(db)),
        ("BACKUP_CLI_REPO", format!("{w}/repo")),
    ];
    let cli = format!("{BACKUP_CLI} -q");
    let jobs = opts.jobs;
    // pgBackRest: a full backup of the whole cluster (the benchmark's database is the only
    // one with data), zst level 3, `--jobs` processes, into a fresh repository every round.
    // The benchmark has no WAL archive, so archive-check is off; start-fast asks for an
    // immediate checkpoint instead of waiting for the next one. It reads the data folder
    // itself, so it runs as the server's OS account.
    let pgbr = server.owned_dir("larder-bench-pgbackrest-")?;
    let b = pgbr.path().display().to_string();
    std::fs::write(
        pgbr.path().join("pgbackrest.conf"),
        format!(
            "[global]\nrepo1-path={b}/repo\nrepo1-retention-full=1\ncompress-type=zst\ncompress-level=3\nprocess-max={jobs}\narchive-check=n\nstart-fast=y\nlog-path={b}/log\nlock-path={b}/lock\nlog-level-console=error\nlog-level-file=off\n\n[bench]\npg1-path={}\npg1-port={}\npg1-socket-path={}\npg1-user=postgres\n",
            server.cluster.data_dir().display(),
            server.cluster.port(),
            server.cluster.socket_dir().display()
        ),
    )?;
    let pgbackrest = format!(
        "{}pgbackrest --config={b}/pgbackrest.conf --stanza=bench",
        server.as_owner()?
    );
    let pantry = dataset == Dataset::Pantry;
    // The same backup through the offsite-dir-target plugin (a WebAssembly component) into a
    // folder on the same disk, to compare with the built-in filesystem target.
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release/offsite_dir_target.wasm");
    if pantry && !plugin.is_file() {
        return Err(format!(
            "{} is missing: run scripts/build-plugins first",
            plugin.display()
        )
        .into());
    }
    std::fs::write(
        work.path().join("plugin.toml"),
        format!(
            "[plugins]\ncache_dir = \"{w}/plugin-cache\"\n\n[[targets]]\nname = \"offsite\"\ntype = \"plugin\"\npath = \"{}\"\nconfig = {{ dir = \"/offsite\" }}\ndirs = [{{ host = \"{w}/offsite\", guest = \"/offsite\", mode = \"read-write\" }}]\n",
            plugin.display()
        ),
    )?;
    std::fs::create_dir_all(work.path().join("offsite"))?;
    // The same backup and restore in an encrypted repository (`[repository] encryption`).
    std::fs::write(
        work.path().join("encrypted.toml"),
        format!("[repository]\npath = \"{w}/repo-sealed\"\nencryption = true\n"),
    )?;
    let sealed = format!(
        "env -u BACKUP_CLI_REPO BACKUP_CLI_PASSPHRASE=bench-passphrase {cli} --config {w}/encrypted.toml"
    );
    // The same backup with `rules-validator` checking every table's rows as they are copied:
    // a key rule (not null, unique) on every table, plus a pattern, a NULL share and a unique
    // business key where the schema has them, and row-count rules everywhere.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release/rules_validator.wasm");
    std::fs::write(
        work.path().join("validator.toml"),
        format!(
            r#"[repository]
path = "{w}/repo-rules"

[plugins]
cache_dir = "{w}/plugin-cache"

[[validators]]
name = "rules"
path = "{}"
config = {{ rules = [
  {{ table = "*", min_rows = 1, max_shrink_percent = 50 }},
  {{ table = "public.organizations", column = "id", not_null = true, unique = true }},
  {{ table = "public.users", column = "id", not_null = true, unique = true }},
  {{ table = "public.users", column = "email", pattern = "^[^@ ]+@[^@ ]+$" }},
  {{ table = "public.contacts", column = "id", not_null = true, unique = true }},
  {{ table = "public.contacts", column = "email", max_null_percent = 50 }},
  {{ table = "public.interactions", column = "id", not_null = true, unique = true }},
  {{ table = "public.pantry_items", column = "sku", not_null = true, unique = true }},
  {{ table = "public.orders", column = "id", not_null = true, unique = true }},
  {{ table = "public.order_items", column = "order_id", not_null = true }},
] }}
"#,
            rules.display()
        ),
    )?;
    // Compile the plugins once, before the clock runs (later runs load them from the cache).
    if pantry {
        for config in ["plugin", "validator"] {
            timed(
                &format!("env -u BACKUP_CLI_REPO {cli} --config {w}/{config}.toml plugin list"),
                &env,
            )?;
        }
    }
    let restore_into = |dest: &str, how: &str| {
        format!(
            "{psql} -d postgres -c 'DROP DATABASE IF EXISTS {dest}' && {how} recovery execute latest -s new-database --dest-db {dest} --jobs {jobs} --yes"
        )
    };
    let mut contenders = vec![
        contender(
            "copy floor (2 connections)",
            format!(
                "{psql} -d {db} -f {w}/floor0.sql > /dev/null & {psql} -d {db} -f {w}/floor1.sql > /dev/null & wait"
            ),
        ),
        contender("pg_dump -Fc", format!("{pg_dump} {conn} -Fc -f {w}/dump.fc {db}"))
            .writes(format!("{w}/dump.fc")),
        contender(
            "pg_dump -Fd -j 2",
            format!("rm -rf {w}/dump.d && {pg_dump} {conn} -Fd -j 2 -f {w}/dump.d {db}"),
        )
        .writes(format!("{w}/dump.d")),
        contender(
            "pg_dump -Fc -Z0 | zstd -3 -T2",
            format!("{pg_dump} {conn} -Fc -Z0 {db} | zstd -q -3 -T2 -o {w}/dump.zst -f"),
        )
        .writes(format!("{w}/dump.zst")),
        contender(
            "pgBackRest full (zst 3, process-max 2)",
            format!("{pgbackrest} --type=full backup"),
        )
        .prepared_by(format!("rm -rf {b}/repo && {pgbackrest} stanza-create"))
        .writes(format!("{b}/repo")),
        contender(
            "backup-cli backup create",
            format!("rm -rf {w}/repo && {cli} backup create --jobs {jobs}"),
        )
        .writes(format!("{w}/repo")),
        contender(
            "backup-cli backup create (rules-validator, every table)",
            format!(
                "rm -rf {w}/repo-rules && env -u BACKUP_CLI_REPO {cli} --config {w}/validator.toml backup create --jobs {jobs}"
            ),
        )
        .writes(format!("{w}/repo-rules"))
        .pantry_only(),
        contender(
            "backup-cli backup create (offsite plugin)",
            format!(
                "rm -rf {w}/offsite && mkdir {w}/offsite && env -u BACKUP_CLI_REPO {cli} --config {w}/plugin.toml backup create --jobs {jobs}"
            ),
        )
        .writes(format!("{w}/offsite"))
        .pantry_only(),
        contender(
            "backup-cli backup create (encrypted)",
            format!("rm -rf {w}/repo-sealed && {sealed} backup create --jobs {jobs}"),
        )
        .writes(format!("{w}/repo-sealed"))
        .pantry_only(),
        contender(
            "backup-cli second full (unchanged)",
            format!("{cli} backup create --jobs {jobs}"),
        )
        .writes(format!("{w}/repo")),
        contender(
            "backup-cli backup validate",
            format!("{cli} backup validate latest --jobs {jobs}"),
        ),
        contender(
            "pg_restore -j 2 (new database)",
            format!(
                "{psql} -d postgres -c 'DROP DATABASE IF EXISTS r1' -c 'CREATE DATABASE r1' && {pg_restore} {conn} -j 2 -d r1 {w}/dump.d"
            ),
        ),
        contender(
            "backup-cli recovery execute -s new-database",
            restore_into("r2", &cli),
        ),
        contender(
            "backup-cli recovery execute -s new-database (encrypted)",
            restore_into("r2", &sealed),
        )
        .pantry_only(),
        // The optional deeper check: every restored table re-read and checksummed.
        contender(
            "backup-cli recovery execute -s new-database --verify checksums",
            restore_into("r2", &cli) + " --verify checksums",
        )
        .pantry_only(),
    ];
    if let Ok(baseline) = std::env::var("LARDER_BASELINE_CLI") {
        contenders.push(contender(
            "baseline build: recovery execute -s new-database",
            restore_into("r2", &format!("{baseline} -q")),
        ));
    }
    // Untimed after every contender: no contender's aftermath may run into the next one's
    // time. A restored database would be vacuumed and analyzed by autovacuum while the next
    // contender runs (a restore's cost charged to whatever follows it), so it is dropped, and
    // a checkpoint writes out what the contender left dirty.
    let settle = format!(
        "{psql} -d postgres -c 'DROP DATABASE IF EXISTS r1' -c 'DROP DATABASE IF EXISTS r2' -c CHECKPOINT"
    );
    let mut results = Results::new();
    let mut failures = Failures::new();
    for round in 1..=opts.rounds {
        println!("==> round {round}/{}", opts.rounds);
        let mut repo_before = 0;
        for c in contenders
            .iter()
            .filter(|c| (pantry || c.every_dataset) && opts.wants(c.name))
        {
            let measured = c
                .before
                .as_deref()
                .map_or(Ok(Default::default()), |before| timed(before, &env))
                .and_then(|_| {
                    server.measure(&c.script, &env, &settle, c.output.as_deref().map(Path::new))
                });
            let mut sample = match measured {
                Ok(sample) => sample,
                Err(e) => {
                    record_failure(&mut failures, c.name, &e);
                    timed(&settle, &env)?;
                    continue;
                }
            };
            // The second backup's cost is what it added to the repository.
            if c.name == "backup-cli backup create" {
                repo_before = sample.bytes;
            } else if c.name.starts_with("backup-cli second") {
                sample.bytes = sample.bytes.saturating_sub(repo_before);
            }
            print_sample(c.name, &sample);
            results.entry(c.name.to_string()).or_default().push(sample);
        }
    }
    drop(server);
    report(&opts, dataset, db_bytes, dump_bytes, &results, &failures)
}

fn report(
    opts: &Options,
    dataset: Dataset,
    db_bytes: u64,
    dump_bytes: u64,
    results: &Results,
    failures: &Failures,
) -> Result<(), Failure> {
    let backup = "backup-cli backup create";
    let dump_zstd = "pg_dump -Fc -Z0 | zstd -3 -T2";
    let restore = "backup-cli recovery execute -s new-database";
    let pg_restore = "pg_restore -j 2 (new database)";
    let mut checks = vec![
        Check::new(
            "full backup wall ≤ 0.85 × pg_dump -Fc -Z0 | zstd -3 -T2",
            wall_vs(results, backup, dump_zstd),
            0.85,
        ),
        Check::new(
            "full backup wall ≤ 1.0 × pgBackRest full (zst 3, process-max 2)",
            wall_vs(results, backup, "pgBackRest full (zst 3, process-max 2)"),
            1.0,
        ),
        Check::new(
            "stored bytes ≤ 1.0 × pg_dump -Fc -Z0 | zstd -3 -T2",
            bytes_vs(results, backup, dump_zstd),
            1.0,
        ),
        Check::new(
            "full backup wall ≤ 2.0 × COPY floor",
            wall_vs(results, backup, "copy floor (2 connections)"),
            2.0,
        ),
        Check::new(
            "second full: new bytes ≤ 1 % of the first",
            bytes_vs(results, "backup-cli second full (unchanged)", backup),
            0.01,
        ),
    ];
    if let Dataset::ManyTables(_) = dataset {
        checks.push(Check::new(
            "full backup wall ≤ 1.0 × pg_dump -Fc",
            wall_vs(results, backup, "pg_dump -Fc"),
            1.0,
        ));
        checks.push(Check::new(
            "restore new-database ≤ 1.0 × pg_restore -j 2",
            wall_vs(results, restore, pg_restore),
            1.0,
        ));
    } else {
        checks.push(Check::new(
            "restore new-database ≤ 0.85 × pg_restore -j 2",
            wall_vs(results, restore, pg_restore),
            0.85,
        ));
    }
    checks.extend([
        Check::new(
            "WASM plugin backup wall ≤ 1.11 × built-in fs (throughput ≥ 0.9×)",
            wall_vs(results, "backup-cli backup create (offsite plugin)", backup),
            1.0 / 0.9,
        ),
        Check::new(
            "backup with rules-validator on every table ≤ 1.25 × without",
            wall_vs(
                results,
                "backup-cli backup create (rules-validator, every table)",
                backup,
            ),
            1.25,
        ),
        Check::new(
            "encrypted backup wall ≤ 1.10 × unencrypted",
            wall_vs(results, "backup-cli backup create (encrypted)", backup),
            1.10,
        ),
        Check::new(
            "encrypted restore wall ≤ 1.05 × unencrypted",
            wall_vs(
                results,
                "backup-cli recovery execute -s new-database (encrypted)",
                restore,
            ),
            1.05,
        ),
        Check::new(
            "validate ≤ 0.3 × backup wall",
            wall_vs(results, "backup-cli backup validate", backup),
            0.3,
        ),
    ]);
    let mut ratios = checks_table(&checks);
    let peak = peak_rss_mib(
        results,
        &[
            "backup-cli backup create",
            "backup-cli backup create (offsite plugin)",
            "backup-cli backup create (encrypted)",
            "backup-cli recovery execute -s new-database (encrypted)",
            "backup-cli backup create (rules-validator, every table)",
            "backup-cli backup validate",
            "backup-cli recovery execute -s new-database",
            "backup-cli recovery execute -s new-database --verify checksums",
        ],
    );
    writeln!(
        ratios,
        "| peak RSS of backup, validate, restore ≤ 256 MiB | {peak} MiB | 256 | {} | – |",
        if peak <= 256 { "yes" } else { "**no**" }
    )?;
    let zstd_bytes = results
        .get(dump_zstd)
        .map_or(f64::NAN, |s| median(s, |x| x.bytes as f64).0);
    let size = match dataset {
        Dataset::ManyTables(_) => String::new(),
        _ => format!("scale {}, ", opts.scale),
    };
    let text = format!(
        "## Run of {} — {}, {size}{:.2} GB database, {} rounds, --jobs {}\n\n{}\n\nData: {:.2} GB on disk, `pg_dump -Fc -Z0` {:.1} MB, through `zstd -3` {:.1} MB: the database compresses {:.1}:1 (size on disk over the compressed dump), the dump {:.1}:1.\n\n{}\n{ratios}{}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        dataset.describe(),
        db_bytes as f64 / 1e9,
        opts.rounds,
        opts.jobs,
        machine()?,
        db_bytes as f64 / 1e9,
        dump_bytes as f64 / 1e6,
        zstd_bytes / 1e6,
        db_bytes as f64 / zstd_bytes,
        dump_bytes as f64 / zstd_bytes,
        contenders_table(results),
        if failures.is_empty() {
            String::new()
        } else {
            format!("\nFailed:\n\n{}", failures_list(failures, opts.rounds))
        }
    );
    write_report(opts, &text)
}
