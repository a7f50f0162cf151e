//! Retention: which backups the policies keep and the one rule that decided each, as a pure
//! function of the backups, the policies, the pins and the clock (no I/O: `backup prune` and
//! the daemon apply the verdicts, the unit tests below craft every case).
//!
//! Within a policy a backup is kept when any rule keeps it. Pins always keep. Suspect backups
//! (failed validation) fill no count (`keep_last`, the buckets, `min_keep`); only their age
//! keeps them (`keep_within`), so the evidence stays a while. `min_keep` is the floor: the
//! newest validated backups stay whatever their age. Chains: a backup that a kept incremental
//! is built on is kept; an incremental is never left behind by its full (whatever keeps the
//! incremental keeps the full too).

use crate::config::RetentionPolicy;
use crate::repository::manifest::Chain;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// One set of backups that one policy governs (a schedule's, or a backup type's).
#[derive(Debug, Clone)]
pub struct Group {
    /// What it is called in verdicts: `schedule daily-full`, `type full`.
    pub label: String,
    pub policy: RetentionPolicy,
    /// Where the day, week and month buckets begin (the schedule's time zone).
    pub time_zone: jiff::tz::TimeZone,
}

/// What retention needs to know about one backup.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub backup_id: String,
    pub created_at: DateTime<Utc>,
    /// For an incremental: what it is built on.
    pub chain: Option<Chain>,
    pub health: Health,
    /// An active pin keeps it (an expired one is ignored and said so).
    pub pin: Option<PinState>,
    /// Which [`Group`] governs it; `None`: no policy applies, it is kept.
    pub group: Option<usize>,
}

/// Whether a backup may be counted as a good one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `backup validate` (or the daemon) found it intact.
    Validated,
    /// Not validated yet.
    Unvalidated,
    /// Validation failed everywhere, or a validator found an error in its rows: why.
    Suspect(String),
}

/// A pin as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinState {
    pub until: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

/// The rule that decided a backup's fate (stable words, printed and in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Pinned,
    KeepWithin,
    KeepLast,
    KeepDaily,
    KeepWeekly,
    KeepMonthly,
    MinKeep,
    /// A kept incremental is built on it.
    NeededByIncremental,
    /// No policy covers it: kept.
    NoPolicy,
    /// Deleted: no rule of its policy keeps it.
    Expired,
    /// Deleted: suspect and older than `keep_within` (it counts toward no other rule).
    Suspect,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Pinned => "pinned",
            Rule::KeepWithin => "keep_within",
            Rule::KeepLast => "keep_last",
            Rule::KeepDaily => "keep_daily",
            Rule::KeepWeekly => "keep_weekly",
            Rule::KeepMonthly => "keep_monthly",
            Rule::MinKeep => "min_keep",
            Rule::NeededByIncremental => "needed_by_incremental",
            Rule::NoPolicy => "no_policy",
            Rule::Expired => "expired",
            Rule::Suspect => "suspect",
        }
    }
}

/// Keep or delete, the deciding rule, and the words that explain it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub backup_id: String,
    pub keep: bool,
    pub rule: Rule,
    pub detail: String,
    /// The group's label; `None` when no policy covers the backup.
    pub policy: Option<String>,
}

/// Decides every candidate, in the order given.
pub fn decide(groups: &[Group], candidates: &[Candidate], now: DateTime<Utc>) -> Vec<Verdict> {
    let mut kept: HashMap<usize, (Rule, String)> = HashMap::new();
    for (index, group) in groups.iter().enumerate() {
        let mut members: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].group == Some(index))
            .collect();
        // Newest first: every count rule keeps the newest it can.
        members.sort_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            (b.created_at, &b.backup_id).cmp(&(a.created_at, &a.backup_id))
        });
        for (i, rule, detail) in keep_by_policy(group, candidates, &members, now) {
            kept.entry(i).or_insert((rule, detail));
        }
    }
    // Pins come first whatever else decided.
    for (i, candidate) in candidates.iter().enumerate() {
        if let Some(pin) = candidate.pin.as_ref().filter(|p| pin_active(p, now)) {
            let until = pin.until.map_or("until unpinned".to_string(), |u| {
                format!("until {}", u.format("%Y-%m-%d %H:%M UTC"))
            });
            let reason = pin
                .reason
                .as_ref()
                .map_or(String::new(), |r| format!(": {r}"));
            kept.insert(i, (Rule::Pinned, format!("pinned {until}{reason}")));
        } else if candidate.group.is_none() {
            kept.entry(i).or_insert((
                Rule::NoPolicy,
                "no retention policy covers it (no schedule or backup type with `retention`)"
                    .to_string(),
            ));
        }
    }
    keep_what_kept_incrementals_need(candidates, &mut kept);
    candidates
        .iter()
        .enumerate()
        .map(|(i, candidate)| {
            let policy = candidate.group.map(|g| groups[g].label.clone());
            match kept.remove(&i) {
                Some((rule, detail)) => Verdict {
                    backup_id: candidate.backup_id.clone(),
                    keep: true,
                    rule,
                    detail,
                    policy,
                },
                None => {
                    let (rule, mut detail) = match &candidate.health {
                        Health::Suspect(why) => (
                            Rule::Suspect,
                            format!("suspect ({why}): counts toward no keep rule, and is older than keep_within"),
                        ),
                        _ => (
                            Rule::Expired,
                            format!(
                                "no rule of {} keeps it",
                                candidate
                                    .group
                                    .map_or(String::new(), |g| groups[g].policy.describe())
                            ),
                        ),
                    };
                    if let Some(until) = candidate.pin.as_ref().and_then(|p| p.until) {
                        detail.push_str(&format!(
                            "; its pin expired {}",
                            until.format("%Y-%m-%d %H:%M UTC")
                        ));
                    }
                    Verdict {
                        backup_id: candidate.backup_id.clone(),
                        keep: false,
                        rule,
                        detail,
                        policy,
                    }
                }
            }
        })
        .collect()
}

fn pin_active(pin: &PinState, now: DateTime<Utc>) -> bool {
    pin.until.is_none_or(|until| until > now)
}

/// The members (newest first) one group's rules keep, each with the first rule that did.
fn keep_by_policy(
    group: &Group,
    candidates: &[Candidate],
    members: &[usize],
    now: DateTime<Utc>,
) -> Vec<(usize, Rule, String)> {
    let policy = &group.policy;
    let mut out = Vec::new();
    if let Some(age) = policy.keep_within {
        let limit = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let words = humantime::format_duration(age);
        for &i in members {
            if now.signed_duration_since(candidates[i].created_at) <= limit {
                out.push((i, Rule::KeepWithin, format!("younger than {words}")));
            }
        }
    }
    let countable: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| !matches!(candidates[i].health, Health::Suspect(_)))
        .collect();
    if let Some(n) = policy.keep_last {
        for (rank, &i) in countable.iter().take(n as usize).enumerate() {
            out.push((
                i,
                Rule::KeepLast,
                format!("newest {} of {n} (keep_last)", rank + 1),
            ));
        }
    }
    let zone = &group.time_zone;
    let buckets: [(Option<u32>, Rule, &str, BucketKey); 3] = [
        (policy.keep_daily, Rule::KeepDaily, "day", |d| d.to_string()),
        (policy.keep_weekly, Rule::KeepWeekly, "week", |d| {
            let week = d.iso_week_date();
            format!("{}-W{:02}", week.year(), week.week())
        }),
        (policy.keep_monthly, Rule::KeepMonthly, "month", |d| {
            format!("{}-{:02}", d.year(), d.month())
        }),
    ];
    for (count, rule, unit, key) in buckets {
        let Some(n) = count else { continue };
        let mut seen = HashSet::new();
        for &i in &countable {
            if seen.len() >= n as usize {
                break;
            }
            let bucket = key(local_date(candidates[i].created_at, zone));
            if seen.insert(bucket.clone()) {
                out.push((
                    i,
                    rule,
                    format!(
                        "newest of {unit} {bucket} ({} of {n}, {})",
                        seen.len(),
                        zone.iana_name().unwrap_or("UTC")
                    ),
                ));
            }
        }
    }
    // The floor: validated backups first, then not yet validated ones; never suspect ones.
    let floor = policy.min_keep as usize;
    let validated = countable
        .iter()
        .filter(|&&i| candidates[i].health == Health::Validated);
    let unvalidated = countable
        .iter()
        .filter(|&&i| candidates[i].health == Health::Unvalidated);
    for (rank, &i) in validated.chain(unvalidated).take(floor).enumerate() {
        let how = if candidates[i].health == Health::Validated {
            "validated"
        } else {
            "not validated yet, and too few validated ones"
        };
        out.push((
            i,
            Rule::MinKeep,
            format!(
                "one of the newest {floor} good backups (min_keep), {} of {floor}: {how}",
                rank + 1
            ),
        ));
    }
    out
}

/// Names the bucket (day, ISO week, month) a local date falls in.
type BucketKey = fn(jiff::civil::Date) -> String;

/// The calendar date of `at` in `zone`.
fn local_date(at: DateTime<Utc>, zone: &jiff::tz::TimeZone) -> jiff::civil::Date {
    // A chrono time is always within jiff's range (years -9999..=9999 both), but no panic
    // either way: out of range falls back to the UTC date.
    jiff::Timestamp::from_second(at.timestamp())
        .map(|ts| zone.to_datetime(ts).date())
        .unwrap_or_else(|_| {
            let d = at.date_naive();
            use chrono::Datelike;
            jiff::civil::Date::new(d.year() as i16, d.month() as i8, d.day() as i8)
                .unwrap_or_default()
        })
}

/// Walks each kept incremental's chain down to its full, keeping every link.
fn keep_what_kept_incrementals_need(
    candidates: &[Candidate],
    kept: &mut HashMap<usize, (Rule, String)>,
) {
    let by_id: HashMap<&str, usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.backup_id.as_str(), i))
        .collect();
    let mut work: Vec<usize> = kept.keys().copied().collect();
    while let Some(i) = work.pop() {
        let Some(chain) = &candidates[i].chain else {
            continue;
        };
        for needed in [&chain.parent, &chain.base] {
            let Some(&j) = by_id.get(needed.as_str()) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = kept.entry(j) {
                slot.insert((
                    Rule::NeededByIncremental,
                    format!(
                        "kept incremental {} is built on it",
                        candidates[i].backup_id
                    ),
                ));
                work.push(j);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    const DAY: i64 = 86400;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0)
            .single()
            .expect("time")
    }

    fn policy() -> RetentionPolicy {
        RetentionPolicy {
            keep_within: None,
            keep_last: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            min_keep: 1,
        }
    }

    fn group(policy: RetentionPolicy, zone: &str) -> Group {
        Group {
            label: "schedule daily-full".into(),
            policy,
            time_zone: jiff::tz::TimeZone::get(zone).expect("time zone in the system database"),
        }
    }

    /// A validated backup of group 0 taken `seconds_ago` before [`now`].
    fn backup(id: &str, seconds_ago: i64) -> Candidate {
        Candidate {
            backup_id: id.into(),
            created_at: now() - chrono::Duration::seconds(seconds_ago),
            chain: None,
            health: Health::Validated,
            pin: None,
            group: Some(0),
        }
    }

    fn rules(verdicts: &[Verdict]) -> Vec<(&str, bool, Rule)> {
        verdicts
            .iter()
            .map(|v| (v.backup_id.as_str(), v.keep, v.rule))
            .collect()
    }

    #[test]
    fn keep_within_keeps_what_is_younger_and_deletes_the_rest() {
        let groups = [group(
            RetentionPolicy {
                keep_within: Some(Duration::from_secs(30 * DAY as u64)),
                ..policy()
            },
            "UTC",
        )];
        let candidates = [
            backup("new", DAY),
            backup("edge", 30 * DAY),
            backup("old", 31 * DAY),
            backup("older", 60 * DAY),
        ];
        let verdicts = decide(&groups, &candidates, now());
        assert_eq!(
            rules(&verdicts),
            [
                ("new", true, Rule::KeepWithin),
                ("edge", true, Rule::KeepWithin),
                ("old", false, Rule::Expired),
                ("older", false, Rule::Expired),
            ]
        );
        assert!(
            verdicts[2].detail.contains("keep_within 30days"),
            "{:?}",
            verdicts[2]
        );
    }

    #[test]
    fn backups_failing_for_forty_days_keep_the_last_good_ones() {
        // Nothing succeeded for 40 days (no backup, or suspect ones): age alone would delete
        // every good backup; the floor keeps the newest validated ones.
        let groups = [group(
            RetentionPolicy {
                keep_within: Some(Duration::from_secs(30 * DAY as u64)),
                min_keep: 2,
                ..policy()
            },
            "UTC",
        )];
        let mut candidates = vec![
            backup("good-41", 41 * DAY),
            backup("good-42", 42 * DAY),
            backup("good-43", 43 * DAY),
        ];
        let mut bad = backup("suspect-35", 35 * DAY);
        bad.health = Health::Suspect("validator found 90% fewer rows".into());
        candidates.push(bad);
        let verdicts = decide(&groups, &candidates, now());
        assert_eq!(
            rules(&verdicts),
            [
                ("good-41", true, Rule::MinKeep),
                ("good-42", true, Rule::MinKeep),
                ("good-43", false, Rule::Expired),
                ("suspect-35", false, Rule::Suspect),
            ]
        );
    }

    #[test]
    fn min_keep_prefers_validated_backups_and_fills_in_with_unvalidated_ones() {
        let groups = [group(
            RetentionPolicy {
                keep_last: Some(1),
                min_keep: 3,
                ..policy()
            },
            "UTC",
        )];
        let mut candidates = vec![
            backup("a", DAY),
            backup("b", 2 * DAY),
            backup("c", 3 * DAY),
            backup("d", 4 * DAY),
            backup("e", 5 * DAY),
        ];
        candidates[1].health = Health::Unvalidated;
        candidates[2].health = Health::Unvalidated;
        candidates[3].health = Health::Suspect("checksum failed on every target".into());
        let verdicts = decide(&groups, &candidates, now());
        assert_eq!(
            rules(&verdicts),
            [
                ("a", true, Rule::KeepLast),
                ("b", true, Rule::MinKeep),
                ("c", false, Rule::Expired),
                ("d", false, Rule::Suspect),
                ("e", true, Rule::MinKeep),
            ]
        );
        assert!(
            verdicts[1].detail.contains("not validated yet"),
            "{:?}",
            verdicts[1]
        );
    }

    #[test]
    fn suspect_backups_fill_no_count_but_keep_within_keeps_them_young() {
        let groups = [group(
            RetentionPolicy {
                keep_last: Some(2),
                keep_within: Some(Duration::from_secs(2 * DAY as u64)),
                ..policy()
            },
            "UTC",
        )];
        let mut candidates = vec![
            backup("suspect-new", 3600),
            backup("good-1", 3 * DAY),
            backup("suspect-old", 4 * DAY),
            backup("good-2", 5 * DAY),
            backup("good-3", 6 * DAY),
        ];
        candidates[0].health = Health::Suspect("rules found duplicates".into());
        candidates[2].health = Health::Suspect("rules found duplicates".into());
        assert_eq!(
            rules(&decide(&groups, &candidates, now())),
            [
                ("suspect-new", true, Rule::KeepWithin),
                ("good-1", true, Rule::KeepLast),
                ("suspect-old", false, Rule::Suspect),
                ("good-2", true, Rule::KeepLast),
                ("good-3", false, Rule::Expired),
            ]
        );
    }

    #[test]
    fn daily_buckets_are_days_of_the_schedules_time_zone() {
        // 2026-03-30 02:30 UTC is still March 29 in New York (EDT, UTC-4): in UTC the two
        // backups share a day, in New York they do not.
        let at = |h: u32, m: u32| {
            Utc.with_ymd_and_hms(2026, 3, 30, h, m, 0)
                .single()
                .expect("time")
        };
        let make = |id: &str, t: DateTime<Utc>| Candidate {
            created_at: t,
            ..backup(id, 0)
        };
        let candidates = [
            make("evening", at(2, 30)),
            make("morning", at(5, 0)),
            make("day-before", at(1, 0) - chrono::Duration::days(1)),
        ];
        let daily = |zone| {
            group(
                RetentionPolicy {
                    keep_daily: Some(2),
                    ..policy()
                },
                zone,
            )
        };
        assert_eq!(
            rules(&decide(&[daily("America/New_York")], &candidates, now())),
            [
                ("evening", true, Rule::KeepDaily),
                ("morning", true, Rule::KeepDaily),
                ("day-before", false, Rule::Expired),
            ]
        );
        assert_eq!(
            rules(&decide(&[daily("UTC")], &candidates, now())),
            [
                ("evening", false, Rule::Expired),
                ("morning", true, Rule::KeepDaily),
                ("day-before", true, Rule::KeepDaily),
            ]
        );
    }

    #[test]
    fn daily_buckets_hold_across_the_dst_changes() {
        // Two backups a local day, at 00:30 and 23:30 New York time, around the spring-forward
        // (March 8) and fall-back (November 1) nights of 2026: each day keeps its 23:30 one.
        // A fixed offset would put the summer 00:30 backups into the day before and keep them.
        let zone = jiff::tz::TimeZone::get("America/New_York").expect("zone");
        let mut candidates = Vec::new();
        for (month, days) in [(3i8, 6..=10), (10, 30..=31), (11, 1..=3)] {
            for day in days {
                for (hour, minute, which) in [(0, 30, "early"), (23, 30, "late")] {
                    let local = jiff::civil::date(2026, month, day).at(hour, minute, 0, 0);
                    let ts = zone
                        .to_ambiguous_timestamp(local)
                        .compatible()
                        .expect("time");
                    let created = Utc.timestamp_opt(ts.as_second(), 0).single().expect("time");
                    candidates.push(Candidate {
                        created_at: created,
                        ..backup(&format!("{month}-{day}-{which}"), 0)
                    });
                }
            }
        }
        let groups = [group(
            RetentionPolicy {
                keep_daily: Some(candidates.len() as u32 / 2),
                ..policy()
            },
            "America/New_York",
        )];
        for verdict in decide(&groups, &candidates, now()) {
            let late = verdict.backup_id.ends_with("late");
            assert_eq!(
                (verdict.keep, verdict.rule),
                if late {
                    (true, Rule::KeepDaily)
                } else {
                    (false, Rule::Expired)
                },
                "{verdict:?}"
            );
        }
    }

    #[test]
    fn weekly_and_monthly_buckets_keep_the_newest_of_each() {
        let groups = [group(
            RetentionPolicy {
                keep_weekly: Some(2),
                keep_monthly: Some(2),
                ..policy()
            },
            "UTC",
        )];
        // now is Tuesday 2026-03-31: this ISO week began Monday March 30.
        let candidates = [
            backup("tue-w14", 0),
            backup("mon-w14", DAY),
            backup("sun-w13", 2 * DAY),
            backup("sat-w13", 3 * DAY),
            backup("feb", 40 * DAY),
            backup("feb-older", 45 * DAY),
            backup("jan", 70 * DAY),
        ];
        assert_eq!(
            rules(&decide(&groups, &candidates, now())),
            [
                ("tue-w14", true, Rule::KeepWeekly),
                ("mon-w14", false, Rule::Expired),
                ("sun-w13", true, Rule::KeepWeekly),
                ("sat-w13", false, Rule::Expired),
                ("feb", true, Rule::KeepMonthly),
                ("feb-older", false, Rule::Expired),
                ("jan", false, Rule::Expired),
            ]
        );
    }

    #[test]
    fn pins_keep_until_they_expire() {
        let groups = [group(
            RetentionPolicy {
                keep_last: Some(1),
                ..policy()
            },
            "UTC",
        )];
        let mut candidates = vec![
            backup("new", 0),
            backup("pinned", DAY),
            backup("expired", 2 * DAY),
        ];
        candidates[1].pin = Some(PinState {
            until: Some(now() + chrono::Duration::days(1)),
            reason: Some("audit 2026-Q1".into()),
        });
        candidates[2].pin = Some(PinState {
            until: Some(now() - chrono::Duration::days(1)),
            reason: None,
        });
        let verdicts = decide(&groups, &candidates, now());
        assert_eq!(
            rules(&verdicts),
            [
                ("new", true, Rule::KeepLast),
                ("pinned", true, Rule::Pinned),
                ("expired", false, Rule::Expired),
            ]
        );
        assert!(
            verdicts[1].detail.contains("audit 2026-Q1"),
            "{:?}",
            verdicts[1]
        );
        assert!(
            verdicts[2].detail.contains("pin expired"),
            "{:?}",
            verdicts[2]
        );
    }

    #[test]
    fn a_pin_keeps_a_suspect_backup_and_no_policy_keeps_everything() {
        let mut pinned = backup("suspect-pinned", 90 * DAY);
        pinned.health = Health::Suspect("checksum failed".into());
        pinned.pin = Some(PinState {
            until: None,
            reason: None,
        });
        let uncovered = Candidate {
            group: None,
            ..backup("adhoc", 400 * DAY)
        };
        let groups = [group(policy(), "UTC")];
        assert_eq!(
            rules(&decide(&groups, &[pinned, uncovered], now())),
            [
                ("suspect-pinned", true, Rule::Pinned),
                ("adhoc", true, Rule::NoPolicy),
            ]
        );
    }

    #[test]
    fn a_kept_incremental_keeps_its_chain_and_incrementals_go_with_their_full() {
        // Fulls kept 1 day, incrementals 7 days: the incrementals built on the 3-day-old full
        // keep it (and their parents); the 10-day-old full goes, and its incrementals with it.
        let groups = [
            group(
                RetentionPolicy {
                    keep_within: Some(Duration::from_secs(DAY as u64)),
                    ..policy()
                },
                "UTC",
            ),
            Group {
                label: "schedule four-hourly".into(),
                ..group(
                    RetentionPolicy {
                        keep_within: Some(Duration::from_secs(7 * DAY as u64)),
                        ..policy()
                    },
                    "UTC",
                )
            },
        ];
        let incremental = |id: &str, ago: i64, parent: &str, base: &str| Candidate {
            chain: Some(Chain {
                parent: parent.into(),
                base: base.into(),
            }),
            group: Some(1),
            ..backup(id, ago)
        };
        let candidates = [
            backup("full-now", 3600),
            backup("full-3d", 3 * DAY),
            incremental("inc-3d-a", 3 * DAY - 4 * 3600, "full-3d", "full-3d"),
            incremental("inc-3d-b", 3 * DAY - 8 * 3600, "inc-3d-a", "full-3d"),
            backup("full-10d", 10 * DAY),
            incremental("inc-10d", 10 * DAY - 4 * 3600, "full-10d", "full-10d"),
        ];
        let verdicts = decide(&groups, &candidates, now());
        assert_eq!(
            rules(&verdicts),
            [
                ("full-now", true, Rule::KeepWithin),
                ("full-3d", true, Rule::NeededByIncremental),
                ("inc-3d-a", true, Rule::KeepWithin),
                ("inc-3d-b", true, Rule::KeepWithin),
                ("full-10d", false, Rule::Expired),
                ("inc-10d", false, Rule::Expired),
            ]
        );
        assert_eq!(verdicts[5].policy.as_deref(), Some("schedule four-hourly"));
    }

    #[test]
    fn a_pinned_incremental_keeps_every_link_down_to_its_full() {
        let groups = [group(
            RetentionPolicy {
                keep_last: Some(1),
                ..policy()
            },
            "UTC",
        )];
        let link = |id: &str, ago: i64, parent: &str| Candidate {
            chain: Some(Chain {
                parent: parent.into(),
                base: "full".into(),
            }),
            ..backup(id, ago)
        };
        let mut tip = link("inc-2", 2 * DAY, "inc-1");
        tip.pin = Some(PinState {
            until: None,
            reason: Some("before the migration".into()),
        });
        let candidates = [
            backup("newest", 0),
            tip,
            link("inc-1", 3 * DAY, "full"),
            backup("full", 4 * DAY),
        ];
        assert_eq!(
            rules(&decide(&groups, &candidates, now())),
            [
                ("newest", true, Rule::KeepLast),
                ("inc-2", true, Rule::Pinned),
                ("inc-1", true, Rule::NeededByIncremental),
                ("full", true, Rule::NeededByIncremental),
            ]
        );
    }
}
