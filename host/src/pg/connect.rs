//! Connection settings and connecting, with TLS.
//!
//! Settings come from a URL or key/value string (`--database-url`, `$DATABASE_URL`, the config
//! file), filled in from the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
//! PGSSLMODE) and libpq's defaults. The same resolved settings are handed to pg_dump through
//! its environment, so both always talk to the same server.

use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::Client;
use tokio_postgres::config::Host;

/// libpq's sslmode values that Larder supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it, without certificate checks (libpq's default).
    Prefer,
    /// TLS always, without certificate checks.
    Require,
    /// TLS always, certificate chain and host name verified.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<SslMode> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" | "allow" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(Error::Config(format!(
                "sslmode '{other}' is not supported; use disable, prefer, require or verify-full"
            ))),
        }
    }
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Fully resolved connection settings for one database.
#[derive(Clone)]
pub struct ConnectionSettings {
    /// A host name, an IP address, or a Unix-socket folder (starts with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<String>,
    /// Where the password came from (`config show`), never the password itself.
    pub password_source: Option<&'static str>,
    pub sslmode: SslMode,
    /// CA bundle for verify-full; the webpki roots when unset.
    pub sslrootcert: Option<PathBuf>,
}

impl std::fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ConnectionSettings {
    /// Resolves settings from an optional URL / key-value string plus the libpq environment.
    pub fn resolve(url: Option<&str>, config: &DatabaseConfig) -> Result<ConnectionSettings> {
        let mut settings = ConnectionSettings {
            host: String::new(),
            port: 0,
            user: String::new(),
            dbname: String::new(),
            password: None,
            password_source: None,
            sslmode: SslMode::Prefer,
            // The environment beats the configuration file (one precedence everywhere); an
            // sslmode in the URL itself beats both.
            sslrootcert: env("PGSSLROOTCERT")
                .map(PathBuf::from)
                .or_else(|| config.sslrootcert.clone()),
        };
        let mut sslmode_text = env("PGSSLMODE").or_else(|| config.sslmode.clone());
        if let Some(url) = url {
            // tokio-postgres does not know verify-full: take sslmode out before parsing.
            let (clean, mode) = extract_sslmode(url);
            if mode.is_some() {
                sslmode_text = mode;
            }
            let parsed = tokio_postgres::Config::from_str(&clean).map_err(|e| {
                Error::Config(format!(
                    "the database URL is not valid: {e} (expected postgres://user@host:port/dbname)"
                ))
            })?;
            if let Some(host) = parsed.get_hosts().first() {
                settings.host = match host {
                    Host::Tcp(h) => h.clone(),
                    Host::Unix(p) => p.display().to_string(),
                };
            }
            if let Some(port) = parsed.get_ports().first() {
                settings.port = *port;
            }
            settings.user = parsed.get_user().unwrap_or_default().to_string();
            settings.dbname = parsed.get_dbname().unwrap_or_default().to_string();
            settings.password = parsed
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned());
        }
        if settings.host.is_empty() {
            settings.host = env("PGHOST").unwrap_or_else(|| {
                if std::path::Path::new("/var/run/postgresql").is_dir() {
                    "/var/run/postgresql".into()
                } else {
                    "localhost".into()
                }
            });
        }
        if settings.port == 0 {
            settings.port = match env("PGPORT") {
                Some(p) => p
                    .parse()
                    .map_err(|_| Error::Config(format!("PGPORT '{p}' is not a port number")))?,
                None => 5432,
            };
        }
        if settings.user.is_empty() {
            settings.user = env("PGUSER")
                .or_else(|| env("USER"))
                .unwrap_or_else(|| "postgres".into());
        }
        if settings.dbname.is_empty() {
            settings.dbname = env("PGDATABASE").unwrap_or_else(|| settings.user.clone());
        }
        // One precedence: the URL's own password, then PGPASSWORD (environment), then the
        // config's password_file, then the libpq password file. password_file belongs to the
        // configured database: a URL from the flag or environment replaces it.
        if settings.password.is_some() {
            settings.password_source = Some("the database URL");
        } else if let Some(password) = env("PGPASSWORD") {
            settings.password = Some(password);
            settings.password_source = Some("PGPASSWORD");
        } else if let Some(file) = config
            .password_file
            .as_ref()
            .filter(|_| url == config.url.as_deref())
        {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::Config(format!("cannot read password_file {}: {e}", file.display()))
            })?;
            settings.password = Some(text.trim_end_matches(['\n', '\r']).to_string());
            settings.password_source = Some("password_file");
        } else if let Some(password) = settings.pgpass_password() {
            settings.password = Some(password);
            settings.password_source = Some("the libpq password file");
        }
        if let Some(mode) = sslmode_text {
            settings.sslmode = mode.parse()?;
        }
        if settings.host.starts_with('/') && settings.sslmode != SslMode::VerifyFull {
            settings.sslmode = SslMode::Disable; // no TLS over Unix sockets
        }
        Ok(settings)
    }

    /// The password for these settings from the libpq password file (`$PGPASSFILE`, else
    /// `~/.pgpass`), as libpq (and so pg_dump) would find it: first matching line wins,
    /// `*` matches anything, and a file readable by group or others is ignored.
    fn pgpass_password(&self) -> Option<String> {
        let path = env("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|home| PathBuf::from(home).join(".pgpass")))?;
        let meta = std::fs::metadata(&path).ok()?;
        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
            tracing::warn!(
                "ignoring {}: it is readable by others (chmod 0600 it)",
                path.display()
            );
            return None;
        }
        let host = if self.host.starts_with('/') {
            "localhost".to_string()
        } else {
            self.host.clone()
        };
        let wanted = [
            host,
            self.port.to_string(),
            self.dbname.clone(),
            self.user.clone(),
        ];
        std::fs::read_to_string(&path)
            .ok()?
            .lines()
            .find_map(|line| pgpass_match(line, &wanted))
    }

    /// The same server, another database.
    pub fn with_dbname(&self, dbname: &str) -> ConnectionSettings {
        ConnectionSettings {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// `host=… port=… database=… user=…` — never the password.
    pub fn describe(&self) -> String {
        format!(
            "host={} port={} database={} user={}",
            self.host, self.port, self.dbname, self.user
        )
    }

    /// The libpq environment that makes pg_dump/psql connect to the same database.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGSSLMODE", self.sslmode.as_str().to_string()),
            ("PGAPPNAME", "larder".to_string()),
        ];
        if let Some(password) = &self.password {
            vars.push(("PGPASSWORD", password.clone()));
        }
        if let Some(root) = &self.sslrootcert {
            vars.push(("PGSSLROOTCERT", root.display().to_string()));
        }
        vars
    }

    fn pg_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        if self.host.starts_with('/') {
            config.host_path(&self.host);
        } else {
            config.host(&self.host);
        }
        config
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("larder")
            .connect_timeout(Duration::from_secs(15))
            .keepalives_idle(Duration::from_secs(30));
        if let Some(password) = &self.password {
            config.password(password);
        }
        config.ssl_mode(match self.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        config
    }

    /// What to do about a connection failure, by its kind: wrong password, password missing,
    /// role or database does not exist, server not running.
    fn hint_for(&self, reason: &str) -> String {
        let (user, db) = (&self.user, &self.dbname);
        if reason.contains("password authentication failed") {
            format!(
                "wrong password for role {user} (the password came from {}); fix it there, or set the right one in PGPASSWORD",
                self.password_source.unwrap_or("nowhere")
            )
        } else if reason.contains("password missing") {
            format!(
                "the server asks role {user} for a password and none is set: use PGPASSWORD, [database] password_file or ~/.pgpass (`backup-cli config show` says which apply)"
            )
        } else if reason.contains("role") && reason.contains("does not exist") {
            format!(
                "role {user} does not exist on the server: check the user in --database-url / DATABASE_URL / PGUSER, or create the role"
            )
        } else if reason.contains("database") && reason.contains("does not exist") {
            format!(
                "database {db} does not exist on the server: check the database in --database-url / DATABASE_URL / PGDATABASE (`psql -l` lists them)"
            )
        } else if reason.contains("Connection refused")
            || reason.contains("No such file or directory")
            || reason.contains("timed out")
        {
            format!(
                "no server answers at {}:{}: start PostgreSQL (e.g. `systemctl start postgresql`) or check the host and port",
                self.host, self.port
            )
        } else {
            "check that PostgreSQL is running and that --database-url / DATABASE_URL / PG* variables are right (`backup-cli config show`)".into()
        }
    }

    /// Connects to another database on the same server.
    pub async fn connect_to(&self, dbname: &str) -> Result<Client> {
        self.with_dbname(dbname).connect().await
    }

    /// Connects; a failure becomes `Database connection failed: host=… port=… …`.
    pub async fn connect(&self) -> Result<Client> {
        let config = self.pg_config();
        let failed = |reason: String| Error::ConnectionFailed {
            target: self.describe(),
            hint: self.hint_for(&reason),
            reason,
        };
        let opened = if self.sslmode == SslMode::Disable {
            open(&config, tokio_postgres::NoTls).await
        } else {
            open(
                &config,
                tls::connector(self.sslmode, self.sslrootcert.as_deref()).map_err(failed)?,
            )
            .await
        };
        opened.map_err(|e| failed(error_chain(&e)))
    }
}

/// Connects and drives the connection in the background.
async fn open<T>(config: &tokio_postgres::Config, tls: T) -> Result<Client, tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
{
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {e}");
        }
    });
    Ok(client)
}

/// The password of a `.pgpass` line if its host, port, database and user match `wanted`.
fn pgpass_match(line: &str, wanted: &[String; 4]) -> Option<String> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    fields.push(current);
    if fields.len() != 5 {
        return None;
    }
    let matches = fields
        .iter()
        .zip(wanted)
        .all(|(field, want)| field == "*" || field == want);
    matches.then(|| fields[4].clone())
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A URL or key/value string with its password replaced by `***`, for display.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}{tail}");
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => "password=***".to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Removes `sslmode=…` from a URL or key/value string, returning the cleaned string and mode.
fn extract_sslmode(url: &str) -> (String, Option<String>) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None);
        };
        let mut mode = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.strip_prefix("sslmode=") {
                Some(m) => {
                    mode = Some(m.to_string());
                    false
                }
                None => true,
            })
            .collect();
        let clean = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (clean, mode)
    } else {
        let mut mode = None;
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|pair| match pair.strip_prefix("sslmode=") {
                Some(m) => {
                    mode = Some(m.to_string());
                    false
                }
                None => true,
            })
            .collect();
        (kept.join(" "), mode)
    }
}

mod tls {
    //! rustls set-up for the sslmodes: verify-full checks the chain and name; prefer/require
    //! encrypt without checking the certificate, exactly as libpq does.
    use super::SslMode;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::path::Path;
    use std::sync::Arc;
    use tokio_postgres_rustls::MakeRustlsConnect;

    pub fn connector(mode: SslMode, root_cert: Option<&Path>) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let config = if mode == SslMode::VerifyFull {
            let mut roots = rustls::RootCertStore::empty();
            match root_cert {
                Some(path) => {
                    for cert in CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("reading sslrootcert {}: {e}", path.display()))?
                    {
                        let cert = cert
                            .map_err(|e| format!("reading sslrootcert {}: {e}", path.display()))?;
                        roots
                            .add(cert)
                            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        };
        Ok(MakeRustlsConnect::new(config))
    }

    #[derive(Debug)]
    struct NoVerification(Arc<CryptoProvider>);

    impl ServerCertVerifier for NoVerification {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_urls_and_key_value_strings() {
        let (clean, mode) =
            extract_sslmode("postgres://u@h:5/db?sslmode=verify-full&application_name=x");
        assert_eq!(clean, "postgres://u@h:5/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        let (clean, mode) = extract_sslmode("host=h sslmode=require dbname=d");
        assert_eq!(clean, "host=h dbname=d");
        assert_eq!(mode.as_deref(), Some("require"));
    }

    #[test]
    fn pgpass_lines_match_like_libpq() {
        let wanted = [
            "db.example".to_string(),
            "5432".into(),
            "crm".into(),
            "alice".into(),
        ];
        assert_eq!(
            pgpass_match("db.example:5432:crm:alice:s3cret", &wanted).as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            pgpass_match("*:*:*:alice:any", &wanted).as_deref(),
            Some("any")
        );
        assert_eq!(pgpass_match("db.example:5433:crm:alice:no", &wanted), None);
        assert_eq!(pgpass_match("# comment", &wanted), None);
        assert_eq!(
            pgpass_match(r"*:*:*:*:pa\:ss", &wanted).as_deref(),
            Some("pa:ss"),
            "escaped colon"
        );
    }

    #[test]
    fn describe_never_shows_the_password() {
        let s = ConnectionSettings::resolve(
            Some("postgres://alice:s3cret@db.example:6543/crm?sslmode=require"),
            &DatabaseConfig::default(),
        )
        .expect("resolve");
        assert_eq!(
            s.describe(),
            "host=db.example port=6543 database=crm user=alice"
        );
        assert_eq!(s.sslmode, SslMode::Require);
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
