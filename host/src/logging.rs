//! The log subscriber: our modules at the chosen verbosity, dependencies at `warn` unless
//! `RUST_LOG` says otherwise, and every line scrubbed of credentials before it reaches stderr:
//! the secret values this process read (registered where they are read) and known secret fields.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// What replaces a secret in a log line.
pub const REDACTED: &str = "[REDACTED]";

fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remembers `value` as a secret (a password, a key, a plugin's secret) so that no log line
/// carries it; returns it unchanged. Values shorter than 4 characters would redact ordinary
/// words and are left to the field rules.
pub fn secret(value: String) -> String {
    if value.len() >= 4
        && let Ok(mut known) = secrets().lock()
        && !known.contains(&value)
    {
        known.push(value.clone());
        // Longest first, so a secret containing another is replaced whole.
        known.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
    value
}

/// Field names whose values are credentials, however a dependency prints them
/// (`secret_access_key: "…"`, `password=…`, `Authorization: …`, `"session_token":"…"`).
const SECRET_FIELDS: &[&str] = &[
    "secret_access_key",
    "secret-access-key",
    "secretaccesskey",
    "session_token",
    "security_token",
    "security-token",
    "password",
    "passwd",
    "authorization",
    "signature",
    "credential",
];

/// `line` with every registered secret, every value of a secret field and the password of
/// every URL replaced by [`REDACTED`]: what every log line goes through.
pub fn redact(line: &str) -> String {
    scrub(line, REDACTED)
}

/// The same scrubbing for showing a setting (`config show`), with `***` in place of each
/// secret so that a URL keeps the shape its owner wrote (`postgres://user:***@host/db`).
pub fn redact_for_display(text: &str) -> String {
    scrub(text, "***")
}

/// The one scrubber behind [`redact`] and [`redact_for_display`].
fn scrub(text: &str, marker: &str) -> String {
    let mut out = text.to_string();
    if let Ok(known) = secrets().lock() {
        for secret in known.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), marker);
            }
        }
    }
    redact_fields(&redact_url_passwords(&out, marker), marker)
}

/// Replaces the password in the user-info of every `scheme://user:password@host` in `text`.
fn redact_url_passwords(text: &str, marker: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'' | ')'))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority
            .rsplit_once('@')
            .and_then(|(userinfo, host)| Some((userinfo.split_once(':')?.0, host)))
        {
            Some((user, host)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(marker);
                out.push('@');
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_fields(line: &str, marker: &str) -> String {
    let lower = line.to_ascii_lowercase();
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let Some(field) = SECRET_FIELDS
            .iter()
            .find(|f| lower.as_bytes()[i..].starts_with(f.as_bytes()))
        else {
            i += 1;
            continue;
        };
        let mut j = i + field.len();
        // The rest of the field name (`password_file`, `passwords`) is not a value.
        if j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            i = j;
            continue;
        }
        // Separators: quotes closing the name, `:`, `=`, spaces, and a `Some(` wrapper.
        let mut separated = false;
        while j < bytes.len() {
            if matches!(bytes[j], b'"' | b'\'' | b' ' | b'\t') {
                j += 1;
            } else if matches!(bytes[j], b':' | b'=') {
                separated = true;
                j += 1;
            } else if lower.as_bytes()[j..].starts_with(b"some(") {
                j += 5;
            } else {
                break;
            }
        }
        if !separated {
            i = j.max(i + 1);
            continue;
        }
        // `Authorization: AWS4-HMAC-SHA256 Credential=…` and `Bearer …` carry the value after a word.
        let value_end = |from: usize| {
            let mut k = from;
            while k < bytes.len()
                && !matches!(
                    bytes[k],
                    b'"' | b'\'' | b' ' | b'\t' | b',' | b'&' | b')' | b'}' | b']' | b';'
                )
            {
                k += 1;
            }
            k
        };
        let mut end = value_end(j);
        if *field == "authorization" && end < bytes.len() && bytes[end] == b' ' {
            // The whole header value: up to the end of the quoted or unquoted field.
            end = line[j..]
                .find(['"', '\n'])
                .map_or(bytes.len(), |offset| j + offset);
        }
        if end > j {
            out.push_str(&line[copied..j]);
            out.push_str(marker);
            copied = end;
        }
        i = end.max(i + 1);
    }
    out.push_str(&line[copied..]);
    out
}

/// The filter when `RUST_LOG` is not set: our crates at the verbosity asked for, everything
/// else at `warn` (dependencies' debug logs print requests, headers and their configuration).
pub fn default_filter(verbose: u8) -> String {
    let ours = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    format!("warn,larder={ours},backup_cli={ours}")
}

/// Writes one formatted event to stderr once it is complete, redacted.
pub struct RedactingWriter {
    buffer: Vec<u8>,
}

impl Write for RedactingWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        let text = redact(&String::from_utf8_lossy(&self.buffer));
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// For people: time, level, message and fields.
    #[default]
    Human,
    /// One JSON object per line (`ts`, `level`, `target`, `message` and the event's fields),
    /// for journald, Loki and the like (`--log-format json`).
    Json,
}

/// Installs the subscriber: `RUST_LOG` when set, else [`default_filter`]; every line redacted.
pub fn init(verbose: u8, ansi: bool, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter(verbose)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingWriter { buffer: Vec::new() })
        .with_target(false);
    match format {
        LogFormat::Human => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).init(),
    }
}

/// Formats each event as one JSON object on one line.
struct JsonLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = serde_json::Map::new();
        event.record(&mut JsonFields(&mut fields));
        let mut line = serde_json::Map::new();
        line.insert(
            "ts".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        line.insert(
            "level".into(),
            meta.level().as_str().to_ascii_lowercase().into(),
        );
        line.insert("target".into(), meta.target().into());
        if let Some(message) = fields.remove("message") {
            line.insert("message".into(), message);
        }
        line.extend(fields);
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_and_secret_fields_are_redacted() {
        secret("s3cr3t-Value-123".into());
        assert_eq!(
            redact("config { key: \"s3cr3t-Value-123\" }"),
            "config { key: \"[REDACTED]\" }"
        );
        assert_eq!(
            redact("S3Config { secret_access_key: Some(\"abc/xyz\"), region: \"us\" }"),
            "S3Config { secret_access_key: Some(\"[REDACTED]\"), region: \"us\" }"
        );
        assert_eq!(
            redact("host=db password=hunter2 user=x"),
            "host=db password=[REDACTED] user=x"
        );
        assert_eq!(
            redact("\"authorization\": \"AWS4-HMAC-SHA256 Credential=AKIA/2026, Signature=ff\""),
            "\"authorization\": \"[REDACTED]\""
        );
        assert_eq!(
            redact("X-Amz-Signature=abcdef&X-Amz-Credential=AKIA%2F"),
            "X-Amz-Signature=[REDACTED]&X-Amz-Credential=[REDACTED]"
        );
        // Names that merely start like a field, and fields without a value, stay.
        assert_eq!(
            redact("cannot read password_file /x; no password given"),
            "cannot read password_file /x; no password given"
        );
    }

    #[test]
    fn url_passwords_are_redacted_in_logs_and_for_display() {
        assert_eq!(
            redact("connecting to postgres://app:pa:ss@db.example:5432/shop?sslmode=require"),
            "connecting to postgres://app:[REDACTED]@db.example:5432/shop?sslmode=require"
        );
        assert_eq!(
            redact_for_display("postgres://app:hunter2@db/shop"),
            "postgres://app:***@db/shop"
        );
        assert_eq!(
            redact_for_display("host=db user=app password=hunter2 dbname=shop"),
            "host=db user=app password=*** dbname=shop"
        );
        // No password, nothing to hide: URLs and an e-mail address in user-info stay.
        assert_eq!(
            redact_for_display("postgres://app@db/shop and https://example.com/a@b"),
            "postgres://app@db/shop and https://example.com/a@b"
        );
    }
}
