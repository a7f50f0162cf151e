//! DDL through pg_dump: the `pre-data` and `post-data` sections, dumped inside the backup's
//! snapshot, give full fidelity for every object type without re-implementing pg_dump.

use super::ConnectionSettings;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct PgDump {
    pub path: PathBuf,
    /// e.g. "15.18"
    pub version: String,
    pub major: u32,
}

/// Finds a pg_dump at least as new as the server: the configured path, else the one installed
/// for the server's major version, else `pg_config --bindir`, else `$PATH`.
pub async fn find(configured: Option<&Path>, server_major: u32) -> Result<PgDump> {
    let installed = match configured {
        Some(path) => path.to_path_buf(),
        None => PathBuf::from(format!("/usr/lib/postgresql/{server_major}/bin/pg_dump")),
    };
    let mut found = version_of(&installed).await.map(|text| (installed, text));
    if found.is_none() && configured.is_none() {
        // Asked only when the usual place has none: each is a process start.
        let mut others = Vec::new();
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output().await {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !dir.is_empty() {
                others.push(Path::new(&dir).join("pg_dump"));
            }
        }
        others.push(PathBuf::from("pg_dump"));
        for path in others {
            if let Some(text) = version_of(&path).await {
                found = Some((path, text));
                break;
            }
        }
    }
    let (path, text) = found.ok_or_else(|| match configured {
        Some(path) => Error::PgDump(format!(
            "{} (`pg_dump` under [backup] in the config) does not run: point it at the \
             PostgreSQL {server_major} client's pg_dump, or remove it to use the installed one",
            path.display()
        )),
        None => Error::PgDump(format!(
            "pg_dump not found: install the PostgreSQL {server_major} client (e.g. postgresql-client-{server_major}) or set `pg_dump` under [backup] in the config"
        )),
    })?;
    let version = parse_version(&text).ok_or_else(|| {
        Error::PgDump(format!(
            "cannot read the version of {}: '{}'",
            path.display(),
            text.trim()
        ))
    })?;
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < server_major {
        return Err(Error::PgDump(format!(
            "{} is version {version}, older than the server (major {server_major}); pg_dump cannot dump a newer server. \
             Install postgresql-client-{server_major} or point `pg_dump` under [backup] at a newer one",
            path.display()
        )));
    }
    Ok(PgDump {
        path,
        version,
        major,
    })
}

/// What `path --version` printed, when it ran and succeeded.
async fn version_of(path: &Path) -> Option<String> {
    let out = Command::new(path).arg("--version").output().await.ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" → "15.18"
fn parse_version(text: &str) -> Option<String> {
    let after = text.split(')').nth(1)?.trim();
    let version: String = after
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!version.is_empty()).then_some(version)
}

impl PgDump {
    /// The schema as one custom-format dump of the pre-data and post-data sections inside
    /// the exported snapshot: one pg_dump reads the catalog and holds its lock per table once
    /// (two runs would read it twice, and together hold two locks per table); pg_restore,
    /// next to pg_dump, turns the archive into each section's text without a connection.
    /// (Not `--schema-only`: that leaves out post-data's materialized view refreshes.)
    pub async fn schema(
        &self,
        settings: &ConnectionSettings,
        snapshot_id: &str,
    ) -> Result<SchemaArchive> {
        let archive = self
            .run(
                settings,
                snapshot_id,
                &[
                    "--section=pre-data".into(),
                    "--section=post-data".into(),
                    "--format=custom".into(),
                ],
                "pg_dump --section=pre-data --section=post-data",
            )
            .await?;
        Ok(SchemaArchive {
            pg_restore: self.path.with_file_name("pg_restore"),
            archive,
        })
    }

    async fn run(
        &self,
        settings: &ConnectionSettings,
        snapshot_id: &str,
        args: &[String],
        what: &str,
    ) -> Result<Vec<u8>> {
        let output = Command::new(&self.path)
            .env_clear()
            .envs(settings.libpq_env())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(args)
            // None given: the database as it is when pg_dump starts.
            .args((!snapshot_id.is_empty()).then(|| format!("--snapshot={snapshot_id}")))
            .arg("--no-password")
            // DDL is held and run as UTF-8 text on UTF-8 sessions, whatever the database's
            // encoding: the server converts, so accented names and bodies survive.
            .arg("--encoding=UTF8")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(Error::io(format!("running {}", self.path.display())))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Error::PgDump(format!(
                "{what} failed ({}): {}",
                output.status,
                stderr.trim()
            )));
        }
        Ok(output.stdout)
    }
}

/// pg_dump's custom-format dump of a database's schema ([`PgDump::schema`]), turned into SQL
/// text by pg_restore without a connection.
pub struct SchemaArchive {
    pg_restore: PathBuf,
    archive: Vec<u8>,
}

impl SchemaArchive {
    /// The pre-data and post-data sections' SQL, as `pg_dump --section=pre-data` and
    /// `--section=post-data` write them.
    pub async fn sections(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        tokio::try_join!(
            self.restore(&["--section=pre-data"]),
            self.restore(&["--section=post-data"])
        )
    }

    /// Pre-data as `pg_dump --create` writes it, which holds what it says about the database
    /// itself (comment, privileges, `ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE …
    /// SET`; `ddl::database_properties` picks them out): an archive always holds those
    /// entries, and pg_restore writes them with `--create`. No second pg_dump reads the
    /// catalog for them.
    pub async fn database_properties(&self) -> Result<Vec<u8>> {
        self.restore(&["--create", "--section=pre-data"]).await
    }

    /// The archive through `pg_restore ARGS --file=-`.
    async fn restore(&self, args: &[&str]) -> Result<Vec<u8>> {
        let path = &self.pg_restore;
        let mut child = Command::new(path)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(args)
            .arg("--file=-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!(
                "running {} (installed with pg_dump)",
                path.display()
            )))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| Error::Internal("pg_restore started without its input".into()))?;
        // Fed while its output is read: pg_restore writes before it has read everything.
        let feed = async move {
            let written = stdin.write_all(&self.archive).await;
            drop(stdin);
            written
        };
        let (written, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(Error::io(format!("running {}", path.display())))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Error::PgDump(format!(
                "pg_restore {} of pg_dump's schema failed ({}): {}",
                args.join(" "),
                output.status,
                stderr.trim()
            )));
        }
        written.map_err(Error::io(format!("feeding {}", path.display())))?;
        Ok(output.stdout)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_read_from_pg_dump_banners() {
        assert_eq!(
            super::parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n")
                .as_deref(),
            Some("15.18")
        );
        assert_eq!(
            super::parse_version("pg_dump (PostgreSQL) 17.2\n").as_deref(),
            Some("17.2")
        );
        assert_eq!(super::parse_version("garbage"), None);
    }
}
