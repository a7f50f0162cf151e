//! Retries with exponential backoff and a timeout per operation, for every target (built-in or
//! plugin). Only `Unavailable` is retried: a missing object, a full disk or a refusal will not
//! change by asking again.

use super::{Created, ObjectInfo, Retention, Target, TargetError};
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Attempts after the first.
pub const RETRIES: usize = 4;
/// Longest any single attempt may take.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Retrying {
    inner: Arc<dyn Target>,
}

impl Retrying {
    pub fn wrap(inner: Arc<dyn Target>) -> Arc<dyn Target> {
        Arc::new(Retrying { inner })
    }

    async fn run<T, F, Fut>(&self, what: &str, key: &str, op: F) -> Result<T, TargetError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, TargetError>>,
    {
        let attempt = || async {
            match tokio::time::timeout(OPERATION_TIMEOUT, op()).await {
                Ok(result) => result,
                Err(_) => Err(TargetError::Unavailable {
                    target: self.inner.name().to_string(),
                    reason: format!(
                        "{what} {key} took longer than {}",
                        humantime::format_duration(OPERATION_TIMEOUT)
                    ),
                }),
            }
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(RETRIES)
                    .with_jitter(),
            )
            .when(|e| matches!(e, TargetError::Unavailable { .. }))
            .notify(|e, delay| {
                tracing::warn!(
                    "{e}; retrying {what} {key} in {}",
                    humantime::format_duration(delay)
                );
            })
            .await
    }
}

#[async_trait]
impl Target for Retrying {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), TargetError> {
        self.run("put", key, || self.inner.put(key, data.clone()))
            .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<Created, TargetError> {
        // A retried create whose first attempt landed answers `Exists`: lock owners tell
        // their own object by its token.
        self.run("put if absent", key, || {
            self.inner.put_if_absent(key, data.clone())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, TargetError> {
        self.run("get", key, || self.inner.get(key)).await
    }

    async fn stat(&self, key: &str) -> Result<Option<u64>, TargetError> {
        self.run("stat", key, || self.inner.stat(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        self.run("list", prefix, || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), TargetError> {
        self.run("delete", key, || self.inner.delete(key)).await
    }

    fn append_only(&self) -> bool {
        self.inner.append_only()
    }

    async fn retention(&self, key: &str) -> Result<Option<Retention>, TargetError> {
        self.run("retention check", key, || self.inner.retention(key))
            .await
    }

    async fn put_until(
        &self,
        key: &str,
        data: Bytes,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), TargetError> {
        self.run("put", key, || {
            self.inner.put_until(key, data.clone(), until)
        })
        .await
    }

    async fn hold_until(&self, key: &str, until: Option<DateTime<Utc>>) -> Result<(), TargetError> {
        self.run("retention extension", key, || {
            self.inner.hold_until(key, until)
        })
        .await
    }

    async fn available_space(&self) -> Result<Option<u64>, TargetError> {
        self.run("space check", "", || self.inner.available_space())
            .await
    }

    async fn flush(&self) -> Result<(), TargetError> {
        self.run("flush", "", || self.inner.flush()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A target that is unavailable for its first `outages` calls, then has no objects.
    struct Flaky {
        outages: usize,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Target for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn location(&self) -> String {
            "nowhere".into()
        }
        async fn put(&self, _: &str, _: Bytes) -> Result<(), TargetError> {
            Ok(())
        }
        async fn get(&self, _: &str) -> Result<Bytes, TargetError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.outages {
                Err(TargetError::Unavailable {
                    target: "flaky".into(),
                    reason: "503".into(),
                })
            } else {
                Err(TargetError::NotFound {
                    target: "flaky".into(),
                })
            }
        }
        async fn stat(&self, _: &str) -> Result<Option<u64>, TargetError> {
            Ok(None)
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, TargetError> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        async fn available_space(&self) -> Result<Option<u64>, TargetError> {
            Ok(None)
        }
        async fn flush(&self) -> Result<(), TargetError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn unavailable_is_retried_and_other_answers_are_not() {
        let flaky = Arc::new(Flaky {
            outages: 2,
            calls: AtomicUsize::new(0),
        });
        let target = Retrying::wrap(flaky.clone());
        let answer = target.get("chunks/aa/aa").await;
        assert!(
            matches!(answer, Err(TargetError::NotFound { .. })),
            "{answer:?}"
        );
        assert_eq!(
            flaky.calls.load(Ordering::SeqCst),
            3,
            "two outages retried, then the answer"
        );

        let down = Arc::new(Flaky {
            outages: usize::MAX,
            calls: AtomicUsize::new(0),
        });
        let answer = Retrying::wrap(down.clone()).get("chunks/aa/aa").await;
        assert!(
            matches!(answer, Err(TargetError::Unavailable { .. })),
            "{answer:?}"
        );
        assert_eq!(
            down.calls.load(Ordering::SeqCst),
            RETRIES + 1,
            "gives up after the retries"
        );
    }
}
