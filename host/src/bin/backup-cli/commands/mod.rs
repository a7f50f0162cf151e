//! One file per command noun (`backup`, `recovery`, `monitor`, …): each turns its parsed
//! flags and the resolved [`Settings`] into one engine call and prints the result.
//! `run` reads the configuration once and hands the command to its noun.

mod backup;
mod config;
mod daemon;
mod init;
mod key;
mod monitor;
mod notify;
mod plugin;
mod recovery;
mod repository;
mod schedule;

use crate::cli::{Cli, Command};
use crate::output::{self, Outcome};
use crate::settings::Settings;
use larder::Result;

pub async fn run(cli: Cli) -> Result<Outcome> {
    // init runs before any configuration exists, so it is handled before reading one.
    let command = match cli.command {
        Command::Init(args) => return init::run(&cli.global, args).await,
        // The daemon resolves its settings itself, again on every SIGHUP.
        Command::Daemon(_) => return daemon::run(&cli.global).await.map(|()| Outcome::Done),
        other => other,
    };
    let settings = Settings::resolve(&cli.global)?;
    // Not with --json either: it keeps stderr for errors (a missing repository still says
    // that no configuration file was found).
    if !settings.quiet
        && !settings.json
        && let Some(note) = settings.loaded.defaults_note()
    {
        output::note!("{note}");
    }
    dispatch(&settings, command)
        .await
        .map_err(|e| settings.explain(e))
}

async fn dispatch(settings: &Settings, command: Command) -> Result<Outcome> {
    match command {
        Command::Init(_) | Command::Daemon(_) => Ok(Outcome::Done), // handled in `run`
        Command::Backup(command) => backup::run(settings, command).await,
        Command::Recovery(command) => recovery::run(settings, command).await,
        Command::Monitor(command) => monitor::run(settings, command).await,
        Command::Schedule(command) => schedule::run(settings, command).await,
        Command::Plugin(command) => plugin::run(settings, command).await,
        Command::Notify(command) => notify::run(settings, command).await,
        Command::Config(command) => config::run(settings, command),
        Command::Repository(command) => repository::run(settings, command).await,
        Command::Key(command) => key::run(settings, command).await,
    }
}
