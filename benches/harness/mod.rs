//! What every benchmark shares: the command line (`--scale`, `--rounds`, `--jobs`, `--out`,
//! `--no-out`, `--only`), a throwaway PostgreSQL with its server CPU time read from /proc,
//! contenders timed with GNU time, sizes of what they wrote, medians with min–max, ratios
//! per round, the machine's description and the report appended to BENCHMARKS.md.
//!
//! A bench file includes it with `#[path = "harness/mod.rs"] mod harness;` and runs
//! `harness::main("NAME", run)`. Client plus server CPU over the cores is the least wall time
//! the machine allows for a contender's work ("CPU-bound s"): a target below it cannot be met
//! by scheduling, only by doing less work.

// Each bench binary compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

pub mod dataset;

use larder::pg::ConnectionSettings;
use larder::pg::ephemeral::{ClusterSetup, EphemeralCluster};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub type Failure = Box<dyn std::error::Error>;

/// The backup-cli binary cargo built for this bench.
pub const BACKUP_CLI: &str = env!("CARGO_BIN_EXE_backup-cli");

/// The report file: BENCHMARKS.md at the top of the repository.
pub fn default_report() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md")
}

/// Runs a bench: under `cargo test --all-targets` (no `--bench` argument) it only says how
/// to run it; an error is printed with its causes and exits 1.
pub fn main(name: &str, run: impl FnOnce() -> Result<(), Failure>) {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "{name}: run it with `cargo bench --bench {name}`; nothing to do under cargo test"
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

/// The options every bench takes.
pub struct Options {
    pub scale: f64,
    pub rounds: usize,
    pub jobs: usize,
    pub out: Option<PathBuf>,
    pub only: Option<String>,
}

impl Options {
    /// Parses the shared options; every other one is offered to `extra` with a way to take
    /// its value (`extra` returns false for an option it does not know). `--only` runs never
    /// write the report file.
    pub fn parse(
        mut extra: impl FnMut(
            &str,
            &mut dyn FnMut() -> Result<String, Failure>,
        ) -> Result<bool, Failure>,
    ) -> Result<Options, Failure> {
        let mut o = Options {
            scale: 1.0,
            rounds: 3,
            jobs: 2,
            out: Some(default_report()),
            only: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || -> Result<String, Failure> {
                args.next()
                    .ok_or_else(|| format!("{a} needs a value").into())
            };
            match a.as_str() {
                "--scale" => o.scale = value()?.parse()?,
                "--rounds" => o.rounds = value()?.parse()?,
                "--jobs" => o.jobs = value()?.parse()?,
                "--out" => o.out = Some(PathBuf::from(value()?)),
                "--no-out" => o.out = None,
                "--only" => o.only = Some(value()?),
                "--bench" => {}
                other => {
                    if !extra(other, &mut value)? {
                        return Err(format!("unknown option {other}").into());
                    }
                }
            }
        }
        if o.only.is_some() {
            o.out = None;
        }
        Ok(o)
    }

    /// Whether `--only` lets this contender run: its name contains the text, or one of its
    /// `|`-separated parts.
    pub fn wants(&self, name: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| only.split('|').any(|part| name.contains(part)))
    }
}

/// One measured run.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    pub wall: f64,
    pub cpu: f64,
    pub server_cpu: f64,
    pub rss_kib: u64,
    pub bytes: u64,
}

/// Every contender's samples, by name.
pub type Results = BTreeMap<String, Vec<Sample>>;

/// Runs `sh -c script` under GNU time; returns wall, user+sys CPU and peak RSS.
pub fn timed(script: &str, env: &[(&str, String)]) -> Result<Sample, Failure> {
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

/// Bytes in a file, or in every file under a folder.
pub fn size_of(path: &Path) -> u64 {
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
pub fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

pub fn median(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
    spread(samples.iter().map(f).collect())
}

pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// A throwaway PostgreSQL for a benchmark run, with what the contenders' scripts need.
pub struct Server {
    pub cluster: EphemeralCluster,
    pub postmaster: u32,
    pub rt: tokio::runtime::Runtime,
    pub admin: ConnectionSettings,
}

impl Server {
    pub fn start() -> Result<Server, Failure> {
        println!("==> throwaway PostgreSQL");
        // PostgreSQL's default max_connections (the throwaway cluster's is 60), so that the
        // shared lock table is a default server's: max_locks_per_transaction (64) × 100.
        // `LARDER_BENCH_SETTINGS` adds server settings, `;`-separated `name=value` pairs (to
        // profile from the server's log: `logging_collector=on;log_directory=/tmp/…;
        // log_min_duration_statement=0;log_line_prefix=%m [%p] `).
        let mut settings = vec![("max_connections".to_string(), "100".to_string())];
        if let Ok(extra) = std::env::var("LARDER_BENCH_SETTINGS") {
            for pair in extra.split(';').filter(|p| !p.trim().is_empty()) {
                let (name, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("LARDER_BENCH_SETTINGS: {pair} is not name=value"))?;
                settings.push((name.trim().to_string(), value.to_string()));
            }
        }
        let cluster = EphemeralCluster::start_with(ClusterSetup {
            settings,
            ..Default::default()
        })?;
        let postmaster = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid"))?
            .lines()
            .next()
            .unwrap_or_default()
            .parse()?;
        let admin =
            ConnectionSettings::resolve(Some(&cluster.url("postgres")), &Default::default())?;
        Ok(Server {
            cluster,
            postmaster,
            rt: tokio::runtime::Runtime::new()?,
            admin,
        })
    }

    /// A PostgreSQL program's path (psql, pg_dump, pg_restore …) from the server's bindir.
    pub fn bin(&self, name: &str) -> String {
        self.cluster.bindir().join(name).display().to_string()
    }

    /// The connection options for PostgreSQL's own programs.
    pub fn conn(&self) -> String {
        format!("-h 127.0.0.1 -p {} -U postgres", self.cluster.port())
    }

    /// `psql` quiet and without ~/.psqlrc, connected as the superuser (add `-d DB`).
    pub fn psql(&self) -> String {
        format!("{} -X -q {}", self.bin("psql"), self.conn())
    }

    /// A prefix for commands that must run as the server's OS account (`setpriv` to the
    /// data folder's owner when we are root, as the throwaway cluster then runs as
    /// `postgres`; empty otherwise).
    pub fn as_owner(&self) -> Result<String, Failure> {
        let (uid, gid) = self.owner()?;
        Ok(if rustix::process::geteuid().is_root() && uid != 0 {
            format!("setpriv --reuid={uid} --regid={gid} --clear-groups ")
        } else {
            String::new()
        })
    }

    /// A temporary folder the server's OS account owns (for tools run through `as_owner`).
    pub fn owned_dir(&self, prefix: &str) -> Result<tempfile::TempDir, Failure> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let (uid, gid) = self.owner()?;
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        Ok(dir)
    }

    fn owner(&self) -> Result<(u32, u32), Failure> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(self.cluster.data_dir())?;
        Ok((meta.uid(), meta.gid()))
    }

    /// Runs SQL in a database.
    pub fn execute(&self, db: &str, sql: &str) -> Result<(), Failure> {
        self.rt.block_on(async {
            self.admin.connect_to(db).await?.batch_execute(sql).await?;
            Ok(())
        })
    }

    /// Creates a database and runs each SQL text in it, then `VACUUM ANALYZE`; returns its
    /// size on disk.
    pub fn create_database(&self, db: &str, sql: &[&str]) -> Result<u64, Failure> {
        self.rt.block_on(async {
            self.admin
                .connect()
                .await?
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .await?;
            let client = self.admin.connect_to(db).await?;
            for text in sql {
                client.batch_execute(text).await?;
            }
            client.batch_execute("VACUUM ANALYZE").await?;
            let size: i64 = client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await?
                .get(0);
            Ok(size as u64)
        })
    }

    /// CPU seconds the server has used so far: the postmaster and the processes it started,
    /// live (their utime + stime) or already ended (the postmaster's cutime + cstime).
    pub fn cpu(&self) -> f64 {
        // /proc/PID/stat after the `(comm)` field: state ppid … utime stime cutime cstime
        // (fields 3, 4, …, 14–17 of proc(5)).
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
        let mut ticks = stat(&self.postmaster.to_string()).map_or(0, |(_, t)| t);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some((parent, t)) = stat(pid)
                && parent == self.postmaster
            {
                ticks += t;
            }
        }
        ticks as f64 / rustix::param::clock_ticks_per_second() as f64
    }

    /// Times one contender: its script under GNU time with the server's CPU over the same
    /// span, then (untimed) `settle`, so that no contender's aftermath runs into the next
    /// one's time; `bytes` is the size of `output` afterwards.
    pub fn measure(
        &self,
        script: &str,
        env: &[(&str, String)],
        settle: &str,
        output: Option<&Path>,
    ) -> Result<Sample, Failure> {
        let server_before = self.cpu();
        let mut sample = timed(script, env)?;
        // The backends end with their clients; give the postmaster a moment to reap them.
        std::thread::sleep(Duration::from_millis(300));
        sample.server_cpu = self.cpu() - server_before;
        timed(settle, env)?;
        sample.bytes = output.map_or(0, size_of);
        Ok(sample)
    }
}

/// Prints one sample as a line of progress.
pub fn print_sample(name: &str, s: &Sample) {
    println!(
        "    {name:45} {:7.2} s  cpu {:7.2} s  server cpu {:7.2} s  rss {:7} MiB  {:>10}",
        s.wall,
        s.cpu,
        s.server_cpu,
        s.rss_kib / 1024,
        if s.bytes > 0 {
            format!("{:.1} MB", s.bytes as f64 / 1e6)
        } else {
            String::new()
        }
    );
}

/// The table of contenders: wall (median, min–max), CPU, server CPU, CPU-bound, peak RSS, bytes.
pub fn contenders_table(results: &Results) -> String {
    let cores = cores();
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
        let _ = writeln!(
            table,
            "| {name} | {w:.2} ({lo:.2}–{hi:.2}) | {cpu:.2} | {server:.2} | {bound:.2} | {rss} | {} |",
            if stored > 0.0 {
                format!("{:.1}", stored / 1e6)
            } else {
                "".into()
            }
        );
    }
    table
}

/// A target's ratio: per round (median, min, max), and at full use of the cores.
pub struct Ratio {
    pub of_rounds: (f64, f64, f64),
    pub cpu_bound: f64,
}

fn samples<'a>(results: &'a Results, name: &str) -> &'a [Sample] {
    results.get(name).map_or(&[][..], Vec::as_slice)
}

/// Wall time of `ours` over `peer`, taken per round (the two ran minutes apart at most, so a
/// slow spell of the machine touches both); the CPU-bound ratio is what the same work would
/// give if it kept every core busy.
pub fn wall_vs(results: &Results, ours: &str, peer: &str) -> Ratio {
    let cores = cores();
    let (a, b) = (samples(results, ours), samples(results, peer));
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
}

/// Client plus server CPU seconds of `ours` over `peer`, per round.
pub fn cpu_vs(results: &Results, ours: &str, peer: &str) -> Ratio {
    let (a, b) = (samples(results, ours), samples(results, peer));
    Ratio {
        of_rounds: spread(
            a.iter()
                .zip(b)
                .map(|(x, y)| (x.cpu + x.server_cpu) / (y.cpu + y.server_cpu))
                .collect(),
        ),
        cpu_bound: f64::NAN,
    }
}

/// Median peak RSS of `ours` over `peer`'s (memory does not depend on what else the machine
/// runs, so rounds are not paired).
pub fn rss_vs(results: &Results, ours: &str, peer: &str) -> Ratio {
    let rss = |name: &str| median(samples(results, name), |x| x.rss_kib as f64).0;
    let ratio = rss(ours) / rss(peer);
    Ratio {
        of_rounds: (ratio, ratio, ratio),
        cpu_bound: f64::NAN,
    }
}

/// Median bytes written by `ours` over `peer`'s.
pub fn bytes_vs(results: &Results, ours: &str, peer: &str) -> Ratio {
    let bytes = |name: &str| median(samples(results, name), |x| x.bytes as f64).0;
    let ratio = bytes(ours) / bytes(peer);
    Ratio {
        of_rounds: (ratio, ratio, ratio),
        cpu_bound: f64::NAN,
    }
}

/// One target: what it says, the measured ratio, the limit.
pub struct Check {
    pub what: String,
    pub ratio: Ratio,
    pub limit: f64,
}

impl Check {
    pub fn new(what: impl Into<String>, ratio: Ratio, limit: f64) -> Check {
        Check {
            what: what.into(),
            ratio,
            limit,
        }
    }
}

/// The table of targets; a target whose contenders did not run (`--only`) is left out.
pub fn checks_table(checks: &[Check]) -> String {
    let mut table = String::from(
        "| target | ratio (median of rounds, min–max) | limit | met | CPU-bound ratio |\n|---|---|---|---|---|\n",
    );
    for check in checks.iter().filter(|c| !c.ratio.of_rounds.0.is_nan()) {
        let what = check.what.replace('|', "\\|");
        let (median, lo, hi) = check.ratio.of_rounds;
        let _ = writeln!(
            table,
            "| {what} | {median:.3}{} | {:.2} | {} | {} |",
            if lo < hi {
                format!(" ({lo:.3}–{hi:.3})")
            } else {
                String::new()
            },
            check.limit,
            if median <= check.limit {
                "yes"
            } else {
                "**no**"
            },
            if check.ratio.cpu_bound.is_nan() {
                "–".to_string()
            } else {
                format!("{:.3}", check.ratio.cpu_bound)
            }
        );
    }
    table
}

/// The highest peak RSS, in MiB, among these contenders' samples.
pub fn peak_rss_mib(results: &Results, names: &[&str]) -> u64 {
    names
        .iter()
        .flat_map(|n| samples(results, n))
        .map(|x| x.rss_kib)
        .max()
        .unwrap_or(0)
        / 1024
}

/// One line describing the machine: cores, CPU model, memory, PostgreSQL, backup-cli.
pub fn machine() -> Result<String, Failure> {
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
    let pg = Command::new("pg_config")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Ok(format!(
        "Machine: {} cores, {cpu}; {}; {pg}; backup-cli {}",
        cores(),
        mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" "),
        larder::TOOL_VERSION
    ))
}

/// Prints a run's section and, unless `--no-out` or `--only`, puts it into the report file
/// above the newest run (before its first `## ` heading).
pub fn write_report(opts: &Options, section: &str) -> Result<(), Failure> {
    println!("\n{section}");
    if let Some(out) = &opts.out {
        let mut existing = std::fs::read_to_string(out)
            .unwrap_or_else(|_| "# Benchmarks\n\nNewest run first.\n\n".into());
        let at = existing.find("## ").unwrap_or(existing.len());
        existing.insert_str(at, &format!("{section}\n"));
        std::fs::write(out, existing)?;
        println!("written to {}", out.display());
    }
    Ok(())
}

/// Contenders that failed, with each failure's message (first line, shortened).
pub type Failures = BTreeMap<String, Vec<String>>;

/// A contender's failure, kept for the report: the first line that says why, shortened.
pub fn record_failure(failures: &mut Failures, name: &str, error: &Failure) {
    let text = error.to_string();
    let why = text
        .lines()
        .rfind(|l| {
            let l = l.to_lowercase();
            l.contains("error") || l.contains("failed") || l.contains("fatal")
        })
        .or(text.lines().next())
        .unwrap_or_default();
    let why: String = why.chars().take(300).collect();
    println!("    {name:45} FAILED: {why}");
    failures.entry(name.to_string()).or_default().push(why);
}

/// The report's list of failed contenders (empty when none failed).
pub fn failures_list(failures: &Failures, rounds: usize) -> String {
    let mut text = String::new();
    for (name, why) in failures {
        let _ = writeln!(
            text,
            "- **{name}** failed in {} of {rounds} rounds: {}",
            why.len(),
            why[0].replace('|', "\\|")
        );
    }
    text
}
