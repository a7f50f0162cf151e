//! `backup-cli config …`: the effective configuration, every setting with where it came
//! from, without opening the database or the repository.

use crate::cli::ConfigCommand;
use crate::output::{self, EffectiveSettings, Outcome};
use crate::settings::Settings;
use larder::Result;
use larder::config::{DatabaseConfig, Origin, Setting, TargetConfig};
use larder::pg::ConnectionSettings;
use larder::targets::configured;

pub fn run(settings: &Settings, command: ConfigCommand) -> Result<Outcome> {
    match command {
        ConfigCommand::Show => {
            let effective = EffectiveSettings(effective(settings));
            Ok(output::report(settings.json, &effective, None))
        }
    }
}

/// Every effective setting and its origin.
fn effective(settings: &Settings) -> Vec<Setting> {
    let loaded = &settings.loaded;
    let mut out = vec![Setting {
        setting: "config file".into(),
        value: match &loaded.path {
            Some(path) if loaded.origin == Origin::Default => {
                format!("{} (found by searching)", path.display())
            }
            Some(path) => path.display().to_string(),
            None => format!(
                "none found ({}, {}): built-in defaults",
                larder::config::SEARCHED[0],
                larder::config::SEARCHED[1]
            ),
        },
        origin: loaded.origin.clone(),
    }];
    if loaded.config.databases.is_empty() {
        let url = settings.database_url.as_ref();
        let url_origin = url.map(|(_, o)| o.clone()).unwrap_or(Origin::Default);
        out.push(Setting {
            setting: "database.url".into(),
            value: url
                .map(|(u, _)| larder::logging::redact_for_display(u))
                .unwrap_or_else(|| "unset: the libpq PG* variables and defaults".into()),
            origin: url_origin.clone(),
        });
        out.extend(connection(
            settings,
            "database",
            url.map(|(u, _)| u.as_str()),
            &loaded.config.database,
            url_origin,
            String::new(),
        ));
    }
    let file = Origin::ConfigFile(loaded.path.clone().unwrap_or_default());
    for entry in &loaded.config.databases {
        let objectives = format!(
            ", class {} (RPO {}, RTO {})",
            entry.class.as_str(),
            humantime::format_duration(entry.rpo(&loaded.config.objectives)),
            humantime::format_duration(entry.rto(&loaded.config.objectives))
        );
        out.extend(connection(
            settings,
            &format!("databases.{}", entry.name),
            entry.url.as_deref(),
            &entry.connection(),
            file.clone(),
            objectives,
        ));
    }
    let (repo_path, repo_origin) = loaded.repository_path(settings.repo_flag.as_deref());
    let one_folder = settings.repo_override || loaded.config.targets.is_empty();
    for (name, how) in configured::how_chosen(loaded, settings.repo_flag.as_deref()) {
        let location = if one_folder {
            repo_path.display().to_string()
        } else {
            loaded
                .config
                .targets
                .iter()
                .find(|t| t.name() == name)
                .map(|t| {
                    let place = match t {
                        TargetConfig::Fs(fs) => {
                            format!("fs {}", loaded.config_relative(&fs.path).display())
                        }
                        TargetConfig::S3(s3) => format!(
                            "s3 bucket {} {}{}",
                            s3.bucket,
                            s3.endpoint.as_deref().unwrap_or(""),
                            s3.object_lock
                                .as_ref()
                                .map(|lock| format!(", object lock: {lock}"))
                                .unwrap_or_default()
                        ),
                        TargetConfig::Plugin(p) => {
                            format!("plugin {}", loaded.config_relative(&p.path).display())
                        }
                    };
                    match (t.append_only(), settings.allow_delete) {
                        (true, false) => format!("{place}, append-only"),
                        (true, true) => format!("{place}, append-only (--allow-delete: deletes)"),
                        (false, _) => place,
                    }
                })
                .unwrap_or_default()
        };
        out.push(Setting {
            setting: format!("target {name}"),
            value: format!("{location} ({how})"),
            origin: if one_folder {
                repo_origin.clone()
            } else {
                Origin::ConfigFile(loaded.path.clone().unwrap_or_default())
            },
        });
    }
    out.extend(loaded.settings());
    out
}

/// A database's resolved connection and where its password comes from (never the password);
/// `key`: `database` or `databases.NAME`; `extra` is appended to the connection's line.
fn connection(
    settings: &Settings,
    key: &str,
    url: Option<&str>,
    config: &DatabaseConfig,
    url_origin: Origin,
    extra: String,
) -> Vec<Setting> {
    let loaded = &settings.loaded;
    let resolved = match ConnectionSettings::resolve(url, config) {
        Ok(resolved) => resolved,
        Err(e) => {
            return vec![Setting {
                setting: format!("{key} (resolved)"),
                value: format!("error: {e}"),
                origin: url_origin,
            }];
        }
    };
    let section = key.split('.').next().unwrap_or(key);
    vec![
        Setting {
            setting: format!("{key} (resolved)"),
            value: format!(
                "{} sslmode={}{extra}",
                resolved.describe(),
                resolved.sslmode.as_str()
            ),
            origin: url_origin.clone(),
        },
        Setting {
            setting: format!("{key}.password"),
            value: match resolved.password_source {
                Some(source) => format!("set, from {source} (not shown)"),
                None => "none".into(),
            },
            origin: match resolved.password_source {
                Some("PGPASSWORD") => Origin::Env("PGPASSWORD".into()),
                Some("password_file") if section == "database" => {
                    loaded.origin_of("database", "password_file")
                }
                Some("password_file") | Some("the database URL") => url_origin,
                _ => Origin::Default,
            },
        },
    ]
}
