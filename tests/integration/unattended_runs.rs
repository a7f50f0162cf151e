//! backup-cli run by cron and by scripts: reading never creates a repository or a folder, a
//! missing one is named with how its path was chosen, the defaults are announced, a closed
//! pipe ends a listing quietly, `-q` is quiet, and tables fit 120 columns.

use crate::support::{TestEnv, text};
use std::path::Path;
use std::process::{Command, Output};

/// `backup-cli` as cron runs it: working directory `/`, no configuration, no BACKUP_CLI_*
/// variables; only the database in the environment.
fn cron(env: &TestEnv, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backup-cli"))
        .args(args)
        .current_dir("/")
        .env_remove("BACKUP_CLI_CONFIG")
        .env_remove("BACKUP_CLI_REPO")
        .env("DATABASE_URL", env.url())
        .output()
        .expect("run backup-cli")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runbooks_cron_line_from_root_without_a_config_creates_nothing_and_says_why() {
    for path in [
        "/backups",
        "/backup-cli.toml",
        "/etc/backup-cli/config.toml",
    ] {
        assert!(
            !Path::new(path).exists(),
            "{path} exists on this machine, so this test cannot tell what backup-cli creates; remove it"
        );
    }
    let env = TestEnv::start("pantry").await;

    let out = cron(&env, &["monitor", "health", "--alert-on-failure"]);
    // Table cells wrap: compare with the whitespace folded.
    let all = text(&out).split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(!Path::new("/backups").exists(), "health created /backups");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("no configuration file found").count(),
        1,
        "the defaults are announced once: {stderr}"
    );
    assert!(stderr.contains("/backup-cli.toml"), "{stderr}");
    assert!(
        all.contains("no repository at /backups")
            && all.contains("no configuration file was found"),
        "names the path and how it was chosen: {all}"
    );

    // -q silences the note, not the failure.
    let quiet = cron(&env, &["-q", "backup", "list"]);
    let said = text(&quiet);
    assert_eq!(quiet.status.code(), Some(1), "{said}");
    assert!(!said.contains("no configuration file found"), "{said}");
    assert!(said.contains("no repository at /backups"), "{said}");

    // Writing a backup does not start a repository at a place nobody chose either.
    let created = cron(&env, &["backup", "create"]);
    assert_eq!(created.status.code(), Some(1), "{}", text(&created));
    assert!(
        text(&created).contains("backup-cli init"),
        "{}",
        text(&created)
    );
    assert!(
        !Path::new("/backups").exists(),
        "backup create made /backups"
    );

    // A typo'd path (flag, then environment): named with its origin, nothing created.
    let typo = env.work.path().join("kitchen-pantry/backupz");
    let out = env.run(&["--repo", typo.to_str().expect("path"), "backup", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("no repository at {}", typo.display()))
            && text(&out).contains("flag --repo"),
        "{}",
        text(&out)
    );
    let out = env
        .cli()
        .env("BACKUP_CLI_REPO", &typo)
        .args(["monitor", "health"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("environment variable BACKUP_CLI_REPO"),
        "{}",
        text(&out)
    );
    // A backup into it fails on the missing parent instead of building the tree.
    let out = env.run(&["--repo", typo.to_str().expect("path"), "backup", "create"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("parent folder does not exist"),
        "{}",
        text(&out)
    );
    assert!(
        !env.work.path().join("kitchen-pantry").exists(),
        "no folder was created for the typo"
    );
    // `init` is the command that creates, parents and all.
    let config = env.work.path().join("made.toml");
    env.run_ok(&[
        "--config",
        config.to_str().expect("path"),
        "--repo",
        typo.to_str().expect("path"),
        "init",
    ]);
    assert!(typo.join("larder-repository.json").is_file());
}

/// Runs `backup-cli args` with stdout a pipe whose reader is already gone (`| head` that
/// has finished).
fn into_closed_pipe(env: &TestEnv, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    env.cli()
        .args(args)
        .stdout(writer)
        .output()
        .expect("run backup-cli")
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_end_quietly_on_a_closed_pipe_and_tables_fit_120_columns() {
    let env = TestEnv::start("pantry").await;
    env.load_kitchen_pantry(0.001).await;
    let repo = env.repo_dir();
    env.write_config(&format!(
        "[repository]\npath = \"{}\"\n\n[monitor]\nmin_free_space = \"1MB\"\n\n[[schedules]]\nname = \"nightly\"\ntype = \"full\"\ncron = \"0 7 * * *\"\n",
        repo.display()
    ));
    let long_name = format!("nightly-{}", "before-the-migration-".repeat(7));

    // -q: no summary from backup create (the backup is still made).
    let out = env.run_ok(&["-q", "backup", "create", "-n", &long_name]);
    assert!(
        out.stdout.is_empty(),
        "-q printed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let id = env.run_json(&["backup", "list"])[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    env.run_ok(&["backup", "validate", &id]);

    for args in [
        &["backup", "list"][..],
        &["backup", "list", "-l", "1"],
        &["--json", "backup", "list"],
        &["--wide", "backup", "list"],
        &["backup", "validate", "latest"],
        &["schedule", "list"],
        &["plugin", "list"],
        &["monitor", "health"],
        &["monitor", "alerts"],
        &["config", "show"],
        &["recovery", "plan", "latest"],
        &["backup", "export", "latest"],
    ] {
        let out = into_closed_pipe(&env, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some_and(|c| c != 101) && !stderr.contains("panicked"),
            "backup-cli {} on a closed pipe: {:?}\n{stderr}",
            args.join(" "),
            out.status
        );
        if args != ["backup", "export", "latest"] {
            assert!(
                !stderr.contains("error"),
                "backup-cli {} is not quiet on a closed pipe: {stderr}",
                args.join(" ")
            );
        }
    }

    // Human tables fit 120 columns, ids unbroken; --wide shows every column.
    for args in [
        &["backup", "list"][..],
        &["monitor", "health"],
        &["schedule", "list"],
    ] {
        let out = env.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in stdout.lines() {
            assert!(
                line.chars().count() <= 120,
                "backup-cli {} printed a line of {} columns:\n{stdout}",
                args.join(" "),
                line.chars().count()
            );
        }
    }
    let listed = String::from_utf8_lossy(&env.run_ok(&["backup", "list"]).stdout).into_owned();
    assert!(listed.contains(&id), "{listed}");
    assert!(!listed.contains("DURATION"), "{listed}");
    let wide =
        String::from_utf8_lossy(&env.run_ok(&["--wide", "backup", "list"]).stdout).into_owned();
    assert!(
        wide.contains("DURATION") && wide.contains("LOGICAL") && wide.contains(&long_name),
        "{wide}"
    );
}
