//! The cluster-wide objects one database needs and a dump of that database leaves out: its
//! owner and `ALTER DATABASE … SET` settings, the roles it references (attributes, memberships,
//! password hashes where readable) and its tablespaces; read at backup, recreated on restore.

use crate::error::{Error, Result};
use crate::repository::manifest::{
    DatabaseSetting, Globals, Membership, RoleDefinition, quote_ident, quote_literal,
};
use std::collections::BTreeSet;
use tokio_postgres::Client;

/// Reads the globals of the current database; `referenced`: the roles its objects name.
pub async fn read(client: &Client, referenced: &[String]) -> Result<Globals> {
    let db = client
        .query_one(
            "SELECT r.rolname::text, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), current_user::text, \
                    NULLIF(t.spcname, 'pg_default')::text \
             FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba JOIN pg_tablespace t ON t.oid = d.dattablespace \
             WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(Error::db("reading the database's owner"))?;
    let (owner, superuser, read_by): (String, bool, String) = (db.get(0), db.get(1), db.get(2));
    let mut tablespaces: BTreeSet<String> = db.get::<_, Option<String>>(3).into_iter().collect();
    for row in client
        .query(
            "SELECT DISTINCT t.spcname::text FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace \
             WHERE c.reltablespace <> 0 AND t.spcname NOT IN ('pg_default', 'pg_global')",
            &[],
        )
        .await
        .map_err(Error::db("reading tablespaces"))?
    {
        tablespaces.insert(row.get(0));
    }

    let mut settings = Vec::new();
    for row in client
        .query(
            "SELECT r.rolname::text, s.setconfig FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole \
             WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1 NULLS FIRST",
            &[],
        )
        .await
        .map_err(Error::db("reading the database's settings"))?
    {
        let role: Option<String> = row.get(0);
        let config: Vec<String> = row.get(1);
        for entry in config {
            if let Some((name, value)) = entry.split_once('=') {
                settings.push(DatabaseSetting {
                    role: role.clone(),
                    name: name.to_string(),
                    value: value.to_string(),
                });
            }
        }
    }

    // Members point at the roles they belong to; a role is needed when something it belongs
    // to is not predefined, so follow memberships up from the referenced roles.
    let memberships: Vec<(String, String, bool)> = client
        .query(
            "SELECT m.rolname::text, g.rolname::text, a.admin_option FROM pg_auth_members a \
             JOIN pg_roles m ON m.oid = a.member JOIN pg_roles g ON g.oid = a.roleid ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(Error::db("reading role memberships"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut wanted: BTreeSet<String> = referenced.iter().cloned().collect();
    wanted.insert(owner.clone());
    wanted.extend(settings.iter().filter_map(|s| s.role.clone()));
    let mut queue: Vec<String> = wanted.iter().cloned().collect();
    while let Some(member) = queue.pop() {
        for (_, group, _) in memberships.iter().filter(|(m, _, _)| *m == member) {
            if wanted.insert(group.clone()) {
                queue.push(group.clone());
            }
        }
    }
    wanted.retain(|r| !r.starts_with("pg_"));
    let names: Vec<String> = wanted.into_iter().collect();

    let mut roles = Vec::new();
    for row in client
        .query(
            "SELECT rolname::text, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, \
                    rolbypassrls, rolconnlimit, to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS+00') \
             FROM pg_roles WHERE rolname = ANY ($1) ORDER BY 1",
            &[&names],
        )
        .await
        .map_err(Error::db("reading role attributes"))?
    {
        let name: String = row.get(0);
        roles.push(RoleDefinition {
            member_of: memberships
                .iter()
                .filter(|(m, _, _)| *m == name)
                .map(|(_, g, admin)| Membership {
                    role: g.clone(),
                    admin: *admin,
                })
                .collect(),
            name,
            superuser: row.get(1),
            inherit: row.get(2),
            createrole: row.get(3),
            createdb: row.get(4),
            login: row.get(5),
            replication: row.get(6),
            bypassrls: row.get(7),
            connection_limit: row.get(8),
            valid_until: row.get(9),
            password: None,
        });
    }
    // pg_authid (the hashes) is readable by superusers only; others' backups say so.
    if superuser {
        for row in client
            .query(
                "SELECT rolname::text, rolpassword FROM pg_authid WHERE rolname = ANY ($1)",
                &[&names],
            )
            .await
            .map_err(Error::db("reading password hashes"))?
        {
            let (name, hash): (String, Option<String>) = (row.get(0), row.get(1));
            if let Some(role) = roles.iter_mut().find(|r| r.name == name) {
                role.password = hash;
            }
        }
    }
    Ok(Globals {
        owner: Some(owner),
        settings,
        roles,
        passwords_included: superuser,
        read_by,
        tablespaces: tablespaces.into_iter().collect(),
    })
}

/// Whether creating `role` needs a superuser (a CREATEROLE role may not grant these).
pub fn needs_superuser(role: &RoleDefinition) -> bool {
    role.superuser || role.replication || role.bypassrls
}

/// `CREATE ROLE` with the role's attributes (and its password hash, if recorded).
pub fn create_role(role: &RoleDefinition) -> String {
    let flag = |on: bool, name: &str| format!(" {}{name}", if on { "" } else { "NO" });
    let mut sql = format!("CREATE ROLE {} WITH", quote_ident(&role.name));
    sql.push_str(&flag(role.superuser, "SUPERUSER"));
    sql.push_str(&flag(role.inherit, "INHERIT"));
    sql.push_str(&flag(role.createrole, "CREATEROLE"));
    sql.push_str(&flag(role.createdb, "CREATEDB"));
    sql.push_str(&flag(role.login, "LOGIN"));
    sql.push_str(&flag(role.replication, "REPLICATION"));
    sql.push_str(&flag(role.bypassrls, "BYPASSRLS"));
    sql.push_str(&format!(" CONNECTION LIMIT {}", role.connection_limit));
    if let Some(until) = &role.valid_until {
        sql.push_str(&format!(" VALID UNTIL {}", quote_literal(until)));
    }
    if let Some(hash) = &role.password {
        sql.push_str(&format!(" PASSWORD {}", quote_literal(hash)));
    }
    sql
}

/// The statement as the plan may show it: password hashes never leave the repository.
pub fn redacted(statement: &str) -> String {
    match statement.find(" PASSWORD '") {
        Some(at) => format!("{} PASSWORD '…'", &statement[..at]),
        None => statement.to_string(),
    }
}

pub fn grant_membership(member: &str, membership: &Membership) -> String {
    format!(
        "GRANT {} TO {}{}",
        quote_ident(&membership.role),
        quote_ident(member),
        if membership.admin {
            " WITH ADMIN OPTION"
        } else {
            ""
        }
    )
}

/// Settings whose value is a list PostgreSQL stores with its elements already quoted
/// (pg_dumpall's `variable_is_guc_list_quote`).
const LIST_SETTINGS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// `ALTER DATABASE db SET …` (or `ALTER ROLE … IN DATABASE db SET …`) for one setting; None
/// when its name is not a plain setting name (the backup's text is never run as SQL).
pub fn database_setting(db: &str, setting: &DatabaseSetting) -> Option<String> {
    let plain = !setting.name.is_empty()
        && setting
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !plain {
        return None;
    }
    let value = if LIST_SETTINGS.contains(&setting.name.to_ascii_lowercase().as_str()) {
        list_elements(&setting.value)
            .iter()
            .map(|e| quote_literal(e))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        quote_literal(&setting.value)
    };
    let scope = match &setting.role {
        Some(role) => format!(
            "ALTER ROLE {} IN DATABASE {}",
            quote_ident(role),
            quote_ident(db)
        ),
        None => format!("ALTER DATABASE {}", quote_ident(db)),
    };
    Some(format!("{scope} SET {} = {value}", setting.name))
}

/// The elements of a stored list setting: `"$user", public` → `$user`, `public`.
fn list_elements(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut current).trim().to_string()),
            c => current.push(c),
        }
    }
    out.push(current.trim().to_string());
    out.retain(|e| !e.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_settings_come_back_as_literals_and_other_values_are_quoted() {
        let set = |name: &str, value: &str| DatabaseSetting {
            role: None,
            name: name.into(),
            value: value.into(),
        };
        assert_eq!(
            database_setting(
                "kp",
                &set("search_path", "\"$user\", public, \"we\"\"ird\"")
            ),
            Some("ALTER DATABASE kp SET search_path = '$user', 'public', 'we\"ird'".into())
        );
        assert_eq!(
            database_setting("kp", &set("work_mem", "8MB'; DROP TABLE x; --")),
            Some("ALTER DATABASE kp SET work_mem = '8MB''; DROP TABLE x; --'".into())
        );
        assert_eq!(database_setting("kp", &set("bad name; DROP", "1")), None);
    }

    #[test]
    fn a_role_is_created_with_its_attributes_and_the_plan_never_shows_its_hash() {
        let role = RoleDefinition {
            name: "kitchen_pantry_user".into(),
            superuser: false,
            inherit: true,
            createrole: false,
            createdb: true,
            login: true,
            replication: false,
            bypassrls: false,
            connection_limit: 20,
            valid_until: None,
            password: Some("SCRAM-SHA-256$4096:abc".into()),
            member_of: vec![],
        };
        let sql = create_role(&role);
        assert_eq!(
            sql,
            "CREATE ROLE kitchen_pantry_user WITH NOSUPERUSER INHERIT NOCREATEROLE CREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20 PASSWORD 'SCRAM-SHA-256$4096:abc'"
        );
        assert!(!redacted(&sql).contains("SCRAM"));
    }
}
