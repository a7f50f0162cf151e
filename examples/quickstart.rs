//! Quick start: Larder end to end on a throwaway PostgreSQL, nothing to configure.
//!
//! Starts a private PostgreSQL cluster, loads the Kitchen Pantry sample, then runs the
//! runbook's commands with the real `backup-cli` binary against a repository in
//! `./quickstart-backups` with change tracking on (`[incremental] enabled`): `backup create`,
//! a few row changes, `backup create --type incremental`, `backup list`, `backup validate latest`, then the
//! other half of the job, `recovery plan` and `recovery execute` into a new database beside the
//! live one (verified table by table), and compares the two databases itself. At the end it
//! says where everything is. Run it with `scripts/quickstart` (which builds the binary first).
//!
//! Options: `--scale S` (default 0.02; 1 ≈ 1.2 GB), `--repo PATH`.

use larder::pg::ephemeral::EphemeralCluster;
use std::path::PathBuf;
use std::process::Command;

const SCHEMA: &str = include_str!("kitchen-pantry/schema.sql");
const GENERATE: &str = include_str!("kitchen-pantry/generate.sql");
/// What the quick start changes between its full and its incremental backup.
const CHANGES: &str = "UPDATE contacts SET notes = 'called back' WHERE id IN (SELECT id FROM contacts ORDER BY id LIMIT 5); \
    DELETE FROM interactions WHERE id = (SELECT max(id) FROM interactions); \
    INSERT INTO pantry_items (organization_id, sku, name, quantity, unit_price) \
    SELECT min(id), 'QS-1', 'Quick start jam', 12, 4.50 FROM organizations";

/// Removes the quick start's configuration file when it ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The database the quick start recovers into, beside the live `kitchen_pantry`.
const RESTORED: &str = "kitchen_pantry_restored";

fn main() {
    if let Err(e) = run() {
        eprintln!("quickstart failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut scale = "0.02".to_string();
    let mut repo = PathBuf::from("quickstart-backups");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scale" => scale = args.next().ok_or("--scale needs a value")?,
            "--repo" => repo = PathBuf::from(args.next().ok_or("--repo needs a value")?),
            other => {
                return Err(format!("unknown option {other} (use --scale S, --repo PATH)").into());
            }
        }
    }
    scale
        .parse::<f64>()
        .map_err(|_| format!("--scale {scale} is not a number"))?;
    let cli = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("backup-cli"))
        .filter(|p| p.is_file())
        .ok_or("backup-cli binary not found next to the example: run `cargo build --bins` first (scripts/quickstart does)")?;

    println!("==> Starting a throwaway PostgreSQL");
    let cluster = EphemeralCluster::start()?;
    println!(
        "    port {}, data in {}",
        cluster.port(),
        cluster.data_dir().display()
    );

    println!("==> Loading the Kitchen Pantry sample (scale {scale})");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let admin = larder::pg::ConnectionSettings::resolve(
            Some(&cluster.url("postgres")),
            &Default::default(),
        )?;
        admin
            .connect()
            .await?
            .batch_execute("CREATE DATABASE kitchen_pantry")
            .await?;
        let db = admin.connect_to("kitchen_pantry").await?;
        db.batch_execute(SCHEMA).await?;
        db.batch_execute(&format!("SET larder.scale = '{scale}';\n{GENERATE}"))
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;

    let url = cluster.url("kitchen_pantry");
    // Change tracking for the incremental backup: the one setting the quick start needs.
    let config =
        std::env::temp_dir().join(format!("larder-quickstart-{}.toml", std::process::id()));
    std::fs::write(&config, "[incremental]\nenabled = true\n")?;
    let _remove = RemoveOnDrop(config.clone());
    let step = |title: &str, args: &[&str]| -> Result<(), Box<dyn std::error::Error>> {
        println!("\n==> {title}\n$ backup-cli {}", args.join(" "));
        let status = Command::new(&cli)
            .args(args)
            .env("DATABASE_URL", &url)
            .env("BACKUP_CLI_REPO", &repo)
            .env("BACKUP_CLI_CONFIG", &config)
            .status()?;
        if !status.success() {
            return Err(format!("backup-cli {} failed ({status})", args.join(" ")).into());
        }
        Ok(())
    };
    step("Take a backup", &["backup", "create", "-n", "quickstart"])?;
    println!("\n==> Changing a few rows (an update, a delete, an insert)");
    runtime.block_on(async {
        let settings = larder::pg::ConnectionSettings::resolve(Some(&url), &Default::default())?;
        settings.connect().await?.batch_execute(CHANGES).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    step(
        "Take an incremental backup: only the changes since the last one",
        &[
            "backup",
            "create",
            "--type",
            "incremental",
            "-n",
            "quickstart-changes",
        ],
    )?;
    step("List backups", &["backup", "list"])?;
    step(
        "Validate the newest backup",
        &["backup", "validate", "latest"],
    )?;
    step(
        "Plan a recovery into a new database (changes nothing)",
        &[
            "recovery",
            "plan",
            "latest",
            "-s",
            "new-database",
            "--dest-db",
            RESTORED,
        ],
    )?;
    step(
        "Recover into a new database beside the live one, verified table by table",
        &[
            "recovery",
            "execute",
            "latest",
            "-s",
            "new-database",
            "--dest-db",
            RESTORED,
        ],
    )?;

    println!("\n==> Comparing the restored database with the live one");
    let differences = runtime.block_on(compare(&cluster, "kitchen_pantry", RESTORED))?;
    if differences > 0 {
        return Err(format!(
            "{differences} table(s) differ between the live and restored databases"
        )
        .into());
    }

    let repo_abs = std::fs::canonicalize(&repo).unwrap_or(repo);
    println!("\n==> Done. Where everything is:");
    println!(
        "    repository:   {} (kept; try `BACKUP_CLI_REPO={} {} backup list`)",
        repo_abs.display(),
        repo_abs.display(),
        cli.display()
    );
    println!("    backup-cli:   {}", cli.display());
    println!("    sample SQL:   examples/kitchen-pantry/ (schema.sql, generate.sql)");
    println!(
        "    config:       examples/backup-cli.toml (commented; `backup-cli init` writes one)"
    );
    println!("    PostgreSQL:   throwaway, stopped and removed now");
    Ok(())
}

/// Prints each table's row count and an order-independent digest of its rows in both
/// databases, and returns how many tables differ. Independent of backup-cli's own
/// verification, so the demo shows the restore with a second pair of eyes.
async fn compare(
    cluster: &EphemeralCluster,
    live: &str,
    restored: &str,
) -> Result<usize, Box<dyn std::error::Error>> {
    let settings = larder::pg::ConnectionSettings::resolve(
        Some(&cluster.url("postgres")),
        &Default::default(),
    )?;
    let live_db = settings.connect_to(live).await?;
    let restored_db = settings.connect_to(restored).await?;
    let tables = live_db
        .query(
            "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables \
             ORDER BY schemaname, relname",
            &[],
        )
        .await?;
    let mut differences = 0;
    for row in tables {
        let table: String = row.get(0);
        // md5 of the sorted row texts: the same rows give the same digest in any order.
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') \
             FROM {table} t"
        );
        let a = live_db.query_one(&sql, &[]).await?;
        let b = restored_db.query_one(&sql, &[]).await?;
        let (rows_a, digest_a): (i64, String) = (a.get(0), a.get(1));
        let (rows_b, digest_b): (i64, String) = (b.get(0), b.get(1));
        let same = rows_a == rows_b && digest_a == digest_b;
        if !same {
            differences += 1;
        }
        println!(
            "    {table:<28} live {rows_a:>7} rows, restored {rows_b:>7} rows  {}",
            if same { "identical" } else { "DIFFERENT" }
        );
    }
    Ok(differences)
}
