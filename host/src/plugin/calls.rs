//! How many calls this process made into each plugin, and how they ended, for the
//! `larder_plugin_calls_total{plugin,call,result}` counter. Counts live as long as the
//! process (the daemon's are the interesting ones); a counter's reset on restart is what
//! Prometheus expects.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Result {
    /// It answered.
    Ok,
    /// It answered with an error of its own.
    Error,
    /// It trapped (panic, memory limit, deadline inside the guest).
    Trap,
    /// It did not answer within its timeout.
    Timeout,
}

impl Result {
    pub fn as_str(self) -> &'static str {
        match self {
            Result::Ok => "ok",
            Result::Error => "error",
            Result::Trap => "trap",
            Result::Timeout => "timeout",
        }
    }
}

type Key = (String, String, Result);

static CALLS: Mutex<BTreeMap<Key, u64>> = Mutex::new(BTreeMap::new());

/// Counts one call of `call` into `plugin`.
pub fn record(plugin: &str, call: &str, result: Result) {
    if let Ok(mut calls) = CALLS.lock() {
        *calls
            .entry((plugin.to_string(), call.to_string(), result))
            .or_default() += 1;
    }
}

/// Every (plugin, call, result) counted so far, with its count.
pub fn counts() -> Vec<((String, String, &'static str), u64)> {
    CALLS
        .lock()
        .map(|calls| {
            calls
                .iter()
                .map(|((p, c, r), n)| ((p.clone(), c.clone(), r.as_str()), *n))
                .collect()
        })
        .unwrap_or_default()
}
