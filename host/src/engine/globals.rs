//! The part of a recovery plan about cluster-wide objects: which of the roles a backup needs
//! exist on the destination server, which `--create-roles` creates (attributes, memberships, password
//! hashes where recorded), the owner and settings a new database gets, and what is left by hand.

use crate::engine::recovery::facts::Facts;
use crate::pg::globals as sql;
use crate::repository::manifest::{Manifest, quote_ident};
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, Serialize)]
pub struct GlobalsPlan {
    /// Roles the backup needs that exist on the destination server.
    pub existing_roles: Vec<String>,
    /// Missing roles `--create-roles` creates (or would, without the flag).
    pub roles_to_create: Vec<String>,
    /// The statements that create them and their memberships (password hashes shown as '…').
    pub statements: Vec<String>,
    /// The new database's owner and `ALTER DATABASE … SET` settings, applied after the restore.
    pub database_statements: Vec<String>,
    /// Where role passwords come from.
    pub passwords: String,
    /// What the operator must do by hand, as exact statements where possible.
    pub by_hand: Vec<String>,
    #[serde(skip)]
    pub role_sql: Vec<String>,
    #[serde(skip)]
    pub database_sql: Vec<String>,
}

/// What the plan needs to decide about globals.
pub struct Inputs<'a> {
    pub manifest: &'a Manifest,
    pub facts: &'a Facts,
    /// The database being restored into and whether this restore creates it.
    pub dbname: &'a str,
    pub new_database: bool,
    /// The restore recreates objects and their owners (new-database, whole replace).
    pub rewrites_schema: bool,
    pub no_owner: bool,
    pub create_roles: bool,
}

/// Plans the globals; returns the plan and the blockers it finds.
pub fn plan(input: &Inputs<'_>) -> (GlobalsPlan, Vec<String>) {
    let manifest = input.manifest;
    let globals = &manifest.globals;
    let existing = &input.facts.roles;
    let server = &input.facts.server;
    let user = &server.user;
    let mut plan = GlobalsPlan::default();
    let mut blockers = Vec::new();
    let recorded = !globals.roles.is_empty();
    let needed: BTreeSet<String> = if recorded {
        globals.roles.iter().map(|r| r.name.clone()).collect()
    } else {
        manifest.roles.iter().cloned().collect()
    };
    let missing: Vec<String> = needed
        .iter()
        .filter(|r| !existing.contains_key(*r))
        .cloned()
        .collect();
    plan.existing_roles = needed
        .iter()
        .filter(|r| existing.contains_key(*r))
        .cloned()
        .collect();
    plan.passwords = if !recorded {
        "this backup predates recorded roles: roles must be created by hand".into()
    } else if globals.passwords_included {
        format!(
            "password hashes are in the backup (read by {}, a superuser)",
            globals.read_by
        )
    } else {
        format!(
            "the backup holds no password hashes: it was taken by {}, not a superuser, and only a superuser may read pg_authid",
            globals.read_by
        )
    };
    let roles_matter = input.rewrites_schema && !input.no_owner;
    let can_create = server.superuser || server.createrole;
    let mut created = BTreeSet::new();
    for name in &missing {
        let definition = globals.roles.iter().find(|r| &r.name == name);
        let by_hand = match definition {
            None => Some(format!(
                "CREATE ROLE {}; (the backup records no definition for it)",
                quote_ident(name)
            )),
            Some(role) if sql::needs_superuser(role) && !server.superuser => Some(format!(
                "{}; (as a superuser: SUPERUSER, REPLICATION and BYPASSRLS need one)",
                sql::redacted(&sql::create_role(role))
            )),
            Some(role) if !can_create => Some(format!(
                "{}; (as a superuser or a role with CREATEROLE; {user} has neither)",
                sql::redacted(&sql::create_role(role))
            )),
            Some(_) => None,
        };
        match (by_hand, definition) {
            (Some(step), _) => {
                if roles_matter {
                    plan.by_hand.push(step);
                }
            }
            (None, Some(role)) => {
                created.insert(name.clone());
                plan.roles_to_create.push(name.clone());
                plan.role_sql.push(sql::create_role(role));
                if role.login && role.password.is_none() {
                    plan.by_hand.push(format!(
                        "ALTER ROLE {} PASSWORD '…'; (no password hash in the backup)",
                        quote_ident(name)
                    ));
                }
            }
            (None, None) => {}
        }
    }
    // Memberships of and in the roles this restore creates.
    for role in &globals.roles {
        for membership in &role.member_of {
            if !created.contains(&role.name) && !created.contains(&membership.role) {
                continue;
            }
            let group_there = existing.contains_key(&membership.role)
                || created.contains(&membership.role)
                || membership.role.starts_with("pg_");
            let grant = sql::grant_membership(&role.name, membership);
            if group_there {
                plan.role_sql.push(grant);
            } else {
                plan.by_hand
                    .push(format!("{grant}; (once role {} exists)", membership.role));
            }
        }
    }
    plan.statements = plan.role_sql.iter().map(|s| sql::redacted(s)).collect();

    if roles_matter && !missing.is_empty() {
        let not_created: Vec<&str> = missing
            .iter()
            .filter(|r| !created.contains(*r))
            .map(String::as_str)
            .collect();
        if !input.create_roles && !plan.roles_to_create.is_empty() {
            blockers.push(format!(
                "roles {} do not exist on the destination server: pass --create-roles to create them from the backup, \
                 create them by hand, or pass --no-owner to restore objects owned by {user}",
                missing.join(", ")
            ));
        } else if !not_created.is_empty() {
            blockers.push(format!(
                "roles {} do not exist on the destination server and this restore cannot create them: see the steps by hand, \
                 or pass --no-owner to restore objects owned by {user}",
                not_created.join(", ")
            ));
        }
    }

    // Tablespaces have a folder on their server: only an operator can make one.
    let tablespaces = &input.facts.tablespaces;
    for tablespace in globals
        .tablespaces
        .iter()
        .filter(|t| !tablespaces.contains(*t))
    {
        plan.by_hand.push(format!(
            "CREATE TABLESPACE {} LOCATION '/a/folder/on/this/server'; (as a superuser)",
            quote_ident(tablespace)
        ));
        if input.rewrites_schema {
            blockers.push(format!(
                "tablespace {tablespace}, which the backup uses, does not exist on the destination server: create it by hand"
            ));
        }
    }

    // The database itself: a new one gets the backup's owner and settings; an existing one
    // keeps its own, and a difference is reported.
    let db = quote_ident(input.dbname);
    let will_exist = |role: &str| existing.contains_key(role) || created.contains(role);
    if input.new_database {
        if let Some(owner) = globals.owner.as_deref().filter(|_| !input.no_owner)
            && owner != user.as_str()
        {
            let statement = format!("ALTER DATABASE {db} OWNER TO {}", quote_ident(owner));
            let assumable = server.superuser || existing.get(owner) == Some(&true);
            if will_exist(owner) && assumable {
                plan.database_sql.push(statement);
            } else {
                plan.by_hand.push(format!(
                    "{statement}; (as a superuser, once role {owner} exists)"
                ));
            }
        }
        for setting in &globals.settings {
            let Some(statement) = sql::database_setting(input.dbname, setting) else {
                plan.by_hand.push(format!(
                    "setting {:?} of the source database has an unusual name; set it by hand",
                    setting.name
                ));
                continue;
            };
            match setting.role.as_deref() {
                Some(role) if !will_exist(role) => plan
                    .by_hand
                    .push(format!("{statement}; (once role {role} exists)")),
                _ => plan.database_sql.push(statement),
            }
        }
    } else if input.rewrites_schema
        && let Some(owner) = globals.owner.as_deref().filter(|_| !input.no_owner)
    {
        // Only a whole-database replace gets here, and its destination exists.
        let current = input.facts.database.as_ref().map(|db| db.owner.as_str());
        if let Some(current) = current.filter(|c| *c != owner) {
            plan.by_hand.push(format!(
                "ALTER DATABASE {db} OWNER TO {}; (it is owned by {current}; the backup's database was owned by {owner})",
                quote_ident(owner)
            ));
        }
    }
    plan.database_statements = plan.database_sql.clone();
    (plan, blockers)
}
