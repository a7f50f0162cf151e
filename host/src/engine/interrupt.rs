//! Ctrl-C (SIGINT) and SIGTERM: received once for the whole process, awaited by operations
//! that must undo their work before the process exits (a new-database restore drops what it
//! built, a replace rolls back, a backup releases its lock), and turned into exit codes 130 and
//! 143 by `backup-cli`; the daemon defers the stop of running work to the end of its grace.

use crate::error::{Error, Result, Signal};
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::watch;

/// The first signal received and how many arrived in all.
type Received = (Option<Signal>, usize);

fn channel() -> &'static watch::Sender<Received> {
    static CHANNEL: OnceLock<watch::Sender<Received>> = OnceLock::new();
    CHANNEL.get_or_init(|| watch::channel((None, 0)).0)
}

/// Operations under way that undo their work on a signal (see [`CleanupGuard`]).
static CLEANING_UP: AtomicUsize = AtomicUsize::new(0);

/// Set by [`defer_stop`]: a signal no longer stops running work by itself.
static DEFERRED: AtomicBool = AtomicBool::new(false);

/// The signal that stops running work ([`interruptible`]), once it is decided.
fn stop_channel() -> &'static watch::Sender<Option<Signal>> {
    static STOP: OnceLock<watch::Sender<Option<Signal>>> = OnceLock::new();
    STOP.get_or_init(|| watch::channel(None).0)
}

/// From now on a signal only asks the process to stop (see [`received`]); running work stops
/// when [`stop_now`] says so. The daemon lets a running backup finish for a grace period.
pub fn defer_stop() {
    DEFERRED.store(true, Ordering::SeqCst);
}

/// Stops running work now: every [`interruptible`] returns [`Error::Interrupted`].
pub fn stop_now(signal: Signal) {
    stop_channel().send_modify(|stop| {
        stop.get_or_insert(signal);
    });
}

async fn stop_requested() -> Signal {
    let mut rx = stop_channel().subscribe();
    loop {
        if let Some(signal) = *rx.borrow_and_update() {
            return signal;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Catches SIGINT and SIGTERM from now on (call once, inside the runtime). Without it the
/// default handlers stay and [`received`] never resolves (the library used on its own).
pub fn listen() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                Some(()) = interrupt.recv() => Signal::Interrupt,
                Some(()) = terminate.recv() => Signal::Terminate,
                else => return,
            };
            channel().send_modify(|(first, count)| {
                first.get_or_insert(signal);
                *count += 1;
            });
            if !DEFERRED.load(Ordering::SeqCst) {
                stop_now(signal);
            }
        }
    });
    Ok(())
}

/// Waits until at least `count` signals have arrived; returns the first.
async fn after(count: usize) -> Signal {
    let mut rx = channel().subscribe();
    loop {
        if let (Some(first), n) = *rx.borrow_and_update()
            && n >= count
        {
            return first;
        }
        if rx.changed().await.is_err() {
            // The sender lives in a static and is never dropped.
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves when the first signal arrives.
pub async fn received() -> Signal {
    after(1).await
}

/// Resolves when a second signal arrives (the operator insists while clean-up runs).
pub async fn received_again() -> Signal {
    after(2).await
}

/// Runs `work`, or stops it at the first signal (or at [`stop_now`] after [`defer_stop`]) with
/// [`Error::Interrupted`] (its `state` still empty: the caller undoes what `work` did and says
/// so).
pub async fn interruptible<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        result = work => result,
        signal = stop_requested() => Err(Error::Interrupted { signal, state: String::new() }),
    }
}

/// Held while an operation would undo its work on a signal: the CLI then waits for it to finish
/// instead of exiting at once.
pub struct CleanupGuard(());

impl CleanupGuard {
    pub fn new() -> CleanupGuard {
        CLEANING_UP.fetch_add(1, Ordering::SeqCst);
        CleanupGuard(())
    }
}

impl Default for CleanupGuard {
    fn default() -> Self {
        CleanupGuard::new()
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        CLEANING_UP.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether some operation holds a [`CleanupGuard`] now.
pub fn cleanup_pending() -> bool {
    CLEANING_UP.load(Ordering::SeqCst) > 0
}
