//! A logical replication connection (`replication=database`), for the one thing tokio-postgres
//! cannot do: stream a slot's changes with `START_REPLICATION … LOGICAL` (the CopyBoth
//! sub-protocol). Streaming lets the server decode while the client stores, where
//! `pg_logical_slot_peek_binary_changes` decodes everything into a tuplestore before the first
//! row leaves the server; and a standby status update confirms a position without decoding the
//! WAL a second time, as `pg_replication_slot_advance` does.
//!
//! The connection is made with the same resolved settings as every other one (host lists,
//! sslmode and its certificate checks, password sources) and authenticates with cleartext, MD5
//! or SCRAM-SHA-256 passwords (without channel binding). Only what a capture needs is spoken:
//! simple queries, then the stream of XLogData and keepalive messages, status updates, and
//! Terminate.

use super::ConnectionSettings;
use super::connect::{Endpoint, SslMode, tls};
use crate::error::{Error, Result};
use crate::repository::changes::Lsn;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

/// The transport under the protocol: TCP or a Unix socket, with or without TLS.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01), for status updates.
const PG_EPOCH_MICROS: u64 = 946_684_800_000_000;

/// An open replication connection, authenticated and ready for a query.
pub struct ReplicationConnection {
    io: Box<dyn Transport>,
    read: BytesMut,
}

/// One message of a logical replication stream.
#[derive(Debug)]
pub enum Event {
    /// An output plugin message (one `pgoutput` message) starting at `start`.
    Data { start: Lsn, data: Bytes },
    /// The server has sent everything decoded up to `wal_end`; `reply` asks for a status update.
    Keepalive { wal_end: Lsn, reply: bool },
}

impl ConnectionSettings {
    /// Opens a logical replication connection to the first endpoint that answers, in order,
    /// and runs `setup` (SQL, may be empty) on it; failures read as [`ConnectionSettings::connect`]'s.
    pub async fn connect_replication(&self, setup: &str) -> Result<ReplicationConnection> {
        let mut reasons = Vec::new();
        let endpoints = self.endpoints();
        for endpoint in &endpoints {
            match self.replication_endpoint(endpoint).await {
                Ok(mut connection) => {
                    if !setup.is_empty() {
                        connection.simple_query(setup).await.map_err(|e| {
                            Error::ChangeTracking(format!(
                                "{e} (setting up the replication connection)"
                            ))
                        })?;
                    }
                    return Ok(connection);
                }
                Err(reason) if endpoints.len() == 1 => reasons.push(reason),
                Err(reason) => reasons.push(format!(
                    "{}:{}: {reason}",
                    endpoint.hostaddr.as_deref().unwrap_or(&endpoint.host),
                    endpoint.port
                )),
            }
        }
        let reason = reasons.join("; ");
        let hint = if reason.contains("no pg_hba.conf entry")
            || reason.contains("number of requested standby connections")
            || reason.contains("max_wal_senders")
        {
            format!(
                "incremental backups read changes over a replication connection (replication=database): the server needs max_wal_senders above 0 \
                 with one free, and pg_hba.conf must admit role {} to database {} (a line for the database, not only for `replication`)",
                self.user, self.dbname
            )
        } else {
            self.hint_for(&reason)
        };
        Err(Error::ConnectionFailed {
            target: format!("{} (replication connection)", self.describe()),
            reason,
            hint,
        })
    }

    async fn replication_endpoint(
        &self,
        endpoint: &Endpoint,
    ) -> Result<ReplicationConnection, String> {
        let connecting = tokio::time::timeout(Duration::from_secs(15), self.transport(endpoint));
        let io = connecting
            .await
            .map_err(|_| "timed out connecting".to_string())??;
        let mut connection = ReplicationConnection {
            io,
            read: BytesMut::with_capacity(64 * 1024),
        };
        connection.startup(self).await?;
        Ok(connection)
    }

    /// The socket, with TLS as the sslmode asks (the same rule as the SQL connections).
    async fn transport(&self, endpoint: &Endpoint) -> Result<Box<dyn Transport>, String> {
        let socket = endpoint.host.starts_with('/') && endpoint.hostaddr.is_none();
        let mut io: Box<dyn Transport> = if socket {
            let path = format!("{}/.s.PGSQL.{}", endpoint.host, endpoint.port);
            Box::new(
                tokio::net::UnixStream::connect(&path)
                    .await
                    .map_err(|e| format!("{e} ({path})"))?,
            )
        } else {
            let host = endpoint.hostaddr.as_deref().unwrap_or(&endpoint.host);
            let stream = tokio::net::TcpStream::connect((host, endpoint.port))
                .await
                .map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            Box::new(stream)
        };
        if self.sslmode == SslMode::Disable || (socket && self.sslmode != SslMode::VerifyFull) {
            return Ok(io);
        }
        let mut request = BytesMut::new();
        frontend::ssl_request(&mut request);
        io.write_all(&request).await.map_err(|e| e.to_string())?;
        let mut answer = [0u8; 1];
        io.read_exact(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        if answer[0] != b'S' {
            return match self.sslmode {
                SslMode::Prefer => Ok(io),
                _ => Err("server does not support TLS".into()),
            };
        }
        let mut make = tls::connector(self.sslmode, self.sslrootcert.as_deref())?;
        let connect =
            MakeTlsConnect::<Box<dyn Transport>>::make_tls_connect(&mut make, &endpoint.host)
                .map_err(|e| format!("TLS set-up: {e}"))?;
        let stream = connect
            .connect(io)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(Box::new(stream))
    }
}

impl ReplicationConnection {
    /// Sends the startup packet and authenticates; returns when the server is ready.
    async fn startup(&mut self, settings: &ConnectionSettings) -> Result<(), String> {
        let mut out = BytesMut::new();
        let params = [
            ("user", settings.user.as_str()),
            ("database", settings.dbname.as_str()),
            ("replication", "database"),
            ("application_name", "larder"),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut out).map_err(|e| e.to_string())?;
        self.send(&out).await?;
        let password = || {
            settings
                .password
                .as_deref()
                .ok_or_else(|| "password missing".to_string())
        };
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            let (tag, mut body) = self.frame().await?;
            match tag {
                b'R' => {
                    let kind = body.get_i32();
                    let mut out = BytesMut::new();
                    match kind {
                        0 => continue,
                        3 => frontend::password_message(password()?.as_bytes(), &mut out),
                        5 => {
                            let mut salt = [0u8; 4];
                            body.copy_to_slice(&mut salt);
                            let hash = md5_hash(settings.user.as_bytes(), password()?.as_bytes(), salt);
                            frontend::password_message(hash.as_bytes(), &mut out)
                        }
                        10 => {
                            let offered = body.split(|b| *b == 0).any(|m| m == b"SCRAM-SHA-256");
                            if !offered {
                                return Err("the server asks for a SASL mechanism other than SCRAM-SHA-256".into());
                            }
                            let state = sasl::ScramSha256::new(
                                password()?.as_bytes(),
                                sasl::ChannelBinding::unsupported(),
                            );
                            let sent = frontend::sasl_initial_response("SCRAM-SHA-256", state.message(), &mut out);
                            scram = Some(state);
                            sent
                        }
                        11 | 12 => {
                            let state = scram
                                .as_mut()
                                .ok_or_else(|| "SASL message before SASL started".to_string())?;
                            if kind == 11 {
                                state.update(&body).map_err(|e| format!("SCRAM: {e}"))?;
                                frontend::sasl_response(state.message(), &mut out)
                            } else {
                                state.finish(&body).map_err(|e| format!("SCRAM: {e}"))?;
                                continue;
                            }
                        }
                        other => {
                            return Err(format!(
                                "the server asks for an authentication method Larder does not speak on replication connections (code {other}); use password, md5, scram-sha-256 or trust"
                            ));
                        }
                    }
                    .map_err(|e| e.to_string())?;
                    self.send(&out).await?;
                }
                b'E' => return Err(server_error(&body)),
                b'Z' => return Ok(()),
                // ParameterStatus, BackendKeyData, NoticeResponse.
                _ => {}
            }
        }
    }

    /// Runs SQL (several statements allowed) and waits for the server to be ready again.
    pub async fn simple_query(&mut self, sql: &str) -> Result<(), String> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| e.to_string())?;
        self.send(&out).await?;
        let mut failure = None;
        loop {
            let (tag, body) = self.frame().await?;
            match tag {
                b'E' => failure = Some(server_error(&body)),
                b'Z' => return failure.map_or(Ok(()), Err),
                _ => {}
            }
        }
    }

    /// Starts streaming `slot`'s changes from `start` through `pgoutput` with `options`
    /// (name, value pairs; values are quoted here).
    pub async fn start_logical(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<LogicalStream, String> {
        let options: Vec<String> = options
            .iter()
            .map(|(name, value)| format!("\"{name}\" '{}'", value.replace('\'', "''")))
            .collect();
        let command = format!(
            "START_REPLICATION SLOT \"{}\" LOGICAL {start} ({})",
            slot.replace('"', "\"\""),
            options.join(", ")
        );
        let mut out = BytesMut::new();
        frontend::query(&command, &mut out).map_err(|e| e.to_string())?;
        self.send(&out).await?;
        loop {
            let (tag, body) = self.frame().await?;
            match tag {
                b'W' => return Ok(LogicalStream { connection: self }),
                b'E' => return Err(server_error(&body)),
                _ => {}
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io.write_all(bytes).await.map_err(|e| e.to_string())?;
        self.io.flush().await.map_err(|e| e.to_string())
    }

    /// The next whole message: its tag and body.
    async fn frame(&mut self) -> Result<(u8, Bytes), String> {
        loop {
            if self.read.len() >= 5 {
                let len =
                    u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]])
                        as usize;
                if len < 4 {
                    return Err(format!("malformed message from the server (length {len})"));
                }
                if self.read.len() > len {
                    let tag = self.read[0];
                    let mut frame = self.read.split_to(1 + len);
                    frame.advance(5);
                    return Ok((tag, frame.freeze()));
                }
                self.read.reserve(1 + len - self.read.len());
            }
            let n = self
                .io
                .read_buf(&mut self.read)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }
}

/// A slot's changes as they are decoded.
pub struct LogicalStream {
    connection: ReplicationConnection,
}

impl LogicalStream {
    /// The next XLogData or keepalive.
    pub async fn next(&mut self) -> Result<Event, String> {
        loop {
            let (tag, mut body) = self.connection.frame().await?;
            match tag {
                b'd' if body.len() >= 17 && body[0] == b'w' => {
                    body.advance(1);
                    let start = Lsn(body.get_u64());
                    body.advance(16); // wal end, send time
                    return Ok(Event::Data { start, data: body });
                }
                b'd' if body.len() >= 18 && body[0] == b'k' => {
                    body.advance(1);
                    let wal_end = Lsn(body.get_u64());
                    body.advance(8); // send time
                    return Ok(Event::Keepalive {
                        wal_end,
                        reply: body.get_u8() == 1,
                    });
                }
                b'E' => return Err(server_error(&body)),
                b'c' => return Err("the server ended the stream".into()),
                // NoticeResponse, ParameterStatus.
                b'N' | b'S' => {}
                other => {
                    return Err(format!(
                        "unexpected message '{}' in the replication stream",
                        char::from(other)
                    ));
                }
            }
        }
    }

    /// Sends a standby status update: `received` so far, and `flushed` (when set) as the
    /// slot's new confirmed position — the changes before it are safe and will not be asked for
    /// again.
    pub async fn status(&mut self, received: Lsn, flushed: Option<Lsn>) -> Result<(), String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
            .saturating_sub(PG_EPOCH_MICROS);
        let mut update = BytesMut::with_capacity(34);
        update.put_u8(b'r');
        update.put_u64(received.0);
        update.put_u64(flushed.map_or(0, |l| l.0));
        update.put_u64(flushed.map_or(0, |l| l.0));
        update.put_u64(now);
        update.put_u8(0);
        let mut out = BytesMut::new();
        frontend::CopyData::new(update.freeze())
            .map_err(|e| e.to_string())?
            .write(&mut out);
        self.connection.send(&out).await
    }

    /// Ends the session (Terminate); the server releases the slot as its process exits.
    pub async fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.connection.send(&out).await;
        let _ = self.connection.io.shutdown().await;
    }
}

/// An ErrorResponse as one line: the message, then its detail and hint.
fn server_error(body: &[u8]) -> String {
    let (mut message, mut detail, mut hint) = (String::new(), None, None);
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let text = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'M' => message = text,
            b'D' => detail = Some(text),
            b'H' => hint = Some(text),
            _ => {}
        }
    }
    for (label, text) in [("detail", detail), ("hint", hint)] {
        if let Some(text) = text {
            message.push_str(&format!(" ({label}: {text})"));
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_reads_as_one_line_with_detail_and_hint() {
        let body = b"SERROR\0C42704\0Mreplication slot \"x\" does not exist\0Hcreate it\0\0";
        assert_eq!(
            server_error(body),
            "replication slot \"x\" does not exist (hint: create it)"
        );
    }
}
