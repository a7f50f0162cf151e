//! Reading pg_dump's plain-SQL sections so they can be executed without psql.
//!
//! The text is read by its structure, as psql would: a small SQL lexer knows where string
//! literals, quoted identifiers, dollar-quoted bodies and comments begin and end, so only lines
//! that start outside all of them count. There, pg_dump's psql meta-commands
//! (`\restrict KEY` / `\unrestrict KEY`, 15.14+) are dropped, and each object's table-of-contents
//! header block (`--` / `-- Name: …; Type: …; Schema: …; Owner: …` / `--` / blank) starts an
//! entry, which lets restore build independent indexes and constraints in parallel and run the
//! rest in pg_dump's order. The same text inside a function body or a comment is left alone.

use crate::error::{Error, Result};
use std::collections::HashSet;

/// One object's statements from a pg_dump section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// pg_dump's object type: `INDEX`, `CONSTRAINT`, `FK CONSTRAINT`, `TRIGGER`, …
    pub kind: String,
    pub name: String,
    pub sql: String,
}

/// Objects of a section run per transaction by [`Script::batches`]: each takes a lock or two,
/// and a server at the default `max_locks_per_transaction = 64` has room for a few thousand
/// locks in all, shared by every session.
pub const OBJECTS_PER_TRANSACTION: usize = 100;

/// A pg_dump section split into its session preamble and its objects.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// `SET …` statements every session running the entries needs first.
    pub preamble: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// A keyword, unquoted identifier or number.
    Word,
    /// A double-quoted identifier.
    Quoted,
    /// A string constant or dollar-quoted body.
    Literal,
    Comment,
    Punct,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The end (exclusive) of a quoted run that opened just before `from`: `q` doubled is an
/// escaped quote; with `backslash` (E'…' strings) a backslash escapes the next byte.
fn quoted_end(b: &[u8], mut j: usize, q: u8, backslash: bool) -> usize {
    while j < b.len() {
        if backslash && b[j] == b'\\' {
            j += 2;
        } else if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
            } else {
                return j + 1;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

/// The tag (`$$`, `$body$`) of a dollar quote opening at `i`, if one does.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && ident_char(b[j]) && b[j] != b'$' {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

/// PostgreSQL's lexical structure, as far as telling code from quoted text needs.
fn lex(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let tok = if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            i = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |p| i + p);
            Tok::Comment
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            // Block comments nest.
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            Tok::Comment
        } else if c == b'\'' {
            i = quoted_end(b, i + 1, b'\'', false);
            Tok::Literal
        } else if c == b'"' {
            i = quoted_end(b, i + 1, b'"', false);
            Tok::Quoted
        } else if c == b'$' {
            match dollar_tag(b, i) {
                Some(body) => {
                    let tag = &sql[i..body];
                    i = sql[body..]
                        .find(tag)
                        .map_or(b.len(), |p| body + p + tag.len());
                    Tok::Literal
                }
                None => {
                    i += 1;
                    Tok::Punct
                }
            }
        } else if ident_char(c) {
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            if i - start == 1 && (c == b'E' || c == b'e') && b.get(i) == Some(&b'\'') {
                i = quoted_end(b, i + 1, b'\'', true);
                Tok::Literal
            } else {
                Tok::Word
            }
        } else {
            i += sql[i..].chars().next().map_or(1, char::len_utf8);
            Tok::Punct
        };
        out.push(Token { tok, start, end: i });
    }
    out
}

/// Tokens that carry meaning (no comments).
fn code(sql: &str) -> Vec<Token> {
    lex(sql)
        .into_iter()
        .filter(|t| t.tok != Tok::Comment)
        .collect()
}

/// The offsets of the lines of `sql` that start outside every literal, quoted identifier and
/// block comment: the only places pg_dump's headers and psql's meta-commands can be.
fn top_level_lines(sql: &str) -> Vec<(usize, &str)> {
    let spans: Vec<(usize, usize)> = lex(sql)
        .into_iter()
        .filter(|t| t.tok != Tok::Punct && t.tok != Tok::Word)
        .filter(|t| sql[t.start..t.end].contains('\n'))
        .map(|t| (t.start, t.end))
        .collect();
    let mut span = 0;
    let mut offset = 0;
    let mut out = Vec::new();
    for line in sql.split_inclusive('\n') {
        while span < spans.len() && spans[span].1 <= offset {
            span += 1;
        }
        let inside = span < spans.len() && spans[span].0 < offset;
        if !inside {
            out.push((offset, line));
        }
        offset += line.len();
    }
    out
}

/// `x; Type: INDEX; Schema: public; Owner: bob` → (`x`, `INDEX`). Names may hold `; `: the
/// type is the first `; Type: ` followed by an upper-case word list and `; Schema: `.
fn header_fields(header: &str) -> (String, String) {
    let mut from = 0;
    while let Some(p) = header[from..].find("; Type: ") {
        let at = from + p;
        let rest = &header[at + "; Type: ".len()..];
        if let Some(end) = rest.find("; Schema: ")
            && rest[..end]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b' ')
        {
            return (header[..at].to_string(), rest[..end].to_string());
        }
        from = at + 1;
    }
    (header.to_string(), String::new())
}

impl Script {
    /// Splits a section at pg_dump's entry headers. Fails on a psql meta-command other than
    /// `\restrict`/`\unrestrict`: it would mean output this reader does not understand.
    pub fn parse(sql: &str) -> Result<Script> {
        let mut script = Script::default();
        let mut current: Option<Entry> = None;
        // Pieces of `sql` to skip: meta-command lines and header blocks.
        let mut skips: Vec<(usize, usize, Option<Entry>)> = Vec::new();
        let lines = top_level_lines(sql);
        let mut k = 0;
        while k < lines.len() {
            let (offset, line) = lines[k];
            if line.starts_with('\\') {
                let command = line.split_whitespace().next().unwrap_or_default();
                // `\connect` only in `pg_dump --create` output (database properties), where
                // the statements that follow are run on the right connection anyway.
                if !["\\restrict", "\\unrestrict", "\\connect"].contains(&command) {
                    return Err(Error::PgDump(format!(
                        "pg_dump's output holds a psql meta-command this reader does not know: {command}"
                    )));
                }
                skips.push((offset, offset + line.len(), None));
                k += 1;
                continue;
            }
            let header = (line == "--\n")
                .then(|| lines.get(k + 1))
                .flatten()
                .zip(lines.get(k + 2))
                .filter(|((o1, _), (o2, l2))| {
                    *o1 == offset + line.len() && *l2 == "--\n" && *o2 > *o1
                })
                .and_then(|((_, l1), (o2, l2))| {
                    Some((l1.strip_prefix("-- Name: ")?, o2 + l2.len()))
                });
            let Some((fields, mut end)) = header else {
                k += 1;
                continue;
            };
            let (name, kind) = header_fields(fields.trim_end_matches(['\n', '\r']));
            k += 3;
            if let Some((o, blank)) = lines.get(k)
                && *o == end
                && *blank == "\n"
            {
                end += 1;
                k += 1;
            }
            skips.push((
                offset,
                end,
                Some(Entry {
                    kind,
                    name,
                    sql: String::new(),
                }),
            ));
        }
        let mut at = 0;
        for (start, end, entry) in skips {
            let text = &sql[at..start];
            match current.as_mut() {
                Some(e) => e.sql.push_str(text),
                None => script.preamble.push_str(text),
            }
            at = end;
            if let Some(entry) = entry
                && let Some(done) = current.replace(entry)
            {
                script.entries.push(done);
            }
        }
        let text = &sql[at..];
        match current.as_mut() {
            Some(e) => e.sql.push_str(text),
            None => script.preamble.push_str(text),
        }
        if let Some(done) = current {
            script.entries.push(done);
        }
        Ok(script)
    }

    /// The whole section as one executable batch.
    pub fn to_sql(&self) -> String {
        let mut out = self.preamble.clone();
        for entry in &self.entries {
            out.push_str(&entry.sql);
        }
        out
    }

    /// The section as executable batches of at most [`OBJECTS_PER_TRANSACTION`] objects, every
    /// batch with the session preamble first. Each batch sent on its own commits on its own, so a schema of
    /// thousands of tables never holds a lock per table in one transaction (which fails at the
    /// server's default `max_locks_per_transaction`); inside an explicit transaction the batches
    /// simply run one after another.
    pub fn batches(&self) -> impl Iterator<Item = String> + '_ {
        let batch = |entries: &[Entry]| {
            let mut out = self.preamble.clone();
            for entry in entries {
                out.push_str(&entry.sql);
            }
            out
        };
        // An empty section still runs its preamble once.
        let empty = self.entries.is_empty().then(|| batch(&[]));
        self.entries
            .chunks(OBJECTS_PER_TRANSACTION)
            .map(batch)
            .chain(empty)
    }

    /// pg_dump's tags (`table constraint`) of the constraints this section adds NOT VALID:
    /// they were NOT VALID at the source and a faithful restore keeps them so.
    pub fn not_valid_tags(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|e| e.kind.ends_with("CONSTRAINT") && e.adds_not_valid())
            .map(|e| e.name.as_str())
    }

    /// Moves pg_dump's event triggers out of the script, in their order. A restore creates them
    /// after everything else, as pg_restore does, so that nothing it runs itself (foreign-key
    /// validation, autovacuum resets) fires them.
    pub fn take_event_triggers(&mut self) -> Vec<Entry> {
        let (triggers, rest) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.kind == "EVENT TRIGGER");
        self.entries = rest;
        triggers
    }

    /// Drops ownership and privilege statements (`--no-owner`): for targets that lack the
    /// source's roles. Objects then belong to the restoring user.
    pub fn without_ownership(mut self) -> Script {
        self.entries
            .retain(|e| e.kind != "ACL" && e.kind != "DEFAULT ACL");
        for entry in &mut self.entries {
            entry.sql = statements(&entry.sql)
                .filter(|s| !is_owner_change(s))
                .collect();
        }
        self
    }
}

/// What `pg_dump --create` writes about the database itself: its settings (`DATABASE
/// PROPERTIES`), comment, security labels and privileges, in pg_dump's order. `sql` is that
/// output; the rest of it (the `CREATE DATABASE`, extensions, servers) is left out.
pub fn database_properties(sql: &str) -> Result<Vec<Entry>> {
    Ok(Script::parse(sql)?
        .entries
        .into_iter()
        .filter(|e| {
            e.kind == "DATABASE PROPERTIES"
                || (["COMMENT", "ACL", "SECURITY LABEL"].contains(&e.kind.as_str())
                    && e.name.starts_with("DATABASE "))
        })
        .map(|mut e| {
            e.sql = statements(&e.sql)
                .filter(|s| !code(s).is_empty())
                .map(|s| format!("{};\n", s.trim().trim_end_matches(';')))
                .collect();
            e
        })
        .collect())
}

/// `sql` with every `DATABASE from` naming `to` instead (pg_dump's database properties name
/// the source database; a restore applies them to the one it created).
pub fn retarget_database(sql: &str, from: &str, to: &str) -> String {
    let tokens = code(sql);
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for pair in tokens.windows(2) {
        let (keyword, name) = (&pair[0], &pair[1]);
        if is_word(sql, keyword, "DATABASE")
            && matches!(name.tok, Tok::Word | Tok::Quoted)
            && identifier(sql, name) == from
        {
            out.push_str(&sql[at..name.start]);
            out.push_str(&crate::repository::manifest::quote_ident(to));
            at = name.end;
        }
    }
    out.push_str(&sql[at..]);
    out
}

/// Whether `statement` is `ALTER ROLE …` (a role's setting in the database).
pub fn names_a_role(statement: &str) -> bool {
    let tokens = code(statement);
    tokens.len() > 1
        && is_word(statement, &tokens[0], "ALTER")
        && is_word(statement, &tokens[1], "ROLE")
}

/// The statements of `sql`, each with the text after it up to the next (comments, blank
/// lines), split at semicolons outside quotes.
pub fn statements(sql: &str) -> impl Iterator<Item = &str> {
    let mut cuts: Vec<usize> = code(sql)
        .into_iter()
        .filter(|t| t.tok == Tok::Punct && &sql[t.start..t.end] == ";")
        .map(|t| t.end)
        .collect();
    cuts.push(sql.len());
    cuts.into_iter()
        .scan(0, move |at, cut| {
            let s = &sql[*at..cut];
            *at = cut;
            Some(s)
        })
        .filter(|s| !s.is_empty())
}

fn is_word(sql: &str, t: &Token, word: &str) -> bool {
    t.tok == Tok::Word && sql[t.start..t.end].eq_ignore_ascii_case(word)
}

/// `ALTER … OWNER TO role;` as pg_dump writes it.
fn is_owner_change(statement: &str) -> bool {
    let tokens = code(statement);
    tokens
        .first()
        .is_some_and(|t| is_word(statement, t, "ALTER"))
        && tokens
            .windows(2)
            .any(|w| is_word(statement, &w[0], "OWNER") && is_word(statement, &w[1], "TO"))
}

/// An identifier as the server stores it: quoted ones unescaped, bare ones folded to lower case.
fn identifier(sql: &str, t: &Token) -> String {
    let text = &sql[t.start..t.end];
    match t.tok {
        Tok::Quoted => text[1..text.len().saturating_sub(1).max(1)].replace("\"\"", "\""),
        _ => text.to_ascii_lowercase(),
    }
}

/// A qualified name from `tokens` (`schema.table`) as (schema, name), with its source text.
fn qualified_name(sql: &str, tokens: &[Token]) -> Option<((String, String), String)> {
    let [schema, dot, name] = tokens else {
        return None;
    };
    let part = |t: &Token| matches!(t.tok, Tok::Word | Tok::Quoted);
    if !(part(schema) && part(name) && &sql[dot.start..dot.end] == ".") {
        return None;
    }
    Some((
        (identifier(sql, schema), identifier(sql, name)),
        sql[schema.start..name.end].to_string(),
    ))
}

/// A foreign key split in two steps: adding it `NOT VALID` (a catalog change that briefly locks
/// both tables) and validating it (a scan that locks only the referencing table against other
/// schema changes, and the referenced table hardly at all). Validations of different tables can
/// then run in parallel even when they reference the same table; `ADD … FOREIGN KEY` cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The referencing table as the server names it: (schema, table), unquoted.
    pub table: (String, String),
    pub add_not_valid: String,
    pub validate: String,
}

/// Tables (schema, name) that are partitioned in the target.
pub type Partitioned = HashSet<(String, String)>;

impl Entry {
    /// Whether the entry's statement ends in `NOT VALID` (outside any quoted text).
    fn adds_not_valid(&self) -> bool {
        let tokens = code(&self.sql);
        tokens
            .windows(2)
            .any(|w| is_word(&self.sql, &w[0], "NOT") && is_word(&self.sql, &w[1], "VALID"))
    }

    /// The two steps of a foreign key pg_dump adds with one `ALTER TABLE ONLY … ADD CONSTRAINT`.
    /// None for anything else, for keys the source already had `NOT VALID` (they stay so), for
    /// keys on partitioned tables (written without `ONLY`; PostgreSQL before 18 cannot add those
    /// `NOT VALID`), and for keys referencing a table in `partitioned`: validating one of those
    /// leaves the constraints PostgreSQL made for each referenced partition marked NOT VALID
    /// (seen on 15), so they are added valid in one step, as pg_restore does.
    pub fn foreign_key(&self, partitioned: &Partitioned) -> Option<ForeignKey> {
        if self.kind != "FK CONSTRAINT" || self.adds_not_valid() {
            return None;
        }
        let sql = self.sql.as_str();
        let tokens = code(sql);
        let semicolons: Vec<usize> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| &sql[t.start..t.end] == ";")
            .map(|(i, _)| i)
            .collect();
        // One statement, ending the entry.
        if semicolons != [tokens.len().checked_sub(1)?] {
            return None;
        }
        let words = ["ALTER", "TABLE", "ONLY"];
        if tokens.len() < 3 || !words.iter().zip(&tokens).all(|(w, t)| is_word(sql, t, w)) {
            return None;
        }
        let add = tokens.iter().position(|t| is_word(sql, t, "ADD"))?;
        let (table, table_text) = qualified_name(sql, &tokens[3..add])?;
        if !(is_word(sql, tokens.get(add + 1)?, "CONSTRAINT")
            && matches!(tokens.get(add + 2)?.tok, Tok::Word | Tok::Quoted)
            && is_word(sql, tokens.get(add + 3)?, "FOREIGN"))
        {
            return None;
        }
        let name = tokens[add + 2];
        let references = tokens.iter().position(|t| is_word(sql, t, "REFERENCES"))?;
        let open = references
            + tokens[references..]
                .iter()
                .position(|t| &sql[t.start..t.end] == "(")?;
        let (referenced, _) = qualified_name(sql, &tokens[references + 1..open])?;
        if partitioned.contains(&referenced) {
            return None;
        }
        let statement = &sql[tokens[0].start..tokens[tokens.len() - 1].start];
        Some(ForeignKey {
            table,
            add_not_valid: format!("{statement} NOT VALID;\n"),
            validate: format!(
                "ALTER TABLE ONLY {table_text} VALIDATE CONSTRAINT {};\n",
                &sql[name.start..name.end]
            ),
        })
    }
}

/// A primary key or unique constraint split in two steps: its index built with `CREATE UNIQUE
/// INDEX`, which takes a SHARE lock on the table, so the table's other indexes build at the same
/// time on other sessions (`ADD CONSTRAINT … PRIMARY KEY (…)` locks the table ACCESS EXCLUSIVE
/// for its whole build, and they wait); then `ADD CONSTRAINT … USING INDEX`, a catalog change.
/// The constraint and its index end as pg_dump's statement makes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    pub build: String,
    pub attach: String,
}

impl Entry {
    /// The table an index or a table constraint is built on, as the server names it: (schema,
    /// table), unquoted. None for other entries and for statements it does not recognise.
    pub fn builds_on(&self) -> Option<(String, String)> {
        let sql = self.sql.as_str();
        let tokens = code(sql);
        let word = |i: usize, w: &str| tokens.get(i).is_some_and(|t| is_word(sql, t, w));
        let from = match self.kind.as_str() {
            "CONSTRAINT" if word(0, "ALTER") && word(1, "TABLE") => {
                if word(2, "ONLY") {
                    3
                } else {
                    2
                }
            }
            "INDEX" if word(0, "CREATE") => {
                let on = tokens.iter().position(|t| is_word(sql, t, "ON"))?;
                if word(on + 1, "ONLY") { on + 2 } else { on + 1 }
            }
            _ => return None,
        };
        qualified_name(sql, tokens.get(from..from + 3)?).map(|(name, _)| name)
    }

    /// The two steps of a primary key or unique constraint pg_dump adds as exactly `ALTER TABLE
    /// ONLY t ADD CONSTRAINT c PRIMARY KEY|UNIQUE (columns);`. None for anything else (options
    /// such as INCLUDE, WITH, a tablespace, DEFERRABLE or NULLS NOT DISTINCT, and exclusion
    /// constraints, run as written) and for partitioned tables, which cannot take `USING INDEX`.
    pub fn unique_index_first(&self, partitioned: &Partitioned) -> Option<KeyIndex> {
        if self.kind != "CONSTRAINT" {
            return None;
        }
        let sql = self.sql.as_str();
        let tokens = code(sql);
        let words = ["ALTER", "TABLE", "ONLY"];
        if tokens.len() < 10 || !words.iter().zip(&tokens).all(|(w, t)| is_word(sql, t, w)) {
            return None;
        }
        let (table, table_text) = qualified_name(sql, &tokens[3..6])?;
        if partitioned.contains(&table) {
            return None;
        }
        let name = tokens[8];
        if !(is_word(sql, &tokens[6], "ADD")
            && is_word(sql, &tokens[7], "CONSTRAINT")
            && matches!(name.tok, Tok::Word | Tok::Quoted))
        {
            return None;
        }
        let (kind, open) = if is_word(sql, &tokens[9], "PRIMARY")
            && tokens.get(10).is_some_and(|t| is_word(sql, t, "KEY"))
        {
            ("PRIMARY KEY", 11)
        } else if is_word(sql, &tokens[9], "UNIQUE") {
            ("UNIQUE", 10)
        } else {
            return None;
        };
        let punct = |i: usize, p: &str| {
            tokens
                .get(i)
                .is_some_and(|t| t.tok == Tok::Punct && &sql[t.start..t.end] == p)
        };
        // The column list: names and commas up to `)`, then the statement's end.
        if !punct(open, "(") {
            return None;
        }
        let close = open
            + tokens[open..]
                .iter()
                .position(|t| t.tok == Tok::Punct && &sql[t.start..t.end] == ")")?;
        let columns = &tokens[open + 1..close];
        let listed = !columns.is_empty()
            && columns.iter().enumerate().all(|(i, t)| {
                if i % 2 == 0 {
                    matches!(t.tok, Tok::Word | Tok::Quoted)
                } else {
                    t.tok == Tok::Punct && &sql[t.start..t.end] == ","
                }
            })
            && columns.len() % 2 == 1;
        if !listed || !punct(close + 1, ";") || tokens.len() != close + 2 {
            return None;
        }
        let name = &sql[name.start..name.end];
        Some(KeyIndex {
            build: format!(
                "CREATE UNIQUE INDEX {name} ON {table_text} USING btree {};\n",
                &sql[tokens[open].start..tokens[close].end]
            ),
            attach: format!(
                "ALTER TABLE ONLY {table_text} ADD CONSTRAINT {name} {kind} USING INDEX {name};\n"
            ),
        })
    }
}

impl Entry {
    /// For an object that belongs to the database rather than to a schema and is not dropped
    /// with the schemas (a publication, an event trigger whose function lives elsewhere), the
    /// statement that drops it if it exists: a whole-database `replace` runs these first, as
    /// `pg_restore --clean --if-exists` would.
    pub fn drop_database_object(&self) -> Option<String> {
        let (what, words) = match self.kind.as_str() {
            "PUBLICATION" => ("PUBLICATION", 2),
            "EVENT TRIGGER" => ("EVENT TRIGGER", 3),
            _ => return None,
        };
        let sql = self.sql.as_str();
        let tokens = code(sql);
        let name = tokens.get(words)?;
        if !(is_word(sql, tokens.first()?, "CREATE") && matches!(name.tok, Tok::Word | Tok::Quoted))
        {
            return None;
        }
        Some(format!(
            "DROP {what} IF EXISTS {};\n",
            &sql[name.start..name.end]
        ))
    }
}

/// Whether restore may build this object in parallel with others of the same phase.
pub fn builds_in_parallel(kind: &str) -> bool {
    matches!(kind, "INDEX" | "CONSTRAINT")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\\restrict abc\nSET statement_timeout = 0;\n\n--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: bob\n--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n--\n-- Name: t_idx; Type: INDEX; Schema: public; Owner: bob\n--\n\nCREATE INDEX t_idx ON public.t USING btree (v);\nALTER TABLE public.t OWNER TO bob;\n\n\\unrestrict abc\n";

    #[test]
    fn a_schema_of_thousands_of_objects_runs_in_batches_each_with_the_preamble() {
        let entries: String = (0..250)
            .map(|i| {
                format!("--\n-- Name: t{i}; Type: TABLE; Schema: public; Owner: bob\n--\n\nCREATE TABLE public.t{i} (id int);\n\n")
            })
            .collect();
        let script = parse(&format!("SET statement_timeout = 0;\n\n{entries}"));
        assert_eq!(script.entries.len(), 250);
        let batches: Vec<String> = script.batches().collect();
        assert_eq!(
            batches.len(),
            3,
            "250 objects in batches of {OBJECTS_PER_TRANSACTION}"
        );
        for batch in &batches {
            assert!(batch.starts_with("SET statement_timeout = 0;"), "{batch}");
        }
        let created = |b: &String| b.matches("CREATE TABLE").count();
        assert_eq!(
            batches.iter().map(created).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert!(batches[0].contains("public.t0 ") && batches[2].contains("public.t249 "));
        let empty = parse("SET statement_timeout = 0;\n");
        assert_eq!(
            empty.batches().collect::<Vec<_>>(),
            ["SET statement_timeout = 0;\n"]
        );
    }

    fn parse(sql: &str) -> Script {
        Script::parse(sql).expect("pg_dump output parses")
    }

    #[test]
    fn sections_split_into_typed_entries_without_psql_meta_commands() {
        let script = parse(SAMPLE);
        assert_eq!(script.preamble, "SET statement_timeout = 0;\n\n");
        let kinds: Vec<&str> = script.entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, vec!["CONSTRAINT", "INDEX"]);
        assert_eq!(script.entries[0].name, "t t_pkey");
        assert_eq!(script.entries[1].name, "t_idx");
        assert!(!script.to_sql().contains("restrict"));
        assert!(script.to_sql().contains("CREATE INDEX t_idx"));
    }

    /// What pg_dump 15.18 wrote for a function whose body, and a comment whose text, hold a
    /// header block and a meta-command line: both belong to their entries.
    #[test]
    fn headers_and_meta_commands_inside_quoted_text_are_text() {
        let sql = "\\restrict k\nSET x = 1;\n\n--\n-- Name: f2(); Type: FUNCTION; Schema: public; Owner: postgres\n--\n\n\
CREATE FUNCTION public.f2() RETURNS text\n    LANGUAGE sql\n    AS $$ SELECT '\n--\n-- Name: bar; Type: INDEX; Schema: public; Owner: postgres\n--\n\n'::text $$;\n\n\n\
--\n-- Name: TABLE r; Type: COMMENT; Schema: public; Owner: postgres\n--\n\n\
COMMENT ON TABLE public.r IS 'x\n\\unrestrict k\n-- Name: foo; Type: INDEX; Schema: public; Owner: postgres\n';\n\n\n\
--\n-- Name: x \\! touch /tmp/p; Type: TABLE; Schema: public; Owner: postgres\n--\n\n\
CREATE TABLE public.\"x\n\\! touch /tmp/p\" (\n    a integer /* a\n-- Name: z; Type: INDEX; Schema: public; Owner: postgres\n*/\n);\n\n\\unrestrict k\n";
        let script = parse(sql);
        let kinds: Vec<&str> = script.entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, vec!["FUNCTION", "COMMENT", "TABLE"]);
        assert!(script.entries[0].sql.contains("-- Name: bar; Type: INDEX"));
        assert!(
            script.entries[1]
                .sql
                .contains("\\unrestrict k\n-- Name: foo")
        );
        assert!(script.entries[2].sql.contains("\\! touch /tmp/p\" (\n"));
        assert_eq!(script.entries[2].name, "x \\! touch /tmp/p");
        assert!(script.to_sql().ends_with(");\n\n"), "{}", script.to_sql());
        let unknown = Script::parse("SET x = 1;\n\\! rm -rf /\n").expect_err("refused");
        assert!(unknown.to_string().contains("\\!"), "{unknown}");
    }

    #[test]
    fn lexer_knows_postgres_quoting() {
        let texts = |sql: &'static str| -> Vec<&'static str> {
            code(sql).iter().map(|t| &sql[t.start..t.end]).collect()
        };
        assert_eq!(
            texts("a$b$ $x$ ; $x$ 'it''s' E'\\' ;' \"q\"\"\" /* /* */ ; */ -- ;\n$1;"),
            vec![
                "a$b$",
                "$x$ ; $x$",
                "'it''s'",
                "E'\\' ;'",
                "\"q\"\"\"",
                "$",
                "1",
                ";"
            ]
        );
    }

    fn fk(sql: &str) -> Entry {
        Entry {
            kind: "FK CONSTRAINT".into(),
            name: "orders orders_contact_fkey".into(),
            sql: sql.into(),
        }
    }

    fn constraint(sql: &str) -> Entry {
        Entry {
            kind: "CONSTRAINT".into(),
            name: "t t_pkey".into(),
            sql: sql.into(),
        }
    }

    #[test]
    fn plain_keys_build_their_unique_index_first_and_attach_it() {
        let none = Partitioned::new();
        let key = constraint("ALTER TABLE ONLY public.order_items\n    ADD CONSTRAINT order_items_pkey PRIMARY KEY (order_id, line);\n\n")
            .unique_index_first(&none)
            .expect("a plain primary key splits");
        assert_eq!(
            key.build,
            "CREATE UNIQUE INDEX order_items_pkey ON public.order_items USING btree (order_id, line);\n"
        );
        assert_eq!(
            key.attach,
            "ALTER TABLE ONLY public.order_items ADD CONSTRAINT order_items_pkey PRIMARY KEY USING INDEX order_items_pkey;\n"
        );
        let odd = constraint(
            "ALTER TABLE ONLY \"S\".\"t (x)\"\n    ADD CONSTRAINT \"k;\" UNIQUE (\"Col\");\n",
        )
        .unique_index_first(&none)
        .expect("quoted names split");
        assert_eq!(
            odd.build,
            "CREATE UNIQUE INDEX \"k;\" ON \"S\".\"t (x)\" USING btree (\"Col\");\n"
        );
        assert_eq!(
            odd.attach,
            "ALTER TABLE ONLY \"S\".\"t (x)\" ADD CONSTRAINT \"k;\" UNIQUE USING INDEX \"k;\";\n"
        );
        // Anything with options, other constraint kinds and partitioned tables run as written.
        for sql in [
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k PRIMARY KEY (id) INCLUDE (v);\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k PRIMARY KEY (id) WITH (fillfactor='70');\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k UNIQUE (id) DEFERRABLE INITIALLY DEFERRED;\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k UNIQUE NULLS NOT DISTINCT (id);\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k EXCLUDE USING gist (r WITH &&);\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k CHECK ((a > 0));\n",
            "ALTER TABLE public.t\n    ADD CONSTRAINT k PRIMARY KEY (id);\n",
        ] {
            assert!(constraint(sql).unique_index_first(&none).is_none(), "{sql}");
        }
        let parted: Partitioned = [("public".to_string(), "t".to_string())].into();
        assert!(
            constraint("ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k PRIMARY KEY (id);\n")
                .unique_index_first(&parted)
                .is_none()
        );
    }

    #[test]
    fn indexes_and_constraints_name_the_table_they_build_on() {
        let on = |kind: &str, sql: &str| {
            Entry {
                kind: kind.into(),
                name: String::new(),
                sql: sql.into(),
            }
            .builds_on()
        };
        let t = Some(("public".to_string(), "t".to_string()));
        assert_eq!(
            on(
                "CONSTRAINT",
                "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k PRIMARY KEY (id);\n"
            ),
            t
        );
        assert_eq!(
            on(
                "CONSTRAINT",
                "ALTER TABLE public.t\n    ADD CONSTRAINT k UNIQUE (id);\n"
            ),
            t
        );
        assert_eq!(
            on("INDEX", "CREATE INDEX i ON public.t USING btree (v);\n"),
            t
        );
        assert_eq!(
            on(
                "INDEX",
                "CREATE UNIQUE INDEX i ON ONLY public.t USING btree (v);\n"
            ),
            t
        );
        assert_eq!(
            on(
                "INDEX",
                "CREATE INDEX \"ON\" ON \"S\".\"T\" USING btree (v);\n"
            ),
            Some(("S".to_string(), "T".to_string()))
        );
        assert_eq!(
            on(
                "TRIGGER",
                "CREATE TRIGGER x AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION f();\n"
            ),
            None
        );
    }

    #[test]
    fn foreign_keys_split_into_not_valid_and_validate_unless_they_cannot() {
        let none = Partitioned::new();
        let key = fk(
            "ALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_contact_fkey FOREIGN KEY (contact_id) REFERENCES public.contacts(id);\n\n\n",
        )
        .foreign_key(&none)
        .expect("a plain foreign key splits");
        assert_eq!(key.table, ("public".into(), "orders".into()));
        assert_eq!(
            key.add_not_valid,
            "ALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_contact_fkey FOREIGN KEY (contact_id) REFERENCES public.contacts(id) NOT VALID;\n"
        );
        assert_eq!(
            key.validate,
            "ALTER TABLE ONLY public.orders VALIDATE CONSTRAINT orders_contact_fkey;\n"
        );
        // Odd names are read as the server reads them.
        let odd = fk("ALTER TABLE ONLY \"select\".\"Or; ADD CONSTRAINT x\"\n    ADD CONSTRAINT \"k REFERENCES\" FOREIGN KEY (a) REFERENCES \"Sch\".\"T(\"(id) DEFERRABLE;\n")
            .foreign_key(&none)
            .expect("splits");
        assert_eq!(odd.table, ("select".into(), "Or; ADD CONSTRAINT x".into()));
        assert_eq!(
            odd.validate,
            "ALTER TABLE ONLY \"select\".\"Or; ADD CONSTRAINT x\" VALIDATE CONSTRAINT \"k REFERENCES\";\n"
        );
        // Referencing a partitioned table: added valid, in one step.
        let parted: Partitioned = [("Sch".to_string(), "T(".to_string())].into();
        assert!(
            fk("ALTER TABLE ONLY public.o\n    ADD CONSTRAINT k FOREIGN KEY (a) REFERENCES \"Sch\".\"T(\"(id);\n")
                .foreign_key(&parted)
                .is_none()
        );
        // Already NOT VALID at the source, on a partitioned table, or not a foreign key.
        assert!(fk("ALTER TABLE ONLY public.orders\n    ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES public.c(id) NOT VALID;\n").foreign_key(&none).is_none());
        assert!(fk("ALTER TABLE public.parted\n    ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES public.c(id);\n").foreign_key(&none).is_none());
        let mut index = fk("CREATE INDEX i ON public.orders USING btree (a);\n");
        index.kind = "INDEX".into();
        assert!(index.foreign_key(&none).is_none());
        // What the source had NOT VALID is known by pg_dump's tag.
        let mut check =
            fk("ALTER TABLE public.orders\n    ADD CONSTRAINT c CHECK ((a > 0)) NOT VALID;\n");
        check.kind = "CHECK CONSTRAINT".into();
        check.name = "orders c".into();
        let mut quoted =
            fk("ALTER TABLE public.o\n    ADD CONSTRAINT \"x NOT VALID\" CHECK ((a > 0));\n");
        quoted.kind = "CHECK CONSTRAINT".into();
        let script = Script {
            preamble: String::new(),
            entries: vec![check, index, quoted],
        };
        assert_eq!(
            script.not_valid_tags().collect::<Vec<_>>(),
            vec!["orders c"]
        );
    }

    #[test]
    fn no_owner_drops_owner_statements_only() {
        let sql = parse(SAMPLE).without_ownership().to_sql();
        assert!(!sql.contains("OWNER TO"));
        assert!(sql.contains("CREATE INDEX t_idx"));
        let body = "CREATE FUNCTION public.f() RETURNS void LANGUAGE sql\n    AS $$\nALTER TABLE t OWNER TO bob;\n$$;\n\n\nALTER FUNCTION public.f() OWNER TO bob;\n";
        let script = Script {
            preamble: String::new(),
            entries: vec![Entry {
                kind: "FUNCTION".into(),
                name: "f()".into(),
                sql: body.into(),
            }],
        };
        let kept = script.without_ownership().to_sql();
        assert!(kept.contains("ALTER TABLE t OWNER TO bob;"), "{kept}");
        assert!(!kept.contains("ALTER FUNCTION public.f() OWNER"), "{kept}");
    }

    #[test]
    fn database_properties_are_read_from_pg_dump_create_and_retargeted() {
        let sql = "\\restrict k\nSET x = 1;\n\n--\n-- Name: My Db; Type: DATABASE; Schema: -; Owner: postgres\n--\n\n\
CREATE DATABASE \"My Db\" WITH TEMPLATE = template0;\n\n\n\\unrestrict k\n\\connect -reuse-previous=on \"dbname='My Db'\"\n\\restrict k\n\n\
--\n-- Name: DATABASE \"My Db\"; Type: COMMENT; Schema: -; Owner: postgres\n--\n\nCOMMENT ON DATABASE \"My Db\" IS 'DATABASE \"My Db\"';\n\n\n\
--\n-- Name: My Db; Type: DATABASE PROPERTIES; Schema: -; Owner: postgres\n--\n\nALTER DATABASE \"My Db\" SET work_mem TO '7MB';\n\\unrestrict k\n\\connect -reuse-previous=on \"dbname='My Db'\"\n\\restrict k\n\n\
ALTER ROLE bob IN DATABASE \"My Db\" SET statement_timeout TO '1min';\n\n\n\
--\n-- Name: plpgsql; Type: EXTENSION; Schema: -; Owner: -\n--\n\nCREATE EXTENSION x;\n\n\
--\n-- Name: DATABASE \"My Db\"; Type: ACL; Schema: -; Owner: postgres\n--\n\nGRANT CONNECT ON DATABASE \"My Db\" TO bob;\n\n\\unrestrict k\n";
        let entries = database_properties(sql).expect("parses");
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["COMMENT", "DATABASE PROPERTIES", "ACL"]);
        let all: String = entries.iter().map(|e| e.sql.as_str()).collect();
        assert_eq!(
            retarget_database(&all, "My Db", "select"),
            "COMMENT ON DATABASE \"select\" IS 'DATABASE \"My Db\"';\n\
ALTER DATABASE \"select\" SET work_mem TO '7MB';\n\
ALTER ROLE bob IN DATABASE \"select\" SET statement_timeout TO '1min';\n\
GRANT CONNECT ON DATABASE \"select\" TO bob;\n"
        );
        let roles: Vec<bool> = statements(&entries[1].sql)
            .filter(|s| !s.trim().is_empty())
            .map(names_a_role)
            .collect();
        assert_eq!(roles, [false, true]);
    }

    #[test]
    fn database_level_objects_are_dropped_by_their_own_names() {
        let entry = |kind: &str, sql: &str| Entry {
            kind: kind.into(),
            name: "n".into(),
            sql: sql.into(),
        };
        assert_eq!(
            entry(
                "PUBLICATION",
                "CREATE PUBLICATION \"p\nq\" WITH (publish = 'insert');\n"
            )
            .drop_database_object()
            .as_deref(),
            Some("DROP PUBLICATION IF EXISTS \"p\nq\";\n")
        );
        assert_eq!(
            entry(
                "EVENT TRIGGER",
                "CREATE EVENT TRIGGER audit ON ddl_command_end\n   EXECUTE FUNCTION public.f();\n"
            )
            .drop_database_object()
            .as_deref(),
            Some("DROP EVENT TRIGGER IF EXISTS audit;\n")
        );
        assert!(
            entry(
                "PUBLICATION TABLE",
                "ALTER PUBLICATION p ADD TABLE ONLY public.t;\n"
            )
            .drop_database_object()
            .is_none()
        );
    }

    #[test]
    fn event_triggers_are_taken_out_in_order() {
        let mut script = parse(
            "--\n-- Name: a; Type: EVENT TRIGGER; Schema: -; Owner: p\n--\n\nCREATE EVENT TRIGGER a ON ddl_command_end EXECUTE FUNCTION public.f();\n\n--\n-- Name: t tr; Type: TRIGGER; Schema: public; Owner: p\n--\n\nCREATE TRIGGER tr AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.g();\n\n--\n-- Name: b; Type: EVENT TRIGGER; Schema: -; Owner: p\n--\n\nCREATE EVENT TRIGGER b ON sql_drop EXECUTE FUNCTION public.f();\n",
        );
        let names: Vec<String> = script
            .take_event_triggers()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(script.entries.len(), 1);
        assert_eq!(script.entries[0].kind, "TRIGGER");
    }
}
