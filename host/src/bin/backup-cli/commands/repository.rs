//! `backup-cli repository …`: maintenance of the repository itself (locks left by crashed
//! processes).

use crate::cli::RepositoryCommand;
use crate::output::{self, Outcome, Unlocked};
use crate::settings::Settings;
use larder::repository::Repository;
use larder::{Error, Result};

pub async fn run(settings: &Settings, command: RepositoryCommand) -> Result<Outcome> {
    match command {
        RepositoryCommand::Unlock(args) => {
            let set = settings.targets().await?;
            let mut reports = Vec::new();
            for target in &set.targets {
                // A target without a repository has no locks.
                let repo = match Repository::open(target.clone()).await {
                    Ok(repo) => repo,
                    Err(Error::Repository(_)) => continue,
                    Err(e) => return Err(e),
                };
                reports.push(repo.unlock(args.force).await?);
            }
            Ok(output::report(settings.json, &Unlocked(reports), None))
        }
    }
}
