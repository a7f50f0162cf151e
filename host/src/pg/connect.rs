//! Connection settings and connecting, with TLS.
//!
//! Settings come from a URL or key/value string (`--database-url`, `$DATABASE_URL`, the config
//! file), parsed as libpq parses them ([`super::conninfo`]: query parameters override the URL's
//! authority; host, hostaddr and port lists), filled in from the libpq environment (PGHOST,
//! PGHOSTADDR, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE) and libpq's defaults. Several
//! hosts are tried in order, as libpq does. The same resolved settings are handed to pg_dump
//! through its environment, so both always talk to the same server.

use crate::config::DatabaseConfig;
use crate::error::{Error, Result, error_chain};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::Client;

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

/// A server address after the first one, tried in order when the ones before fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    /// The IP address to connect to instead of resolving `host` (libpq's `hostaddr`).
    pub hostaddr: Option<String>,
    pub port: u16,
}

/// Fully resolved connection settings for one database.
#[derive(Clone)]
pub struct ConnectionSettings {
    /// A host name, an IP address, or a Unix-socket folder (starts with `/`): the first host
    /// of the list, the one messages name.
    pub host: String,
    /// The IP address to connect to instead of resolving `host` (libpq's `hostaddr`).
    pub hostaddr: Option<String>,
    pub port: u16,
    /// The further hosts of a host list (`host=a,b`), tried in order if the first fails.
    pub more_endpoints: Vec<Endpoint>,
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
    /// Resolves settings from an optional URL / key-value string plus the libpq environment,
    /// with libpq's precedence: the string's options (its query parameters over its
    /// authority), then `PG*` variables, then the `[database]` config, then defaults.
    pub fn resolve(url: Option<&str>, config: &DatabaseConfig) -> Result<ConnectionSettings> {
        let options = match url {
            Some(url) => super::conninfo::parse(url)?,
            None => Default::default(),
        };
        let option = |key: &str, var: &str| {
            options
                .get(key)
                .cloned()
                .filter(|v| !v.is_empty())
                .or_else(|| env(var))
        };
        let mut endpoints = endpoints(
            option("host", "PGHOST"),
            option("hostaddr", "PGHOSTADDR"),
            option("port", "PGPORT"),
        )?
        .into_iter();
        let first = endpoints
            .next()
            .ok_or_else(|| Error::Config("no database host".into()))?;
        let user = option("user", "PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        let mut settings = ConnectionSettings {
            host: first.host,
            hostaddr: first.hostaddr,
            port: first.port,
            more_endpoints: endpoints.collect(),
            dbname: option("dbname", "PGDATABASE").unwrap_or_else(|| user.clone()),
            user,
            password: options.get("password").cloned(),
            password_source: None,
            sslmode: SslMode::Prefer,
            // The string itself beats the environment, which beats the configuration file
            // (one precedence everywhere).
            sslrootcert: options
                .get("sslrootcert")
                .cloned()
                .or_else(|| env("PGSSLROOTCERT"))
                .map(PathBuf::from)
                .or_else(|| config.sslrootcert.clone()),
        };
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
        settings.password = settings.password.map(crate::logging::secret);
        let sslmode = options
            .get("sslmode")
            .cloned()
            .or_else(|| env("PGSSLMODE"))
            .or_else(|| config.sslmode.clone());
        if let Some(mode) = sslmode {
            settings.sslmode = mode.parse()?;
        }
        if settings.host.starts_with('/')
            && settings.hostaddr.is_none()
            && settings.sslmode != SslMode::VerifyFull
        {
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

    /// Every endpoint in the order they are tried.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let first = Endpoint {
            host: self.host.clone(),
            hostaddr: self.hostaddr.clone(),
            port: self.port,
        };
        std::iter::once(first)
            .chain(self.more_endpoints.iter().cloned())
            .collect()
    }

    /// `host=… port=… database=… user=…` — never the password.
    pub fn describe(&self) -> String {
        let endpoints = self.endpoints();
        let list = |part: &dyn Fn(&Endpoint) -> String| {
            endpoints.iter().map(part).collect::<Vec<_>>().join(",")
        };
        let hostaddr = if endpoints.iter().any(|e| e.hostaddr.is_some()) {
            format!(
                " hostaddr={}",
                list(&|e| e.hostaddr.clone().unwrap_or_default())
            )
        } else {
            String::new()
        };
        format!(
            "host={}{hostaddr} port={} database={} user={}",
            list(&|e| e.host.clone()),
            list(&|e| e.port.to_string()),
            self.dbname,
            self.user
        )
    }

    /// The libpq environment that makes pg_dump/psql connect to the same database.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let endpoints = self.endpoints();
        let list = |part: &dyn Fn(&Endpoint) -> String| {
            endpoints.iter().map(part).collect::<Vec<_>>().join(",")
        };
        let mut vars = vec![
            ("PGHOST", list(&|e| e.host.clone())),
            ("PGPORT", list(&|e| e.port.to_string())),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGSSLMODE", self.sslmode.as_str().to_string()),
            ("PGAPPNAME", "larder".to_string()),
        ];
        if endpoints.iter().any(|e| e.hostaddr.is_some()) {
            vars.push((
                "PGHOSTADDR",
                list(&|e| e.hostaddr.clone().unwrap_or_default()),
            ));
        }
        if let Some(password) = &self.password {
            vars.push(("PGPASSWORD", password.clone()));
        }
        if let Some(root) = &self.sslrootcert {
            vars.push(("PGSSLROOTCERT", root.display().to_string()));
        }
        vars
    }

    fn pg_config(&self, endpoint: &Endpoint) -> Result<tokio_postgres::Config, String> {
        let mut config = tokio_postgres::Config::new();
        if endpoint.host.starts_with('/') {
            config.host_path(&endpoint.host);
        } else {
            config.host(&endpoint.host);
        }
        if let Some(addr) = &endpoint.hostaddr {
            config.hostaddr(
                addr.parse()
                    .map_err(|_| format!("hostaddr '{addr}' is not an IP address"))?,
            );
        }
        config
            .port(endpoint.port)
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
        Ok(config)
    }

    /// What to do about a connection failure, by its kind: wrong password, password missing,
    /// role or database does not exist, server not running.
    pub(crate) fn hint_for(&self, reason: &str) -> String {
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

    /// Connects to the first endpoint that answers, in order (as libpq does); a failure
    /// becomes `Database connection failed: host=… port=… …` with each endpoint's reason.
    pub async fn connect(&self) -> Result<Client> {
        let mut reasons = Vec::new();
        let endpoints = self.endpoints();
        for endpoint in &endpoints {
            match self.connect_endpoint(endpoint).await {
                Ok(client) => return Ok(client),
                Err(reason) if endpoints.len() == 1 => reasons.push(reason),
                Err(reason) => reasons.push(format!(
                    "{}:{}: {reason}",
                    endpoint.hostaddr.as_deref().unwrap_or(&endpoint.host),
                    endpoint.port
                )),
            }
        }
        Err(Error::ConnectionFailed {
            target: self.describe(),
            hint: self.hint_for(&reasons.join("; ")),
            reason: reasons.join("; "),
        })
    }

    async fn connect_endpoint(&self, endpoint: &Endpoint) -> Result<Client, String> {
        let config = self.pg_config(endpoint)?;
        let socket = endpoint.host.starts_with('/') && endpoint.hostaddr.is_none();
        let opened = if self.sslmode == SslMode::Disable
            || (socket && self.sslmode != SslMode::VerifyFull)
        {
            open(&config, tokio_postgres::NoTls).await
        } else {
            open(
                &config,
                tls::connector(self.sslmode, self.sslrootcert.as_deref())?,
            )
            .await
        };
        opened.map_err(|e| error_chain(&e))
    }
}

/// libpq's host, hostaddr and port lists zipped into endpoints: host and hostaddr lists of the
/// same length, one port for all or one per host; empty entries take the defaults.
fn endpoints(
    hosts: Option<String>,
    hostaddrs: Option<String>,
    ports: Option<String>,
) -> Result<Vec<Endpoint>> {
    let split = |list: &Option<String>| -> Vec<String> {
        list.as_deref()
            .map(|l| l.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    };
    let (hosts, hostaddrs, ports) = (split(&hosts), split(&hostaddrs), split(&ports));
    if !hosts.is_empty() && !hostaddrs.is_empty() && hosts.len() != hostaddrs.len() {
        return Err(Error::Config(format!(
            "could not match {} host names to {} hostaddr values",
            hosts.len(),
            hostaddrs.len()
        )));
    }
    let count = hosts.len().max(hostaddrs.len()).max(1);
    if ports.len() > 1 && ports.len() != count {
        return Err(Error::Config(format!(
            "could not match {} port numbers to {count} hosts",
            ports.len()
        )));
    }
    let default_host = || {
        if std::path::Path::new("/var/run/postgresql").is_dir() {
            "/var/run/postgresql".to_string()
        } else {
            "localhost".to_string()
        }
    };
    (0..count)
        .map(|i| {
            let hostaddr = hostaddrs.get(i).filter(|a| !a.is_empty()).cloned();
            let host = match hosts.get(i).filter(|h| !h.is_empty()) {
                Some(host) => host.clone(),
                None => hostaddr.clone().unwrap_or_else(default_host),
            };
            let port_text = ports.get(if ports.len() == 1 { 0 } else { i });
            let port = match port_text.filter(|p| !p.is_empty()) {
                Some(p) => p
                    .parse()
                    .map_err(|_| Error::Config(format!("port '{p}' is not a port number")))?,
                None => 5432,
            };
            Ok(Endpoint {
                host,
                hostaddr,
                port,
            })
        })
        .collect()
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

pub(super) mod tls {
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
