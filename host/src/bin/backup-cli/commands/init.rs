//! `backup-cli init`: writes the commented configuration template and initialises the
//! repository it names. Runs before any configuration exists, so it reads only the flags.

use crate::cli::{Global, InitArgs};
use crate::output::{self, Initialised, Outcome};
use larder::config::Loaded;
use larder::repository::Repository;
use larder::targets::fs::{FsTarget, Modes};
use larder::{Error, Result};
use std::path::Path;
use std::sync::Arc;

pub async fn run(global: &Global, args: InitArgs) -> Result<Outcome> {
    let path = global
        .config
        .clone()
        .unwrap_or_else(|| "backup-cli.toml".into());
    if path.exists() && !args.force {
        return Err(Error::Refused(format!(
            "{} already exists; use --force to overwrite it",
            path.display()
        )));
    }
    let template = if args.encrypt {
        larder::config::TEMPLATE.replacen("# encryption = false", "encryption = true", 1)
    } else {
        larder::config::TEMPLATE.to_string()
    };
    write_private(&path, template.as_bytes())
        .map_err(Error::io(format!("writing {}", path.display())))?;
    let loaded = Loaded::discover(Some(&path))?;
    larder::repository::keys::configure(loaded.key_source());
    let (repo_path, _) = loaded.repository_path(global.repo.as_deref());
    let modes = Modes::new(loaded.config.repository.group_access);
    let target = FsTarget::create("local", &repo_path, modes)
        .map(Arc::new)
        .map_err(|e| e.at("(repository root)", "creating the repository folder"))?;
    let repo = Repository::open_or_init(target).await?;
    let initialised = Initialised {
        config: path,
        repository: repo_path,
        encryption: repo.keyring().map(|k| k.cipher().to_string()),
    };
    Ok(output::report(global.json, &initialised, None))
}

/// Writes a file readable by its owner only (0600 whatever the umask): the configuration may
/// name secrets' locations and the database.
pub(super) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(data)
}
