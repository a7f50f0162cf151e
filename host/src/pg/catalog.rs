//! Catalog queries run inside the backup snapshot: server facts, the tables that hold data,
//! sequences and large objects.

use crate::error::{Error, Result};
use crate::repository::manifest::{Extension, ForeignKey, SequenceValue, quote_ident};
use tokio_postgres::Client;

/// Filters out system schemas and objects that belong to extensions (their DDL recreates them).
const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
    AND c.relpersistence <> 't' \
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                    AND d.objid = c.oid AND d.deptype = 'e')";

#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub version_num: i32,
    pub database: String,
    pub encoding: String,
    pub block_size: i64,
}

impl ServerInfo {
    pub fn major(&self) -> u32 {
        (self.version_num / 10000) as u32
    }
}

/// A table whose rows the backup copies (plain tables and leaf partitions).
#[derive(Debug, Clone)]
pub struct DataTable {
    pub schema: String,
    pub name: String,
    /// Quoted column names in COPY order (generated columns excluded; they are recomputed).
    pub columns: Vec<String>,
    pub partition_of: Option<String>,
    /// On-disk size including TOAST: the basis of space and time estimates.
    pub bytes: i64,
    /// Blocks of the main fork: the unit of block-range splitting.
    pub pages: i64,
}

impl DataTable {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

pub async fn server_info(client: &Client) -> Result<ServerInfo> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4, \
             current_database()::text, pg_encoding_to_char(d.encoding)::text, \
             current_setting('block_size')::int8 \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(Error::db("reading server information"))?;
    Ok(ServerInfo {
        version: row.get(0),
        version_num: row.get(1),
        database: row.get(2),
        encoding: row.get(3),
        block_size: row.get(4),
    })
}

pub async fn data_tables(client: &Client, block_size: i64) -> Result<Vec<DataTable>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, \
           COALESCE((SELECT array_agg(quote_ident(a.attname) ORDER BY a.attnum) FROM pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), \
                    '{{}}'::text[]), \
           (SELECT quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) FROM pg_inherits i \
              JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
             WHERE i.inhrelid = c.oid AND c.relispartition), \
           pg_table_size(c.oid)::int8, pg_relation_size(c.oid)::int8 \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND {USER_RELATION} ORDER BY 1, 2"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(Error::db("listing tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let main_fork: i64 = r.get(5);
            DataTable {
                schema: r.get(0),
                name: r.get(1),
                columns: r.get(2),
                partition_of: r.get(3),
                bytes: r.get(4),
                pages: main_fork / block_size.max(1),
            }
        })
        .collect())
}

/// Current values of all user sequences, read inside the snapshot transaction.
pub async fn sequences(client: &Client) -> Result<Vec<SequenceValue>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'S' AND {USER_RELATION} ORDER BY 1, 2"
    );
    let names = client
        .query(&sql, &[])
        .await
        .map_err(Error::db("listing sequences"))?;
    let mut out = Vec::with_capacity(names.len());
    for batch in names.chunks(500) {
        let union = batch
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (schema, name): (String, String) = (r.get(0), r.get(1));
                format!(
                    "SELECT {i} AS i, last_value, is_called FROM {}.{}",
                    quote_ident(&schema),
                    quote_ident(&name)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let values = client
            .query(&union, &[])
            .await
            .map_err(Error::db("reading sequence values"))?;
        for v in values {
            let i: i32 = v.get(0);
            let r = &batch[i as usize];
            out.push(SequenceValue {
                schema: r.get(0),
                name: r.get(1),
                last_value: v.get(1),
                is_called: v.get(2),
            });
        }
    }
    Ok(out)
}

/// Of `tables` (qualified names), those whose own options and TOAST options leave autovacuum
/// at the server's default: restore may pause autovacuum on these and reset it afterwards
/// without changing what the source defined.
pub async fn autovacuum_at_default(client: &Client, tables: &[String]) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT n FROM unnest($1::text[]) n JOIN pg_class c ON c.oid = n::regclass \
             LEFT JOIN pg_class t ON t.oid = c.reltoastrelid \
             WHERE NOT EXISTS (SELECT 1 FROM unnest(COALESCE(c.reloptions, '{}') || COALESCE(t.reloptions, '{}')) o \
                               WHERE o LIKE 'autovacuum_enabled=%')",
            &[&tables],
        )
        .await
        .map_err(Error::db("reading the restored tables' autovacuum settings"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn large_object_count(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(Error::db("counting large objects"))?
        .get(0))
}

/// Schemas that hold user objects (not system or extension-owned ones).
pub async fn schemas(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT n.nspname::text FROM pg_namespace n \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass \
                               AND d.objid = n.oid AND d.deptype = 'e') \
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(Error::db("listing schemas"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn extensions(client: &Client) -> Result<Vec<Extension>> {
    let rows = client
        .query("SELECT extname::text, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1", &[])
        .await
        .map_err(Error::db("listing extensions"))?;
    Ok(rows
        .iter()
        .map(|r| Extension {
            name: r.get(0),
            version: r.get(1),
        })
        .collect())
}

/// Roles that own user objects or are granted privileges on them.
pub async fn roles(client: &Client) -> Result<Vec<String>> {
    let sql = format!(
        "WITH rel AS (SELECT c.relowner AS owner, c.relacl AS acl FROM pg_class c \
                      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_RELATION}), \
              ids AS (SELECT owner AS id FROM rel \
                      UNION SELECT (aclexplode(acl)).grantee FROM rel WHERE acl IS NOT NULL \
                      UNION SELECT nspowner FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') \
                        AND nspname NOT LIKE 'pg\\_%' \
                      UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
                        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass \
                                        AND d.objid = p.oid AND d.deptype = 'e')) \
         SELECT DISTINCT rolname::text FROM ids JOIN pg_roles r ON r.oid = ids.id ORDER BY 1"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(Error::db("listing roles"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn foreign_keys(client: &Client) -> Result<Vec<ForeignKey>> {
    let rows = client
        .query(
            "SELECT con.conname::text, \
                    cn.nspname || '.' || c.relname, fn.nspname || '.' || f.relname \
             FROM pg_constraint con \
             JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace \
             JOIN pg_class f ON f.oid = con.confrelid JOIN pg_namespace fn ON fn.oid = f.relnamespace \
             WHERE con.contype = 'f' AND con.conparentid = 0 ORDER BY 2, 1",
            &[],
        )
        .await
        .map_err(Error::db("listing foreign keys"))?;
    Ok(rows
        .iter()
        .map(|r| ForeignKey {
            name: r.get(0),
            table: r.get(1),
            references: r.get(2),
        })
        .collect())
}

/// What a restore needs to know about the server it writes to.
#[derive(Debug, Clone)]
pub struct TargetFacts {
    pub version: String,
    pub version_num: i32,
    pub superuser: bool,
    pub createdb: bool,
    pub user: String,
}

pub async fn target_facts(client: &Client) -> Result<TargetFacts> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4, \
                    r.rolsuper, r.rolcreatedb, current_user::text \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(Error::db("reading the target server's facts"))?;
    Ok(TargetFacts {
        version: row.get(0),
        version_num: row.get(1),
        superuser: row.get(2),
        createdb: row.get(3),
        user: row.get(4),
    })
}

pub async fn database_exists(client: &Client, name: &str) -> Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(Error::db("looking up databases"))?
        .is_some())
}

pub async fn available_extensions(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query("SELECT name::text FROM pg_available_extensions", &[])
        .await
        .map_err(Error::db("listing available extensions"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn existing_roles(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(Error::db("listing roles"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Current row count of a table, or `None` when it does not exist.
pub async fn row_count(client: &Client, qualified: &str) -> Result<Option<i64>> {
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified])
        .await
        .map_err(Error::db(format!("looking up {qualified}")))?
        .get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    let count = client
        .query_one(&format!("SELECT count(*) FROM {qualified}"), &[])
        .await
        .map_err(Error::db(format!("counting rows of {qualified}")))?
        .get(0);
    Ok(Some(count))
}

/// Primary-key columns (quoted) of a table; empty when it has none or does not exist.
pub async fn primary_key(client: &Client, qualified: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT quote_ident(a.attname) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&qualified],
        )
        .await
        .map_err(Error::db(format!("reading the primary key of {qualified}")))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A query per foreign key touching `tables` that returns a row when some referencing row has
/// no referenced row (constraints whose triggers were off during a load are checked this way).
pub async fn foreign_key_checks(
    client: &Client,
    tables: &[String],
) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT con.conname::text, con.conrelid::regclass::text, con.confrelid::regclass::text, \
                    array(SELECT quote_ident(attname) FROM unnest(con.conkey) WITH ORDINALITY k(n, o) \
                          JOIN pg_attribute ON attrelid = con.conrelid AND attnum = k.n ORDER BY o), \
                    array(SELECT quote_ident(attname) FROM unnest(con.confkey) WITH ORDINALITY k(n, o) \
                          JOIN pg_attribute ON attrelid = con.confrelid AND attnum = k.n ORDER BY o) \
             FROM pg_constraint con \
             WHERE con.contype = 'f' AND (con.conrelid = ANY (($1::text[])::regclass[]) OR con.confrelid = ANY (($1::text[])::regclass[]))",
            &[&tables],
        )
        .await
        .map_err(Error::db("reading foreign keys of the restored tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (name, child, parent): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let (cols, refs): (Vec<String>, Vec<String>) = (r.get(3), r.get(4));
            let not_null = cols.iter().map(|c| format!("c.{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
            let join = cols.iter().zip(&refs).map(|(c, p)| format!("p.{p} = c.{c}")).collect::<Vec<_>>().join(" AND ");
            let sql = format!(
                "SELECT 1 FROM {child} c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {join}) LIMIT 1"
            );
            (format!("{name} ({child} → {parent})"), sql)
        })
        .collect())
}

/// Sequences owned by (serial/identity columns of) the given tables, as `schema.name` pairs.
pub async fn owned_sequences(client: &Client, tables: &[String]) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, s.relname::text FROM pg_depend d \
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             JOIN pg_namespace n ON n.oid = s.relnamespace \
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
               AND d.deptype IN ('a', 'i') AND d.refobjid = ANY (($1::text[])::regclass[])",
            &[&tables],
        )
        .await
        .map_err(Error::db("reading sequences owned by the restored tables"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Constraints left NOT VALID on the given tables (all tables when empty).
/// A constraint marked NOT VALID.
#[derive(Debug, Clone)]
pub struct NotValid {
    /// `schema.table.constraint` (or `domain.constraint`).
    pub name: String,
    /// pg_dump's tag for it: `table constraint`.
    pub tag: String,
}

pub async fn unvalidated_constraints(client: &Client, tables: &[String]) -> Result<Vec<NotValid>> {
    let rows = client
        .query(
            "SELECT CASE WHEN con.conrelid <> 0 THEN con.conrelid::regclass::text ELSE con.contypid::regtype::text END \
                    || '.' || con.conname, \
                    COALESCE(c.relname, t.typname)::text || ' ' || con.conname \
             FROM pg_constraint con LEFT JOIN pg_class c ON c.oid = con.conrelid \
             LEFT JOIN pg_type t ON t.oid = con.contypid \
             WHERE NOT con.convalidated AND (cardinality($1::text[]) = 0 OR con.conrelid = ANY (($1::text[])::regclass[]))",
            &[&tables],
        )
        .await
        .map_err(Error::db("checking for NOT VALID constraints"))?;
    Ok(rows
        .iter()
        .map(|r| NotValid {
            name: r.get(0),
            tag: r.get(1),
        })
        .collect())
}
