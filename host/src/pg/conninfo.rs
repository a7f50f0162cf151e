//! libpq's connection strings, parsed the way libpq parses them: `postgres://` URIs (user,
//! password, host and port lists, database, then query parameters, which override the parts
//! before them) and `key=value` strings (quoted values, backslash escapes).

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// The keywords libpq accepts. Larder uses host, hostaddr, port, user, password, dbname,
/// sslmode and sslrootcert; the others are accepted (as libpq does) and have no effect here.
const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "passfile",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "sslnegotiation",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
    "require_auth",
    "channel_binding",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "krbsrvname",
    "service",
    "application_name",
    "fallback_application_name",
    "options",
    "connect_timeout",
    "client_encoding",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "target_session_attrs",
    "load_balance_hosts",
    "replication",
];

fn bad(why: impl std::fmt::Display) -> Error {
    Error::Config(format!(
        "the database URL is not valid: {why} (expected postgres://user@host:port/dbname or host=… dbname=…)"
    ))
}

/// The options a connection string sets, by libpq keyword (later settings win).
pub fn parse(text: &str) -> Result<BTreeMap<String, String>> {
    let mut options = BTreeMap::new();
    let rest = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix));
    match rest {
        Some(rest) => parse_uri(rest, &mut options)?,
        None => parse_key_values(text, &mut options)?,
    }
    for key in options.keys() {
        if !KEYWORDS.contains(&key.as_str()) {
            return Err(bad(format!("unknown connection option \"{key}\"")));
        }
    }
    Ok(options)
}

/// `[user[:password]@][host[:port][,…]][/dbname][?key=value&…]`, after the scheme.
fn parse_uri(rest: &str, options: &mut BTreeMap<String, String>) -> Result<()> {
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(slash) => (&before_query[..slash], Some(&before_query[slash + 1..])),
        None => (before_query, None),
    };
    let netloc = match authority.rsplit_once('@') {
        Some((userinfo, netloc)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                options.insert("user".into(), decode(user)?);
            }
            if let Some(password) = password {
                options.insert("password".into(), decode(password)?);
            }
            netloc
        }
        None => authority,
    };
    if !netloc.is_empty() {
        let (mut hosts, mut ports) = (Vec::new(), Vec::new());
        for item in netloc.split(',') {
            let (host, port) = if let Some(inner) = item.strip_prefix('[') {
                let (host, tail) = inner
                    .split_once(']')
                    .ok_or_else(|| bad(format!("missing \"]\" in IPv6 host \"{item}\"")))?;
                let port = match tail {
                    "" => "",
                    tail => tail.strip_prefix(':').ok_or_else(|| {
                        bad(format!("unexpected \"{tail}\" after IPv6 host \"{host}\""))
                    })?,
                };
                (host.to_string(), port)
            } else {
                match item.split_once(':') {
                    Some((host, port)) => (decode(host)?, port),
                    None => (decode(item)?, ""),
                }
            };
            hosts.push(host);
            ports.push(decode(port)?);
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            options.insert("host".into(), hosts.join(","));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            options.insert("port".into(), ports.join(","));
        }
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        options.insert("dbname".into(), decode(path)?);
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            bad(format!(
                "missing \"=\" in query parameter \"{pair}\" of the URL"
            ))
        })?;
        let (key, value) = (decode(key)?, decode(value)?);
        // libpq's JDBC-style alias.
        if key == "ssl" && value == "true" {
            options.insert("sslmode".into(), "require".into());
        } else {
            options.insert(key, value);
        }
    }
    Ok(())
}

fn decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(format!("invalid percent-encoded token in \"{text}\"")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("\"{text}\" does not decode to UTF-8")))
}

/// `key = value key='quoted \' value'`.
fn parse_key_values(text: &str, options: &mut BTreeMap<String, String>) -> Result<()> {
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(());
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(format!("missing \"=\" after \"{key}\"")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(bad(format!("unterminated quoted value for \"{key}\""))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        options.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(text: &str) -> Vec<(String, String)> {
        parse(text).expect("valid").into_iter().collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_parameters_override_the_authority() {
        assert_eq!(
            opts("postgres://app:p%40ss@localhost:5522/db?host=/sock&sslmode=disable"),
            pairs(&[
                ("dbname", "db"),
                ("host", "/sock"),
                ("password", "p@ss"),
                ("port", "5522"),
                ("sslmode", "disable"),
                ("user", "app"),
            ])
        );
        assert_eq!(
            opts("postgresql://h1:5433,[::1],%2Ftmp/db?port=7000"),
            pairs(&[("dbname", "db"), ("host", "h1,::1,/tmp"), ("port", "7000")])
        );
        assert_eq!(
            opts("postgres:///db?host=/run/pg&hostaddr=127.0.0.1"),
            pairs(&[
                ("dbname", "db"),
                ("host", "/run/pg"),
                ("hostaddr", "127.0.0.1")
            ])
        );
        assert_eq!(
            opts("postgres://h1:5433,h2/db"),
            pairs(&[("dbname", "db"), ("host", "h1,h2"), ("port", "5433,")])
        );
    }

    #[test]
    fn key_value_strings_unquote_like_libpq() {
        assert_eq!(
            opts("host=a,b port = 1,2 password='it\\'s x' dbname=d\\ b"),
            pairs(&[
                ("dbname", "d b"),
                ("host", "a,b"),
                ("password", "it's x"),
                ("port", "1,2"),
            ])
        );
        assert!(parse("host=a bogus=1").is_err());
        assert!(parse("postgres://h/db?bogus=1").is_err());
        assert!(parse("host").is_err());
    }
}
