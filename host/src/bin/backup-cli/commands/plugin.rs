//! `backup-cli plugin …`: the configured WebAssembly plugins and what a plugin file is.

use crate::cli::PluginCommand;
use crate::output;
use crate::settings::Settings;
use larder::Result;

pub async fn run(settings: &Settings, command: PluginCommand) -> Result<()> {
    match command {
        PluginCommand::List => {
            let set = settings.targets().await?;
            let mut plugins = set.plugins;
            for validator in larder::plugin::validator::open_configured(&settings.loaded).await? {
                plugins.push(validator.summary());
            }
            output::plugins(&plugins, settings.json);
            Ok(())
        }
        PluginCommand::Inspect(args) => {
            let runtime = larder::plugin::Runtime::new(settings.loaded.plugin_cache_dir())?;
            let inspection = larder::plugin::inspect::inspect(&runtime, &args.file)?;
            output::inspection(&inspection, settings.json);
            Ok(())
        }
        PluginCommand::Hash(args) => {
            let sha256 = larder::plugin::inspect::hash(&args.file)?;
            output::plugin_hash(&args.file, &sha256, settings.json);
            Ok(())
        }
    }
}
