//! `backup-cli`: the thin command-line layer over the Larder engine.
//!
//! Parses flags, resolves them once against the environment and the configuration
//! (`settings.rs`), hands the command to its noun's file (`commands/`) and prints the result
//! for people (tables) or machines (`--json`, `output.rs`); this file owns the exit status.
//! Exit codes: 0 success, 1 failure, 2 usage error or refusal, 130 stopped by SIGINT (Ctrl-C),
//! 143 stopped by SIGTERM (after undoing what the operation had changed).

mod cli;
mod commands;
mod output;
mod settings;

use clap::Parser;
use cli::Cli;
use larder::Error;
use larder::engine::interrupt;
use output::Outcome;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    cap_malloc_arenas();
    let cli = Cli::parse();
    // The daemon logs every run: info by default, JSON lines on request.
    let (verbose, log_format) = match &cli.command {
        cli::Command::Daemon(args) => (
            cli.global.verbose.max(1),
            match args.log_format {
                cli::LogFormatArg::Human => larder::logging::LogFormat::Human,
                cli::LogFormatArg::Json => larder::logging::LogFormat::Json,
            },
        ),
        _ => (cli.global.verbose, larder::logging::LogFormat::Human),
    };
    larder::logging::init(verbose, std::io::stderr().is_terminal(), log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::note!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.global.json;
    let daemon = matches!(cli.command, cli::Command::Daemon(_));
    output::set_wide(cli.global.wide);
    let result = runtime.block_on(async {
        if let Err(e) = interrupt::listen() {
            tracing::warn!("cannot catch SIGINT and SIGTERM: {e}");
        }
        let work = commands::run(cli);
        let mut work = std::pin::pin!(work);
        tokio::select! {
            result = &mut work => result,
            signal = interrupt::received() => {
                if interrupt::cleanup_pending() {
                    // The operation undoes its work and reports; a second signal stops waiting.
                    tokio::select! {
                        result = &mut work => result,
                        signal = interrupt::received_again() => Err(Error::Interrupted {
                            signal,
                            state: if daemon {
                                "interrupted again: the daemon stopped without waiting for its \
                                 running backup; that backup is not visible (no manifest was \
                                 written) and the chunks it wrote are reclaimed by the next garbage \
                                 collection; the locks of this process are cleared by the next \
                                 daemon on this host or `backup-cli repository unlock`".into()
                            } else {
                                "interrupted again: stopped without finishing the clean-up; \
                                 a restore's transaction is discarded by PostgreSQL, and a partial \
                                 database (named *_larder_partial) is dropped by the next restore \
                                 into the same database".into()
                            },
                        }),
                    }
                } else {
                    Err(Error::Interrupted {
                        signal,
                        state: "stopped before anything was recorded; chunks a backup had \
                                written are reclaimed by the next garbage collection".into(),
                    })
                }
            }
        }
    });
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        // The report (JSON envelope included) is printed; the reason goes to stderr.
        Ok(Outcome::Failed(e)) => {
            output::note!("error: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            if json {
                output::error(&e);
            }
            output::note!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Caps glibc's malloc arenas at the number of cores (at least 2), unless `MALLOC_ARENA_MAX`
/// says otherwise. glibc gives each thread that meets a busy arena a new one, up to 8 per core;
/// chunk buffers freed into many arenas stay resident, so the peak of a backup moved by ±20 MiB
/// from run to run with which threads happened to allocate where (BENCHMARKS, "malloc arenas").
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a tunable of the allocator; called before any thread
        // but this one exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
