//! `backup-cli plugin …`: the configured WebAssembly plugins, what a plugin file is, and its
//! conformance suite.

use crate::cli::PluginCommand;
use crate::output::{self, Outcome, PluginHash, Plugins};
use crate::settings::Settings;
use larder::Result;

pub async fn run(settings: &Settings, command: PluginCommand) -> Result<Outcome> {
    match command {
        PluginCommand::List => {
            let set = settings.targets().await?;
            let mut plugins = set.plugins;
            for notifier in larder::plugin::notifier::open_configured(&settings.loaded).await? {
                plugins.push(notifier.summary());
            }
            for validator in larder::plugin::validator::open_configured(&settings.loaded).await? {
                plugins.push(validator.summary());
            }
            Ok(output::report(settings.json, &Plugins(plugins), None))
        }
        PluginCommand::Inspect(args) => {
            let runtime = larder::plugin::Runtime::new(settings.loaded.plugin_cache_dir())?;
            let inspection = larder::plugin::inspect::inspect(&runtime, &args.file)?;
            Ok(output::report(settings.json, &inspection, None))
        }
        PluginCommand::Test(args) => {
            use larder::plugin::conformance;
            let secrets = args
                .secrets
                .iter()
                .map(|s| conformance::parse_secret(s))
                .collect::<Result<_>>()?;
            let request = conformance::Request {
                path: args.file,
                config: match &args.plugin_config {
                    Some(text) => conformance::parse_settings(text)?,
                    None => Default::default(),
                },
                secrets,
                allow_hosts: args.allow_hosts,
                allow_tcp: args.allow_tcp,
                timeout: args.timeout,
            };
            let runtime = larder::plugin::Runtime::new(settings.loaded.plugin_cache_dir())?;
            let report = conformance::run(&runtime, &request).await?;
            let failure = report.failure();
            Ok(output::report(settings.json, &report, failure))
        }
        PluginCommand::Hash(args) => {
            let sha256 = larder::plugin::inspect::hash(&args.file)?;
            let hash = PluginHash {
                file: args.file,
                sha256,
            };
            Ok(output::report(settings.json, &hash, None))
        }
    }
}
