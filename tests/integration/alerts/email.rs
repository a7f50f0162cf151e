//! The `email-notifier` plugin against a real SMTP server on loopback (aiosmtpd): the database
//! goes down and the emergency contacts get the runbook's e-mail through the relay that the
//! notifier's `allow_tcp` grants; a notifier pointed at another address is refused by the host
//! (plugin/tcp.rs), the refusal is logged with the plugin's name, and nothing reaches that
//! address.

use crate::support::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// An SMTP server (python's aiosmtpd) on a free loopback port, keeping every message it
/// accepts in a Maildir; stopped on drop.
pub struct SmtpServer {
    child: std::process::Child,
    pub port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let dir = tempfile::tempdir().expect("temporary folder");
        let maildir = dir.path().join("Maildir");
        let port = free_port();
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the SMTP test server (python3 -m aiosmtpd): {e}; install it with: pip install aiosmtpd (scripts/ensure-prerequisites does)")
            });
        let mut server = SmtpServer {
            child,
            port,
            maildir,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait().expect("aiosmtpd status") {
                panic!(
                    "the SMTP test server (aiosmtpd) exited at start ({status}); is `pip install aiosmtpd` done?"
                );
            }
            if greets(port) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP test server did not greet on port {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every message received so far (as the server stored it, with its X-MailFrom and
    /// X-RcptTo headers), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(self.maildir.join("new"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|f| {
                    let at = f
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (at, f.path())
                })
                .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| {
                std::fs::read_to_string(path)
                    .expect("message file")
                    .replace("\r\n", "\n")
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (bound and let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Whether an SMTP server on `port` sends its 220 greeting.
fn greets(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut greeting = [0u8; 3];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"220"
}

/// The value of header `name` in a stored message (first occurrence, unfolded).
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let head = message.split("\n\n").next().unwrap_or_default();
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn the_emergency_contacts_get_the_runbooks_email_through_the_granted_relay_only() {
    let env = TestEnv::start("email").await;
    let smtp = SmtpServer::start();
    // Somewhere the second notifier must never reach: a listener that records connections.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    elsewhere.set_nonblocking(true).expect("nonblocking");
    let elsewhere_port = elsewhere.local_addr().expect("address").port();
    let relay = format!("127.0.0.1:{}", smtp.port);
    let plugin = plugin_path("email_notifier.wasm");
    let config = format!(
        r#"[repository]
path = "{repo}"
[monitor]
min_free_space = "1MB"
[alerts]
state_dir = "{state}"
retry_for = "1s"

[[notifiers]]
name = "dba-mail"
path = "{plugin}"
config = {{ relay = "{relay}", from = "larder@kitchen-pantry.example", to = "dba@kitchen-pantry.example, oncall@kitchen-pantry.example" }}
allow_tcp = ["{relay}"]

[[notifiers]]
name = "stray-mail"
path = "{plugin}"
config = {{ relay = "127.0.0.1:{elsewhere_port}", from = "larder@kitchen-pantry.example", to = "dba@kitchen-pantry.example" }}
allow_tcp = ["{relay}"]
"#,
        repo = env.repo_dir().display(),
        state = env.work.path().join("alert-state").display(),
        plugin = plugin.display(),
    );
    env.write_config(&config);
    env.run_ok(&["backup", "create", "--name", "before"]);

    // The database is down: one e-mail to both contacts, through the relay.
    let down = "postgres://postgres@127.0.0.1:1/email?sslmode=disable&connect_timeout=2";
    let out = env
        .cli()
        .env("DATABASE_URL", down)
        .args(["monitor", "health", "--alert-on-failure"])
        .output()
        .expect("run backup-cli");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{said}");
    let mail = &messages[0];
    assert_eq!(
        header(mail, "Subject"),
        Some("[FIRING] Database connection failed on email (level 1)"),
        "{mail}"
    );
    assert_eq!(
        header(mail, "X-MailFrom"),
        Some("larder@kitchen-pantry.example")
    );
    assert_eq!(
        header(mail, "X-RcptTo"),
        Some("dba@kitchen-pantry.example, oncall@kitchen-pantry.example"),
        "{mail}"
    );
    assert!(
        header(mail, "X-Larder-Event-Id")
            .is_some_and(|id| id.starts_with("database-connection-failed.database.email.")),
        "{mail}"
    );
    assert!(
        header(mail, "Date").is_some_and(|d| d.ends_with("+0000")),
        "{mail}"
    );
    for line in [
        "Database connection failed on database email has fired.",
        "You receive this as an emergency contact at escalation level 1 (the database administrator).",
        "What to do (runbook):\n  Restart PostgreSQL service",
        "Severity:  critical",
    ] {
        assert!(mail.contains(line), "missing {line:?} in:\n{mail}");
    }
    assert!(
        said.contains("1 alert(s) sent: database connection failed (firing, level 1) to dba-mail"),
        "{said}"
    );

    // The other notifier asked for an address its allow_tcp does not name: the host refused
    // the connection, logged it under the plugin's name, and nothing arrived there.
    assert!(
        said.contains("stray-mail (email_notifier.wasm)")
            && said.contains(&format!(
                "denied a TCP connection to 127.0.0.1:{elsewhere_port}: not in the plugin's allow_tcp"
            )),
        "{said}"
    );
    assert!(
        said.contains("was not delivered through 'stray-mail'"),
        "{said}"
    );
    assert!(
        matches!(elsewhere.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the refused address got a connection"
    );

    // The database is back: the resolve reaches the contacts too, with the same event id.
    let out = env
        .cli()
        .args(["monitor", "health", "--alert-on-failure"])
        .output()
        .expect("run backup-cli");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let messages = smtp.messages();
    assert_eq!(messages.len(), 2, "{}", text(&out));
    assert_eq!(
        header(&messages[1], "Subject"),
        Some("[RESOLVED] Database connection failed on email (level 1)")
    );
    assert_eq!(
        header(&messages[1], "X-Larder-Event-Id"),
        header(mail, "X-Larder-Event-Id")
    );
    assert!(messages[1].contains("is resolved."), "{}", messages[1]);
}
