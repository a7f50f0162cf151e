//! A minimal SMTP client (RFC 5321) for one message: greeting, EHLO (HELO if refused), MAIL
//! FROM, RCPT TO per recipient, DATA with dot-stuffing, QUIT. Plain text only: no STARTTLS and
//! no AUTH (see the crate's documentation). The connection is a `std::net::TcpStream`, which on
//! wasm32-wasip2 goes through `wasi:sockets` and so through the host's `allow_tcp` check.

use notifier_kit::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Longest reply line kept (RFC 5321 allows 512 octets; some servers send more).
const MAX_LINE: usize = 4096;
/// Most lines in one multi-line reply.
const MAX_LINES: usize = 100;

/// One SMTP reply: its code and its text lines.
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn said(&self, command: &str) -> String {
        format!(
            "the relay answered {command} with {} {}",
            self.code, self.text
        )
    }
}

/// The connection (read through a buffer, written through it unbuffered: wasi:sockets streams
/// cannot be cloned into a reader and a writer).
pub struct Session {
    connection: BufReader<TcpStream>,
    relay: String,
}

/// Opens a session with `relay` (`host:port`) and reads its greeting.
pub fn connect(relay: &str) -> Result<Session, Error> {
    let stream = TcpStream::connect(relay).map_err(|e| {
        let why = format!("cannot connect to the SMTP relay {relay}: {e}");
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Denied(format!(
                "{why} (the host refused it: is it in this notifier's allow_tcp?)"
            )),
            _ => Error::Unavailable(why),
        }
    })?;
    let mut session = Session {
        connection: BufReader::new(stream),
        relay: relay.to_string(),
    };
    let greeting = session.reply()?;
    expect(&greeting, "the greeting", &[220])?;
    Ok(session)
}

/// A reply code outside `wanted` as the contract's error: 4xx is transient (`unavailable`,
/// retried), 5xx permanent (`invalid`: the sender, a recipient or the message is refused).
fn expect(reply: &Reply, command: &str, wanted: &[u16]) -> Result<(), Error> {
    if wanted.contains(&reply.code) {
        return Ok(());
    }
    let said = reply.said(command);
    Err(match reply.code {
        400..=499 => Error::Unavailable(said),
        530 | 535 | 550 | 553 | 554 => Error::Denied(said),
        _ => Error::Invalid(said),
    })
}

impl Session {
    /// Reads one reply (`250-…` lines continue, `250 …` ends it).
    fn reply(&mut self) -> Result<Reply, Error> {
        let mut text = Vec::new();
        for _ in 0..MAX_LINES {
            let mut line = String::new();
            let read = (&mut self.connection)
                .take(MAX_LINE as u64)
                .read_line(&mut line)
                .map_err(|e| {
                    Error::Unavailable(format!("reading from the SMTP relay {}: {e}", self.relay))
                })?;
            if read == 0 {
                return Err(Error::Unavailable(format!(
                    "the SMTP relay {} closed the connection",
                    self.relay
                )));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    Error::Other(format!(
                        "the SMTP relay {} sent something that is not a reply: {line:?}",
                        self.relay
                    ))
                })?;
            text.push(line.get(4..).unwrap_or_default().to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: text.join(" / "),
                });
            }
        }
        Err(Error::Other(format!(
            "the SMTP relay {} sent a reply of more than {MAX_LINES} lines",
            self.relay
        )))
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let stream = self.connection.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .map_err(|e| {
                Error::Unavailable(format!("writing to the SMTP relay {}: {e}", self.relay))
            })
    }

    /// Sends one command line and checks the reply's code.
    fn command(&mut self, line: &str, wanted: &[u16]) -> Result<Reply, Error> {
        self.send(format!("{line}\r\n").as_bytes())?;
        let reply = self.reply()?;
        let verb = line.split([' ', ':']).next().unwrap_or(line);
        expect(&reply, verb, wanted)?;
        Ok(reply)
    }

    /// Delivers one message (`message`: header and body, lines ending in CRLF) and quits.
    pub fn deliver(
        mut self,
        helo: &str,
        from: &str,
        to: &[String],
        message: &str,
    ) -> Result<(), Error> {
        let ehlo = format!("EHLO {helo}");
        self.send(format!("{ehlo}\r\n").as_bytes())?;
        let reply = self.reply()?;
        if reply.code != 250 {
            // A server that does not speak ESMTP: plain HELO.
            self.command(&format!("HELO {helo}"), &[250])?;
        }
        self.command(&format!("MAIL FROM:<{from}>"), &[250])?;
        for recipient in to {
            self.command(&format!("RCPT TO:<{recipient}>"), &[250, 251])?;
        }
        self.command("DATA", &[354])?;
        self.send(&dot_stuffed(message))?;
        let reply = self.reply()?;
        expect(&reply, "the message", &[250])?;
        // The message is accepted; a relay that hangs up instead of answering QUIT costs nothing.
        let _ = self.command("QUIT", &[221]);
        Ok(())
    }
}

/// The message as DATA sends it: lines starting with `.` get another, then the `.` line.
fn dot_stuffed(message: &str) -> Vec<u8> {
    let mut out = String::with_capacity(message.len() + 8);
    for line in message.split("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    // `split` gave a last empty piece for the final CRLF; it became one CRLF too many.
    if message.ends_with("\r\n") {
        out.truncate(out.len() - 2);
    }
    out.push_str(".\r\n");
    out.into_bytes()
}
