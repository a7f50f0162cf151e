//! `backup-cli notify test [--notifier NAME]`: a test event through each alert channel (or the
//! one named), reported per channel; exits 1 when a channel did not take it.

use crate::cli::NotifyCommand;
use crate::output::{self, NotifyTest, Outcome};
use crate::settings::Settings;
use larder::{Error, Result, engine};

pub async fn run(settings: &Settings, command: NotifyCommand) -> Result<Outcome> {
    match command {
        NotifyCommand::Test(args) => {
            let scope = settings.alert_scope().await?;
            let sent =
                engine::alerts::test(&settings.loaded, &scope, args.notifier.as_deref()).await?;
            let failed: Vec<&str> = sent
                .iter()
                .filter(|s| !s.ok)
                .map(|s| s.channel.as_str())
                .collect();
            let failure = (!failed.is_empty()).then(|| {
                Error::NotifyFailed(format!("not delivered through {}", failed.join(", ")))
            });
            Ok(output::report(settings.json, &NotifyTest(sent), failure))
        }
    }
}
