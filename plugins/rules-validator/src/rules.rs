//! The rules from the plugin's `rules` setting and their per-table state: what each rule needs
//! to see of the rows, how it counts them, and the findings it reports at the table's end.

use crate::copy_text;
use regex_automata::meta::Regex;
use serde::Deserialize;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// One entry of `rules`, as the operator writes it in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `schema.name` (a bare name means `public.name`), or `*` for every table.
    pub table: String,
    pub column: Option<String>,
    pub min_rows: Option<u64>,
    pub max_shrink_percent: Option<f64>,
    #[serde(default)]
    pub not_null: bool,
    #[serde(default)]
    pub unique: bool,
    /// A regular expression every non-NULL value must match (anchor it with `^…$` to match
    /// whole values).
    pub pattern: Option<String>,
    pub max_null_percent: Option<f64>,
    /// `info`, `warning` or `error` (default): what a break of this rule means.
    pub severity: Option<String>,
}

/// Severity words as the contract has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// A finding before it becomes the contract's record.
#[derive(Debug, Clone)]
pub struct Found {
    pub rule: &'static str,
    pub column: Option<String>,
    pub level: Level,
    pub message: String,
    pub count: u64,
}

/// Reads and checks the `rules` setting (a JSON array: the host passes TOML arrays as JSON).
pub fn parse(text: &str) -> Result<Vec<Rule>, String> {
    let rules: Vec<Rule> =
        serde_json::from_str(text).map_err(|e| format!("the rules setting is not valid: {e}"))?;
    for (i, rule) in rules.iter().enumerate() {
        let which = format!("rule {} (table {:?})", i + 1, rule.table);
        let column_rule = rule.not_null
            || rule.unique
            || rule.pattern.is_some()
            || rule.max_null_percent.is_some();
        if column_rule && rule.column.is_none() {
            return Err(format!(
                "{which}: not_null, unique, pattern and max_null_percent need a column"
            ));
        }
        if !column_rule && rule.min_rows.is_none() && rule.max_shrink_percent.is_none() {
            return Err(format!(
                "{which} checks nothing: give min_rows, max_shrink_percent, not_null, unique, pattern or max_null_percent"
            ));
        }
        for (name, value) in [
            ("max_shrink_percent", rule.max_shrink_percent),
            ("max_null_percent", rule.max_null_percent),
        ] {
            if value.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
                return Err(format!("{which}: {name} must be between 0 and 100"));
            }
        }
        if let Some(pattern) = &rule.pattern {
            Regex::new(pattern).map_err(|e| format!("{which}: pattern {pattern:?}: {e}"))?;
        }
        level(rule)?;
    }
    Ok(rules)
}

fn level(rule: &Rule) -> Result<Level, String> {
    match rule.severity.as_deref() {
        None | Some("error") => Ok(Level::Error),
        Some("warning") => Ok(Level::Warning),
        Some("info") => Ok(Level::Info),
        Some(other) => Err(format!(
            "rule for table {:?}: severity {other:?} is not info, warning or error",
            rule.table
        )),
    }
}

/// Whether a rule's `table` names `table` (`schema.name`).
pub fn applies(rule: &Rule, table: &str) -> bool {
    rule.table == "*"
        || rule.table == table
        || (!rule.table.contains('.') && format!("public.{}", rule.table) == table)
}

/// What one column rule has counted so far.
struct ColumnCheck {
    rule: Rule,
    level: Level,
    /// The column's position in a row.
    index: usize,
    pattern: Option<Regex>,
    nulls: u64,
    mismatches: u64,
    duplicates: u64,
    /// 128-bit hashes of the values seen (as COPY text, whose escaping is one-to-one), for
    /// `unique`: bounded memory per row whatever the values' size.
    seen: SeenSet,
}

/// Fingerprints in [`SHARDS`] sets chosen by their top byte. One set of millions would double
/// into a new allocation every time it fills, holding the old and the new table at once, and the
/// freed tables could not serve the next, bigger one: the instance's memory (which never shrinks)
/// reached about twice the final set. Shards grow one at a time, each by 1/256 of the whole, and
/// reuse what the others freed.
struct SeenSet {
    shards: Vec<HashSet<u128, BuildHasherDefault<Fingerprint>>>,
}

const SHARDS: usize = 256;

impl SeenSet {
    fn new() -> SeenSet {
        SeenSet {
            shards: (0..SHARDS).map(|_| HashSet::default()).collect(),
        }
    }

    /// Whether `fingerprint` is new.
    fn insert(&mut self, fingerprint: u128) -> bool {
        self.shards[(fingerprint >> 120) as usize].insert(fingerprint)
    }
}

/// The set's hasher for values that are hashes already: their low 64 bits, hashed no further.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// The rules that apply to one table, and what their column rules have counted.
pub struct TableCheck {
    table: String,
    table_rules: Vec<(Rule, Level)>,
    columns: Vec<ColumnCheck>,
    /// Findings known at the start (a rule naming a column the table lacks).
    early: Vec<Found>,
    previous: Option<(String, u64)>,
    /// Rows seen in `rows` batches.
    seen_rows: u64,
}

impl TableCheck {
    pub fn new(
        rules: &[Rule],
        table: &str,
        columns: &[String],
        previous: Option<(String, u64)>,
    ) -> Result<TableCheck, String> {
        let mut check = TableCheck {
            table: table.to_string(),
            table_rules: Vec::new(),
            columns: Vec::new(),
            early: Vec::new(),
            previous,
            seen_rows: 0,
        };
        for rule in rules.iter().filter(|r| applies(r, table)) {
            let level = level(rule)?;
            if rule.min_rows.is_some() || rule.max_shrink_percent.is_some() {
                check.table_rules.push((rule.clone(), level));
            }
            let Some(column) = &rule.column else { continue };
            match columns.iter().position(|c| c == column) {
                Some(index) => check.columns.push(ColumnCheck {
                    rule: rule.clone(),
                    level,
                    index,
                    pattern: match &rule.pattern {
                        Some(p) => Some(Regex::new(p).map_err(|e| format!("pattern {p:?}: {e}"))?),
                        None => None,
                    },
                    nulls: 0,
                    mismatches: 0,
                    duplicates: 0,
                    seen: SeenSet::new(),
                }),
                // A `*` rule checks the column where it exists; a named table must have it.
                None if rule.table != "*" => check.early.push(Found {
                    rule: "column",
                    column: Some(column.clone()),
                    level: Level::Warning,
                    message: format!(
                        "the rules name column {column} of {table}, which has no such column (it has {}): the rule was not checked",
                        columns.join(", ")
                    ),
                    count: 0,
                }),
                None => {}
            }
        }
        Ok(check)
    }

    /// `schema.name` of the table being checked.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether any rule needs to see the rows.
    pub fn needs_rows(&self) -> bool {
        !self.columns.is_empty()
    }

    /// Counts one batch of COPY text lines. Each line is cut at its tabs once, and only up to
    /// the last column a rule reads; lines and tabs are found with `memchr` (a word at a time),
    /// the cost that dominates on wide tables.
    pub fn rows(&mut self, batch: &[u8]) {
        let Some(last) = self.columns.iter().map(|c| c.index).max() else {
            return;
        };
        let mut decoded = Vec::new();
        let mut fields: Vec<&[u8]> = Vec::with_capacity(last + 1);
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', batch).chain(std::iter::once(batch.len()));
        for end in ends {
            let line = &batch[start..end];
            start = end + 1;
            if line.is_empty() {
                continue; // the piece after the last newline
            }
            self.seen_rows += 1;
            fields.clear();
            let mut rest = line;
            while fields.len() <= last {
                match memchr::memchr(b'\t', rest) {
                    Some(tab) => {
                        fields.push(&rest[..tab]);
                        rest = &rest[tab + 1..];
                    }
                    None => {
                        fields.push(rest);
                        break;
                    }
                }
            }
            for check in &mut self.columns {
                let Some(&value) = fields.get(check.index) else {
                    check.mismatches += 1; // a row without the column: not what COPY writes
                    continue;
                };
                if value == b"\\N" {
                    check.nulls += 1;
                    continue;
                }
                if check.rule.unique && !check.seen.insert(hash128(value)) {
                    check.duplicates += 1;
                }
                if let Some(pattern) = &check.pattern {
                    copy_text::decode(value, &mut decoded);
                    let matched = std::str::from_utf8(&decoded)
                        .map(|text| pattern.is_match(text))
                        .unwrap_or(false);
                    if !matched {
                        check.mismatches += 1;
                    }
                }
            }
        }
    }

    /// The findings once every row was sent; `rows` is the backup's count of them.
    pub fn finish(self, rows: u64) -> Vec<Found> {
        let table = &self.table;
        let mut out = self.early;
        for (rule, level) in &self.table_rules {
            if let Some(min) = rule.min_rows
                && rows < min
            {
                out.push(Found {
                    rule: "min_rows",
                    column: None,
                    level: *level,
                    message: format!("{table} has {rows} rows, fewer than min_rows = {min}"),
                    count: 0,
                });
            }
            if let (Some(max), Some((backup, before))) = (rule.max_shrink_percent, &self.previous)
                && *before > 0
                && rows < *before
            {
                let shrink = (*before - rows) as f64 * 100.0 / *before as f64;
                if shrink > max {
                    out.push(Found {
                        rule: "max_shrink_percent",
                        column: None,
                        level: *level,
                        message: format!(
                            "{table} has {rows} rows, {shrink:.1}% fewer than the {before} of backup {backup} (max_shrink_percent = {max}): a mass DELETE or truncation?"
                        ),
                        count: *before - rows,
                    });
                }
            }
        }
        for check in self.columns {
            let column = check.rule.column.clone().unwrap_or_default();
            let mut found = |rule: &'static str, message: String, count: u64| {
                out.push(Found {
                    rule,
                    column: Some(column.clone()),
                    level: check.level,
                    message,
                    count,
                })
            };
            if check.rule.not_null && check.nulls > 0 {
                found(
                    "not_null",
                    format!(
                        "{table}.{column} is NULL in {} of {} rows (not_null)",
                        check.nulls, self.seen_rows
                    ),
                    check.nulls,
                );
            }
            if check.rule.unique && check.duplicates > 0 {
                found(
                    "unique",
                    format!(
                        "{table}.{column} repeats a value in {} of {} rows (unique)",
                        check.duplicates, self.seen_rows
                    ),
                    check.duplicates,
                );
            }
            if let Some(pattern) = &check.rule.pattern
                && check.mismatches > 0
            {
                found(
                    "pattern",
                    format!(
                        "{table}.{column} does not match {pattern:?} in {} of {} rows",
                        check.mismatches, self.seen_rows
                    ),
                    check.mismatches,
                );
            }
            if let Some(max) = check.rule.max_null_percent
                && self.seen_rows > 0
            {
                let share = check.nulls as f64 * 100.0 / self.seen_rows as f64;
                if share > max {
                    found(
                        "max_null_percent",
                        format!(
                            "{table}.{column} is NULL in {share:.1}% of the rows ({} of {}), more than max_null_percent = {max}",
                            check.nulls, self.seen_rows
                        ),
                        check.nulls,
                    );
                }
            }
        }
        out
    }
}

/// Two independent 64-bit hashes of `value` (std's SipHash with fixed keys, the second
/// salted), so telling duplicates apart needs no copy of the values.
fn hash128(value: &[u8]) -> u128 {
    let mut a = std::hash::DefaultHasher::new();
    value.hash(&mut a);
    let mut b = std::hash::DefaultHasher::new();
    0x9e37_79b9_7f4a_7c15_u64.hash(&mut b);
    value.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}
