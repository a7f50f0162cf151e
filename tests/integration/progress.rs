//! Progress bars appear for a person at a terminal and never in pipes, cron mail or `--json`.

use crate::support::{TestEnv, text};
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn progress_bars_show_on_a_terminal_and_never_in_a_pipe() {
    let env = TestEnv::start("progress").await;
    env.load_kitchen_pantry(0.01).await;

    // A pseudo-terminal through util-linux `script`, as a person at a shell would see it.
    let transcript = env.work.path().join("tty.log");
    let command = format!(
        "DATABASE_URL='{}' BACKUP_CLI_REPO='{}' {} backup create -n at-a-terminal",
        env.url(),
        env.repo_dir().display(),
        env!("CARGO_BIN_EXE_backup-cli")
    );
    let status = Command::new("script")
        .args(["-qfec", &command])
        .arg(&transcript)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("the progress test needs util-linux `script` for a pseudo-terminal");
    assert!(status.success(), "backup at a terminal failed");
    let seen = std::fs::read_to_string(&transcript).expect("transcript");
    assert!(
        seen.contains("public.interactions") && seen.contains(" rows"),
        "no per-table progress bar on a terminal: {seen}"
    );

    let piped = env.run_ok(&["backup", "create", "-n", "in-a-pipe"]);
    assert!(
        !text(&piped).contains('\u{1b}'),
        "escape codes in piped output: {}",
        text(&piped)
    );
    assert!(
        !String::from_utf8_lossy(&piped.stderr).contains(" rows"),
        "a progress bar in a pipe"
    );
    let json = env.run(&["--json", "backup", "create"]);
    assert!(json.status.success());
    assert!(
        json.stderr.is_empty(),
        "--json keeps stderr quiet: {}",
        String::from_utf8_lossy(&json.stderr)
    );
}
