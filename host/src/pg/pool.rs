//! The worker pool of backup and restore: up to `jobs` sessions take items from one queue
//! in order, each on its own connection, and the first error stops the others (the
//! remaining workers are aborted with it).

use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use tokio_postgres::Client;

/// Runs `work` over `items` on at most `jobs` connections, each opened once by `open`; results
/// come back in no particular order. `failed` turns a worker that panicked into the caller's
/// error (`what` names the worker in it).
pub async fn run<T, R, O, OFut, F, Fut>(
    jobs: usize,
    items: Vec<T>,
    open: O,
    work: F,
    (what, failed): (&'static str, fn(String) -> Error),
) -> Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    O: Fn() -> OFut + Send + Sync + 'static,
    OFut: Future<Output = Result<Client>> + Send,
    F: Fn(Arc<Client>, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send,
{
    let workers = jobs.clamp(1, items.len().max(1));
    let queue = Arc::new(Mutex::new(VecDeque::from(items)));
    let (open, work) = (Arc::new(open), Arc::new(work));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (queue, open, work) = (queue.clone(), open.clone(), work.clone());
        set.spawn(async move {
            let client = Arc::new(open().await?);
            let mut out = Vec::new();
            loop {
                // Popping cannot panic, so a poisoned lock still holds a sound queue.
                let next = queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                let Some(item) = next else { break };
                out.push(work(client.clone(), item).await?);
            }
            Ok::<_, Error>(out)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        results.extend(joined.map_err(|e| failed(format!("{what} failed: {e}")))??);
    }
    Ok(results)
}
