//! What the connected role lacks for a recovery: every privilege the strategy's statements
//! need (CREATEDB, schema and table ownership, SELECT/INSERT/TRUNCATE/DELETE, sequences,
//! TEMPORARY, roles to assume, superuser for untrusted extensions), judged from the facts.

use super::facts::Facts;
use super::request::{PlanRequest, Strategy};
use crate::repository::manifest::{Manifest, quote_ident};
use std::collections::BTreeSet;

/// Every privilege the strategy's statements need that the connected role lacks, each with
/// the statement that grants it, so that `recovery plan` and `--dry-run` fail where
/// `execute` would.
pub(super) fn privileges_missing(
    manifest: &Manifest,
    req: &PlanRequest,
    facts: &Facts,
    selected: &[usize],
    dbname: &str,
) -> Vec<String> {
    let server = &facts.server;
    let user = quote_ident(&server.user);
    let db = quote_ident(dbname);
    let subset = req.tables.is_some();
    let mut missing = Vec::new();
    let untrusted = |name: &str| {
        format!(
            "superuser, to create extension {name} (not a trusted extension): run the restore as a superuser, \
             or have one create it first (CREATE EXTENSION {};)",
            quote_ident(name)
        )
    };
    let needs_superuser =
        |name: &str| !server.superuser && facts.extensions.get(name).copied().unwrap_or(false);
    match (req.strategy, &facts.database) {
        (Strategy::NewDatabase, _) => {
            if !server.superuser && !server.createdb {
                missing.push(format!(
                    "CREATEDB, to create database {dbname}: ALTER ROLE {user} CREATEDB; (as a superuser)"
                ));
            }
            missing.extend(
                manifest
                    .extensions
                    .iter()
                    .filter(|e| needs_superuser(&e.name))
                    .map(|e| untrusted(&e.name)),
            );
        }
        (Strategy::Replace, Some(database)) if !subset => {
            for (schema, owner) in &database.schemas_not_owned {
                // pg_database_owner cannot be granted: its one member is the database's owner.
                let or_grant = if owner == "pg_database_owner" {
                    String::new()
                } else {
                    format!(" or GRANT {} TO {user};", quote_ident(owner))
                };
                missing.push(format!(
                    "ownership of schema {schema} (owned by {owner}), to drop and recreate it: \
                     ALTER SCHEMA {} OWNER TO {user};{or_grant}",
                    quote_ident(schema)
                ));
            }
            if manifest.schemas.iter().any(|s| s != "public") && !database.may_create {
                missing.push(format!(
                    "CREATE on database {dbname}, to create the backup's schemas: GRANT CREATE ON DATABASE {db} TO {user};"
                ));
            }
            // Dropping the backup's schemas drops the extensions living in them; the others
            // stay installed.
            missing.extend(
                manifest
                    .extensions
                    .iter()
                    .filter(|e| needs_superuser(&e.name))
                    .filter(|e| {
                        database
                            .extensions
                            .get(&e.name)
                            .is_some_and(|schema| manifest.schemas.contains(schema))
                    })
                    .map(|e| untrusted(&e.name)),
            );
        }
        (_, Some(database)) => {
            for &i in selected {
                let entry = &manifest.tables[i];
                let Some(table) = database.tables.get(&entry.display_name()) else {
                    continue;
                };
                let name = entry.qualified();
                // replace -t empties a whole table with TRUNCATE, an extension's configuration
                // table with DELETE of the rows its filter selects (the extension's stay).
                let wanted: &[&str] = match req.strategy {
                    Strategy::Replace if entry.filter.is_some() => &["SELECT", "INSERT", "DELETE"],
                    Strategy::Replace => &["SELECT", "INSERT", "TRUNCATE"],
                    _ => &["SELECT", "INSERT"],
                };
                let lacking: Vec<&str> = wanted
                    .iter()
                    .copied()
                    .filter(|p| table.missing.contains(p))
                    .collect();
                if !lacking.is_empty() {
                    missing.push(format!(
                        "{} on {name}: GRANT {} ON {name} TO {user};",
                        lacking.join(", "),
                        lacking.join(", "),
                    ));
                }
                if table.user_triggers && !table.owned && !server.superuser {
                    missing.push(format!(
                        "ownership of {name} (owned by {}), to switch off its user triggers for the restored rows: \
                         GRANT {} TO {user}; or ALTER TABLE {name} OWNER TO {user};",
                        table.owner,
                        quote_ident(&table.owner),
                    ));
                }
                if req.strategy == Strategy::Replace {
                    for seq in &table.sequences_without_update {
                        missing.push(format!(
                            "UPDATE on sequence {seq}, to set its value: GRANT UPDATE ON SEQUENCE {seq} TO {user};"
                        ));
                    }
                }
            }
            if req.strategy == Strategy::MissingRows && !database.may_create_temporary {
                missing.push(format!(
                    "TEMPORARY on database {dbname}, to stage the backup's rows: GRANT TEMPORARY ON DATABASE {db} TO {user};"
                ));
            }
        }
        (_, None) => {}
    }
    let rewrites_schema = !subset && req.strategy != Strategy::MissingRows;
    if rewrites_schema && !req.no_owner && !server.superuser {
        let not_assumable: BTreeSet<&String> = manifest
            .roles
            .iter()
            .filter(|r| facts.roles.get(*r) == Some(&false))
            .collect();
        for role in not_assumable {
            missing.push(format!(
                "membership in role {role}, to make it the owner of the objects it owns in the backup: \
                 GRANT {} TO {user}; (or pass --no-owner)",
                quote_ident(role)
            ));
        }
    }
    missing
}
