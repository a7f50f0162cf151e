//! Throwaway PostgreSQL clusters: initdb into a temporary folder, start on a free loopback port,
//! remove everything on drop. Used by the quick-start demo, the benchmarks and the tests.
//!
//! As root, initdb and postgres refuse to run, so the cluster is created and run as the
//! unprivileged `postgres` account (via `setpriv`), which then owns the temporary folder.

use crate::error::{Error, Result};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running throwaway cluster whose superuser is `postgres` with trust authentication.
pub struct EphemeralCluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    child: Option<Child>,
    run_as: Option<(u32, u32)>,
    settings: Vec<(String, String)>,
    /// initdb and postgres run in a process group of their own (see [`EphemeralCluster::start_apart`]).
    apart: bool,
}

/// Finds the PostgreSQL server binaries: `$LARDER_PG_BINDIR`, `pg_config --bindir`, or the
/// newest `/usr/lib/postgresql/*/bin`.
pub fn server_bindir() -> Result<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(dir) = std::env::var("LARDER_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        return Err(Error::Config(format!(
            "LARDER_PG_BINDIR={} holds no initdb/postgres",
            dir.display()
        )));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir).ok_or_else(|| {
        Error::Config(
            "PostgreSQL server binaries (initdb, postgres) not found: install the postgresql package \
             (e.g. `apt-get install postgresql`) or set LARDER_PG_BINDIR"
                .into(),
        )
    })
}

/// uid and gid of a local account, from /etc/passwd.
fn account_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name))
            .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))?
    })
}

fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("finding a free port"))?
        .port();
    Ok(port)
}

/// Extra set-up for a throwaway cluster: files written into the data folder after initdb
/// (owned by the server, mode 0600: certificates, pg_hba.conf) and `-c name=value` settings.
#[derive(Debug, Clone, Default)]
pub struct ClusterSetup {
    pub files: Vec<(String, Vec<u8>)>,
    pub settings: Vec<(String, String)>,
}

impl EphemeralCluster {
    /// Creates and starts a cluster; waits until it accepts connections.
    pub fn start() -> Result<EphemeralCluster> {
        EphemeralCluster::start_with(ClusterSetup::default())
    }

    /// Like [`EphemeralCluster::start`], with the server in a process group of its own: a
    /// Ctrl-C at the terminal reaches only the caller, which stops the server when it has
    /// finished with it (a restore drill reports the interruption, then removes the cluster).
    pub fn start_apart() -> Result<EphemeralCluster> {
        EphemeralCluster::create(ClusterSetup::default(), true)
    }

    /// Like [`EphemeralCluster::start`], with extra files and settings.
    pub fn start_with(setup: ClusterSetup) -> Result<EphemeralCluster> {
        EphemeralCluster::create(setup, false)
    }

    fn create(setup: ClusterSetup, apart: bool) -> Result<EphemeralCluster> {
        let bindir = server_bindir()?;
        let run_as = if rustix::process::geteuid().is_root() {
            Some(account_ids("postgres").ok_or_else(|| {
                Error::Config(
                    "running as root, but there is no `postgres` account to run the throwaway \
                     PostgreSQL as (initdb refuses root): create one with `useradd -r postgres`"
                        .into(),
                )
            })?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("larder-pg-")
            .tempdir()
            .map_err(Error::io("creating a temporary folder"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(Error::io("handing the temporary folder to postgres"))?;
        }
        let mut cluster = EphemeralCluster {
            dir,
            bindir,
            port: 0,
            child: None,
            run_as,
            settings: setup.settings,
            apart,
        };
        let data = cluster.data_dir();
        let output = cluster
            .command("initdb")
            .args([
                "-N",
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data)
            .output()
            .map_err(Error::io("running initdb"))?;
        if !output.status.success() {
            return Err(Error::Config(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        for (name, contents) in &setup.files {
            let path = data.join(name);
            fs::write(&path, contents)
                .map_err(Error::io(format!("writing {name} into the cluster")))?;
            let mut perms = fs::metadata(&path)
                .map_err(Error::io("reading file permissions"))?
                .permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
            fs::set_permissions(&path, perms).map_err(Error::io(format!("restricting {name}")))?;
            if let Some((uid, gid)) = cluster.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(Error::io(format!("handing {name} to postgres")))?;
            }
        }
        let mut last_error = String::new();
        for _ in 0..5 {
            match cluster.launch() {
                Ok(()) => return Ok(cluster),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(Error::Config(format!(
            "the throwaway PostgreSQL did not start: {last_error}"
        )))
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        let mut cmd = self.plain_command(path);
        if self.apart {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        cmd
    }

    fn plain_command(&self, path: PathBuf) -> Command {
        match self.run_as {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(path)
                    .env("HOME", self.dir.path());
                cmd
            }
            None => Command::new(path),
        }
    }

    fn launch(&mut self) -> Result<()> {
        self.port = free_port()?;
        let log_path = self.dir.path().join("postgres.log");
        let log = fs::File::create(&log_path).map_err(Error::io("creating the server log"))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&log_path, Some(uid), Some(gid))
                .map_err(Error::io("handing the log to postgres"))?;
        }
        let log_err = log
            .try_clone()
            .map_err(Error::io("opening the server log"))?;
        let data = self.data_dir();
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=60",
                "-c",
                "wal_level=logical",
                "-c",
                "max_wal_senders=10",
                "-c",
                "max_replication_slots=10",
            ])
            .args(
                self.settings
                    .iter()
                    .flat_map(|(k, v)| ["-c".to_string(), format!("{k}={v}")]),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(Error::io("starting postgres"))?;
        let pid_file = data.join("postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut log = String::new();
                let _ = fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut log));
                return Err(Error::Config(format!("postgres exited ({status}): {log}")));
            }
            let ready = fs::read_to_string(&pid_file)
                .map(|s| s.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
                .unwrap_or(false);
            if ready {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(Error::Config(
                    "postgres did not become ready within 60 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder of the cluster's Unix socket (`host=` for a socket connection).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A connection URL for `dbname` as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{dbname}?sslmode=disable",
            self.port
        )
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Leaves the server running and its folder in place (`recovery drill --keep`); returns
    /// the folder. Stopping and removing it is then the operator's: see [`kept_note`].
    pub fn keep(mut self) -> PathBuf {
        let dir = self.dir.path().to_path_buf();
        // Dropping the handle does not stop the process; forgetting the cluster keeps the
        // folder that dropping its TempDir would remove.
        self.child = None;
        std::mem::forget(self);
        dir
    }

    /// Stops the server (fast shutdown: running sessions are cut off). The files stay until drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How to stop and remove a cluster left by [`EphemeralCluster::keep`] in `dir`, as shell
/// commands.
pub fn kept_note(dir: &Path) -> String {
    let dir = dir.display().to_string().replace('\'', "'\\''");
    format!(
        "stop it with: kill -INT \"$(head -1 '{dir}/data/postmaster.pid')\"; then remove it with: rm -rf '{dir}'"
    )
}

impl Drop for EphemeralCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
