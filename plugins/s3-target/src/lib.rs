//! `s3-target`: a Larder storage target speaking the S3 API over `wasi:http`, signed with AWS
//! Signature Version 4, path-style addressing, so it works with AWS S3 and any S3-compatible
//! server (MinIO, Ceph RGW, Garage, moto, …).
//!
//! Configuration (`config` table of the `[[targets]]` entry):
//! - `endpoint`: `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000` (required);
//! - `bucket` (required), `region` (default `us-east-1`), `prefix` (optional key prefix).
//!
//! Secrets (`secrets` table, resolved by the host): `access_key_id`, `secret_access_key`,
//! optionally `session_token`. The endpoint's host must be in the entry's `allow_hosts`.

mod sigv4;

use exports::larder::plugin::storage::{Guest, ListPage, ObjectInfo};
use http_send::{Endpoint, Response};
use larder::plugin::host::{self, Level};
use larder::plugin::types::{Error, PluginInfo};

wit_bindgen::generate!({
    path: "../../wit/v1",
    world: "larder:plugin/storage-target@1.0.0",
});

struct S3Target;

/// The bucket and credentials, read from the host on every call (cheap, and a rotated secret
/// is picked up without reloading the plugin).
struct Bucket {
    endpoint: Endpoint,
    bucket: String,
    prefix: String,
    credentials: sigv4::Credentials,
}

fn required(value: Option<String>, what: &str) -> Result<String, Error> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::Invalid(format!("{what} is required")))
}

impl Bucket {
    fn from_host() -> Result<Bucket, Error> {
        let endpoint = Endpoint::parse(&required(
            host::config("endpoint"),
            "config value `endpoint`",
        )?)
        .map_err(contract_error)?;
        let prefix = host::config("prefix")
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty())
            .map(|p| format!("{p}/"))
            .unwrap_or_default();
        Ok(Bucket {
            endpoint,
            bucket: required(host::config("bucket"), "config value `bucket`")?,
            prefix,
            credentials: sigv4::Credentials {
                access_key_id: required(host::secret("access_key_id"), "secret `access_key_id`")?,
                secret_access_key: required(
                    host::secret("secret_access_key"),
                    "secret `secret_access_key`",
                )?,
                session_token: host::secret("session_token"),
                region: host::config("region").unwrap_or_else(|| "us-east-1".into()),
            },
        })
    }

    fn object_path(&self, key: &str) -> String {
        format!(
            "/{}/{}",
            self.bucket,
            sigv4::encode_path(&format!("{}{key}", self.prefix))
        )
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Error> {
        let signed = sigv4::sign(
            &self.credentials,
            method,
            &self.endpoint.authority,
            path,
            query,
            body,
        );
        http_send::send(
            &self.endpoint,
            method,
            path,
            &signed.query,
            signed.headers,
            body,
        )
        .map_err(contract_error)
    }
}

/// An HTTP exchange's failure in this world's error type (the kinds are the same).
fn contract_error(e: http_send::Error) -> Error {
    match e {
        http_send::Error::Denied(m) => Error::Denied(m),
        http_send::Error::Unavailable(m) => Error::Unavailable(m),
        http_send::Error::Invalid(m) => Error::Invalid(m),
        http_send::Error::Other(m) => Error::Other(m),
    }
}

/// Maps an unexpected S3 status to the contract's error kinds.
fn status_error(call: &str, key: &str, response: &Response) -> Error {
    let body = String::from_utf8_lossy(&response.body);
    let code = xml_text(&body, "Code").unwrap_or_default();
    let message = format!(
        "{call} {key}: HTTP {} {code} {}",
        response.status,
        xml_text(&body, "Message").unwrap_or_default()
    );
    match response.status {
        404 => Error::NotFound,
        401 | 403 => Error::Denied(message),
        400 | 405 | 411 | 413 => Error::Invalid(message),
        408 | 429 | 500..=599 => Error::Unavailable(message),
        _ => Error::Other(message),
    }
}

fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    doc.descendants()
        .find(|n| n.tag_name().name() == tag)
        .and_then(|n| n.text())
        .map(str::to_string)
}

impl Guest for S3Target {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "s3-target".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["http".into(), "durable-put".into()],
        }
    }

    fn put(key: String, data: Vec<u8>) -> Result<(), Error> {
        let bucket = Bucket::from_host()?;
        let response = bucket.send("PUT", &bucket.object_path(&key), &[], &data)?;
        match response.status {
            200..=299 => Ok(()),
            _ => Err(status_error("PUT", &key, &response)),
        }
    }

    fn get(key: String) -> Result<Vec<u8>, Error> {
        let bucket = Bucket::from_host()?;
        let response = bucket.send("GET", &bucket.object_path(&key), &[], &[])?;
        match response.status {
            200 => Ok(response.body),
            _ => Err(status_error("GET", &key, &response)),
        }
    }

    fn stat(key: String) -> Result<Option<u64>, Error> {
        let bucket = Bucket::from_host()?;
        let response = bucket.send("HEAD", &bucket.object_path(&key), &[], &[])?;
        match response.status {
            200 => response
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    Error::Other(format!("HEAD {key}: no Content-Length in the answer"))
                }),
            404 => Ok(None),
            _ => Err(status_error("HEAD", &key, &response)),
        }
    }

    fn list(prefix: String, cursor: Option<String>) -> Result<ListPage, Error> {
        let bucket = Bucket::from_host()?;
        let full_prefix = format!("{}{prefix}", bucket.prefix);
        let mut query = vec![("list-type", "2"), ("prefix", full_prefix.as_str())];
        if let Some(token) = cursor.as_deref() {
            query.push(("continuation-token", token));
        }
        let path = format!("/{}", bucket.bucket);
        let response = bucket.send("GET", &path, &query, &[])?;
        if response.status != 200 {
            return Err(status_error("LIST", &prefix, &response));
        }
        let xml = String::from_utf8_lossy(&response.body);
        let doc = roxmltree::Document::parse(&xml)
            .map_err(|e| Error::Other(format!("LIST {prefix}: unreadable answer: {e}")))?;
        let mut objects = Vec::new();
        for contents in doc
            .descendants()
            .filter(|n| n.tag_name().name() == "Contents")
        {
            let field = |name: &str| {
                contents
                    .children()
                    .find(|c| c.tag_name().name() == name)
                    .and_then(|c| c.text())
            };
            let (Some(key), Some(size)) =
                (field("Key"), field("Size").and_then(|s| s.parse().ok()))
            else {
                continue;
            };
            if let Some(key) = key.strip_prefix(&bucket.prefix) {
                objects.push(ObjectInfo {
                    key: key.to_string(),
                    size,
                });
            }
        }
        let truncated = doc
            .descendants()
            .any(|n| n.tag_name().name() == "IsTruncated" && n.text() == Some("true"));
        let next = if truncated {
            doc.descendants()
                .find(|n| n.tag_name().name() == "NextContinuationToken")
                .and_then(|n| n.text())
                .map(str::to_string)
        } else {
            None
        };
        Ok(ListPage { objects, next })
    }

    fn delete(key: String) -> Result<(), Error> {
        let bucket = Bucket::from_host()?;
        let response = bucket.send("DELETE", &bucket.object_path(&key), &[], &[])?;
        match response.status {
            200..=299 | 404 => Ok(()),
            _ => Err(status_error("DELETE", &key, &response)),
        }
    }

    fn flush() -> Result<(), Error> {
        // S3 acknowledges a PUT only once the object is durably stored.
        host::log(
            Level::Trace,
            "flush: nothing to do, S3 PUTs are durable when acknowledged",
        );
        Ok(())
    }
}

export!(S3Target);
