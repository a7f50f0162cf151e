//! `email-notifier`: each alert event as an e-mail to the runbook's emergency contacts, sent
//! over SMTP to a relay that the operator grants with `allow_tcp` (the host refuses any other
//! destination and logs the refusal with the plugin's name).
//!
//! Configuration: `config.relay` (`host:port`, required; the same as its `allow_tcp` entry),
//! `config.from` (required), `config.to` (required: addresses separated by commas),
//! `config.helo` (default `larder`), `config.subject_prefix` (default none).
//!
//! Plain SMTP only: the connection is not encrypted and the plugin does not authenticate.
//! STARTTLS would need a TLS stack inside the component, and the ones that verify certificates
//! (rustls with ring or aws-lc) need a C compiler for wasm32 that these toolchains lack; use a
//! relay on the same host or network that accepts mail from the backup host (the usual
//! smarthost set-up) and does the encryption onwards.

mod smtp;

use notifier_kit::{AlertState, Error, Event, Guest, PluginInfo, host};

struct Email;

/// The configured settings, checked.
struct Settings {
    relay: String,
    from: String,
    to: Vec<String>,
    helo: String,
    subject_prefix: Option<String>,
}

/// An address must not be able to smuggle SMTP commands or headers.
fn address(key: &str, text: &str) -> Result<String, Error> {
    let text = text.trim();
    let bad = text.is_empty()
        || !text.contains('@')
        || text
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';'));
    if bad {
        return Err(Error::Invalid(format!(
            "config value `{key}`: {text:?} is not an e-mail address like dba@example.com"
        )));
    }
    Ok(text.to_string())
}

fn settings() -> Result<Settings, Error> {
    let relay = notifier_kit::required_config("relay")?;
    if !relay.contains(':') {
        return Err(Error::Invalid(format!(
            "config value `relay` = {relay:?} must be host:port, e.g. relay.internal:25"
        )));
    }
    let to = notifier_kit::required_config("to")?
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| address("to", t))
        .collect::<Result<Vec<_>, _>>()?;
    let helo = host::config("helo").unwrap_or_else(|| "larder".to_string());
    if helo.is_empty() || helo.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::Invalid(format!(
            "config value `helo` = {helo:?} must be one word (a host name)"
        )));
    }
    Ok(Settings {
        relay,
        from: address("from", &notifier_kit::required_config("from")?)?,
        to,
        helo,
        subject_prefix: host::config("subject_prefix").filter(|p| !p.trim().is_empty()),
    })
}

/// A header value on one line (no CR/LF can start a header of its own), RFC 2047-encoded
/// when it is not plain ASCII.
fn header_value(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.is_ascii() {
        flat
    } else {
        format!("=?utf-8?B?{}?=", base64(flat.as_bytes()))
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// RFC 3339 (`2026-12-02T03:00:00.123+00:00`, as the host sends times) to the `Date` header's
/// form (`Wed, 02 Dec 2026 03:00:00 +0000`); `None` for anything else.
fn mail_date(rfc3339: &str) -> Option<String> {
    let year: i64 = rfc3339.get(0..4)?.parse().ok()?;
    let month: usize = rfc3339.get(5..7)?.parse().ok()?;
    let day: i64 = rfc3339.get(8..10)?.parse().ok()?;
    let time = rfc3339.get(11..19)?;
    let offset = rfc3339
        .get(19..)?
        .trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let zone = match offset {
        "Z" | "+00:00" => "+0000".to_string(),
        z if z.len() == 6 => z.replace(':', ""),
        _ => return None,
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    // Days since 1970-01-01 (a Thursday), by the civil-from-days inverse.
    let (y, m) = if month <= 2 {
        (year - 1, month as i64 + 9)
    } else {
        (year, month as i64 - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let weekday = DAYS[(days + 3).rem_euclid(7) as usize];
    Some(format!(
        "{weekday}, {day:02} {} {year} {time} {zone}",
        MONTHS.get(month.checked_sub(1)?)?
    ))
}

/// Longest body line sent, in bytes (SMTP allows 998 before the CRLF).
const MAX_BODY_LINE: usize = 900;

/// `line` in pieces of at most `max` bytes, cut at character boundaries.
fn wrapped(line: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = line;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        pieces.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    pieces.push(rest.to_string());
    pieces
}

/// Who this e-mail is for, by the runbook's escalation matrix.
fn contacts(level: u32) -> &'static str {
    match level {
        0 | 1 => "the database administrator",
        2 => "the system administrator and the development lead",
        _ => "the operations manager and the executive team",
    }
}

/// The whole message (header and body, CRLF line ends).
fn message(settings: &Settings, event: &Event) -> String {
    let mut subject = notifier_kit::summary(event);
    if let Some(prefix) = &settings.subject_prefix {
        subject = format!("{prefix} {subject}");
    }
    let what = match event.state {
        AlertState::Firing => "has fired",
        AlertState::Escalated => "is still active and has been escalated",
        AlertState::Resolved => "is resolved",
        AlertState::Test => "is a test (`backup-cli notify test`): this channel works",
    };
    let mut body = vec![
        format!("{} on database {} {what}.", event.alert, event.database),
        format!(
            "You receive this as an emergency contact at escalation level {} ({}).",
            event.level,
            contacts(event.level)
        ),
        String::new(),
        "What happened:".to_string(),
    ];
    body.extend(event.message.lines().map(|l| format!("  {l}")));
    body.push(String::new());
    body.push("What to do (runbook):".to_string());
    body.extend(event.action.lines().map(|l| format!("  {l}")));
    body.push(String::new());
    body.push(format!(
        "Severity:  {}",
        notifier_kit::severity_word(event.severity)
    ));
    body.push(format!("Database:  {}", event.database));
    if let Some(target) = &event.target {
        body.push(format!("Target:    {target}"));
    }
    if let Some(backup) = &event.backup_id {
        body.push(format!("Backup:    {backup}"));
    }
    body.push(format!("Fired at:  {}", event.fired_at));
    if let Some(resolved) = &event.resolved_at {
        body.push(format!("Resolved:  {resolved}"));
    }
    body.push(format!(
        "Event id:  {} (the same on reminders, escalations and the resolve)",
        event.id
    ));
    for detail in &event.details {
        body.push(format!("{}: {}", detail.name, detail.value));
    }
    let mut header = vec![
        format!("From: {}", settings.from),
        format!("To: {}", settings.to.join(", ")),
        format!("Subject: {}", header_value(&subject)),
        format!(
            "Message-ID: <{}.{}@larder>",
            event.id.replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
                "-"
            ),
            event
                .sent_at
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
        ),
        format!("X-Larder-Event-Id: {}", header_value(&event.id)),
        format!("X-Larder-State: {}", notifier_kit::state_word(event.state)),
        "MIME-Version: 1.0".to_string(),
        "Content-Type: text/plain; charset=utf-8".to_string(),
        "Content-Transfer-Encoding: 8bit".to_string(),
    ];
    if let Some(date) = mail_date(&event.sent_at) {
        header.insert(0, format!("Date: {date}"));
    }
    // SMTP lines stop at 1000 octets: longer ones (a long error) are cut into several.
    let body: Vec<String> = body
        .iter()
        .flat_map(|l| wrapped(l.trim_end_matches('\r'), MAX_BODY_LINE))
        .collect();
    format!("{}\r\n\r\n{}\r\n", header.join("\r\n"), body.join("\r\n"))
}

impl Guest for Email {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "email-notifier".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["tcp".into(), "smtp".into()],
        }
    }

    fn notify(event: Event) -> Result<(), Error> {
        let settings = settings()?;
        let text = message(&settings, &event);
        smtp::connect(&settings.relay)?.deliver(
            &settings.helo,
            &settings.from,
            &settings.to,
            &text,
        )?;
        host::log(
            host::Level::Info,
            &format!(
                "{} ({}) sent to {} through {}",
                event.alert,
                notifier_kit::state_word(event.state),
                settings.to.join(", "),
                settings.relay
            ),
        );
        Ok(())
    }
}

notifier_kit::export!(Email);
