//! Side-by-side benchmark of backup-cli against pg_dump / pg_restore on the Kitchen Pantry
//! dataset, on a throwaway PostgreSQL.
//!
//! `cargo bench --bench compare -- [--scale S] [--rounds N] [--jobs N] [--out FILE | --no-out]
//! [--only TEXT]` (`--only` runs just the contenders whose name contains TEXT, for quick
//! comparisons while optimising; such runs are never written to the report file).
//!
//! Every round runs each contender once, in the same order, so machine noise spreads evenly;
//! the report gives medians with min–max and ratios against the peers, and is written with
//! the machine's description into BENCHMARKS.md. Wall time, CPU time and peak RSS come from
//! GNU time; the server's CPU time from /proc (the postmaster and every process it started);
//! bytes stored from the files each tool wrote. Client plus server CPU over the cores is the
//! least wall time the machine allows for that work ("CPU-bound s"): a target below it cannot
//! be met by scheduling, only by doing less work.

use larder::pg::ConnectionSettings;
use larder::pg::ephemeral::EphemeralCluster;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const SCHEMA: &str = include_str!("../examples/kitchen-pantry/schema.sql");
const GENERATE: &str = include_str!("../examples/kitchen-pantry/generate.sql");
const BACKUP_CLI: &str = env!("CARGO_BIN_EXE_backup-cli");

type Failure = Box<dyn std::error::Error>;

struct Options {
    scale: f64,
    rounds: usize,
    out: Option<PathBuf>,
    jobs: usize,
    only: Option<String>,
}

/// One measured run.
#[derive(Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    server_cpu: f64,
    rss_kib: u64,
    bytes: u64,
}

fn parse() -> Result<Options, Failure> {
    let mut o = Options {
        scale: 1.0,
        rounds: 3,
        out: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md")),
        jobs: 2,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--scale" => o.scale = value()?.parse()?,
            "--rounds" => o.rounds = value()?.parse()?,
            "--jobs" => o.jobs = value()?.parse()?,
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--no-out" => o.out = None,
            "--only" => o.only = Some(value()?),
            "--bench" => {}
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if o.only.is_some() {
        o.out = None;
    }
    Ok(o)
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: build-check only.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "compare: run it with `cargo bench --bench compare`; nothing to do under cargo test"
        );
        return;
    }
    if let Err(e) = run() {
        eprintln!(
            "benchmark failed: {}",
            larder::error::error_chain(e.as_ref())
        );
        std::process::exit(1);
    }
}

/// Runs `sh -c script` under GNU time; returns wall, user+sys CPU and peak RSS.
fn timed(script: &str, env: &[(&str, String)]) -> Result<Sample, Failure> {
    let report = tempfile::NamedTempFile::new()?;
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%U %S %M", "-o"])
        .arg(report.path())
        .args(["sh", "-c", script])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "`{script}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = std::fs::read_to_string(report.path())?;
    let fields: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [user, sys, rss] = fields[..] else {
        return Err(format!("unexpected GNU time output: {text}").into());
    };
    Ok(Sample {
        wall,
        cpu: user + sys,
        server_cpu: 0.0,
        rss_kib: rss as u64,
        bytes: 0,
    })
}

/// CPU seconds the server has used so far: the postmaster and the processes it started, live
/// (their utime + stime) or already ended (the postmaster's cutime + cstime).
fn server_cpu(postmaster: u32) -> f64 {
    // /proc/PID/stat after the `(comm)` field: state ppid … utime stime cutime cstime (fields
    // 3, 4, …, 14–17 of proc(5)).
    let stat = |pid: &str| -> Option<(u32, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = text.get(text.rfind(')')? + 2..)?.split(' ').collect();
        let ticks: u64 = fields
            .get(11..15)?
            .iter()
            .filter_map(|f| f.parse::<u64>().ok())
            .sum();
        Some((fields.get(1)?.parse().ok()?, ticks))
    };
    let mut ticks = stat(&postmaster.to_string()).map_or(0, |(_, t)| t);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some((parent, t)) = stat(pid)
            && parent == postmaster
        {
            ticks += t;
        }
    }
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

fn size_of(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| size_of(&e.path()))
        .sum()
}

/// Median, min and max (NaN when there is nothing to summarise).
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn median(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
    spread(samples.iter().map(f).collect())
}

fn run() -> Result<(), Failure> {
    let opts = parse()?;
    let work = tempfile::Builder::new().prefix("larder-bench-").tempdir()?;
    println!("==> throwaway PostgreSQL");
    let cluster = EphemeralCluster::start()?;
    let postmaster: u32 = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid"))?
        .lines()
        .next()
        .unwrap_or_default()
        .parse()?;
    let bindir = cluster.bindir().to_path_buf();
    let bin = |name: &str| bindir.join(name).display().to_string();
    let port = cluster.port().to_string();
    let url = cluster.url("kitchen_pantry");
    let rt = tokio::runtime::Runtime::new()?;
    println!("==> generating Kitchen Pantry at scale {}", opts.scale);
    let started = Instant::now();
    let (db_bytes, halves) = rt.block_on(async {
        let admin = ConnectionSettings::resolve(Some(&cluster.url("postgres")), &Default::default())?;
        admin.connect().await?.batch_execute("CREATE DATABASE kitchen_pantry").await?;
        let db = admin.connect_to("kitchen_pantry").await?;
        db.batch_execute(SCHEMA).await?;
        db.batch_execute(&format!("SET larder.scale = '{}';\n{GENERATE}", opts.scale)).await?;
        db.batch_execute("VACUUM ANALYZE").await?;
        let size: i64 = db.query_one("SELECT pg_database_size('kitchen_pantry')", &[]).await?.get(0);
        // The COPY floor splits every table in two block ranges, one per connection.
        let rows = db
            .query("SELECT c.oid::regclass::text, pg_relation_size(c.oid) / 8192 FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace", &[])
            .await?;
        let mut halves = [String::new(), String::new()];
        for r in rows {
            let (table, pages): (String, i64) = (r.get(0), r.get(1));
            let mid = pages / 2;
            writeln!(halves[0], "COPY (SELECT * FROM {table} WHERE ctid < '({mid},0)'::tid) TO STDOUT;")?;
            writeln!(halves[1], "COPY (SELECT * FROM {table} WHERE ctid >= '({mid},0)'::tid) TO STDOUT;")?;
        }
        Ok::<_, Failure>((size as u64, halves))
    })?;
    println!(
        "    {:.1} GB on disk, generated in {:.0} s",
        db_bytes as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    for (i, h) in halves.iter().enumerate() {
        std::fs::write(work.path().join(format!("floor{i}.sql")), h)?;
    }

    let w = work.path().display().to_string();
    let psql = format!("{} -X -q -h 127.0.0.1 -p {port} -U postgres", bin("psql"));
    let conn = format!("-h 127.0.0.1 -p {port} -U postgres");
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", url.clone()),
        ("BACKUP_CLI_REPO", format!("{w}/repo")),
    ];
    let cli = format!("{BACKUP_CLI} -q");
    let jobs = opts.jobs;
    // The same backup through the offsite-dir-target plugin (a WebAssembly component) into a
    // folder on the same disk, to compare with the built-in filesystem target.
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release/offsite_dir_target.wasm");
    if !plugin.is_file() {
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
    for config in ["plugin", "validator"] {
        timed(
            &format!("env -u BACKUP_CLI_REPO {cli} --config {w}/{config}.toml plugin list"),
            &env,
        )?;
    }
    let mut results: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 1..=opts.rounds {
        println!("==> round {round}/{}", opts.rounds);
        let steps: Vec<(&str, String, Option<String>)> = vec![
            (
                "copy floor (2 connections)",
                format!(
                    "{psql} -d kitchen_pantry -f {w}/floor0.sql > /dev/null & {psql} -d kitchen_pantry -f {w}/floor1.sql > /dev/null & wait"
                ),
                None,
            ),
            (
                "pg_dump -Fc",
                format!(
                    "{} {conn} -Fc -f {w}/dump.fc kitchen_pantry",
                    bin("pg_dump")
                ),
                Some(format!("{w}/dump.fc")),
            ),
            (
                "pg_dump -Fd -j 2",
                format!(
                    "rm -rf {w}/dump.d && {} {conn} -Fd -j 2 -f {w}/dump.d kitchen_pantry",
                    bin("pg_dump")
                ),
                Some(format!("{w}/dump.d")),
            ),
            (
                "pg_dump -Fc -Z0 | zstd -3 -T2",
                format!(
                    "{} {conn} -Fc -Z0 kitchen_pantry | zstd -q -3 -T2 -o {w}/dump.zst -f",
                    bin("pg_dump")
                ),
                Some(format!("{w}/dump.zst")),
            ),
            (
                "backup-cli backup create",
                format!("rm -rf {w}/repo && {cli} backup create --jobs {jobs}"),
                Some(format!("{w}/repo")),
            ),
            (
                "backup-cli backup create (rules-validator, every table)",
                format!(
                    "rm -rf {w}/repo-rules && env -u BACKUP_CLI_REPO {cli} --config {w}/validator.toml backup create --jobs {jobs}"
                ),
                Some(format!("{w}/repo-rules")),
            ),
            (
                "backup-cli backup create (offsite plugin)",
                format!(
                    "rm -rf {w}/offsite && mkdir {w}/offsite && env -u BACKUP_CLI_REPO {cli} --config {w}/plugin.toml backup create --jobs {jobs}"
                ),
                Some(format!("{w}/offsite")),
            ),
            (
                "backup-cli backup create (encrypted)",
                format!("rm -rf {w}/repo-sealed && {sealed} backup create --jobs {jobs}"),
                Some(format!("{w}/repo-sealed")),
            ),
            (
                "backup-cli second full (unchanged)",
                format!("{cli} backup create --jobs {jobs}"),
                Some(format!("{w}/repo")),
            ),
            (
                "backup-cli backup validate",
                format!("{cli} backup validate latest --jobs {jobs}"),
                None,
            ),
            (
                "pg_restore -j 2 (new database)",
                format!(
                    "{psql} -d postgres -c 'DROP DATABASE IF EXISTS r1' -c 'CREATE DATABASE r1' && {} {conn} -j 2 -d r1 {w}/dump.d",
                    bin("pg_restore")
                ),
                None,
            ),
            (
                "backup-cli recovery execute -s new-database",
                format!(
                    "{psql} -d postgres -c 'DROP DATABASE IF EXISTS r2' && {cli} recovery execute latest -s new-database --dest-db r2 --jobs {jobs} --yes"
                ),
                None,
            ),
            (
                "backup-cli recovery execute -s new-database (encrypted)",
                format!(
                    "{psql} -d postgres -c 'DROP DATABASE IF EXISTS r2' && {sealed} recovery execute latest -s new-database --dest-db r2 --jobs {jobs} --yes"
                ),
                None,
            ),
            (
                // The optional deeper check: every restored table re-read and checksummed.
                "backup-cli recovery execute -s new-database --verify checksums",
                format!(
                    "{psql} -d postgres -c 'DROP DATABASE IF EXISTS r2' && {cli} recovery execute latest -s new-database --dest-db r2 --jobs {jobs} --yes --verify checksums"
                ),
                None,
            ),
        ];
        let settle = format!(
            "{psql} -d postgres -c 'DROP DATABASE IF EXISTS r1' -c 'DROP DATABASE IF EXISTS r2' -c CHECKPOINT"
        );
        let mut repo_before = 0;
        let wanted = |name: &str| opts.only.as_deref().is_none_or(|only| name.contains(only));
        for (name, script, output) in steps.into_iter().filter(|(name, _, _)| wanted(name)) {
            let server_before = server_cpu(postmaster);
            let mut sample = timed(&script, &env)?;
            // The backends end with their clients; give the postmaster a moment to reap them.
            std::thread::sleep(std::time::Duration::from_millis(300));
            sample.server_cpu = server_cpu(postmaster) - server_before;
            // Untimed: no contender's aftermath may run into the next one's time. A restored
            // database would be vacuumed and analyzed by autovacuum while the next contender
            // runs (a restore's cost charged to whatever follows it), so it is dropped, and a
            // checkpoint writes out what the contender left dirty.
            timed(&settle, &env)?;
            if let Some(path) = output {
                let total = size_of(Path::new(&path));
                // The second backup's cost is what it added to the repository.
                sample.bytes = if name.starts_with("backup-cli second") {
                    total - repo_before
                } else {
                    total
                };
                if !name.contains("plugin") && !name.contains("validator") {
                    repo_before = total;
                }
            }
            println!(
                "    {name:45} {:7.2} s  cpu {:7.2} s  server cpu {:7.2} s  rss {:7} MiB  {:>10}",
                sample.wall,
                sample.cpu,
                sample.server_cpu,
                sample.rss_kib / 1024,
                if sample.bytes > 0 {
                    format!("{:.1} MB", sample.bytes as f64 / 1e6)
                } else {
                    String::new()
                }
            );
            results.entry(name).or_default().push(sample);
        }
    }
    drop(cluster);
    report(&opts, db_bytes, &results)
}

/// A target's ratio: per round (median, min, max), and at full use of the cores.
struct Ratio {
    of_rounds: (f64, f64, f64),
    cpu_bound: f64,
}

fn report(
    opts: &Options,
    db_bytes: u64,
    results: &BTreeMap<&str, Vec<Sample>>,
) -> Result<(), Failure> {
    let bytes = |name: &str| {
        results
            .get(name)
            .map(|s| median(s, |x| x.bytes as f64).0)
            .unwrap_or(f64::NAN)
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut table = String::from(
        "| contender | wall s (median, min–max) | CPU s | server CPU s | CPU-bound s | peak RSS MiB | stored MB |\n|---|---|---|---|---|---|---|\n",
    );
    for (name, samples) in results {
        let (w, lo, hi) = median(samples, |x| x.wall);
        let (cpu, _, _) = median(samples, |x| x.cpu);
        let (server, _, _) = median(samples, |x| x.server_cpu);
        let bound = median(samples, |x| (x.cpu + x.server_cpu) / cores).0;
        let rss = samples.iter().map(|x| x.rss_kib).max().unwrap_or(0) / 1024;
        let stored = median(samples, |x| x.bytes as f64).0;
        let name = name.replace('|', "\\|");
        writeln!(
            table,
            "| {name} | {w:.2} ({lo:.2}–{hi:.2}) | {cpu:.2} | {server:.2} | {bound:.2} | {rss} | {} |",
            if stored > 0.0 {
                format!("{:.1}", stored / 1e6)
            } else {
                "".into()
            }
        )?;
    }
    // Wall-time ratios are taken per round (the two ran minutes apart at most, so a slow
    // spell of the machine touches both) and summarised as median (min–max); the CPU-bound
    // ratio is what the same work would give if it kept every core busy.
    let wall_vs = |ours: &str, peer: &str| {
        let (a, b) = (
            results.get(ours).map_or(&[][..], Vec::as_slice),
            results.get(peer).map_or(&[][..], Vec::as_slice),
        );
        let rounds = || a.iter().zip(b);
        Ratio {
            of_rounds: spread(rounds().map(|(x, y)| x.wall / y.wall).collect()),
            cpu_bound: spread(
                rounds()
                    .map(|(x, y)| (x.cpu + x.server_cpu) / cores / y.wall)
                    .collect(),
            )
            .0,
        }
    };
    let of_bytes = |ours: &str, peer: &str| {
        let ratio = bytes(ours) / bytes(peer);
        Ratio {
            of_rounds: (ratio, ratio, ratio),
            cpu_bound: f64::NAN,
        }
    };
    let backup = "backup-cli backup create";
    let dump_zstd = "pg_dump -Fc -Z0 | zstd -3 -T2";
    let checks = [
        (
            "full backup wall ≤ 0.6 × pg_dump -Fc -Z0 | zstd -3 -T2",
            wall_vs(backup, dump_zstd),
            0.6,
        ),
        (
            "stored bytes ≤ 1.0 × pg_dump -Fc -Z0 | zstd -3 -T2",
            of_bytes(backup, dump_zstd),
            1.0,
        ),
        (
            "full backup wall ≤ 2.0 × COPY floor",
            wall_vs(backup, "copy floor (2 connections)"),
            2.0,
        ),
        (
            "second full: new bytes ≤ 1 % of the first",
            of_bytes("backup-cli second full (unchanged)", backup),
            0.01,
        ),
        (
            "restore new-database ≤ 0.8 × pg_restore -j 2",
            wall_vs(
                "backup-cli recovery execute -s new-database",
                "pg_restore -j 2 (new database)",
            ),
            0.8,
        ),
        (
            "WASM plugin backup wall ≤ 1.11 × built-in fs (throughput ≥ 0.9×)",
            wall_vs("backup-cli backup create (offsite plugin)", backup),
            1.0 / 0.9,
        ),
        (
            "backup with rules-validator on every table ≤ 1.25 × without",
            wall_vs(
                "backup-cli backup create (rules-validator, every table)",
                backup,
            ),
            1.25,
        ),
        (
            "encrypted backup wall ≤ 1.10 × unencrypted",
            wall_vs("backup-cli backup create (encrypted)", backup),
            1.10,
        ),
        (
            "encrypted restore wall ≤ 1.05 × unencrypted",
            wall_vs(
                "backup-cli recovery execute -s new-database (encrypted)",
                "backup-cli recovery execute -s new-database",
            ),
            1.05,
        ),
        (
            "validate ≤ 0.3 × backup wall",
            wall_vs("backup-cli backup validate", backup),
            0.3,
        ),
    ];
    let mut ratios = String::from(
        "| target | ratio (median of rounds, min–max) | limit | met | CPU-bound ratio |\n|---|---|---|---|---|\n",
    );
    for (what, ratio, limit) in checks {
        let what = what.replace('|', "\\|");
        let (median, lo, hi) = ratio.of_rounds;
        writeln!(
            ratios,
            "| {what} | {median:.3}{} | {limit:.2} | {} | {} |",
            if lo < hi {
                format!(" ({lo:.3}–{hi:.3})")
            } else {
                String::new()
            },
            if median <= limit { "yes" } else { "**no**" },
            if ratio.cpu_bound.is_nan() {
                "–".to_string()
            } else {
                format!("{:.3}", ratio.cpu_bound)
            }
        )?;
    }
    let peak = [
        "backup-cli backup create",
        "backup-cli backup create (offsite plugin)",
        "backup-cli backup create (encrypted)",
        "backup-cli recovery execute -s new-database (encrypted)",
        "backup-cli backup create (rules-validator, every table)",
        "backup-cli backup validate",
        "backup-cli recovery execute -s new-database",
        "backup-cli recovery execute -s new-database --verify checksums",
    ]
    .iter()
    .filter_map(|n| results.get(n))
    .flat_map(|s| s.iter().map(|x| x.rss_kib))
    .max()
    .unwrap_or(0)
        / 1024;
    writeln!(
        ratios,
        "| peak RSS of backup, validate, restore ≤ 256 MiB | {peak} MiB | 256 | {} | – |",
        if peak <= 256 { "yes" } else { "**no**" }
    )?;
    let machine = machine()?;
    let text = format!(
        "## Run of {} — scale {}, {:.2} GB database, {} rounds, --jobs {}\n\n{machine}\n\n{table}\n{ratios}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        opts.scale,
        db_bytes as f64 / 1e9,
        opts.rounds,
        opts.jobs
    );
    println!("\n{text}");
    if let Some(out) = &opts.out {
        let mut existing = std::fs::read_to_string(out).unwrap_or_else(|_| {
            "# Benchmarks\n\nProduced by `cargo bench --bench compare`; newest run first.\n\n"
                .into()
        });
        let at = existing.find("## ").unwrap_or(existing.len());
        existing.insert_str(at, &format!("{text}\n"));
        std::fs::write(out, existing)?;
        println!("written to {}", out.display());
    }
    Ok(())
}

fn machine() -> Result<String, Failure> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let pg = Command::new("pg_config")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Ok(format!(
        "Machine: {cores} cores, {cpu}; {}; {pg}; backup-cli {}",
        mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" "),
        larder::TOOL_VERSION
    ))
}
