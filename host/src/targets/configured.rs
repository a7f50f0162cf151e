//! Opens the targets the configuration names (`[[targets]]`, or the single `fs` target at
//! `[repository] path` / `--repo`), each wrapped in retries and timeouts, and an
//! `append_only = true` one in [`AppendOnly`] unless `--allow-delete` is given.

use super::Target;
use super::append_only::AppendOnly;
use super::fs::{FsTarget, Modes};
use super::retry::Retrying;
use super::s3::{S3Settings, S3Target};
use crate::config::{
    DirMode, Loaded, Origin, PluginTargetConfig, TargetConfig, parse_bytes, resolve_secret,
};
use crate::error::{Error, Result};
use crate::plugin::entry::{GrantEntry, load_pinned, plugin_grants};
use crate::plugin::policy::{self, DirGrant, Grants};
use crate::plugin::target::PluginTarget;
use crate::plugin::{PluginSummary, Runtime};
use std::path::Path;
use std::sync::Arc;

/// The name of the target a repository path alone makes.
pub const DEFAULT_TARGET: &str = "local";

/// All configured targets, in configuration order (the first is the default primary).
pub struct TargetSet {
    pub targets: Vec<Arc<dyn Target>>,
    pub plugins: Vec<PluginSummary>,
    /// Per target name, how it was chosen ("flag --repo", "config file … [[targets]]"), for
    /// messages about a missing repository.
    pub chosen: std::collections::BTreeMap<String, String>,
    /// The only target is the folder a repository path makes by default (no flag, no
    /// environment, no path in a configuration): the place nobody chose, where nothing is
    /// created.
    pub unchosen: bool,
}

impl TargetSet {
    /// Adds how the target was chosen to a "no repository" error.
    pub fn explain(&self, err: Error) -> Error {
        explain(&self.chosen, err)
    }

    pub fn names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.name().to_string()).collect()
    }

    pub fn get(&self, name: &str) -> Result<Arc<dyn Target>> {
        self.targets
            .iter()
            .find(|t| t.name() == name)
            .cloned()
            .ok_or_else(|| {
                Error::Config(format!(
                    "no target named '{name}'; the configured targets are: {}",
                    self.names().join(", ")
                ))
            })
    }

    /// The targets named (in that order), or all of them when `names` is empty.
    pub fn select(&self, names: &[String]) -> Result<Vec<Arc<dyn Target>>> {
        if names.is_empty() {
            return Ok(self.targets.clone());
        }
        let mut out: Vec<Arc<dyn Target>> = Vec::new();
        for name in names {
            let target = self.get(name)?;
            if !out.iter().any(|t| t.name() == target.name()) {
                out.push(target);
            }
        }
        Ok(out)
    }
}

/// Opens every configured target. `repo_flag` (`--repo`) replaces them with one `fs` target.
/// `allow_delete` (`--allow-delete`, for a maintenance host holding delete rights): open
/// `append_only` targets as ordinary ones.
pub async fn open(
    loaded: &Loaded,
    repo_flag: Option<&Path>,
    allow_delete: bool,
) -> Result<TargetSet> {
    let config = &loaded.config;
    let chosen = how_chosen(loaded, repo_flag);
    let (path, origin) = loaded.repository_path(repo_flag);
    if is_overridden(&origin) || config.targets.is_empty() {
        return Ok(TargetSet {
            targets: vec![Retrying::wrap(Arc::new(open_fs(
                loaded,
                DEFAULT_TARGET,
                &path,
            )?))],
            plugins: Vec::new(),
            chosen,
            unchosen: origin == Origin::Default,
        });
    }
    if config.repository.path.is_some() {
        return Err(Error::Config(
            "both [repository] path and [[targets]] are set; with [[targets]], add the local folder as a target of type \"fs\" instead".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for target in &config.targets {
        let name = target.name();
        if !crate::targets::is_valid_key(name) || name.contains('/') {
            return Err(Error::Config(format!(
                "target name {name:?} must be a plain word like \"s3\" or \"offsite\""
            )));
        }
        if !seen.insert(name) {
            return Err(Error::Config(format!("two targets are named '{name}'")));
        }
    }
    let mut runtime: Option<Runtime> = None;
    let mut targets = Vec::new();
    let mut plugins = Vec::new();
    for target in &config.targets {
        let opened: Arc<dyn Target> = match target {
            TargetConfig::Fs(fs) => Arc::new(open_fs(
                loaded,
                &fs.name,
                &loaded.config_relative(&fs.path),
            )?),
            TargetConfig::S3(s3) => {
                let owner = format!("target '{}'", s3.name);
                let secret = |name: &str, default_env: &str| -> Result<Option<String>> {
                    match s3.secrets.get(name) {
                        Some(reference) => resolve_secret(&owner, name, reference).map(Some),
                        None => Ok(std::env::var(default_env).ok().map(crate::logging::secret)),
                    }
                };
                let missing = |name: &str, env: &str| {
                    Error::Config(format!(
                        "{owner} needs credentials: set secrets.{name} (env:VAR or file:/path) or {env}"
                    ))
                };
                let access = secret("access_key_id", "AWS_ACCESS_KEY_ID")?
                    .ok_or_else(|| missing("access_key_id", "AWS_ACCESS_KEY_ID"))?;
                let secret_key = secret("secret_access_key", "AWS_SECRET_ACCESS_KEY")?
                    .ok_or_else(|| missing("secret_access_key", "AWS_SECRET_ACCESS_KEY"))?;
                let token = secret("session_token", "AWS_SESSION_TOKEN")?;
                let settings = S3Settings {
                    bucket: &s3.bucket,
                    endpoint: s3.endpoint.as_deref(),
                    region: &s3.region,
                    root: &s3.root,
                    access_key_id: &access,
                    secret_access_key: &secret_key,
                    session_token: token.as_deref(),
                    object_lock: s3.object_lock.as_ref(),
                };
                Arc::new(
                    S3Target::new(&s3.name, &settings).map_err(|e| Error::Config(e.to_string()))?,
                )
            }
            TargetConfig::Plugin(entry) => {
                if runtime.is_none() {
                    runtime = Some(Runtime::new(loaded.plugin_cache_dir())?);
                }
                let Some(runtime) = runtime.as_ref() else {
                    return Err(Error::Plugin("the plugin runtime did not start".into()));
                };
                let (target, summary) = open_plugin(runtime, loaded, entry).await?;
                plugins.push(summary);
                Arc::new(target)
            }
        };
        let opened = Retrying::wrap(opened);
        targets.push(if target.append_only() && !allow_delete {
            AppendOnly::wrap(opened)
        } else {
            opened
        });
    }
    Ok(TargetSet {
        targets,
        plugins,
        chosen,
        unchosen: false,
    })
}

/// Adds how the target was chosen (from [`how_chosen`]) to a "no repository" error.
pub fn explain(chosen_by: &std::collections::BTreeMap<String, String>, err: Error) -> Error {
    match err {
        Error::NoRepository {
            target,
            location,
            chosen,
        } if chosen.is_empty() => {
            let chosen = chosen_by
                .get(&target)
                .map(|how| format!(" (target '{target}', {how})"))
                .unwrap_or_default();
            Error::NoRepository {
                target,
                location,
                chosen,
            }
        }
        other => other,
    }
}

/// `--repo` or `$BACKUP_CLI_REPO` replace the configured targets with one folder.
fn is_overridden(origin: &Origin) -> bool {
    matches!(origin, Origin::Flag(_) | Origin::Env(_))
}

/// Per target name, how it came to be chosen, in words for error messages.
pub fn how_chosen(
    loaded: &Loaded,
    repo_flag: Option<&Path>,
) -> std::collections::BTreeMap<String, String> {
    let (path, origin) = loaded.repository_path(repo_flag);
    if !is_overridden(&origin) && !loaded.config.targets.is_empty() {
        let file = loaded
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        return loaded
            .config
            .targets
            .iter()
            .map(|t| {
                (
                    t.name().to_string(),
                    format!("[[targets]] entry in config file {file}"),
                )
            })
            .collect();
    }
    let how = match (&origin, &loaded.path) {
        (Origin::Default, None) => format!(
            "the default ./{} in the working directory: no configuration file was found",
            path.display()
        ),
        (Origin::Default, Some(file)) => format!(
            "the default ./{}: {} sets no [repository] path",
            path.display(),
            file.display()
        ),
        (Origin::ConfigFile(file), _) => {
            format!("[repository] path in config file {}", file.display())
        }
        (other, _) => other.to_string(),
    };
    [(DEFAULT_TARGET.to_string(), how)].into()
}

fn open_fs(loaded: &Loaded, name: &str, path: &Path) -> Result<FsTarget> {
    let modes = Modes::new(loaded.config.repository.group_access);
    FsTarget::open_with(name, path, modes)
        .map_err(|e| e.at("(repository root)", "opening the repository folder"))
}

async fn open_plugin(
    runtime: &Runtime,
    loaded: &Loaded,
    entry: &PluginTargetConfig,
) -> Result<(PluginTarget, PluginSummary)> {
    let owner = format!("plugin target '{}'", entry.name);
    let (_, loaded_plugin) = load_pinned(
        runtime,
        loaded,
        &owner,
        &entry.path,
        entry.sha256.as_deref(),
    )?;
    let base = plugin_grants(
        &owner,
        &GrantEntry {
            config: &entry.config,
            secrets: &entry.secrets,
            allow_hosts: &entry.allow_hosts,
            allow_private: entry.allow_private,
            memory: entry.memory.as_deref(),
            timeout: entry.timeout,
        },
    )?;
    let defaults = policy::AnswerLimits::default();
    let limits = policy::AnswerLimits {
        max_list_keys: entry.max_list_keys.unwrap_or(defaults.max_list_keys).max(1),
        max_list_pages: entry
            .max_list_pages
            .unwrap_or(defaults.max_list_pages)
            .max(1),
        list_timeout: entry.list_timeout.unwrap_or(defaults.list_timeout),
        max_object_size: match &entry.max_object_size {
            Some(text) => parse_bytes(text).ok_or_else(|| {
                Error::Config(format!(
                    "{owner}: max_object_size '{text}' is not a size like 256MiB"
                ))
            })?,
            None => defaults.max_object_size,
        },
    };
    let grants = Grants {
        dirs: entry
            .dirs
            .iter()
            .map(|d| DirGrant {
                host: loaded.config_relative(&d.host),
                guest: d.guest.clone(),
                writable: d.mode == DirMode::ReadWrite,
            })
            .collect(),
        instances: entry.instances.unwrap_or(policy::DEFAULT_INSTANCES).max(1),
        limits,
        ..base
    };
    let target = PluginTarget::new(runtime, &entry.name, &loaded_plugin, grants).await?;
    let summary = PluginSummary::new(
        &entry.name,
        &loaded_plugin.file(entry.sha256.is_some()),
        "larder:plugin/storage-target@1.0.0",
        target.info(),
        target.grants(),
    );
    Ok((target, summary))
}
