//! Progress bars for long operations: one per table stream plus an overall bar with bytes,
//! rows and ETA. Disabled (every call a no-op) when output is not a terminal, with `--json`
//! or `-q`, so the engine never needs to ask.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    pub fn hidden() -> Progress {
        Progress { multi: None }
    }

    /// The overall bar, measured in bytes, with ETA.
    pub fn overall(&self, label: &str, total_bytes: u64) -> ProgressBar {
        self.add(
            total_bytes,
            "{prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            label,
        )
    }

    /// A bar for one stream (a table or a range of it), measured in bytes.
    pub fn item(&self, label: &str, total_bytes: u64) -> ProgressBar {
        self.add(
            total_bytes,
            "  {prefix:40!} [{bar:20}] {bytes:>10} {msg}",
            label,
        )
    }

    fn add(&self, total: u64, template: &str, label: &str) -> ProgressBar {
        let Some(multi) = &self.multi else {
            return ProgressBar::hidden();
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = multi.add(
            ProgressBar::new(total.max(1))
                .with_style(style)
                .with_prefix(label.to_string()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// Grows a bar's length when the estimate was too low.
    pub fn advance(bar: &ProgressBar, bytes: u64) {
        bar.inc(bytes);
        if let Some(len) = bar.length()
            && bar.position() > len
        {
            bar.set_length(bar.position());
        }
    }
}

/// Sizes as people read them: `1.20 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}
