//! The README's first command: the quick start runs the whole job on a throwaway PostgreSQL
//! (backup, list, validate, plan, recovery into a new database) and the restored database
//! equals the live one.

use std::path::PathBuf;
use std::process::Command;

/// The quick start example binary, built beside backup-cli by `cargo build --examples`
/// (scripts/quickstart and scripts/test build it).
fn quickstart_binary() -> PathBuf {
    let cli = PathBuf::from(env!("CARGO_BIN_EXE_backup-cli"));
    let path = cli
        .parent()
        .map(|dir| dir.join("examples").join("quickstart"))
        .unwrap_or_default();
    assert!(
        path.is_file(),
        "the quick start example is not built at {}: run `cargo build --examples` \
         (scripts/test does) before the integration tests",
        path.display()
    );
    path
}

#[test]
fn the_quick_start_backs_up_validates_and_recovers_into_an_identical_database() {
    let work = tempfile::tempdir().expect("temporary folder");
    let repo = work.path().join("repo");
    let out = Command::new(quickstart_binary())
        .arg("--repo")
        .arg(&repo)
        .current_dir(work.path())
        .env_remove("BACKUP_CLI_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the quick start");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "quick start failed:\n{said}");
    for step in [
        "$ backup-cli backup create -n quickstart",
        "$ backup-cli backup create --type incremental -n quickstart-changes",
        "$ backup-cli backup list",
        "$ backup-cli backup validate latest",
        "$ backup-cli recovery plan latest -s new-database --dest-db kitchen_pantry_restored",
        "$ backup-cli recovery execute latest -s new-database --dest-db kitchen_pantry_restored",
    ] {
        assert!(
            said.contains(step),
            "the quick start did not run `{step}`:\n{said}"
        );
    }
    // backup list: a header and one line per backup (within 120 columns; the incremental's
    // parent is in --wide and --json).
    let listed: Vec<&str> = said
        .lines()
        .skip_while(|l| !l.starts_with("$ backup-cli backup list"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(listed.len(), 3, "{}", listed.join("\n"));
    assert!(
        listed[1].contains("quickstart-changes") && listed[1].contains(" incremental "),
        "{}",
        listed.join("\n")
    );
    assert!(
        listed[2].contains("full (chain base)"),
        "{}",
        listed.join("\n")
    );
    // Its own comparison of the two databases: the sample's seven tables, each identical.
    let identical = said
        .lines()
        .filter(|l| l.contains("rows, restored") && l.ends_with("identical"))
        .count();
    assert_eq!(
        identical, 7,
        "every sample table restored identically:\n{said}"
    );
    assert!(!said.contains("DIFFERENT"), "{said}");
    assert!(
        repo.join("backups").is_dir(),
        "the repository stays for the user to explore"
    );
}
