//! The schema an incremental carries: DDL since the chain's previous backup, found by
//! comparing pg_dump's pre-data and post-data sections of the database now with the parent's,
//! object by object (pg_dump's table-of-contents entries).
//!
//! A change that is sound to restore from the schema as of the chain's end is carried: the
//! incremental stores the sections as they are now (deduplicated through the repository's
//! chunks like everything else; an unchanged section reuses the parent's chunks), and a
//! restore of the chain creates the schema of the last incremental it replays in full. That
//! covers every post-data object (indexes, constraints, foreign keys, triggers, rules,
//! policies: built after the data is loaded and replayed), and in pre-data the objects that do
//! not constrain the rows loaded before the replay (comments, table privileges, ownership,
//! views, sequences, functions, schemas, extensions; types and domains created or dropped).
//! Any other pre-data change (a CHECK constraint written into the table, a type or domain
//! altered, …) could make the
//! base's rows fail to load or load differently, so the incremental is refused, naming the
//! object, and a new full backup is needed. Column and table changes are refused earlier
//! (`capture::check_schema`, `capture::check_tracked`).

use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::pg::ddl::{Entry, Script};
use crate::pg::pg_dump;
use crate::repository::manifest::{Manifest, Stream};
use crate::repository::stream::store_bytes;
use crate::repository::{ChunkIndex, Repository};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_postgres::Client;

/// Pre-data object types (pg_dump's `Type:`) whose creation, change or removal is carried.
/// A TABLE whose only difference is its owner is carried too ([`same_table`]).
const CARRIED_PRE_DATA: &[&str] = &[
    "ACL",
    "AGGREGATE",
    "COMMENT",
    "DEFAULT ACL",
    "EXTENSION",
    "FUNCTION",
    "MATERIALIZED VIEW",
    "POLICY",
    "PROCEDURE",
    "ROW SECURITY",
    "SCHEMA",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "VIEW",
];

/// Pre-data object types carried when created or dropped, refused when changed: a type or
/// domain altered in place (an enum value renamed, a domain constraint added) applies to the
/// rows stored before it; a new one is not used by them (a new column is refused anyway).
const CARRIED_NEW_OR_GONE: &[&str] = &["DOMAIN", "TYPE"];

/// The database's schema now, compared with the chain's parent backup.
pub struct Current {
    pre: Vec<u8>,
    post: Vec<u8>,
    /// What changed since the parent, one line each ("INDEX t_v_idx: created"); empty when
    /// the sections are as the parent holds them.
    pub changes: Vec<String>,
    /// The catalog's [`fingerprint`] just before the sections were read.
    pub fingerprint: String,
}

/// The sections an incremental records, stored.
pub struct Stored {
    pub pre_data: Stream,
    pub post_data: Stream,
    /// SHA-256 of the pre-data and post-data text; None when they are the parent's.
    pub digests: Option<(String, String)>,
    pub new_bytes: u64,
}

/// Reads the schema now (pg_dump, outside any snapshot: DDL committed before it runs) and
/// compares it with `parent`'s; refuses a change that cannot be carried. When the catalog's
/// [`fingerprint`] is the one the parent recorded, nothing changed and pg_dump is not looked
/// for nor run (`pg_dump`: its configured path and the server's major version, for
/// [`pg_dump::find`]).
pub async fn read(
    client: &Client,
    settings: &ConnectionSettings,
    (configured, server_major): (Option<&std::path::Path>, u32),
    repo: &Repository,
    parent: &Manifest,
) -> Result<Current> {
    let fingerprint = fingerprint(client).await?;
    let recorded = parent
        .incremental
        .as_ref()
        .and_then(|i| i.schema_fingerprint.as_ref());
    if recorded == Some(&fingerprint) {
        return Ok(Current {
            pre: Vec::new(),
            post: Vec::new(),
            changes: Vec::new(),
            fingerprint,
        });
    }
    let (pre, post) = pg_dump::find(configured, server_major)
        .await?
        .schema(settings, "")
        .await?
        .sections()
        .await?;
    let context = |name: &str| format!("the {name} section of backup {}", parent.id);
    let (pre_context, post_context) = (context("pre-data"), context("post-data"));
    let (then_pre, then_post) = tokio::try_join!(
        repo.read_stream(&parent.pre_data, &pre_context),
        repo.read_stream(&parent.post_data, &post_context),
    )?;
    let changes = if then_pre == pre && then_post == post {
        Vec::new()
    } else {
        compare(
            &parent.id,
            (&text(&then_pre, "pre-data")?, &text(&pre, "pre-data")?),
            (&text(&then_post, "post-data")?, &text(&post, "post-data")?),
        )?
    };
    Ok(Current {
        pre,
        post,
        changes,
        fingerprint,
    })
}

/// Which transactions wrote the catalog's rows (of every catalog the role may read, but the
/// statistics and the large objects' data), and the role names, as one digest. DDL writes
/// catalog rows in a transaction of its own, so the same fingerprint means no DDL since;
/// VACUUM and ANALYZE update `pg_class` in place, and `pg_statistic` is left out. Anything
/// else that writes the catalog (TRUNCATE, temporary tables) only makes the next incremental
/// read the schema again.
pub async fn fingerprint(client: &Client) -> Result<String> {
    let catalogs = client
        .query(
            "SELECT format('pg_catalog.%I', c.relname) FROM pg_class c \
             WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' \
               AND c.relname NOT IN ('pg_statistic', 'pg_statistic_ext_data', 'pg_largeobject') \
               AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
            &[],
        )
        .await
        .map_err(Error::db("listing the catalogs"))?;
    let rows: Vec<String> = catalogs
        .iter()
        .map(|r| {
            let table: String = r.get(0);
            format!("SELECT '{table}' AS c, xmin::text AS x FROM {table}")
        })
        .collect();
    let sql = format!(
        "SELECT md5(coalesce(string_agg(c || ':' || x, ',' ORDER BY c, x), '')) || ':' || \
           (SELECT md5(string_agg(rolname, ',' ORDER BY oid)) FROM pg_roles) \
         FROM ({}) catalog",
        rows.join(" UNION ALL ")
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(Error::db("reading the catalog's fingerprint"))?;
    Ok(row.get(0))
}

impl Current {
    /// Stores the sections (when they changed; else `parent`'s are reused as they are).
    pub async fn store(
        self,
        repo: &Repository,
        index: Arc<ChunkIndex>,
        level: i32,
        parent: &Manifest,
    ) -> Result<Stored> {
        // Equal objects, other bytes at most (pg_dump's random `\restrict` keys).
        if self.changes.is_empty() {
            return Ok(Stored {
                pre_data: parent.pre_data.clone(),
                post_data: parent.post_data.clone(),
                digests: None,
                new_bytes: 0,
            });
        }
        let sha = |sql: &[u8]| crate::repository::sha256_hex(sql);
        let digests = Some((sha(&self.pre), sha(&self.post)));
        let pre = store_bytes(repo, index.clone(), level, self.pre).await?;
        let post = store_bytes(repo, index, level, self.post).await?;
        Ok(Stored {
            pre_data: pre.stream,
            post_data: post.stream,
            digests,
            new_bytes: pre.new_bytes + post.new_bytes,
        })
    }
}

fn text(sql: &[u8], section: &str) -> Result<Script> {
    let sql = std::str::from_utf8(sql).map_err(|_| {
        Error::PgDump(format!(
            "pg_dump's {section} is not UTF-8 despite --encoding=UTF8"
        ))
    })?;
    Script::parse(sql)
}

/// Each object of a section by (type, name, n-th of that type and name), with its statements.
fn objects(script: &Script) -> BTreeMap<(String, String, usize), &Entry> {
    let mut out = BTreeMap::new();
    let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for entry in &script.entries {
        let n = seen
            .entry((entry.kind.as_str(), entry.name.as_str()))
            .or_default();
        out.insert((entry.kind.clone(), entry.name.clone(), *n), entry);
        *n += 1;
    }
    out
}

/// What changed between two pairs of sections (then, now), one line per object; an error
/// naming the first object whose change cannot be carried.
fn compare(
    parent: &str,
    (then_pre, now_pre): (&Script, &Script),
    (then_post, now_post): (&Script, &Script),
) -> Result<Vec<String>> {
    let mut changes = Vec::new();
    for (post, then, now) in [(false, then_pre, now_pre), (true, then_post, now_post)] {
        let (then, now) = (objects(then), objects(now));
        let keys: std::collections::BTreeSet<_> = then.keys().chain(now.keys()).collect();
        for key in keys {
            let (kind, name, _) = key;
            let (before, after) = (then.get(key), now.get(key));
            let what = match (before, after) {
                (None, Some(_)) => "created",
                (Some(_), None) => "dropped",
                (Some(b), Some(a)) if statements(&b.sql) == statements(&a.sql) => continue,
                (Some(_), Some(_)) => "changed",
                (None, None) => continue,
            };
            let carried = post
                || CARRIED_PRE_DATA.contains(&kind.as_str())
                || (CARRIED_NEW_OR_GONE.contains(&kind.as_str()) && what != "changed")
                || (kind == "TABLE"
                    && before
                        .zip(after)
                        .is_some_and(|(b, a)| same_table(&b.sql, &a.sql)));
            if !carried {
                let detail = before
                    .zip(after)
                    .and_then(|(b, a)| first_difference(&b.sql, &a.sql))
                    .map_or_else(String::new, |d| format!(" ({d})"));
                return Err(Error::ChangeTracking(format!(
                    "{kind} {name} was {what}{detail} since backup {parent}: that schema change is not carried by incremental backups \
                     (it could change how the rows stored before it load: a CHECK constraint, a type or domain altered, a table option, …); \
                     take a new full backup (`backup-cli backup create`) to start a new chain"
                )));
            }
            changes.push(format!("{kind} {name}: {what}"));
        }
    }
    Ok(changes)
}

/// An entry's statement lines: without blank lines and pg_dump's `--` comment lines (the
/// section's last entry also holds the dump's closing comment).
fn statements(sql: &str) -> Vec<&str> {
    sql.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
        .collect()
}

/// The first statement line one entry has and the other has not, in words.
fn first_difference(then: &str, now: &str) -> Option<String> {
    let (then, now) = (statements(then), statements(now));
    let added = now
        .iter()
        .find(|l| !then.contains(l))
        .map(|l| format!("now: `{}`", l.trim()));
    added.or_else(|| {
        then.iter()
            .find(|l| !now.contains(l))
            .map(|l| format!("gone: `{}`", l.trim()))
    })
}

/// Whether two `CREATE TABLE` entries differ at most in ownership (`ALTER TABLE … OWNER TO`).
/// A column default or privilege cannot get here: it rewrites the column's `pg_attribute`
/// row, which `capture::check_tracked` refuses first.
fn same_table(then: &str, now: &str) -> bool {
    let owned = |sql| -> Vec<&str> {
        statements(sql)
            .into_iter()
            .filter(|l| !(l.starts_with("ALTER ") && l.contains(" OWNER TO ")))
            .collect()
    };
    owned(then) == owned(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(entries: &[(&str, &str, &str)]) -> Script {
        Script {
            preamble: String::new(),
            entries: entries
                .iter()
                .map(|(kind, name, sql)| Entry {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    sql: sql.to_string(),
                })
                .collect(),
        }
    }

    const TABLE: &str = "CREATE TABLE public.t (\n    id integer NOT NULL,\n    v text\n);\n\n\nALTER TABLE public.t OWNER TO a;\n";

    #[test]
    fn post_data_comments_privileges_and_ownership_are_carried() {
        let pre = script(&[("TABLE", "t", TABLE)]);
        let pre_now = script(&[
            ("TABLE", "t", &TABLE.replace("OWNER TO a", "OWNER TO b")),
            ("COMMENT", "TABLE t", "COMMENT ON TABLE public.t IS 'x';\n"),
            ("ACL", "TABLE t", "GRANT SELECT ON TABLE public.t TO r;\n"),
        ]);
        let post = script(&[("CONSTRAINT", "t t_pkey", "ALTER TABLE …;\n")]);
        let post_now = script(&[
            (
                "INDEX",
                "t_v_idx",
                "CREATE INDEX t_v_idx ON public.t (v);\n",
            ),
            ("TRIGGER", "t trg", "CREATE TRIGGER …;\n"),
        ]);
        let changes = compare("p", (&pre, &pre_now), (&post, &post_now)).unwrap();
        assert_eq!(
            changes,
            [
                "ACL TABLE t: created",
                "COMMENT TABLE t: created",
                "TABLE t: changed",
                "CONSTRAINT t t_pkey: dropped",
                "INDEX t_v_idx: created",
                "TRIGGER t trg: created",
            ]
        );
        assert!(
            compare("p", (&pre, &pre), (&post, &post))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_change_to_what_the_rows_must_satisfy_is_refused_by_name() {
        let pre = script(&[
            ("TABLE", "t", TABLE),
            ("DOMAIN", "d", "CREATE DOMAIN public.d AS integer;\n"),
        ]);
        let empty = Script::default();
        for (now, named) in [
            (
                script(&[
                    (
                        "TABLE",
                        "t",
                        &TABLE.replace(
                            "    v text\n",
                            "    v text,\n    CONSTRAINT t_v_check CHECK ((v <> ''::text))\n",
                        ),
                    ),
                    ("DOMAIN", "d", "CREATE DOMAIN public.d AS integer;\n"),
                ]),
                "TABLE t was changed (now: `v text,`) since backup p",
            ),
            (
                script(&[
                    ("TABLE", "t", TABLE),
                    (
                        "DOMAIN",
                        "d",
                        "CREATE DOMAIN public.d AS integer CHECK (VALUE < 9);\n",
                    ),
                ]),
                "DOMAIN d was changed (now: `CREATE DOMAIN public.d AS integer CHECK (VALUE < 9);`) since backup p",
            ),
        ] {
            let e = compare("p", (&pre, &now), (&empty, &empty))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(named) && e.contains("take a new full backup"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_table_whose_owner_changed_is_the_same_table() {
        assert!(same_table(
            TABLE,
            &TABLE.replace("OWNER TO a", "OWNER TO b")
        ));
        assert!(!same_table(
            TABLE,
            &TABLE.replace("v text", "v text NOT NULL")
        ));
        assert!(!same_table(
            TABLE,
            &TABLE.replace("v text", "v text DEFAULT 'x'::text")
        ));
    }
}
