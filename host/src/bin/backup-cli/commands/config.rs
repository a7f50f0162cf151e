//! `backup-cli config …`: the effective configuration, every setting with where it came
//! from, without opening the database or the repository.

use crate::cli::ConfigCommand;
use crate::output::{self, EffectiveSettings, Outcome};
use crate::settings::Settings;
use larder::Result;
use larder::config::{Origin, Setting, TargetConfig};
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
    let url = settings.database_url.as_ref();
    let url_origin = url.map(|(_, o)| o.clone()).unwrap_or(Origin::Default);
    out.push(Setting {
        setting: "database.url".into(),
        value: url
            .map(|(u, _)| larder::logging::redact_for_display(u))
            .unwrap_or_else(|| "unset: the libpq PG* variables and defaults".into()),
        origin: url_origin.clone(),
    });
    match ConnectionSettings::resolve(url.map(|(u, _)| u.as_str()), &loaded.config.database) {
        Ok(resolved) => {
            out.push(Setting {
                setting: "database (resolved)".into(),
                value: format!(
                    "{} sslmode={}",
                    resolved.describe(),
                    resolved.sslmode.as_str()
                ),
                origin: url_origin.clone(),
            });
            out.push(Setting {
                setting: "database.password".into(),
                value: match resolved.password_source {
                    Some(source) => format!("set, from {source} (not shown)"),
                    None => "none".into(),
                },
                origin: match resolved.password_source {
                    Some("PGPASSWORD") => Origin::Env("PGPASSWORD".into()),
                    Some("password_file") => loaded.origin_of("database", "password_file"),
                    Some("the database URL") => url_origin,
                    _ => Origin::Default,
                },
            });
        }
        Err(e) => out.push(Setting {
            setting: "database (resolved)".into(),
            value: format!("error: {e}"),
            origin: url_origin,
        }),
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
                .map(|t| match t {
                    TargetConfig::Fs(fs) => {
                        format!("fs {}", loaded.config_relative(&fs.path).display())
                    }
                    TargetConfig::S3(s3) => format!(
                        "s3 bucket {} {}",
                        s3.bucket,
                        s3.endpoint.as_deref().unwrap_or("")
                    ),
                    TargetConfig::Plugin(p) => {
                        format!("plugin {}", loaded.config_relative(&p.path).display())
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
