//! The status page at the daemon's `/`: one server-rendered HTML document from a metrics
//! [`Snapshot`] — databases and their newest restorable point against the RPO, chains, the
//! last backups, active alerts, next scheduled runs, the last drill, and an inline SVG chart of
//! backup sizes and durations. No script, no external asset (it works offline on a locked-down
//! network), nothing secret (locations as `monitor health` prints them, no URLs with
//! passwords), and every text from the repository or the configuration is escaped.

use crate::engine::metrics::{Held, Snapshot};
use crate::engine::monitor::{Health, Status};
use crate::engine::progress::human_bytes;
use crate::repository::history::DrillOutcome;
use chrono::{DateTime, Utc};
use std::fmt::Write as _;

/// Backups the table lists (newest first) and the chart draws.
const SHOWN_BACKUPS: usize = 20;
const CHARTED_BACKUPS: usize = 60;

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn age(seconds: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(seconds.max(0.0) as u64)).to_string()
}

/// A table: a heading, column names, rows of already-escaped cells; `empty` when no rows.
fn table(
    out: &mut String,
    id: &str,
    title: &str,
    columns: &[&str],
    rows: &[Vec<String>],
    empty: &str,
) {
    let _ = write!(out, "<section id=\"{id}\"><h2>{}</h2>", escape(title));
    if rows.is_empty() {
        let _ = write!(out, "<p class=\"none\">{}</p></section>", escape(empty));
        return;
    }
    out.push_str("<table><thead><tr>");
    for c in columns {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></section>");
}

fn badge(ok: bool, yes: &str, no: &str) -> String {
    if ok {
        format!("<span class=\"ok\">{}</span>", escape(yes))
    } else {
        format!("<span class=\"bad\">{}</span>", escape(no))
    }
}

/// The whole page.
pub fn render(snapshot: &Snapshot, health: &Health) -> String {
    let now = snapshot.taken_at;
    let mut out = String::new();
    out.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str("<title>Larder status</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body>");
    let overall = match health.status {
        Status::Fail => "<span class=\"bad\">unhealthy</span>",
        _ if !snapshot.alerts.is_empty() => "<span class=\"bad\">needs attention</span>",
        Status::Warn => "<span class=\"warn\">warning</span>",
        Status::Ok => "<span class=\"ok\">healthy</span>",
    };
    let _ = write!(
        out,
        "<header><h1>Larder status</h1><p>{overall} &middot; {} backup(s) &middot; {} active alert(s) &middot; as of {}</p></header>",
        snapshot.backups.len(),
        snapshot.alerts.len(),
        escape(&when(now))
    );

    let rows: Vec<Vec<String>> = snapshot
        .databases
        .iter()
        .map(|d| {
            let point = match (&d.newest_restorable, d.newest_point) {
                (Some(id), Some(p)) => format!(
                    "{} <small>{} ({} ago)</small>",
                    escape(id),
                    escape(&when(p)),
                    escape(&age((now - p).num_seconds() as f64))
                ),
                _ => "<span class=\"bad\">none</span>".into(),
            };
            let rpo = match d.rpo_seconds {
                Some(rpo) => format!(
                    "{} {}",
                    escape(&age(rpo as f64)),
                    badge(!d.rpo_breached(now), "met", "breached")
                ),
                None => "not configured here".into(),
            };
            let name = match &d.entry {
                Some(entry) if *entry != d.database => format!(
                    "{} <small>([[databases]] {})</small>",
                    escape(&d.database),
                    escape(entry)
                ),
                _ => escape(&d.database),
            };
            vec![
                name,
                match d.reachable {
                    Some(up) => badge(up, "reachable", "unreachable"),
                    None => "not checked".into(),
                },
                point,
                rpo,
                d.first_point.map(|p| escape(&when(p))).unwrap_or_default(),
                d.slots
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {}",
                            escape(&s.name),
                            escape(&human_bytes(s.retained_bytes))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("<br>"),
            ]
        })
        .collect();
    table(
        &mut out,
        "databases",
        "Databases",
        &[
            "Database",
            "Connection",
            "Newest restorable point",
            "RPO",
            "Oldest restorable point",
            "Replication slots",
        ],
        &rows,
        "No database is configured and the repository holds no backup.",
    );

    let rows: Vec<Vec<String>> = snapshot
        .alerts
        .iter()
        .map(|a| {
            vec![
                format!("<span class=\"bad\">{}</span>", escape(&a.alert)),
                escape(&a.check),
                escape(&a.severity),
                escape(&when(a.fired_at)),
                escape(&a.message),
                if a.acknowledged {
                    "acknowledged".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let mut failing: Vec<Vec<String>> = health
        .alerts()
        .map(|c| {
            vec![
                format!(
                    "<span class=\"bad\">{}</span>",
                    escape(c.alert.as_deref().unwrap_or(&c.name))
                ),
                escape(&c.name),
                "now".into(),
                escape(&when(health.checked_at)),
                escape(&c.detail),
                String::new(),
            ]
        })
        .filter(|row| !rows.iter().any(|r| r[0] == row[0] && r[1] == row[1]))
        .collect();
    failing.splice(0..0, rows);
    table(
        &mut out,
        "alerts",
        "Active alerts",
        &["Alert", "Check", "Severity", "Since", "Detail", ""],
        &failing,
        "No active alert.",
    );

    let rows: Vec<Vec<String>> = snapshot
        .backups
        .iter()
        .rev()
        .take(SHOWN_BACKUPS)
        .map(|h| {
            let s = &h.summary;
            vec![
                escape(&s.id),
                escape(&s.name),
                escape(&s.database),
                escape(&s.backup_type.to_string()),
                escape(&when(s.completed_at)),
                escape(&human_bytes(s.stored_bytes)),
                escape(&human_bytes(s.logical_bytes)),
                format!("{:.1} s", s.seconds()),
                escape(&h.targets.join(", ")),
                if s.suspect {
                    "<span class=\"bad\">suspect</span>".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    table(
        &mut out,
        "backups",
        "Last backups",
        &[
            "Backup",
            "Name",
            "Database",
            "Type",
            "Completed",
            "Stored",
            "Logical",
            "Duration",
            "Targets",
            "",
        ],
        &rows,
        "No backup yet: run `backup-cli backup create`.",
    );
    chart(&mut out, &snapshot.backups);

    let rows = chains(&snapshot.backups);
    table(
        &mut out,
        "chains",
        "Chains",
        &["Base (full)", "Incrementals", "Newest link", "Newest point"],
        &rows,
        "No incremental chain: every backup restores on its own.",
    );

    let rows: Vec<Vec<String>> = snapshot
        .schedules
        .iter()
        .map(|s| {
            vec![
                escape(&s.schedule),
                escape(&s.schedule_type.to_string()),
                format!("<code>{}</code>", escape(&s.cron)),
                s.next.map(|n| escape(&when(n))).unwrap_or_default(),
                match (&s.last_outcome, s.last_finished) {
                    (Some(outcome), Some(at)) => format!(
                        "{} {}",
                        badge(outcome == "ok", outcome, outcome),
                        escape(&when(at))
                    ),
                    _ => String::new(),
                },
            ]
        })
        .collect();
    table(
        &mut out,
        "schedules",
        "Next scheduled runs",
        &["Schedule", "Type", "Cron", "Next run", "Last run (daemon)"],
        &rows,
        "No [[schedules]] configured.",
    );

    let rows: Vec<Vec<String>> = snapshot
        .databases
        .iter()
        .filter_map(|d| Some((d, d.last_drill.as_ref()?)))
        .map(|(d, last)| {
            let outcome = last.outcome.as_str();
            let objective = age(last.rto_seconds);
            vec![
                escape(&d.database),
                escape(&last.drill_id),
                escape(&last.backup_id),
                escape(&when(last.finished_at)),
                badge(last.outcome == DrillOutcome::Passed, outcome, outcome),
                format!(
                    "{} against {} {}",
                    escape(&crate::engine::drill::words(last.recovery_seconds)),
                    escape(&objective),
                    badge(last.rto_met, "met", "missed")
                ),
                match &d.last_passed_drill {
                    Some(passed) if passed.drill_id != last.drill_id => {
                        escape(&when(passed.finished_at))
                    }
                    Some(_) => "this one".into(),
                    None => "<span class=\"bad\">never</span>".into(),
                },
            ]
        })
        .collect();
    table(
        &mut out,
        "drills",
        "Last restore drill",
        &[
            "Database",
            "Drill",
            "Backup",
            "Finished",
            "Outcome",
            "Recovery time (RTO)",
            "Last passed",
        ],
        &rows,
        "No restore drill recorded yet (`backup-cli recovery drill`).",
    );

    let rows: Vec<Vec<String>> = snapshot
        .targets
        .iter()
        .map(|t| {
            vec![
                escape(&t.name),
                escape(&t.location),
                badge(t.up, "reachable", "unreachable"),
                t.backups.to_string(),
                t.free_bytes
                    .map(|f| escape(&human_bytes(f)))
                    .unwrap_or_default(),
                escape(t.error.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    table(
        &mut out,
        "targets",
        "Storage targets",
        &["Target", "Location", "State", "Backups", "Free", "Error"],
        &rows,
        "No storage target.",
    );
    let _ = write!(
        out,
        "<footer>Read-only view; refreshed on each load. Gathered in {:.3} s. Metrics at <a href=\"/metrics\">/metrics</a>, health at <a href=\"/health\">/health</a>.</footer></body></html>",
        snapshot.scrape_seconds
    );
    out
}

/// Each chain: its full base, how many incrementals, the newest link.
fn chains(backups: &[Held]) -> Vec<Vec<String>> {
    let mut bases: Vec<(&Held, Vec<&Held>)> = Vec::new();
    for h in backups.iter().filter(|h| h.summary.chain.is_some()) {
        let Some(chain) = &h.summary.chain else {
            continue;
        };
        match bases.iter_mut().find(|(b, _)| b.summary.id == chain.base) {
            Some((_, links)) => links.push(h),
            None => {
                if let Some(base) = backups.iter().find(|b| b.summary.id == chain.base) {
                    bases.push((base, vec![h]));
                }
            }
        }
    }
    bases
        .into_iter()
        .map(|(base, links)| {
            let newest = links.last().map(|l| &l.summary);
            vec![
                escape(&base.summary.id),
                links.len().to_string(),
                newest.map(|n| escape(&n.id)).unwrap_or_default(),
                newest
                    .map(|n| escape(&when(n.created_at)))
                    .unwrap_or_default(),
            ]
        })
        .collect()
}

/// Stored size (bars) and duration (line) of the last backups, oldest left.
fn chart(out: &mut String, backups: &[Held]) {
    let shown: Vec<&Held> = backups
        .iter()
        .skip(backups.len().saturating_sub(CHARTED_BACKUPS))
        .collect();
    out.push_str("<section id=\"chart\"><h2>Backup sizes and durations</h2>");
    if shown.is_empty() {
        out.push_str("<p class=\"none\">Nothing to chart yet.</p></section>");
        return;
    }
    let (width, height, pad) = (720.0_f64, 220.0_f64, 40.0_f64);
    let max_bytes = shown
        .iter()
        .map(|h| h.summary.stored_bytes)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_seconds = shown
        .iter()
        .map(|h| h.summary.seconds())
        .fold(0.001_f64, f64::max);
    let step = (width - 2.0 * pad) / shown.len() as f64;
    let plot = height - 2.0 * pad;
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"Stored size and duration of the last {} backups\">",
        shown.len()
    );
    let _ = write!(
        out,
        "<line x1=\"{pad}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" class=\"axis\"/>",
        height - pad,
        width - pad
    );
    let mut line = String::new();
    let mut points = String::new();
    for (i, h) in shown.iter().enumerate() {
        let s = &h.summary;
        let x = pad + i as f64 * step;
        let bar = s.stored_bytes as f64 / max_bytes * plot;
        let _ = write!(
            out,
            "<rect class=\"size\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}: {} stored, {:.1} s</title></rect>",
            x + step * 0.15,
            height - pad - bar,
            (step * 0.7).max(1.0),
            bar,
            escape(&s.id),
            escape(&human_bytes(s.stored_bytes)),
            s.seconds()
        );
        let y = height - pad - s.seconds() / max_seconds * plot;
        let _ = write!(
            line,
            "{}{:.1},{:.1}",
            if i == 0 { "" } else { " " },
            x + step * 0.5,
            y
        );
        let _ = write!(
            points,
            "<circle class=\"duration-point\" cx=\"{:.1}\" cy=\"{y:.1}\" r=\"3\"/>",
            x + step * 0.5
        );
    }
    let _ = write!(
        out,
        "<polyline class=\"duration\" points=\"{line}\"/>{points}"
    );
    let first = shown
        .first()
        .map(|h| when(h.summary.created_at))
        .unwrap_or_default();
    let last = shown
        .last()
        .map(|h| when(h.summary.created_at))
        .unwrap_or_default();
    let _ = write!(
        out,
        "<text x=\"{pad}\" y=\"{}\" class=\"label\">{}</text><text x=\"{}\" y=\"{}\" class=\"label\" text-anchor=\"end\">{}</text>",
        height - pad + 16.0,
        escape(&first),
        width - pad,
        height - pad + 16.0,
        escape(&last)
    );
    let _ = write!(
        out,
        "<text x=\"{pad}\" y=\"{}\" class=\"label\">bars: stored size (max {}) &#8226; line: duration (max {:.1} s)</text></svg></section>",
        pad - 12.0,
        escape(&human_bytes(max_bytes as u64)),
        max_seconds
    );
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1f23;background:#fafbfc}\
h1{margin:0 0 .25rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}\
th{background:#f0f3f6}.ok{color:#1a7f37;font-weight:600}.warn{color:#9a6700;font-weight:600}.bad{color:#cf222e;font-weight:600}\
.none{color:#57606a}small{color:#57606a}footer{margin-top:2rem;color:#57606a;font-size:.85rem}\
svg{background:#fff;border:1px solid #d0d7de}.size{fill:#54aeff}.duration{fill:none;stroke:#cf222e;stroke-width:2}.duration-point{fill:#cf222e}\
.axis{stroke:#57606a}.label{font-size:11px;fill:#57606a}";

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_in_names_is_shown_as_text() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
