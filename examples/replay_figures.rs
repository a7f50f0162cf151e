//! Replay figures (BENCHMARKS.md, "Replay of a chain, by table in parallel"): a chain of many
//! row changes restored into a new database with each `--jobs`, beside its base full alone.
//!
//! Starts a throwaway PostgreSQL, creates `--tables` tables of `--rows` rows, takes a full
//! backup with change tracking, changes `--changes` rows (a third inserts, a third updates, a
//! third deletes, spread over the tables, 1,000 rows per transaction), takes an incremental,
//! then restores the full and the incremental with each `--jobs` and prints the wall time
//! and the replay step's time of each, as a Markdown table. No timing is asserted.
//!
//! Run: `cargo build --bins --examples && target/debug/examples/replay_figures
//! [--tables 8] [--rows 50000] [--changes 240000] [--jobs 1,2,4]`.

use larder::pg::ephemeral::EphemeralCluster;
use std::process::Command;
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("replay_figures failed: {e:?}");
        std::process::exit(1);
    }
}

struct Options {
    tables: u64,
    rows: u64,
    changes: u64,
    jobs: Vec<u32>,
}

fn options() -> Result<Options, Box<dyn std::error::Error>> {
    let mut o = Options {
        tables: 8,
        rows: 50_000,
        changes: 240_000,
        jobs: vec![1, 2, 4],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--tables" => o.tables = value.parse()?,
            "--rows" => o.rows = value.parse()?,
            "--changes" => o.changes = value.parse()?,
            "--jobs" => o.jobs = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(o)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    let cli = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("backup-cli"))
        .filter(|p| p.is_file())
        .ok_or("backup-cli not found next to the example: run `cargo build --bins` first")?;
    let cluster = EphemeralCluster::start()?;
    let work = tempfile::tempdir()?;
    let config = work.path().join("backup-cli.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\npath = \"{}\"\n\n[incremental]\nenabled = true\n",
            work.path().join("repo").display()
        ),
    )?;
    let url = cluster.url("bench");
    let backup_cli = |args: &[&str]| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let out = Command::new(&cli)
            .arg("--json")
            .args(args)
            .env("BACKUP_CLI_CONFIG", &config)
            .env("DATABASE_URL", &url)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "backup-cli {} failed: {text}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        // The envelope's one key beside status, kind and error holds the report.
        let envelope: serde_json::Value = serde_json::from_str(&text)?;
        Ok(envelope
            .as_object()
            .into_iter()
            .flatten()
            .find(|(key, _)| !["status", "kind", "error"].contains(&key.as_str()))
            .map(|(_, value)| value.clone())
            .unwrap_or_default())
    };

    let runtime = tokio::runtime::Runtime::new()?;
    let (full, incremental) = runtime.block_on(async {
        let (admin, connection) =
            tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        admin.batch_execute("CREATE DATABASE bench").await?;
        let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        for t in 0..o.tables {
            db.batch_execute(&format!(
                "CREATE TABLE t{t} (id bigint PRIMARY KEY, qty int NOT NULL, note text NOT NULL);
                 INSERT INTO t{t} SELECT g, g % 100, md5(g::text) FROM generate_series(1, {}) g",
                o.rows
            ))
            .await?;
        }
        let full = backup_cli(&["backup", "create", "-n", "base"])?;
        // A third of the changes each: inserts above the rows, updates and deletes of them.
        let per_table = o.changes / 3 / o.tables.max(1);
        for t in 0..o.tables {
            for start in (0..per_table).step_by(1000) {
                let end = (start + 1000).min(per_table);
                db.batch_execute(&format!(
                    "INSERT INTO t{t} SELECT {} + 1 + g, g % 7, 'new ' || g FROM generate_series({start}, {end} - 1) g;
                     UPDATE t{t} SET qty = qty + 1, note = note || '+' WHERE id > {start} * 2 AND id <= {end} * 2 AND id % 2 = 0;
                     DELETE FROM t{t} WHERE id > {start} * 2 AND id <= {end} * 2 AND id % 2 = 1",
                    o.rows
                ))
                .await?;
            }
        }
        let incremental = backup_cli(&["backup", "create", "--type", "incremental", "-n", "changes"])?;
        Ok::<_, Box<dyn std::error::Error>>((full, incremental))
    })?;
    let id = |v: &serde_json::Value| v["backup"]["id"].as_str().unwrap_or_default().to_string();
    let (full, incremental) = (id(&full), id(&incremental));

    println!("| restore | --jobs | wall s | replay step s | changes | statements |");
    println!("|---|---|---|---|---|---|");
    for (n, jobs) in o.jobs.iter().enumerate() {
        for (what, backup) in [("base full", &full), ("full + incremental", &incremental)] {
            if what == "base full" && n > 0 {
                continue;
            }
            let dest = format!("restored_{n}_{}", what.len());
            let jobs = jobs.to_string();
            let started = Instant::now();
            let report = backup_cli(&[
                "recovery",
                "execute",
                backup,
                "-s",
                "new-database",
                "--dest-db",
                &dest,
                "--jobs",
                &jobs,
            ])?;
            let wall = started.elapsed().as_secs_f64();
            let replay = report["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == "replay"))
                .and_then(|s| s["seconds"].as_f64());
            println!(
                "| {what} | {jobs} | {wall:.2} | {} | {} | {} |",
                replay.map_or("-".into(), |s| format!("{s:.2}")),
                report["replayed"]["changes"],
                report["replayed"]["statements"],
            );
        }
    }
    Ok(())
}
