//! The daemon's timetable: when each `[[schedules]]` entry is due and what to do about it, as
//! pure functions of a clock the caller passes in (nothing here reads the time or sleeps).
//!
//! Cron is read in the schedule's IANA time zone by croner, which follows the usual rules at
//! daylight-saving changes: a fixed-time job whose time the spring change skips runs at the
//! first instant after the gap, one whose time happens twice in the autumn runs once (the
//! first time), and interval jobs (`*/30 * * * *`) keep their rhythm through both. Jitter is a
//! delay derived from the schedule's name and due time, so it is the same every time it is
//! worked out and `schedule list` can say when the next run really starts.

use crate::config::{Missed, Schedule};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use std::time::Duration;

/// More missed times than this are counted as "at least" this many (a per-minute schedule
/// after a month down would otherwise walk 40000 times).
const MAX_COUNTED: usize = 1000;

/// One schedule's timetable: its cron in its time zone, its jitter, grace and missed policy.
#[derive(Debug, Clone)]
pub struct Timetable {
    pub name: String,
    cron: croner::Cron,
    zone: jiff::tz::TimeZone,
    /// The IANA name the cron is read in (`UTC` by default).
    pub zone_name: String,
    pub jitter: Duration,
    pub grace: Duration,
    pub missed: Missed,
}

impl Timetable {
    /// Reads a schedule's `cron`, `timezone` and `jitter`; a bad value is a configuration
    /// error naming the schedule.
    pub fn new(schedule: &Schedule) -> Result<Timetable> {
        let bad = |why: String| Error::Config(format!("schedule '{}': {why}", schedule.name));
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&schedule.cron)
            .map_err(|e| {
                bad(format!(
                    "cron '{}' is not a five-field cron expression (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"): {e}",
                    schedule.cron
                ))
            })?;
        let zone_name = schedule.timezone.clone().unwrap_or_else(|| "UTC".into());
        let zone = jiff::tz::TimeZone::get(&zone_name).map_err(|e| {
            bad(format!(
                "time zone '{zone_name}' is not known ({e}); use an IANA name such as America/New_York, Europe/Berlin or UTC"
            ))
        })?;
        let jitter = schedule.jitter.unwrap_or_default();
        if jitter >= schedule.grace {
            return Err(bad(format!(
                "jitter {} must be shorter than grace {} (a run started later than grace counts as missed)",
                humantime::format_duration(jitter),
                humantime::format_duration(schedule.grace)
            )));
        }
        Ok(Timetable {
            name: schedule.name.clone(),
            cron,
            zone,
            zone_name,
            jitter,
            grace: schedule.grace,
            missed: schedule.missed,
        })
    }

    /// The time zone the schedule is read in (retention's day, week and month buckets too).
    pub fn zone(&self) -> &jiff::tz::TimeZone {
        &self.zone
    }

    fn zoned(&self, t: DateTime<Utc>) -> Option<jiff::Zoned> {
        let nanos = i32::try_from(t.timestamp_subsec_nanos()).ok()?;
        let ts = jiff::Timestamp::new(t.timestamp(), nanos).ok()?;
        Some(ts.to_zoned(self.zone.clone()))
    }

    fn utc(z: &jiff::Zoned) -> Option<DateTime<Utc>> {
        let ts = z.timestamp();
        DateTime::from_timestamp(ts.as_second(), u32::try_from(ts.subsec_nanosecond()).ok()?)
    }

    /// The first cron time strictly after `t` (`None`: never again, e.g. "0 0 30 2 *").
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = self
            .cron
            .find_next_occurrence(&self.zoned(t)?, false)
            .ok()?;
        Timetable::utc(&next)
    }

    /// The last cron time at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let last = self
            .cron
            .find_previous_occurrence(&self.zoned(t)?, true)
            .ok()?;
        Timetable::utc(&last)
    }

    /// The last cron time strictly before `t`.
    pub fn last_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let last = self
            .cron
            .find_previous_occurrence(&self.zoned(t)?, false)
            .ok()?;
        Timetable::utc(&last)
    }

    /// When the run due at `due` starts: `due` plus this schedule's jitter for it, a delay in
    /// `[0, jitter)` that depends only on the schedule's name and `due`.
    pub fn start_of(&self, due: DateTime<Utc>) -> DateTime<Utc> {
        let millis = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return due;
        }
        let mut seed = self.name.as_bytes().to_vec();
        seed.extend_from_slice(&due.timestamp().to_le_bytes());
        let delay = xxhash_rust::xxh3::xxh3_64(&seed) % millis;
        due + chrono::Duration::milliseconds(i64::try_from(delay).unwrap_or(0))
    }
}

/// What the daemon should do, as the scheduler decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start this schedule's backup now (it was due at `due`).
    Run {
        schedule: String,
        due: DateTime<Utc>,
    },
    /// Due times that passed without a run: the daemon was down or asleep, or would have
    /// started them later than `grace`. `catch_up`: the policy is `run-once`, and a `Run`
    /// follows (unless the schedule is still busy).
    Missed {
        schedule: String,
        count: usize,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        catch_up: bool,
    },
    /// Due while the schedule's previous run was still going or waiting: not started.
    Overlap {
        schedule: String,
        due: DateTime<Utc>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    timetable: Timetable,
    /// The due time of the next run not yet handled.
    next: Option<DateTime<Utc>>,
}

/// Every schedule's next due time, advanced by [`Scheduler::poll`].
#[derive(Debug, Clone)]
pub struct Scheduler {
    entries: Vec<Entry>,
}

impl Scheduler {
    /// `last_due(name)`: the due time of the schedule's last run the daemon knows of (`None`:
    /// it never ran). Times between that and `now` are handled by the first [`poll`] as late
    /// or missed; a schedule that never ran starts with its first time after `now`.
    ///
    /// [`poll`]: Scheduler::poll
    pub fn new(
        timetables: Vec<Timetable>,
        last_due: impl Fn(&str) -> Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Scheduler {
        let entries = timetables
            .into_iter()
            .map(|timetable| {
                let next = match last_due(&timetable.name) {
                    Some(last) if last < now => timetable.next_after(last),
                    _ => timetable.next_after(now),
                };
                Entry { timetable, next }
            })
            .collect();
        Scheduler { entries }
    }

    /// The timetables, in configuration order.
    pub fn timetables(&self) -> impl Iterator<Item = &Timetable> {
        self.entries.iter().map(|e| &e.timetable)
    }

    /// A schedule's next run: its due time and when it starts (with jitter).
    pub fn upcoming(&self, schedule: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let entry = self.entries.iter().find(|e| e.timetable.name == schedule)?;
        entry.next.map(|due| (due, entry.timetable.start_of(due)))
    }

    /// When the daemon next has something to do (the earliest start).
    pub fn wake_at(&self) -> Option<DateTime<Utc>> {
        self.entries
            .iter()
            .filter_map(|e| e.next.map(|due| e.timetable.start_of(due)))
            .min()
    }

    /// Everything due by `now`, in configuration order. `busy(name)`: whether that schedule's
    /// previous run is still going or waiting (its new run is then an [`Event::Overlap`]).
    pub fn poll(&mut self, now: DateTime<Utc>, busy: impl Fn(&str) -> bool) -> Vec<Event> {
        let mut events = Vec::new();
        for entry in &mut self.entries {
            let table = &entry.timetable;
            let mut first = None;
            let mut latest = None;
            let mut count = 0;
            let mut due = entry.next;
            while let Some(d) = due {
                if table.start_of(d) > now {
                    break;
                }
                count += 1;
                first.get_or_insert(d);
                latest = Some(d);
                due = table.next_after(d);
                if count == MAX_COUNTED {
                    // Jump to the last time before now; what lies between is counted as one.
                    if let Some(last) = table.last_at_or_before(now).filter(|l| *l > d) {
                        due = Some(last);
                    }
                }
            }
            entry.next = due;
            let (Some(first), Some(latest)) = (first, latest) else {
                continue;
            };
            let name = table.name.clone();
            let late = (now - table.start_of(latest))
                .to_std()
                .is_ok_and(|lateness| lateness > table.grace);
            let run = if late {
                let catch_up = table.missed == Missed::RunOnce;
                events.push(Event::Missed {
                    schedule: name.clone(),
                    count,
                    first,
                    last: latest,
                    catch_up,
                });
                catch_up
            } else {
                if count > 1
                    && let Some(before_latest) = table.last_before(latest)
                {
                    events.push(Event::Missed {
                        schedule: name.clone(),
                        count: count - 1,
                        first,
                        last: before_latest,
                        catch_up: false,
                    });
                }
                true
            };
            if run {
                events.push(if busy(&name) {
                    Event::Overlap {
                        schedule: name,
                        due: latest,
                    }
                } else {
                    Event::Run {
                        schedule: name,
                        due: latest,
                    }
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, zone: &str) -> Schedule {
        Schedule {
            database: None,
            name: "s".into(),
            schedule_type: crate::config::ScheduleType::Full,
            cron: cron.into(),
            retention: None,
            grace: Duration::from_secs(3600),
            timezone: Some(zone.into()),
            missed: Missed::Skip,
            jitter: None,
            targets: Vec::new(),
            backup: None,
            random_within: None,
        }
    }

    fn table(cron: &str, zone: &str) -> Timetable {
        Timetable::new(&schedule(cron, zone)).expect("valid schedule")
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    /// The cron times after `from`, `n` of them.
    fn times(t: &Timetable, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut now = at(from);
        for _ in 0..n {
            now = t.next_after(now).expect("a next time");
            out.push(now);
        }
        out
    }

    #[test]
    fn cron_is_read_in_the_schedules_time_zone() {
        // 02:00 in New York: 07:00 UTC in winter (EST), 06:00 UTC in summer (EDT).
        let ny = table("0 2 * * *", "America/New_York");
        assert_eq!(
            ny.next_after(at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T07:00:00Z"))
        );
        assert_eq!(
            ny.next_after(at("2026-07-10T00:00:00Z")),
            Some(at("2026-07-10T06:00:00Z"))
        );
        // Half-hour offsets, and a zone east of UTC whose 02:00 is the day before in UTC.
        let kolkata = table("0 2 * * *", "Asia/Kolkata");
        assert_eq!(
            kolkata.next_after(at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T20:30:00Z"))
        );
        // Without a time zone: UTC.
        let mut utc = schedule("15 */6 * * 1-5", "UTC");
        utc.timezone = None;
        let utc = Timetable::new(&utc).expect("valid");
        assert_eq!(utc.zone_name, "UTC");
        // Friday 2026-01-09 18:15, then Monday 00:15 (weekdays only).
        assert_eq!(
            times(&utc, "2026-01-09T13:00:00Z", 2),
            vec![at("2026-01-09T18:15:00Z"), at("2026-01-12T00:15:00Z")]
        );
        assert_eq!(
            utc.last_at_or_before(at("2026-01-12T00:15:00Z")),
            Some(at("2026-01-12T00:15:00Z"))
        );
    }

    #[test]
    fn spring_forward_runs_a_skipped_time_once_right_after_the_gap() {
        // 2026-03-08: New York goes from 02:00 EST to 03:00 EDT; 02:00 does not exist.
        let ny = table("0 2 * * *", "America/New_York");
        assert_eq!(
            times(&ny, "2026-03-07T12:00:00Z", 2),
            vec![
                at("2026-03-08T07:00:00Z"), // 03:00 EDT, the first instant after the gap
                at("2026-03-09T06:00:00Z"), // 02:00 EDT
            ]
        );
        // Europe/Berlin, 2026-03-29: 02:00 CET → 03:00 CEST; 02:30 runs at 03:00 CEST.
        let berlin = table("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            times(&berlin, "2026-03-28T12:00:00Z", 2),
            vec![at("2026-03-29T01:00:00Z"), at("2026-03-30T00:30:00Z")]
        );
        // Southern hemisphere: Sydney springs forward on 2026-10-04 (02:00 → 03:00).
        let sydney = table("0 2 * * *", "Australia/Sydney");
        assert_eq!(
            times(&sydney, "2026-10-03T00:00:00Z", 2),
            vec![
                at("2026-10-03T16:00:00Z"), // 03:00 AEDT on the 4th
                at("2026-10-04T15:00:00Z"), // 02:00 AEDT on the 5th
            ]
        );
    }

    #[test]
    fn fall_back_runs_a_repeated_time_once_and_intervals_in_both_halves() {
        // 2026-11-01: New York goes from 02:00 EDT back to 01:00 EST; 01:30 happens twice.
        let fixed = table("30 1 * * *", "America/New_York");
        assert_eq!(
            times(&fixed, "2026-10-31T12:00:00Z", 2),
            vec![
                at("2026-11-01T05:30:00Z"), // 01:30 EDT, the first of the two
                at("2026-11-02T06:30:00Z"), // 01:30 EST the next day, not 06:30 on the 1st
            ]
        );
        // An interval job keeps its rhythm through the repeated hour.
        let every_30 = table("*/30 * * * *", "America/New_York");
        assert_eq!(
            times(&every_30, "2026-11-01T04:45:00Z", 5),
            vec![
                at("2026-11-01T05:00:00Z"), // 01:00 EDT
                at("2026-11-01T05:30:00Z"), // 01:30 EDT
                at("2026-11-01T06:00:00Z"), // 01:00 EST
                at("2026-11-01T06:30:00Z"), // 01:30 EST
                at("2026-11-01T07:00:00Z"), // 02:00 EST
            ]
        );
        // The daily 02:00 backup runs once on the day the clocks go back.
        let daily = table("0 2 * * *", "America/New_York");
        assert_eq!(
            times(&daily, "2026-10-31T12:00:00Z", 2),
            vec![at("2026-11-01T07:00:00Z"), at("2026-11-02T07:00:00Z")]
        );
    }

    #[test]
    fn bad_cron_zone_and_jitter_are_refused_naming_the_schedule() {
        for (cron, zone, expected) in [
            ("0 0 2 * * *", "UTC", "not a five-field cron"),
            ("61 * * * *", "UTC", "not a five-field cron"),
            (
                "0 2 * * *",
                "America/New_Yrok",
                "time zone 'America/New_Yrok' is not known",
            ),
        ] {
            let err = Timetable::new(&schedule(cron, zone)).expect_err(cron);
            let text = err.to_string();
            assert!(text.contains("schedule 's'"), "{text}");
            assert!(text.contains(expected), "{text}");
        }
        let mut s = schedule("0 2 * * *", "UTC");
        s.jitter = Some(Duration::from_secs(3600));
        let text = Timetable::new(&s).expect_err("jitter = grace").to_string();
        assert!(
            text.contains("jitter 1h must be shorter than grace 1h"),
            "{text}"
        );
    }

    #[test]
    fn jitter_stays_within_its_bounds_spreads_and_is_stable() {
        let mut s = schedule("* * * * *", "UTC");
        s.jitter = Some(Duration::from_secs(300));
        let t = Timetable::new(&s).expect("valid");
        let mut delays = std::collections::BTreeSet::new();
        let mut due = at("2026-01-01T00:00:00Z");
        for _ in 0..2000 {
            let delay = (t.start_of(due) - due).to_std().expect("never early");
            assert!(delay < Duration::from_secs(300), "{delay:?}");
            assert_eq!(t.start_of(due), t.start_of(due), "stable");
            delays.insert(delay.as_secs() / 30);
            due = t.next_after(due).expect("next");
        }
        // All ten 30-second bands of the 5-minute window are used.
        assert_eq!(delays.len(), 10, "{delays:?}");
        // Without jitter a run starts on its cron time.
        let plain = table("* * * * *", "UTC");
        assert_eq!(plain.start_of(due), due);
    }

    fn scheduler(s: Schedule, last: Option<&str>, now: &str) -> Scheduler {
        let last = last.map(at);
        Scheduler::new(vec![Timetable::new(&s).expect("valid")], |_| last, at(now))
    }

    #[test]
    fn runs_each_time_as_it_comes() {
        let mut sched = scheduler(schedule("0 */4 * * *", "UTC"), None, "2026-01-10T01:00:00Z");
        assert_eq!(sched.wake_at(), Some(at("2026-01-10T04:00:00Z")));
        assert!(sched.poll(at("2026-01-10T03:59:59Z"), |_| false).is_empty());
        let run = Event::Run {
            schedule: "s".into(),
            due: at("2026-01-10T04:00:00Z"),
        };
        assert_eq!(sched.poll(at("2026-01-10T04:00:00Z"), |_| false), vec![run]);
        assert!(sched.poll(at("2026-01-10T04:00:01Z"), |_| false).is_empty());
        assert_eq!(
            sched.upcoming("s"),
            Some((at("2026-01-10T08:00:00Z"), at("2026-01-10T08:00:00Z")))
        );
    }

    #[test]
    fn missed_while_down_skip_reports_and_waits_for_the_next_time() {
        // Last ran Monday 02:00; the daemon comes back on Thursday at 10:00.
        let mut sched = scheduler(
            schedule("0 2 * * *", "UTC"),
            Some("2026-01-05T02:00:00Z"),
            "2026-01-08T10:00:00Z",
        );
        let events = sched.poll(at("2026-01-08T10:00:00Z"), |_| false);
        assert_eq!(
            events,
            vec![Event::Missed {
                schedule: "s".into(),
                count: 3,
                first: at("2026-01-06T02:00:00Z"),
                last: at("2026-01-08T02:00:00Z"),
                catch_up: false,
            }]
        );
        assert_eq!(sched.wake_at(), Some(at("2026-01-09T02:00:00Z")));
    }

    #[test]
    fn missed_while_down_run_once_runs_one_catch_up() {
        let mut s = schedule("0 2 * * *", "UTC");
        s.missed = Missed::RunOnce;
        let mut sched = scheduler(s, Some("2026-01-05T02:00:00Z"), "2026-01-08T10:00:00Z");
        let events = sched.poll(at("2026-01-08T10:00:00Z"), |_| false);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            events[0],
            Event::Missed {
                count: 3,
                catch_up: true,
                ..
            }
        ));
        assert_eq!(
            events[1],
            Event::Run {
                schedule: "s".into(),
                due: at("2026-01-08T02:00:00Z")
            }
        );
        // One catch-up only: nothing more until Friday.
        assert!(sched.poll(at("2026-01-08T10:00:05Z"), |_| false).is_empty());
        assert_eq!(sched.wake_at(), Some(at("2026-01-09T02:00:00Z")));
    }

    #[test]
    fn a_run_within_grace_runs_late_whatever_the_policy() {
        // Down from 01:50 to 02:20: the 02:00 run is 20 minutes late, within the hour's grace.
        let mut sched = scheduler(
            schedule("0 2 * * *", "UTC"),
            Some("2026-01-07T02:00:00Z"),
            "2026-01-08T02:20:00Z",
        );
        assert_eq!(
            sched.poll(at("2026-01-08T02:20:00Z"), |_| false),
            vec![Event::Run {
                schedule: "s".into(),
                due: at("2026-01-08T02:00:00Z")
            }]
        );
        // Several times within grace: the latest runs, the others are reported missed.
        let mut minutely = scheduler(
            schedule("* * * * *", "UTC"),
            Some("2026-01-08T02:00:00Z"),
            "2026-01-08T02:05:30Z",
        );
        let events = minutely.poll(at("2026-01-08T02:05:30Z"), |_| false);
        assert_eq!(
            events,
            vec![
                Event::Missed {
                    schedule: "s".into(),
                    count: 4,
                    first: at("2026-01-08T02:01:00Z"),
                    last: at("2026-01-08T02:04:00Z"),
                    catch_up: false,
                },
                Event::Run {
                    schedule: "s".into(),
                    due: at("2026-01-08T02:05:00Z")
                },
            ]
        );
    }

    #[test]
    fn a_month_of_missed_minutes_is_counted_without_walking_them_all() {
        let mut s = schedule("* * * * *", "UTC");
        s.missed = Missed::RunOnce;
        let mut sched = scheduler(s, Some("2026-01-01T00:00:00Z"), "2026-02-01T00:00:30Z");
        let events = sched.poll(at("2026-02-01T00:00:30Z"), |_| false);
        // The latest minute is within grace, so it simply runs; the rest were missed.
        assert_eq!(
            events[0],
            Event::Missed {
                schedule: "s".into(),
                count: MAX_COUNTED,
                first: at("2026-01-01T00:01:00Z"),
                last: at("2026-01-31T23:59:00Z"),
                catch_up: false,
            }
        );
        assert_eq!(
            events[1],
            Event::Run {
                schedule: "s".into(),
                due: at("2026-02-01T00:00:00Z")
            }
        );
        assert_eq!(sched.wake_at(), Some(at("2026-02-01T00:01:00Z")));
    }

    #[test]
    fn a_run_due_while_the_previous_is_going_is_skipped_as_overlap() {
        let mut sched = scheduler(schedule("* * * * *", "UTC"), None, "2026-01-08T02:00:30Z");
        assert_eq!(
            sched.poll(at("2026-01-08T02:01:00Z"), |_| true),
            vec![Event::Overlap {
                schedule: "s".into(),
                due: at("2026-01-08T02:01:00Z")
            }]
        );
        // The next one runs once the schedule is free again.
        assert_eq!(
            sched.poll(at("2026-01-08T02:02:00Z"), |_| false),
            vec![Event::Run {
                schedule: "s".into(),
                due: at("2026-01-08T02:02:00Z")
            }]
        );
    }

    #[test]
    fn jittered_runs_start_late_but_within_the_window() {
        let mut s = schedule("0 * * * *", "UTC");
        s.jitter = Some(Duration::from_secs(600));
        let t = Timetable::new(&s).expect("valid");
        let due = at("2026-01-08T03:00:00Z");
        let start = t.start_of(due);
        let mut sched = Scheduler::new(vec![t], |_| None, at("2026-01-08T02:30:00Z"));
        assert_eq!(sched.wake_at(), Some(start));
        if start > due {
            assert!(
                sched
                    .poll(start - chrono::Duration::milliseconds(1), |_| false)
                    .is_empty()
            );
        }
        assert_eq!(
            sched.poll(start, |_| false),
            vec![Event::Run {
                schedule: "s".into(),
                due
            }]
        );
    }
}
