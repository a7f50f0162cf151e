//! The S3 requests of Object Lock that opendal does not make: a PUT carrying a retention
//! (`x-amz-object-lock-mode`, `x-amz-object-lock-retain-until-date`, with the Content-MD5
//! Object Lock requires), a HEAD that reads an object's retention, and PutObjectRetention
//! (`PUT ?retention`), which extends the lock of an object already stored. They are signed with
//! reqsign's AWS SigV4 signer (the one opendal signs its own requests with) and sent through
//! opendal's HTTP client, so no second S3 stack or HTTP client is built.
//! Everything else the S3 target does goes through opendal ([`super::s3`]).

use super::{Created, Retention, TargetError};
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use opendal::Buffer;
use opendal::raw::{HttpClient, percent_encode_path};
use reqsign_aws_v4::{Credential, RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, Signer};

/// Where the objects are and how requests are signed.
pub struct LockClient {
    target: String,
    /// `{endpoint}/{bucket}/` (path style, as opendal addresses the bucket), then the root.
    base: String,
    signer: Signer<Credential>,
    http: HttpClient,
}

/// Connection settings for [`LockClient::new`], secrets already resolved.
pub struct LockSettings<'a> {
    pub target: &'a str,
    pub bucket: &'a str,
    pub endpoint: Option<&'a str>,
    pub region: &'a str,
    pub root: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

/// The object's Content-MD5 header value (base64 of its MD5).
pub fn content_md5(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

/// A retain-until date as S3 reads it (whole seconds, UTC; a fraction is rounded up, so the
/// lock never ends before the date asked for).
pub fn retain_until(until: DateTime<Utc>) -> String {
    let whole = if until.timestamp_subsec_nanos() > 0 {
        until + chrono::Duration::seconds(1)
    } else {
        until
    };
    whole.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The retention in a HEAD answer's headers; None without one (or one S3 could not mean).
pub fn parse_retention(mode: Option<&str>, until: Option<&str>) -> Option<Retention> {
    let until = DateTime::parse_from_rfc3339(until?.trim()).ok()?;
    Some(Retention {
        mode: mode.unwrap_or("GOVERNANCE").trim().to_ascii_uppercase(),
        until: until.with_timezone(&Utc),
    })
}

impl LockClient {
    pub fn new(s: &LockSettings<'_>) -> Result<LockClient, TargetError> {
        let failed = |reason: String| TargetError::Failed {
            target: s.target.to_string(),
            reason,
        };
        let endpoint = match s.endpoint {
            Some(e) if e.starts_with("http") => e.trim_end_matches('/').to_string(),
            Some(e) => format!("https://{}", e.trim_end_matches('/')),
            None => format!("https://s3.{}.amazonaws.com", s.region),
        };
        let root = s.root.trim_matches('/');
        let base = if root.is_empty() {
            format!("{endpoint}/{}/", s.bucket)
        } else {
            format!("{endpoint}/{}/{}/", s.bucket, percent_encode_path(root))
        };
        let mut credentials = StaticCredentialProvider::new(s.access_key_id, s.secret_access_key);
        if let Some(token) = s.session_token {
            credentials = credentials.with_session_token(token);
        }
        let signer = Signer::new(
            Context::new(),
            credentials,
            RequestSigner::new("s3", s.region),
        );
        let http = HttpClient::new()
            .map_err(|e| failed(format!("cannot make an HTTP client for Object Lock: {e}")))?;
        Ok(LockClient {
            target: s.target.to_string(),
            base,
            signer,
            http,
        })
    }

    fn url(&self, key: &str) -> String {
        format!("{}{}", self.base, percent_encode_path(key))
    }

    /// Signs and sends one request; the answer's status, headers and body.
    async fn send(
        &self,
        what: &str,
        key: &str,
        request: http::request::Builder,
        body: Bytes,
    ) -> Result<http::Response<Buffer>, TargetError> {
        let failed = |reason: String| TargetError::Failed {
            target: self.target.clone(),
            reason: format!("{what} {key}: {reason}"),
        };
        let request = request
            .body(Buffer::from(body))
            .map_err(|e| failed(format!("cannot build the request: {e}")))?;
        let (mut parts, body) = request.into_parts();
        self.signer
            .sign(&mut parts, None)
            .await
            .map_err(|e| failed(format!("cannot sign the request: {e}")))?;
        // The HTTP client sets Host for its connection (as opendal does).
        parts.headers.remove(http::header::HOST);
        self.http
            .send(http::Request::from_parts(parts, body))
            .await
            .map_err(|e| TargetError::Unavailable {
                target: self.target.clone(),
                reason: format!("{what} {key}: {e}"),
            })
    }

    fn answer_error(
        &self,
        what: &str,
        key: &str,
        response: &http::Response<Buffer>,
    ) -> TargetError {
        let status = response.status();
        let body = String::from_utf8_lossy(&response.body().to_bytes()).into_owned();
        let reason = format!("{what} {key}: HTTP {status}: {}", body.trim());
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            TargetError::Unavailable {
                target: self.target.clone(),
                reason,
            }
        } else {
            TargetError::Failed {
                target: self.target.clone(),
                reason,
            }
        }
    }

    /// Writes `data` under `key` locked in `mode` until `until`; with `if_absent`, only
    /// when no object has the key (`If-None-Match: *`).
    pub async fn put(
        &self,
        key: &str,
        data: Bytes,
        mode: &str,
        until: DateTime<Utc>,
        if_absent: bool,
    ) -> Result<Created, TargetError> {
        let mut request = http::Request::put(self.url(key))
            .header(http::header::CONTENT_LENGTH, data.len())
            .header("content-md5", content_md5(&data))
            .header("x-amz-object-lock-mode", mode)
            .header("x-amz-object-lock-retain-until-date", retain_until(until));
        if if_absent {
            request = request.header(http::header::IF_NONE_MATCH, "*");
        }
        let response = self.send("PUT (locked)", key, request, data).await?;
        match response.status() {
            s if s.is_success() => Ok(Created::Written),
            http::StatusCode::PRECONDITION_FAILED if if_absent => Ok(Created::Exists),
            http::StatusCode::NOT_IMPLEMENTED if if_absent => Ok(Created::Unsupported),
            _ => Err(self.answer_error("PUT (locked)", key, &response)),
        }
    }

    /// Locks the stored object `key` in `mode` until `until` (PutObjectRetention on its
    /// current version). S3 lets anyone with `s3:PutObjectRetention` extend a lock in either
    /// mode; shortening one is refused, so callers ask only for a later date.
    pub async fn extend(
        &self,
        key: &str,
        mode: &str,
        until: DateTime<Utc>,
    ) -> Result<(), TargetError> {
        let body = Bytes::from(format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{mode}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            retain_until(until)
        ));
        let request = http::Request::put(format!("{}?retention", self.url(key)))
            .header(http::header::CONTENT_LENGTH, body.len())
            .header("content-md5", content_md5(&body));
        let response = self.send("PUT (retention)", key, request, body).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.answer_error("PUT (retention)", key, &response))
        }
    }

    /// The object's retention (HEAD); None when it has none or does not exist.
    pub async fn retention(&self, key: &str) -> Result<Option<Retention>, TargetError> {
        let response = self
            .send(
                "HEAD",
                key,
                http::Request::head(self.url(key)),
                Bytes::new(),
            )
            .await?;
        match response.status() {
            s if s.is_success() => {
                let header =
                    |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
                Ok(parse_retention(
                    header("x-amz-object-lock-mode"),
                    header("x-amz-object-lock-retain-until-date"),
                ))
            }
            http::StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.answer_error("HEAD", key, &response)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_md5_is_base64_of_the_digest() {
        // RFC 1321's test vector for "abc": 900150983cd24fb0d6963f7d28e17f72.
        assert_eq!(content_md5(b"abc"), "kAFQmDzST7DWlj99KOF/cg==");
    }

    #[test]
    fn retention_dates_are_written_and_read_as_s3_spells_them() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T13:35:36.250Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(
            retain_until(now + chrono::Duration::days(30)),
            "2027-01-01T13:35:37Z",
            "a fraction of a second rounds up"
        );
        let whole = now - chrono::Duration::milliseconds(250);
        assert_eq!(retain_until(whole), "2026-12-02T13:35:36Z");
        let read = parse_retention(Some("compliance"), Some("2027-01-01T13:35:36.000Z"))
            .expect("retention");
        assert_eq!(read.mode, "COMPLIANCE");
        assert!(read.holds_at(now));
        assert!(!read.holds_at(now + chrono::Duration::days(31)));
        assert_eq!(parse_retention(Some("GOVERNANCE"), None), None);
        assert_eq!(parse_retention(None, Some("next tuesday")), None);
    }
}
