//! Decoding PostgreSQL's built-in `pgoutput` logical decoding messages (protocol version 1)
//! into [`Change`] records.
//!
//! Each message is one row of `pg_logical_slot_peek_binary_changes`. Relation messages describe
//! a table (name, columns, which columns form its replica identity) before its first row
//! change in a decoding session; [`Decoder`] keeps them and turns Begin / Insert / Update /
//! Delete / Truncate / Commit into change records. A value is PostgreSQL's text output, NULL,
//! or "unchanged" (a TOASTed column an update left alone, which the decoder does not send).

use crate::repository::changes::{Change, Lsn, Row};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A column as a Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// Part of the replica identity (every column under `REPLICA IDENTITY FULL`).
    pub key: bool,
}

/// A table as a Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `relreplident`: `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

impl Relation {
    /// `schema.name`, as change records and manifests name tables.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the update did not change.
    Unchanged,
    Text(String),
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        commit_time: DateTime<Utc>,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: DateTime<Utc>,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Value>,
    },
    Update {
        relation: u32,
        /// The old key (`K`) or old row (`O`, replica identity full), when sent.
        old: Option<Vec<Value>>,
        new: Vec<Value>,
    },
    Delete {
        relation: u32,
        old: Vec<Value>,
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// Origin, Type and logical Message records: nothing to store.
    Ignored,
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.data.len() < n {
            return Err("the message ends early".into());
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn time(&mut self) -> Result<DateTime<Utc>, String> {
        let micros = self.u64()? as i64;
        DateTime::from_timestamp_micros(micros.saturating_add(PG_EPOCH_MICROS))
            .ok_or_else(|| format!("commit time {micros} is out of range"))
    }
    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, String> {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .ok_or("a string is not terminated")?;
        let text = utf8(self.take(end)?)?;
        self.take(1)?;
        Ok(text)
    }
    fn tuple(&mut self) -> Result<Vec<Value>, String> {
        let count = self.u16()?;
        (0..count)
            .map(|_| match self.u8()? {
                b'n' => Ok(Value::Null),
                b'u' => Ok(Value::Unchanged),
                b't' => {
                    let len = self.u32()? as usize;
                    Ok(Value::Text(utf8(self.take(len)?)?))
                }
                other => Err(format!("unknown column kind {:?}", other as char)),
            })
            .collect()
    }
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| "a value is not UTF-8 (change tracking needs a UTF8 database)".into())
}

/// Decodes one pgoutput message.
pub fn parse(data: &[u8]) -> Result<Message, String> {
    let mut r = Reader { data };
    let message = match r.u8()? {
        b'B' => Message::Begin {
            final_lsn: Lsn(r.u64()?),
            commit_time: r.time()?,
            xid: r.u32()?,
        },
        b'C' => {
            r.u8()?; // flags, unused
            Message::Commit {
                commit_lsn: Lsn(r.u64()?),
                end_lsn: Lsn(r.u64()?),
                commit_time: r.time()?,
            }
        }
        b'R' => {
            let oid = r.u32()?;
            let schema = match r.string()? {
                empty if empty.is_empty() => "pg_catalog".to_string(),
                schema => schema,
            };
            let name = r.string()?;
            let replica_identity = r.u8()?;
            let count = r.u16()?;
            let columns = (0..count)
                .map(|_| {
                    let flags = r.u8()?;
                    let name = r.string()?;
                    let type_oid = r.u32()?;
                    r.u32()?; // atttypmod
                    Ok(Column {
                        name,
                        type_oid,
                        key: flags & 1 == 1,
                    })
                })
                .collect::<Result<_, String>>()?;
            Message::Relation(Relation {
                oid,
                schema,
                name,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert {
                    relation,
                    new: r.tuple()?,
                },
                other => return Err(format!("insert with tuple kind {:?}", other as char)),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, new) = match r.u8()? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    match r.u8()? {
                        b'N' => (Some(old), r.tuple()?),
                        other => {
                            return Err(format!("update with tuple kind {:?}", other as char));
                        }
                    }
                }
                b'N' => (None, r.tuple()?),
                other => return Err(format!("update with tuple kind {:?}", other as char)),
            };
            Message::Update { relation, old, new }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete {
                    relation,
                    old: r.tuple()?,
                },
                other => return Err(format!("delete with tuple kind {:?}", other as char)),
            }
        }
        b'T' => {
            let count = r.u32()?;
            let options = r.u8()?;
            let relations = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate {
                relations,
                cascade: options & 1 == 1,
                restart_identity: options & 2 == 2,
            }
        }
        b'O' | b'Y' | b'M' => Message::Ignored,
        other => return Err(format!("unknown pgoutput message {:?}", other as char)),
    };
    Ok(message)
}

/// Turns messages into change records, keeping the relations described so far.
#[derive(Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
    xid: u32,
}

impl Decoder {
    pub fn relation(&self, oid: u32) -> Result<&Relation, String> {
        self.relations
            .get(&oid)
            .ok_or_else(|| format!("a row change names relation {oid}, which was not described"))
    }

    /// The change record for a message (None for Relation and ignored messages, which only
    /// inform the decoder).
    pub fn change(&mut self, message: Message) -> Result<Option<Change>, String> {
        Ok(Some(match message {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                self.xid = xid;
                Change::Begin {
                    xid,
                    commit_lsn: final_lsn,
                    commit_time,
                }
            }
            Message::Commit { commit_lsn, .. } => Change::Commit {
                xid: self.xid,
                commit_lsn,
            },
            Message::Relation(relation) => {
                self.relations.insert(relation.oid, relation);
                return Ok(None);
            }
            Message::Insert { relation, new } => {
                let rel = self.relation(relation)?;
                Change::Insert {
                    table: rel.display_name(),
                    new: row(rel, &new, false)?,
                }
            }
            Message::Update { relation, old, new } => {
                let rel = self.relation(relation)?;
                let key = row(rel, old.as_ref().unwrap_or(&new), true)?;
                let unchanged = rel
                    .columns
                    .iter()
                    .zip(&new)
                    .filter(|(_, v)| **v == Value::Unchanged)
                    .map(|(c, _)| c.name.clone())
                    .collect();
                Change::Update {
                    table: rel.display_name(),
                    key,
                    new: row(rel, &new, false)?,
                    unchanged,
                }
            }
            Message::Delete { relation, old } => {
                let rel = self.relation(relation)?;
                Change::Delete {
                    table: rel.display_name(),
                    key: row(rel, &old, true)?,
                }
            }
            Message::Truncate {
                relations,
                cascade,
                restart_identity,
            } => Change::Truncate {
                tables: relations
                    .iter()
                    .map(|oid| self.relation(*oid).map(Relation::display_name))
                    .collect::<Result<_, _>>()?,
                cascade,
                restart_identity,
            },
            Message::Ignored => return Ok(None),
        }))
    }
}

/// The row's values by column name, unchanged ones left out; `key_only`: the replica
/// identity columns only.
fn row(rel: &Relation, values: &[Value], key_only: bool) -> Result<Row, String> {
    if values.len() != rel.columns.len() {
        return Err(format!(
            "a row of {} has {} values for {} columns",
            rel.display_name(),
            values.len(),
            rel.columns.len()
        ));
    }
    Ok(rel
        .columns
        .iter()
        .zip(values)
        .filter(|(c, _)| !key_only || c.key)
        .filter_map(|(c, v)| match v {
            Value::Unchanged => None,
            Value::Null => Some((c.name.clone(), None)),
            Value::Text(t) => Some((c.name.clone(), Some(t.clone()))),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn relation_message() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(16384u32.to_be_bytes());
        m.extend(s("public"));
        m.extend(s("t"));
        m.push(b'd');
        m.extend(3u16.to_be_bytes());
        for (flags, name, oid) in [(1u8, "id", 23u32), (0, "name", 25), (0, "big", 25)] {
            m.push(flags);
            m.extend(s(name));
            m.extend(oid.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    fn tuple(values: &[Option<Option<&str>>]) -> Vec<u8> {
        let mut m = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => m.push(b'u'),
                Some(None) => m.push(b'n'),
                Some(Some(t)) => {
                    m.push(b't');
                    m.extend((t.len() as u32).to_be_bytes());
                    m.extend(t.as_bytes());
                }
            }
        }
        m
    }

    fn decode(decoder: &mut Decoder, message: &[u8]) -> Option<Change> {
        decoder.change(parse(message).unwrap()).unwrap()
    }

    fn row_of(pairs: &[(&str, Option<&str>)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn a_transaction_decodes_to_begin_changes_commit() {
        let mut d = Decoder::default();
        assert_eq!(decode(&mut d, &relation_message()), None);
        let mut begin = vec![b'B'];
        begin.extend(0x16B3800u64.to_be_bytes());
        // 2026-12-02T03:00:00.123456Z in microseconds since 2000-01-01.
        let at = DateTime::parse_from_rfc3339("2026-12-02T03:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        begin.extend((at.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
        begin.extend(734u32.to_be_bytes());
        assert_eq!(
            decode(&mut d, &begin),
            Some(Change::Begin {
                xid: 734,
                commit_lsn: Lsn(0x16B3800),
                commit_time: at
            })
        );

        let mut insert = vec![b'I'];
        insert.extend(16384u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[Some(Some("1")), Some(Some("x")), Some(None)]));
        assert_eq!(
            decode(&mut d, &insert),
            Some(Change::Insert {
                table: "public.t".into(),
                new: row_of(&[("id", Some("1")), ("name", Some("x")), ("big", None)]),
            })
        );

        // An update that left the TOASTed column alone, key unchanged (no old tuple).
        let mut update = vec![b'U'];
        update.extend(16384u32.to_be_bytes());
        update.push(b'N');
        update.extend(tuple(&[Some(Some("1")), Some(Some("y")), None]));
        assert_eq!(
            decode(&mut d, &update),
            Some(Change::Update {
                table: "public.t".into(),
                key: row_of(&[("id", Some("1"))]),
                new: row_of(&[("id", Some("1")), ("name", Some("y"))]),
                unchanged: vec!["big".into()],
            })
        );

        // An update of the key: the old key comes first.
        let mut rekey = vec![b'U'];
        rekey.extend(16384u32.to_be_bytes());
        rekey.push(b'K');
        rekey.extend(tuple(&[Some(Some("1")), Some(None), Some(None)]));
        rekey.push(b'N');
        rekey.extend(tuple(&[Some(Some("2")), Some(Some("y")), Some(Some("b"))]));
        let Some(Change::Update { key, new, .. }) = decode(&mut d, &rekey) else {
            panic!("an update")
        };
        assert_eq!(key, row_of(&[("id", Some("1"))]));
        assert_eq!(new.get("id"), Some(&Some("2".to_string())));

        let mut delete = vec![b'D'];
        delete.extend(16384u32.to_be_bytes());
        delete.push(b'K');
        delete.extend(tuple(&[Some(Some("2")), Some(None), Some(None)]));
        assert_eq!(
            decode(&mut d, &delete),
            Some(Change::Delete {
                table: "public.t".into(),
                key: row_of(&[("id", Some("2"))]),
            })
        );

        let mut truncate = vec![b'T'];
        truncate.extend(1u32.to_be_bytes());
        truncate.push(2);
        truncate.extend(16384u32.to_be_bytes());
        assert_eq!(
            decode(&mut d, &truncate),
            Some(Change::Truncate {
                tables: vec!["public.t".into()],
                cascade: false,
                restart_identity: true
            })
        );

        let mut commit = vec![b'C', 0];
        commit.extend(0x16B3800u64.to_be_bytes());
        commit.extend(0x16B3830u64.to_be_bytes());
        commit.extend((at.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
        assert_eq!(
            decode(&mut d, &commit),
            Some(Change::Commit {
                xid: 734,
                commit_lsn: Lsn(0x16B3800)
            })
        );
    }

    #[test]
    fn damaged_or_unknown_messages_are_errors_not_panics() {
        let mut d = Decoder::default();
        for bad in [
            &b""[..],
            b"Z",
            b"B\x00\x00",
            b"R\x00\x00\x40\x00public",
            b"I\x00\x00\x40\x00N\x00\x01t\x00\x00\x00\x09ab",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let mut insert = vec![b'I'];
        insert.extend(99u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[Some(Some("1"))]));
        let e = d.change(parse(&insert).unwrap()).unwrap_err();
        assert!(e.contains("relation 99"), "{e}");
        d.change(parse(&relation_message()).unwrap()).unwrap();
        let mut short = vec![b'I'];
        short.extend(16384u32.to_be_bytes());
        short.push(b'N');
        short.extend(tuple(&[Some(Some("1"))]));
        let e = d.change(parse(&short).unwrap()).unwrap_err();
        assert!(e.contains("1 values for 3 columns"), "{e}");
    }
}
