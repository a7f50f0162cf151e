//! `rules-validator`: a Larder validator plugin checking each table against the rules in its
//! `rules` setting (`min_rows`, `max_shrink_percent` against the previous backup, and per column
//! `not_null`, `unique`, `pattern`, `max_null_percent`), reading the rows the backup streams.

mod copy_text;
mod rules;

use exports::larder::plugin::validation::{Finding, Guest, Table};
use larder::plugin::host::{self, Level as LogLevel};
use larder::plugin::types::{Error, PluginInfo, Severity};
use rules::{Level, Rule, TableCheck};
use std::cell::RefCell;

wit_bindgen::generate!({
    path: "../../wit/v1.1",
    world: "larder:plugin/validator@1.1.0",
});

thread_local! {
    /// The parsed rules (read once per instance) and the table being checked.
    static STATE: RefCell<(Option<Vec<Rule>>, Option<TableCheck>)> = const { RefCell::new((None, None)) };
}

fn configured_rules() -> Result<Vec<Rule>, Error> {
    match host::config("rules") {
        Some(text) => rules::parse(&text).map_err(Error::Invalid),
        None => Err(Error::Invalid(
            "no rules: set config.rules = [ { table = \"public.t\", min_rows = 1 }, … ] in the [[validators]] entry".into(),
        )),
    }
}

struct RulesValidator;

impl Guest for RulesValidator {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "rules-validator".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["rows".into()],
        }
    }

    fn begin_table(table: Table) -> Result<bool, Error> {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            if state.0.is_none() {
                state.0 = Some(configured_rules()?);
            }
            let rules = state.0.as_deref().unwrap_or_default();
            let columns: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
            let previous = table.previous.map(|p| (p.backup_id, p.rows));
            let check =
                TableCheck::new(rules, &table.name, &columns, previous).map_err(Error::Invalid)?;
            let needs_rows = check.needs_rows();
            state.1 = Some(check);
            Ok(needs_rows)
        })
    }

    fn rows(batch: Vec<u8>) -> Result<(), Error> {
        STATE.with(|state| match state.borrow_mut().1.as_mut() {
            Some(check) => {
                check.rows(&batch);
                Ok(())
            }
            None => Err(Error::Invalid("rows sent before begin-table".into())),
        })
    }

    fn end_table(rows: u64) -> Result<Vec<Finding>, Error> {
        let check = STATE.with(|state| state.borrow_mut().1.take());
        let Some(check) = check else {
            return Err(Error::Invalid("end-table without begin-table".into()));
        };
        let table = check.table().to_string();
        let found = check.finish(rows);
        for f in &found {
            host::log(LogLevel::Debug, &f.message);
        }
        Ok(found
            .into_iter()
            .map(|f| Finding {
                rule: f.rule.into(),
                table: table.clone(),
                column: f.column,
                severity: match f.level {
                    Level::Info => Severity::Info,
                    Level::Warning => Severity::Warning,
                    Level::Error => Severity::Error,
                },
                message: f.message,
                count: f.count,
            })
            .collect())
    }
}

export!(RulesValidator);
