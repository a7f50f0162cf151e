//! One HTTP exchange over `wasi:http/outgoing-handler` (guest side, for any Larder plugin world):
//! whole request body out, whole response body in (objects and messages are bounded in size).
//! Errors come in the contract's kinds, so each plugin maps them one-to-one onto its bindings.

use std::io::{Read, Write};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

/// Why an exchange failed, in the kinds of the contract's `error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The host refused the destination (not in `allow_hosts`).
    Denied(String),
    /// The receiver is down, unreachable or timed out: worth retrying.
    Unavailable(String),
    /// The request itself is wrong (a bad URL or header).
    Invalid(String),
    Other(String),
}

/// Where requests go: scheme and `host[:port]`.
pub struct Endpoint {
    pub https: bool,
    pub authority: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, Error> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(Error::Invalid(format!(
                "endpoint {url:?} must start with http:// or https://"
            )));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(Error::Invalid(format!(
                "endpoint {url:?} must be scheme://host[:port] only"
            )));
        }
        Ok(Endpoint {
            https,
            authority: authority.to_string(),
        })
    }

    /// A whole URL, `scheme://host[:port][/path][?query]`: its endpoint and its path with query.
    pub fn parse_url(url: &str) -> Result<(Endpoint, String), Error> {
        let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
        let split = url[after_scheme..]
            .find('/')
            .map(|i| i + after_scheme)
            .unwrap_or(url.len());
        let endpoint = Endpoint::parse(&url[..split])?;
        let path = match &url[split..] {
            "" => "/".to_string(),
            path => path.to_string(),
        };
        Ok((endpoint, path))
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

fn transport_error(what: &str, e: ErrorCode) -> Error {
    match e {
        ErrorCode::HttpRequestDenied => Error::Denied(format!(
            "{what}: the host denied the request (is the endpoint in allow_hosts?)"
        )),
        ErrorCode::DnsError(_)
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::ConnectionTerminated
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationIpUnroutable => Error::Unavailable(format!("{what}: {e:?}")),
        other => Error::Other(format!("{what}: {other:?}")),
    }
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::Unavailable(format!("{what}: {e}"))
}

pub fn send(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    query: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> Result<Response, Error> {
    let what = format!("{method} {path}");
    let mut fields: Vec<(String, Vec<u8>)> = headers
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    if method == "PUT" || method == "POST" {
        fields.push((
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ));
    }
    let fields = Fields::from_list(&fields)
        .map_err(|e| Error::Invalid(format!("{what}: bad header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "HEAD" => Method::Head,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    let scheme = if endpoint.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let path_with_query = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let set = request
        .set_method(&method)
        .and(request.set_scheme(Some(&scheme)))
        .and(request.set_authority(Some(&endpoint.authority)))
        .and(request.set_path_with_query(Some(&path_with_query)));
    if set.is_err() {
        return Err(Error::Invalid(format!(
            "{what}: the request line was rejected"
        )));
    }
    let outgoing = request
        .body()
        .map_err(|()| Error::Other(format!("{what}: no request body")))?;
    let future = outgoing_handler::handle(request, None).map_err(|e| transport_error(&what, e))?;
    // If the body cannot be sent, the response future says why (refused, reset, an early
    // answer from the server); report that rather than the closed stream.
    let sent = (|| {
        let mut stream = outgoing
            .write()
            .map_err(|()| Error::Other(format!("{what}: no body stream")))?;
        stream.write_all(body).map_err(|e| io_error(&what, e))?;
        // Every byte was accepted; the HTTP client may already have taken the whole body
        // (Content-Length reached) and closed the stream, which is success, not an error.
        match stream.blocking_flush() {
            Ok(()) | Err(StreamError::Closed) => {}
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Error::Unavailable(format!(
                    "{what}: {}",
                    e.to_debug_string()
                )));
            }
        }
        drop(stream);
        OutgoingBody::finish(outgoing, None).map_err(|e| transport_error(&what, e))
    })();

    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(transport_error(&what, e)),
        Some(Err(())) | None => return Err(Error::Other(format!("{what}: the response was lost"))),
    };
    if let Err(e) = sent {
        return Err(match response.status() {
            status if status >= 400 => Error::Unavailable(format!(
                "{what}: HTTP {status} before the body was sent ({e:?})"
            )),
            _ => e,
        });
    }
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|()| Error::Other(format!("{what}: no response body")))?;
    let mut data = Vec::new();
    {
        let mut stream = incoming
            .stream()
            .map_err(|()| Error::Other(format!("{what}: no response stream")))?;
        stream
            .read_to_end(&mut data)
            .map_err(|e| io_error(&what, e))?;
    }
    drop(IncomingBody::finish(incoming));
    Ok(Response {
        status,
        headers,
        body: data,
    })
}
