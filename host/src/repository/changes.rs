//! The change-set format of incremental backups: JSON Lines, one [`Change`] per line.
//!
//! An incremental backup's `changes` stream (see
//! [`IncrementalInfo`](super::manifest::IncrementalInfo)) holds the row changes PostgreSQL's
//! logical decoding reported between its start and end LSN, transactions whole and in commit
//! order: `begin`, the transaction's row changes, `commit`. Values are PostgreSQL's text output
//! (what `COPY … TO STDOUT` would print, unescaped) as JSON strings; SQL NULL is JSON null.
//! Tables are named `schema.name`, unquoted, as [`TableEntry::display_name`] spells them.
//!
//! [`TableEntry::display_name`]: super::manifest::TableEntry::display_name

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A WAL position (`pg_lsn`), written as PostgreSQL does: `0/16B3748`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(text: &str) -> Result<Lsn, String> {
        let bad = || format!("'{text}' is not an LSN like 0/16B3748");
        let (hi, lo) = text.split_once('/').ok_or_else(bad)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 {
                return Err(bad());
            }
            u32::from_str_radix(p, 16).map_err(|_| bad())
        };
        Ok(Lsn((u64::from(part(hi)?) << 32) | u64::from(part(lo)?)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Column name (unquoted) → text value; `None` is SQL NULL.
pub type Row = BTreeMap<String, Option<String>>;

/// One line of a change set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// A transaction starts; it carries its commit's LSN and time, so replay decides from it
    /// whether the transaction is within `--until` / `--until-lsn`.
    Begin {
        xid: u32,
        commit_lsn: Lsn,
        commit_time: DateTime<Utc>,
    },
    Insert {
        table: String,
        new: Row,
    },
    Update {
        table: String,
        /// The old row's replica identity columns (its primary key, or every column under
        /// `REPLICA IDENTITY FULL`).
        key: Row,
        /// The new row, less the `unchanged` columns.
        new: Row,
        /// TOASTed columns the update left alone and the decoder did not send: replay keeps
        /// the stored value.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unchanged: Vec<String>,
    },
    Delete {
        table: String,
        key: Row,
    },
    Truncate {
        tables: Vec<String>,
        cascade: bool,
        restart_identity: bool,
    },
    Commit {
        xid: u32,
        commit_lsn: Lsn,
    },
    /// A table's columns changed (DDL) at this point of the chain: later rows of `table` have
    /// these columns (quoted identifiers, as a manifest's `TableEntry::columns`) and types.
    Schema {
        table: String,
        columns: Vec<String>,
        column_types: Vec<String>,
    },
}

impl Change {
    /// The change as one line of the stream, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising these types cannot fail: string keys, no non-finite floats.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Reads one line of the stream (with or without its newline).
    pub fn from_line(line: &[u8]) -> Result<Change, String> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        serde_json::from_slice(line).map_err(|e| format!("not a change record: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Option<&str>)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn lsn_reads_and_writes_postgres_text_form() {
        let lsn: Lsn = "0/16B3748".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16B3748));
        assert_eq!(lsn.to_string(), "0/16B3748");
        let high: Lsn = "1A/FF".parse().unwrap();
        assert_eq!(high.0, (0x1A << 32) | 0xFF);
        assert_eq!(high.to_string(), "1A/FF");
        assert!(high > lsn);
        for bad in ["", "0", "0/", "/1", "x/1", "0/123456789", "0/1/2"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
        assert_eq!(
            serde_json::to_string(&lsn).unwrap(),
            "\"0/16B3748\"",
            "serialised as text"
        );
    }

    #[test]
    fn every_change_round_trips_in_the_contracts_json() {
        let time = DateTime::parse_from_rfc3339("2026-12-02T03:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let cases = [
            (
                Change::Begin {
                    xid: 734,
                    commit_lsn: Lsn(0x16B3800),
                    commit_time: time,
                },
                r#"{"op":"begin","xid":734,"commit_lsn":"0/16B3800","commit_time":"2026-12-02T03:00:00.123456Z"}"#,
            ),
            (
                Change::Insert {
                    table: "public.t".into(),
                    new: row(&[("id", Some("1")), ("name", Some("x"))]),
                },
                r#"{"op":"insert","table":"public.t","new":{"id":"1","name":"x"}}"#,
            ),
            (
                Change::Update {
                    table: "public.t".into(),
                    key: row(&[("id", Some("1"))]),
                    new: row(&[("id", Some("1")), ("name", None)]),
                    unchanged: vec!["big".into()],
                },
                r#"{"op":"update","table":"public.t","key":{"id":"1"},"new":{"id":"1","name":null},"unchanged":["big"]}"#,
            ),
            (
                Change::Delete {
                    table: "public.t".into(),
                    key: row(&[("id", Some("1"))]),
                },
                r#"{"op":"delete","table":"public.t","key":{"id":"1"}}"#,
            ),
            (
                Change::Truncate {
                    tables: vec!["public.t".into()],
                    cascade: false,
                    restart_identity: false,
                },
                r#"{"op":"truncate","tables":["public.t"],"cascade":false,"restart_identity":false}"#,
            ),
            (
                Change::Commit {
                    xid: 734,
                    commit_lsn: Lsn(0x16B3800),
                },
                r#"{"op":"commit","xid":734,"commit_lsn":"0/16B3800"}"#,
            ),
            (
                Change::Schema {
                    table: "public.t".into(),
                    columns: vec!["id".into(), "\"Name\"".into()],
                    column_types: vec!["integer".into(), "text".into()],
                },
                r#"{"op":"schema","table":"public.t","columns":["id","\"Name\""],"column_types":["integer","text"]}"#,
            ),
        ];
        for (change, json) in cases {
            let line = change.to_line();
            assert_eq!(
                String::from_utf8(line.clone()).unwrap(),
                format!("{json}\n")
            );
            assert_eq!(Change::from_line(&line).unwrap(), change);
            assert_eq!(Change::from_line(json.as_bytes()).unwrap(), change);
        }
    }

    #[test]
    fn an_update_without_unchanged_columns_omits_the_field_and_reads_without_it() {
        let change = Change::Update {
            table: "s.t".into(),
            key: row(&[("id", Some("2"))]),
            new: row(&[("id", Some("3"))]),
            unchanged: Vec::new(),
        };
        let line = String::from_utf8(change.to_line()).unwrap();
        assert!(!line.contains("unchanged"), "{line}");
        assert_eq!(Change::from_line(line.as_bytes()).unwrap(), change);
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        for bad in [
            &b"{\"op\":\"nope\"}"[..],
            b"{\"op\":\"insert\",\"table\":\"t\"}",
            b"not json",
            b"{\"op\":\"commit\",\"xid\":1,\"commit_lsn\":\"zz\"}",
        ] {
            let e = Change::from_line(bad).unwrap_err();
            assert!(e.starts_with("not a change record"), "{e}");
        }
    }
}
