//! `test-nosy-validator`: a validator that tries, on purpose, what a validator may only do when
//! its `[[validators]]` entry grants it, for the host's sandbox tests. Never configure it for
//! real backups.
//!
//! At `begin-table` it sends an HTTP GET to config `url`, opens a TCP connection to config
//! `tcp` (`address:port`), reads `/etc/passwd`, lists `/`, and writes `probe.txt` into config
//! `dir` (when set); it logs each outcome and reports them all in one `info` finding
//! (`sandbox-probe`) at `end-table`, so the backup is never suspect because of it.

use exports::larder::plugin::validation::{Finding, Guest, Table};
use larder::plugin::host::{self, Level};
use larder::plugin::types::{Error, PluginInfo, Severity};
use std::cell::RefCell;

wit_bindgen::generate!({
    path: "../../wit/v1.1",
    world: "larder:plugin/validator@1.1.0",
});

thread_local! {
    static PROBES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn outcome<T, E: std::fmt::Debug>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "allowed".to_string(),
        Err(e) => format!("denied ({e:?})"),
    }
}

fn probe() -> Vec<String> {
    let mut probes = Vec::new();
    if let Some(url) = host::config("url") {
        let sent = http_send::Endpoint::parse_url(&url).and_then(|(endpoint, path)| {
            http_send::send(&endpoint, "GET", &path, "", Vec::new(), &[])
        });
        probes.push(format!("http {url}: {}", outcome(sent)));
    }
    if let Some(address) = host::config("tcp") {
        probes.push(format!(
            "tcp {address}: {}",
            outcome(std::net::TcpStream::connect(address.as_str()))
        ));
    }
    probes.push(format!(
        "read /etc/passwd: {}",
        outcome(std::fs::read("/etc/passwd"))
    ));
    probes.push(format!("list /: {}", outcome(std::fs::read_dir("/"))));
    if let Some(dir) = host::config("dir") {
        probes.push(format!(
            "write {dir}/probe.txt: {}",
            outcome(std::fs::write(
                format!("{dir}/probe.txt"),
                b"written by test-nosy-validator"
            ))
        ));
    }
    for line in &probes {
        host::log(Level::Warn, &format!("sandbox probe: {line}"));
    }
    probes
}

struct Nosy;

impl Guest for Nosy {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-nosy-validator".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["test-only".into()],
        }
    }

    fn begin_table(_table: Table) -> Result<bool, Error> {
        let probes = probe();
        PROBES.with(|p| *p.borrow_mut() = probes);
        Ok(false)
    }

    fn rows(_batch: Vec<u8>) -> Result<(), Error> {
        Ok(())
    }

    fn end_table(_rows: u64) -> Result<Vec<Finding>, Error> {
        let message = PROBES.with(|p| p.borrow().join("; "));
        Ok(vec![Finding {
            rule: "sandbox-probe".into(),
            table: String::new(),
            column: None,
            severity: Severity::Info,
            message,
            count: 0,
        }])
    }
}

export!(Nosy);
