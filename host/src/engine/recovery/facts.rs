//! What `recovery plan` knows of the destination: one read of its server and, when a strategy
//! writes into an existing database, of that database, into a [`Facts`] value. The plan's
//! rules are pure functions of (manifest, facts, request), tested without PostgreSQL.

use super::request::{PlanRequest, Strategy, destination_settings};
use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::repository::manifest::{DatabaseLocale, Manifest, TableEntry};
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::Client;

/// The destination server and the role the restore connects as.
#[derive(Debug, Clone, Default)]
pub struct DestinationServer {
    pub version: String,
    pub version_num: i32,
    pub user: String,
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
}

/// Everything the plan judges about the destination, read once.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub server: DestinationServer,
    /// The databases on the destination server.
    pub databases: BTreeSet<String>,
    /// Its roles, each with whether the connected role is a member of it (may act as it,
    /// e.g. make it an object's owner).
    pub roles: BTreeMap<String, bool>,
    pub tablespaces: BTreeSet<String>,
    /// The extensions the server can install, each with whether creating it takes a
    /// superuser (no version of it is trusted).
    pub extensions: BTreeMap<String, bool>,
    /// Whether the server can create a database with the source's locale and encoding
    /// (asked for `new-database` when the backup records the locale).
    pub source_locale_available: bool,
    /// The destination database, for the strategies that write into an existing one.
    pub database: Option<DatabaseFacts>,
}

/// The existing database a `replace` or `missing-rows` restores into.
#[derive(Debug, Clone, Default)]
pub struct DatabaseFacts {
    pub owner: String,
    /// The connected role's CREATE and TEMPORARY privileges on it.
    pub may_create: bool,
    pub may_create_temporary: bool,
    /// Of the backup's schemas, those that exist and the connected role does not own, with
    /// their owner.
    pub schemas_not_owned: Vec<(String, String)>,
    /// Its installed extensions, each with the schema it lives in.
    pub extensions: BTreeMap<String, String>,
    /// The chosen tables that exist in it, by display name (`schema.table`).
    pub tables: BTreeMap<String, TableFacts>,
}

/// One existing table a restore writes into, as the connected role sees it.
#[derive(Debug, Clone, Default)]
pub struct TableFacts {
    pub rows: i64,
    pub primary_key: bool,
    pub owner: String,
    /// The connected role is the owner or inherits its rights.
    pub owned: bool,
    /// Privileges the connected role lacks, of SELECT, INSERT, TRUNCATE, DELETE.
    pub missing: Vec<&'static str>,
    /// It has enabled user triggers (a restore switches them off, and only an owner may).
    pub user_triggers: bool,
    /// Sequences its columns own whose value the role may not set (no UPDATE).
    pub sequences_without_update: Vec<String>,
}

/// Reads the facts the plan needs: the destination server through `admin`, then, for the
/// strategies that write into an existing database, that database (refused when it does not
/// exist). `chosen`: the manifest's tables the restore writes.
pub async fn read(
    admin: &Client,
    manifest: &Manifest,
    req: &PlanRequest,
    chosen: &[usize],
) -> Result<Facts> {
    let mut facts = read_server(admin).await?;
    if req.strategy == Strategy::NewDatabase && !manifest.source.locale.lc_collate.is_empty() {
        facts.source_locale_available =
            locale_available(admin, &manifest.source.locale, &manifest.source.encoding).await?;
    }
    if req.strategy != Strategy::NewDatabase {
        let destination = destination_settings(manifest, req, &facts.databases);
        if !facts.databases.contains(&destination.dbname) {
            return Err(Error::Refused(format!(
                "database {} does not exist on {}:{}; use -s new-database to recreate it",
                destination.dbname, destination.host, destination.port
            )));
        }
        let tables: Vec<&TableEntry> = chosen.iter().map(|&i| &manifest.tables[i]).collect();
        facts.database = Some(read_database(&destination, manifest, &tables).await?);
    }
    Ok(facts)
}

async fn read_server(admin: &Client) -> Result<Facts> {
    let row = admin
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4, \
                    current_user::text, r.rolsuper, r.rolcreatedb, r.rolcreaterole \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(Error::db("reading the destination server's facts"))?;
    let server = DestinationServer {
        version: row.get(0),
        version_num: row.get(1),
        user: row.get(2),
        superuser: row.get(3),
        createdb: row.get(4),
        createrole: row.get(5),
    };
    let names = |what: &'static str, sql: &'static str| async move {
        admin
            .query(sql, &[])
            .await
            .map_err(Error::db(what))
            .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
    };
    let databases = names(
        "looking up databases",
        "SELECT datname::text FROM pg_database",
    )
    .await?;
    let tablespaces = names(
        "listing tablespaces",
        "SELECT spcname::text FROM pg_tablespace",
    )
    .await?;
    let pairs = |what: &'static str, sql: &'static str| async move {
        admin
            .query(sql, &[])
            .await
            .map_err(Error::db(what))
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
                    .collect()
            })
    };
    let roles = pairs(
        "listing roles",
        "SELECT rolname::text, pg_has_role(oid, 'MEMBER') FROM pg_roles",
    )
    .await?;
    let extensions = pairs(
        "listing available extensions",
        "SELECT e.name::text, EXISTS (SELECT 1 FROM pg_available_extension_versions v \
                                      WHERE v.name = e.name AND v.superuser AND NOT v.trusted) \
         FROM pg_available_extensions e",
    )
    .await?;
    Ok(Facts {
        server,
        databases,
        roles,
        tablespaces,
        extensions,
        source_locale_available: true,
        database: None,
    })
}

async fn read_database(
    destination: &ConnectionSettings,
    manifest: &Manifest,
    tables: &[&TableEntry],
) -> Result<DatabaseFacts> {
    let client = destination.connect().await?;
    let row = client
        .query_one(
            "SELECT r.rolname::text, has_database_privilege(current_database(), 'CREATE'), \
                    has_database_privilege(current_database(), 'TEMPORARY') \
             FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(Error::db("reading the destination database's owner and privileges"))?;
    let schemas_not_owned = client
        .query(
            "SELECT n.nspname::text, r.rolname::text FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner \
             WHERE n.nspname = ANY ($1) AND NOT pg_has_role(n.nspowner, 'USAGE') ORDER BY 1",
            &[&manifest.schemas],
        )
        .await
        .map_err(Error::db("reading schema owners"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let extensions = client
        .query(
            "SELECT e.extname::text, n.nspname::text FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace",
            &[],
        )
        .await
        .map_err(Error::db("listing installed extensions"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let names: Vec<String> = tables.iter().map(|t| t.qualified()).collect();
    let access = client
        .query(
            "SELECT o, r.rolname::text, COALESCE(pg_has_role(c.relowner, 'USAGE'), false), \
                    has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'INSERT'), \
                    has_table_privilege(c.oid, 'TRUNCATE'), has_table_privilege(c.oid, 'DELETE'), \
                    EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgenabled <> 'D'), \
                    ARRAY(SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname) FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
                          JOIN pg_namespace sn ON sn.oid = s.relnamespace \
                          WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
                            AND d.deptype IN ('a', 'i') AND d.refobjid = c.oid \
                            AND NOT has_table_privilege(s.oid, 'UPDATE') ORDER BY 1), \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM unnest($1::text[]) WITH ORDINALITY u(n, o) \
             JOIN pg_class c ON c.oid = to_regclass(n) JOIN pg_roles r ON r.oid = c.relowner \
             ORDER BY o",
            &[&names],
        )
        .await
        .map_err(Error::db("reading privileges on the tables to restore"))?;
    let mut found = BTreeMap::new();
    for r in &access {
        let Some(table) = usize::try_from(r.get::<_, i64>(0) - 1)
            .ok()
            .and_then(|i| tables.get(i))
        else {
            continue;
        };
        let granted: [(bool, &'static str); 4] = [
            (r.get(3), "SELECT"),
            (r.get(4), "INSERT"),
            (r.get(5), "TRUNCATE"),
            (r.get(6), "DELETE"),
        ];
        let rows = client
            .query_one(
                &format!("SELECT count(*) FROM ONLY {}", table.qualified()),
                &[],
            )
            .await
            .map_err(Error::db(format!("counting rows of {}", table.qualified())))?
            .get(0);
        found.insert(
            table.display_name(),
            TableFacts {
                rows,
                primary_key: r.get(9),
                owner: r.get(1),
                owned: r.get(2),
                missing: granted
                    .iter()
                    .filter(|(ok, _)| !ok)
                    .map(|(_, p)| *p)
                    .collect(),
                user_triggers: r.get(7),
                sequences_without_update: r.get(8),
            },
        );
    }
    Ok(DatabaseFacts {
        owner: row.get(0),
        may_create: row.get(1),
        may_create_temporary: row.get(2),
        schemas_not_owned,
        extensions,
        tables: found,
    })
}

/// Whether the destination server can create a database with `locale` and `encoding`: C and
/// POSIX always can; other libc locales when the server knows them (a collation imported from
/// the operating system at initdb, or a database already using them); ICU when the server was
/// built with it. Spellings differ (`en_US.UTF-8`, `en_US.utf8`), so names are compared
/// without case, dashes and underscores.
async fn locale_available(
    client: &Client,
    locale: &DatabaseLocale,
    encoding: &str,
) -> Result<bool> {
    let libc = [&locale.lc_collate, &locale.lc_ctype];
    let row = client
        .query_one(
            "WITH wanted AS (SELECT l, lower(translate(l, '-_', '')) AS norm FROM unnest($1::text[]) l), \
                  known AS (SELECT lower(translate(collcollate, '-_', '')) AS norm FROM pg_collation \
                            WHERE collprovider = 'c' AND collcollate IS NOT NULL \
                              AND collencoding IN (-1, pg_char_to_encoding($2)) \
                            UNION SELECT lower(translate(datcollate::text, '-_', '')) FROM pg_database \
                            WHERE encoding = pg_char_to_encoding($2) \
                            UNION SELECT lower(translate(datctype::text, '-_', '')) FROM pg_database \
                            WHERE encoding = pg_char_to_encoding($2)) \
             SELECT bool_and(l IN ('C', 'POSIX') OR norm IN (SELECT norm FROM known)), \
                    EXISTS (SELECT 1 FROM pg_collation WHERE collprovider = 'i') \
             FROM wanted",
            &[&libc.iter().map(|s| s.as_str()).collect::<Vec<_>>(), &encoding],
        )
        .await
        .map_err(Error::db("checking the destination server's locales"))?;
    let libc_ok: Option<bool> = row.get(0);
    let icu: bool = row.get(1);
    Ok(libc_ok.unwrap_or(true)
        && match locale.provider.as_str() {
            "icu" => icu,
            // The builtin provider exists from PostgreSQL 17 on; the version check covers it.
            _ => true,
        })
}
