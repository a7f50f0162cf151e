//! A storage target served by a WebAssembly plugin.
//!
//! Each call takes an instance from a small pool (instances are single-threaded; the pool lets
//! the repository's parallel writers proceed), runs under the epoch deadline and a host-side
//! timeout, and checks the answer. An instance that trapped, ran out of time or memory is
//! thrown away; the next call gets a fresh one. Because an instance may batch durability until
//! `flush`, throwing away one that wrote since its last flush makes the next `flush` fail: its
//! writes can no longer be made durable, so no manifest may refer to them.

use super::bindings::StorageTargetPre;
use super::bindings::exports::larder::plugin::storage::ListPage;
use super::bindings::larder::plugin::types::{Error as PluginError, PluginInfo};
use super::guest_bytes::GuestBytes;
use super::policy::{self, Grants};
use super::state::PluginState;
use super::{Loaded, Runtime, calls, sandbox};
use crate::error::{Error, Result};
use crate::targets::{ObjectInfo, Target, TargetError};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Mutex, Semaphore};
use wasmtime::Store;

struct Instance {
    store: Store<PluginState>,
    bindings: super::bindings::StorageTarget,
    /// Wrote since its last flush.
    dirty: bool,
}

pub struct PluginTarget {
    name: String,
    plugin: Arc<str>,
    location: String,
    pre: StorageTargetPre<PluginState>,
    grants: Arc<Grants>,
    idle: Mutex<Vec<Instance>>,
    slots: Semaphore,
    /// An instance with unflushed writes was discarded since the last flush.
    lost_writes: AtomicBool,
    info: PluginInfo,
}

impl PluginTarget {
    /// Instantiates the plugin once (to check it links and to call `describe`).
    pub async fn new(
        runtime: &Runtime,
        name: &str,
        loaded: &Loaded,
        grants: Grants,
    ) -> Result<PluginTarget> {
        let plugin = sandbox::label(name, loaded);
        let pre = runtime.prepare(
            loaded,
            &plugin,
            "a storage-target plugin (larder:plugin/storage@1.x)",
            StorageTargetPre::new,
        )?;
        let grants = Arc::new(grants);
        let instances = grants.instances.max(1);
        let mut target = PluginTarget {
            name: name.to_string(),
            plugin,
            location: format!(
                "plugin {} (sha256 {})",
                loaded.path.display(),
                &loaded.sha256[..12]
            ),
            pre,
            grants,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(instances),
            lost_writes: AtomicBool::new(false),
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                capabilities: Vec::new(),
            },
        };
        let mut instance = target.instantiate().await?;
        instance
            .store
            .set_epoch_deadline(target.grants.deadline_ticks());
        let info = tokio::time::timeout(
            target.grants.call_timeout,
            instance
                .bindings
                .larder_plugin_storage()
                .call_describe(&mut instance.store),
        )
        .await
        .map_err(|_| target.deadline_error("describe"))?
        .map_err(|e| target.trap_error("describe", e))?;
        target.info = sandbox::checked_info(&target.plugin, info)?;
        target.idle.get_mut().push(instance);
        Ok(target)
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    async fn instantiate(&self) -> Result<Instance> {
        let mut store = sandbox::new_store(self.pre.engine(), &self.plugin, &self.grants)?;
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| self.trap_error("instantiate", e))?;
        Ok(Instance {
            store,
            bindings,
            dirty: false,
        })
    }

    fn deadline_error(&self, call: &str) -> Error {
        sandbox::deadline_error(&self.plugin, &self.grants, call)
    }

    fn trap_error(&self, call: &str, e: wasmtime::Error) -> Error {
        sandbox::trap_error(&self.plugin, &self.grants, call, e)
    }

    /// Runs one call on an instance from the pool, under the deadline.
    async fn call<T, F>(
        &self,
        call: &str,
        writes: bool,
        f: F,
    ) -> std::result::Result<T, TargetError>
    where
        F: for<'a> FnOnce(
            &'a mut Instance,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = wasmtime::Result<std::result::Result<T, PluginError>>,
                    > + Send
                    + 'a,
            >,
        >,
    {
        let failed = |e: Error| TargetError::Failed {
            target: self.name.clone(),
            reason: e.to_string(),
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| TargetError::Failed {
                target: self.name.clone(),
                reason: "plugin is shutting down".into(),
            })?;
        let pooled = self.idle.lock().await.pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => self.instantiate().await.map_err(failed)?,
        };
        instance
            .store
            .set_epoch_deadline(self.grants.deadline_ticks());
        // The host-side timeout catches a guest blocked inside a host call (an HTTP request
        // that never answers), which epoch interruption cannot reach.
        let grace = policy::EPOCH_TICK * 4;
        let outcome =
            tokio::time::timeout(self.grants.call_timeout + grace, f(&mut instance)).await;
        let answer = match outcome {
            Ok(Ok(answer)) => {
                let result = match answer {
                    Ok(_) => calls::Result::Ok,
                    Err(_) => calls::Result::Error,
                };
                calls::record(&self.plugin, call, result);
                answer
            }
            Ok(Err(trap)) => {
                calls::record(&self.plugin, call, calls::Result::Trap);
                self.discard(&instance);
                return Err(failed(self.trap_error(call, trap)));
            }
            Err(_) => {
                calls::record(&self.plugin, call, calls::Result::Timeout);
                self.discard(&instance);
                return Err(failed(self.deadline_error(call)));
            }
        };
        if writes {
            instance.dirty = true;
        }
        self.idle.lock().await.push(instance);
        answer.map_err(|e| self.plugin_error(call, e))
    }

    fn discard(&self, instance: &Instance) {
        if instance.dirty {
            self.lost_writes.store(true, Ordering::SeqCst);
        }
    }

    fn plugin_error(&self, call: &str, e: PluginError) -> TargetError {
        let target = self.name.clone();
        let said = |kind: &str, m: String| {
            format!(
                "plugin {} refused `{call}` ({kind}): {}",
                self.plugin,
                policy::bounded_text(m)
            )
        };
        match e {
            PluginError::NotFound => TargetError::NotFound { target },
            PluginError::Unavailable(m) => TargetError::Unavailable {
                target,
                reason: said("unavailable", m),
            },
            PluginError::Denied(m) => TargetError::Failed {
                target,
                reason: said("denied", m),
            },
            PluginError::Invalid(m) => TargetError::Failed {
                target,
                reason: said("invalid", m),
            },
            PluginError::Other(m) if m.to_ascii_lowercase().contains("no space") => {
                TargetError::NoSpace {
                    target,
                    reason: said("error", m),
                }
            }
            PluginError::Other(m) => TargetError::Failed {
                target,
                reason: said("error", m),
            },
        }
    }

    /// A listing that outgrew a limit of the plugin's entry.
    fn over_limit(&self, prefix: &str, what: String) -> TargetError {
        TargetError::Failed {
            target: self.name.clone(),
            reason: format!(
                "plugin {} kept listing {prefix:?}: {what}; if the storage really holds that \
                 many objects, raise the limit in the [[targets]] entry of '{}', otherwise the \
                 plugin is broken",
                self.plugin, self.name
            ),
        }
    }

    fn garbage(&self, call: &str, why: String) -> TargetError {
        TargetError::Failed {
            target: self.name.clone(),
            reason: format!(
                "plugin {} returned an invalid answer to `{call}`: {why}",
                self.plugin
            ),
        }
    }

    /// Every object under `prefix`, page after page as the plugin gives them, checked (keys
    /// under the prefix, a cursor that advances, the entry's limits); and how many pages it took.
    pub async fn list_pages(
        &self,
        prefix: &str,
    ) -> std::result::Result<(Vec<ObjectInfo>, usize), TargetError> {
        let limits = &self.grants.limits;
        let listing = async {
            let mut out = Vec::new();
            let mut cursor: Option<String> = None;
            for pages in 1..=limits.max_list_pages {
                let page: ListPage = self
                    .call("list", false, |i| {
                        let cursor = cursor.clone();
                        let prefix = prefix.to_string();
                        Box::pin(async move {
                            i.bindings
                                .larder_plugin_storage()
                                .call_list(&mut i.store, &prefix, cursor.as_deref())
                                .await
                        })
                    })
                    .await?;
                if out.len() + page.objects.len() > limits.max_list_keys {
                    return Err(self.over_limit(
                        prefix,
                        format!("more than {} keys (max_list_keys)", limits.max_list_keys),
                    ));
                }
                for object in page.objects {
                    if !object.key.starts_with(prefix) || !crate::targets::is_valid_key(&object.key)
                    {
                        return Err(self.garbage(
                            "list",
                            format!(
                                "key {:?} is not an object key under {prefix:?}",
                                policy::bounded_text(object.key)
                            ),
                        ));
                    }
                    out.push(ObjectInfo {
                        key: object.key,
                        size: object.size,
                    });
                }
                match page.next {
                    Some(next) if Some(&next) == cursor.as_ref() => {
                        return Err(
                            self.garbage("list", "the next-page cursor did not advance".into())
                        );
                    }
                    Some(next) if next.len() > policy::MAX_TEXT => {
                        return Err(self.garbage(
                            "list",
                            format!("a next-page cursor of {} bytes", next.len()),
                        ));
                    }
                    Some(next) => cursor = Some(next),
                    None => return Ok((out, pages)),
                }
            }
            Err(self.over_limit(
                prefix,
                format!("more than {} pages (max_list_pages)", limits.max_list_pages),
            ))
        };
        tokio::time::timeout(limits.list_timeout, listing)
            .await
            .unwrap_or_else(|_| {
                Err(self.over_limit(
                    prefix,
                    format!(
                        "more than {} (list_timeout)",
                        humantime::format_duration(limits.list_timeout)
                    ),
                ))
            })
    }
}

#[async_trait]
impl Target for PluginTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put(&self, key: &str, data: Bytes) -> std::result::Result<(), TargetError> {
        let key = key.to_string();
        self.call("put", true, move |i| {
            Box::pin(async move {
                // The chunk goes into the guest with one copy (see `guest_bytes`).
                let put = i
                    .bindings
                    .larder_plugin_storage()
                    .func_put()
                    .func()
                    .typed::<(&str, GuestBytes<'_>), (std::result::Result<(), PluginError>,)>(
                        &i.store,
                    )?;
                let (answer,) = put
                    .call_async(&mut i.store, (key.as_str(), GuestBytes(&data)))
                    .await?;
                Ok(answer)
            })
        })
        .await
    }

    async fn get(&self, key: &str) -> std::result::Result<Bytes, TargetError> {
        let shown = key.to_string();
        let key = key.to_string();
        self.call("get", false, move |i| {
            Box::pin(async move {
                i.bindings
                    .larder_plugin_storage()
                    .call_get(&mut i.store, &key)
                    .await
            })
        })
        .await
        .and_then(|body| {
            let max = self.grants.limits.max_object_size;
            if body.len() as u64 > max {
                Err(self.garbage(
                    "get",
                    format!(
                        "{shown}: {} bytes, more than its max_object_size of {max} bytes",
                        body.len()
                    ),
                ))
            } else {
                Ok(Bytes::from(body))
            }
        })
    }

    async fn stat(&self, key: &str) -> std::result::Result<Option<u64>, TargetError> {
        let key = key.to_string();
        self.call("stat", false, move |i| {
            Box::pin(async move {
                i.bindings
                    .larder_plugin_storage()
                    .call_stat(&mut i.store, &key)
                    .await
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> std::result::Result<Vec<ObjectInfo>, TargetError> {
        self.list_pages(prefix).await.map(|(objects, _)| objects)
    }

    async fn delete(&self, key: &str) -> std::result::Result<(), TargetError> {
        let key = key.to_string();
        self.call("delete", true, move |i| {
            Box::pin(async move {
                i.bindings
                    .larder_plugin_storage()
                    .call_delete(&mut i.store, &key)
                    .await
            })
        })
        .await
    }

    async fn available_space(&self) -> std::result::Result<Option<u64>, TargetError> {
        Ok(None)
    }

    async fn flush(&self) -> std::result::Result<(), TargetError> {
        // Every instance batches its own writes: flush them all, with no call in flight.
        let slots = self.grants.instances.max(1) as u32;
        let _all = self
            .slots
            .acquire_many(slots)
            .await
            .map_err(|_| TargetError::Failed {
                target: self.name.clone(),
                reason: "plugin is shutting down".into(),
            })?;
        if self.lost_writes.swap(false, Ordering::SeqCst) {
            return Err(TargetError::Failed {
                target: self.name.clone(),
                reason: format!(
                    "plugin {}: an instance that failed had unflushed writes; they cannot be made durable",
                    self.plugin
                ),
            });
        }
        // Instances are independent stores: flush them concurrently, so their fsyncs overlap.
        let idle = std::mem::take(&mut *self.idle.lock().await);
        let flushes = idle.into_iter().map(|mut instance| async move {
            if !instance.dirty {
                return (Some(instance), Ok(()));
            }
            instance
                .store
                .set_epoch_deadline(self.grants.deadline_ticks());
            let outcome = tokio::time::timeout(
                self.grants.call_timeout + policy::EPOCH_TICK * 4,
                instance
                    .bindings
                    .larder_plugin_storage()
                    .call_flush(&mut instance.store),
            )
            .await;
            let failed = |reason: String| TargetError::Failed {
                target: self.name.clone(),
                reason,
            };
            match outcome {
                Ok(Ok(Ok(()))) => {
                    instance.dirty = false;
                    (Some(instance), Ok(()))
                }
                Ok(Ok(Err(e))) => (Some(instance), Err(self.plugin_error("flush", e))),
                Ok(Err(trap)) => {
                    self.discard(&instance);
                    (
                        None,
                        Err(failed(self.trap_error("flush", trap).to_string())),
                    )
                }
                Err(_) => {
                    self.discard(&instance);
                    (None, Err(failed(self.deadline_error("flush").to_string())))
                }
            }
        });
        let mut kept = Vec::new();
        let mut result = Ok(());
        for (instance, outcome) in futures_util::future::join_all(flushes).await {
            kept.extend(instance);
            if result.is_ok() {
                result = outcome;
            }
        }
        *self.idle.lock().await = kept;
        result
    }
}
