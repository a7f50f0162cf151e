//! Catalog queries run inside the backup snapshot: server facts, the tables that hold data,
//! sequences and large objects.

use crate::error::{Error, Result};
use crate::repository::chunker::{RowChecksum, RowHasher};
use crate::repository::manifest::{
    DatabaseLocale, Extension, ForeignKey, LARGE_OBJECT_SLICE, SequenceValue, quote_ident,
};
use futures_util::StreamExt;
use std::collections::HashSet;
use tokio_postgres::Client;

/// Filters out system schemas and objects that belong to extensions (their DDL recreates them).
pub(crate) const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
    AND c.relpersistence <> 't' \
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                    AND d.objid = c.oid AND d.deptype = 'e')";

/// Tables and sequences an extension registered with `pg_extension_config_dump`: they belong
/// to the extension, but their user rows and values are backed up, as pg_dump does.
const EXTENSION_CONFIG: &str =
    "c.oid IN (SELECT unnest(e.extconfig) FROM pg_extension e WHERE e.extconfig IS NOT NULL)";

#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub version_num: i32,
    pub database: String,
    pub encoding: String,
    pub block_size: i64,
    pub locale: DatabaseLocale,
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
    /// An extension configuration table's `pg_extension_config_dump` condition.
    pub filter: Option<String>,
    /// Quoted column names in COPY order (generated columns excluded; they are recomputed).
    pub columns: Vec<String>,
    /// The columns' types (`format_type`), in the same order.
    pub column_types: Vec<String>,
    pub partition_of: Option<String>,
    /// On-disk size of the rows (the main fork and the TOAST table's): the basis of space and
    /// time estimates. Not `pg_table_size`: its free-space and visibility maps and TOAST index
    /// add nothing a COPY reads, and opening and sizing them was two thirds of the catalog
    /// read on thousands of tables (0.35 s of 0.55 s on 5,000).
    pub bytes: i64,
    /// Blocks of the main fork: the unit of block-range splitting.
    pub pages: i64,
}

impl DataTable {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name`, as manifests name tables (`TableEntry::display_name`).
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

pub async fn server_info(client: &Client) -> Result<ServerInfo> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4, \
             current_database()::text, pg_encoding_to_char(d.encoding)::text, \
             current_setting('block_size')::int8, d.datcollate::text, d.datctype::text \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(Error::db("reading server information"))?;
    let version_num: i32 = row.get(1);
    let (provider, locale) = locale_provider(client, version_num, "current_database()").await?;
    Ok(ServerInfo {
        version: row.get(0),
        version_num,
        database: row.get(2),
        encoding: row.get(3),
        block_size: row.get(4),
        locale: DatabaseLocale {
            lc_collate: row.get(5),
            lc_ctype: row.get(6),
            provider,
            locale,
        },
    })
}

/// A database's locale provider (`libc`, `icu`, `builtin`) and its ICU or builtin locale;
/// the catalog columns differ by version (none before 15, `daticulocale` in 15 and 16,
/// `datlocale` from 17). `database`: an SQL expression naming it.
async fn locale_provider(
    client: &Client,
    version_num: i32,
    database: &str,
) -> Result<(String, Option<String>)> {
    if version_num < 150000 {
        return Ok(("libc".into(), None));
    }
    let locale = if version_num >= 170000 {
        "datlocale"
    } else {
        "daticulocale"
    };
    let row = client
        .query_one(
            &format!(
                "SELECT CASE datlocprovider WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' ELSE 'libc' END, \
                        {locale}::text FROM pg_database WHERE datname = {database}"
            ),
            &[],
        )
        .await
        .map_err(Error::db("reading the database's locale provider"))?;
    Ok((row.get(0), row.get(1)))
}

pub async fn data_tables(client: &Client, block_size: i64) -> Result<Vec<DataTable>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, \
           COALESCE((SELECT array_agg(quote_ident(a.attname) ORDER BY a.attnum) FROM pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), \
                    '{{}}'::text[]), \
           COALESCE((SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) FROM pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), \
                    '{{}}'::text[]), \
           (SELECT quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) FROM pg_inherits i \
              JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
             WHERE i.inhrelid = c.oid AND c.relispartition), \
           pg_relation_size(c.oid)::int8, \
           CASE WHEN c.reltoastrelid <> 0 THEN pg_relation_size(c.reltoastrelid)::int8 ELSE 0 END, \
           (SELECT x.cond FROM pg_extension e CROSS JOIN LATERAL unnest(e.extconfig, e.extcondition) x(rel, cond) \
             WHERE x.rel = c.oid) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND ({USER_RELATION} OR {EXTENSION_CONFIG}) ORDER BY 1, 2"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(Error::db("listing tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (main_fork, toast): (i64, i64) = (r.get(5), r.get(6));
            let filter: Option<String> = r.get(7);
            DataTable {
                schema: r.get(0),
                name: r.get(1),
                filter: filter.filter(|f| !f.trim().is_empty()),
                columns: r.get(2),
                column_types: r.get(3),
                partition_of: r.get(4),
                bytes: main_fork + toast,
                pages: main_fork / block_size.max(1),
            }
        })
        .collect())
}

/// Current values of all user sequences, read inside the snapshot transaction.
pub async fn sequences(client: &Client) -> Result<Vec<SequenceValue>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'S' AND ({USER_RELATION} OR {EXTENSION_CONFIG}) ORDER BY 1, 2"
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

/// Of `tables` (qualified names), those a new-database restore may empty and load with `COPY
/// … FREEZE` in one transaction: plain tables (FREEZE refuses partitioned parents), none an
/// extension's configuration table (its rows may be the extension's own, inserted when it
/// was created).
pub async fn freezable(client: &Client, tables: &[String]) -> Result<HashSet<String>> {
    let rows = client
        .query(
            &format!(
                "SELECT n FROM unnest($1::text[]) n JOIN pg_class c ON c.oid = n::regclass \
                 WHERE c.relkind = 'r' AND NOT {EXTENSION_CONFIG}"
            ),
            &[&tables],
        )
        .await
        .map_err(Error::db("finding the new tables to load frozen"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Of `tables` (qualified names), those with a foreign key not yet validated whose columns all
/// belong to one (complete) index of the table: once the table is vacuumed, validating that key
/// can read the index alone (an index-only scan needs the pages marked all-visible) instead of
/// the table.
pub async fn keys_an_index_holds(client: &Client, tables: &[String]) -> Result<HashSet<String>> {
    let rows = client
        .query(
            "SELECT n FROM unnest($1::text[]) n WHERE EXISTS ( \
               SELECT 1 FROM pg_constraint k JOIN pg_index i ON i.indrelid = k.conrelid \
               WHERE k.conrelid = n::regclass AND k.contype = 'f' AND NOT k.convalidated \
                 AND i.indisvalid AND i.indpred IS NULL AND k.conkey <@ i.indkey::int2[])",
            &[&tables],
        )
        .await
        .map_err(Error::db(
            "finding the foreign keys an index of their table holds",
        ))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `COPY … TO STDOUT` of the large objects' data as `(oid, slice, bytea)` rows, one per
/// [`LARGE_OBJECT_SLICE`] bytes, read with `lo_get` (which honours large-object privileges
/// and the transaction's snapshot). `oids`: only these objects (all when `None`). Backup and
/// restore verification run the same query, so their checksums compare.
pub fn large_object_copy(oids: Option<&[u32]>) -> String {
    let filter = match oids {
        Some(oids) => format!(
            "WHERE m.oid = ANY ('{{{}}}'::oid[])",
            oids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        None => String::new(),
    };
    // INV_READ (0x40000): the size is read as of the snapshot, like the data.
    format!(
        "COPY (SELECT m.oid, s.n, pg_catalog.lo_get(m.oid, s.n * {LARGE_OBJECT_SLICE}, {LARGE_OBJECT_SLICE}) \
         FROM pg_catalog.pg_largeobject_metadata m \
         CROSS JOIN LATERAL (SELECT pg_catalog.lo_lseek64(pg_catalog.lo_open(m.oid, 262144), 0, 2) AS size) z \
         CROSS JOIN LATERAL pg_catalog.generate_series(0, (z.size - 1) / {LARGE_OBJECT_SLICE}) s(n) \
         {filter} {and} z.size > 0 ORDER BY 1, 2) TO STDOUT",
        and = if oids.is_some() { "AND" } else { "WHERE" }
    )
}

/// The checksum of the large objects `oids` as a backup stores them (the rows of
/// [`large_object_copy`]): a restore's verification and an incremental's check that they did
/// not change since its chain's full backup compare it with the backup's.
pub async fn large_object_checksum(client: &Client, oids: &[u32]) -> Result<RowChecksum> {
    copy_checksum(
        client,
        &large_object_copy(Some(oids)),
        "checksumming large objects",
    )
    .await
}

/// Order-independent checksum of the lines a `COPY … TO STDOUT` produces.
pub async fn copy_checksum(client: &Client, sql: &str, context: &str) -> Result<RowChecksum> {
    let stream = client
        .copy_out(sql)
        .await
        .map_err(Error::db(context.to_string()))?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = RowHasher::default();
    while let Some(piece) = stream.next().await {
        rows.push(&piece.map_err(Error::db(context.to_string()))?);
    }
    Ok(rows.finish())
}

/// The oids of the large objects (of `oids`, when given) and their total size in bytes.
pub async fn large_objects(client: &Client, oids: Option<&[u32]>) -> Result<(Vec<u32>, i64)> {
    let rows = client
        .query(
            "SELECT m.oid, pg_catalog.lo_lseek64(pg_catalog.lo_open(m.oid, 262144), 0, 2) \
             FROM pg_catalog.pg_largeobject_metadata m \
             WHERE $1::oid[] IS NULL OR m.oid = ANY ($1::oid[]) ORDER BY 1",
            &[&oids],
        )
        .await
        .map_err(Error::db("listing large objects"))?;
    let bytes = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
    Ok((rows.iter().map(|r| r.get(0)).collect(), bytes))
}

/// A scratch table the large objects' stored rows are loaded into, then written with
/// `lo_put` (restore and `backup export` alike): [create, COPY, write-and-drop].
pub const LARGE_OBJECT_LOAD: [&str; 3] = [
    "CREATE TEMP TABLE larder_large_object_data (loid oid, slice int8, data bytea)",
    "COPY pg_temp.larder_large_object_data (loid, slice, data) FROM stdin",
    "SELECT count(pg_catalog.lo_put(loid, slice * 262144, data)) AS large_object_slices \
     FROM pg_temp.larder_large_object_data;\nDROP TABLE pg_temp.larder_large_object_data",
];

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
/// Keys the table's partitions inherit count through their partitioned table (the key on it,
/// or the copies on the referencing partitions; not PostgreSQL's per-referenced-partition
/// copies, which see only one partition); `NOT VALID` keys are left out, as PostgreSQL leaves
/// existing rows unchecked for them. A key sees only its own table's rows, not those of
/// inheritance children.
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
                          JOIN pg_attribute ON attrelid = con.confrelid AND attnum = k.n ORDER BY o), \
                    (SELECT relkind = 'p' FROM pg_class WHERE oid = con.conrelid), \
                    (SELECT relkind = 'p' FROM pg_class WHERE oid = con.confrelid) \
             FROM pg_constraint con \
             WHERE con.contype = 'f' AND con.convalidated \
               AND (con.conparentid = 0 \
                    OR con.confrelid = (SELECT p.confrelid FROM pg_constraint p WHERE p.oid = con.conparentid)) \
               AND (con.conrelid = ANY (($1::text[])::regclass[]) \
                    OR con.confrelid IN (SELECT pg_partition_ancestors(t) FROM unnest(($1::text[])::regclass[]) t))",
            &[&tables],
        )
        .await
        .map_err(Error::db("reading foreign keys of the restored tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (name, child, parent): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let (cols, refs): (Vec<String>, Vec<String>) = (r.get(3), r.get(4));
            // ONLY a plain table's own rows; a partitioned table's rows are its partitions'.
            let only = |partitioned: bool| if partitioned { "" } else { "ONLY " };
            let (child_only, parent_only) = (only(r.get(5)), only(r.get(6)));
            let not_null = cols.iter().map(|c| format!("c.{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
            let join = cols.iter().zip(&refs).map(|(c, p)| format!("p.{p} = c.{c}")).collect::<Vec<_>>().join(" AND ");
            let sql = format!(
                "SELECT 1 FROM {child_only}{child} c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {parent_only}{parent} p WHERE {join}) LIMIT 1"
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

/// A constraint marked NOT VALID.
#[derive(Debug, Clone)]
pub struct NotValid {
    /// `schema.table.constraint` (or `domain.constraint`).
    pub name: String,
    /// pg_dump's tags (`table constraint`, newlines as spaces as in its headers) of this
    /// constraint and of those it comes from: the parent table's, for a check an inheritance
    /// child or partition inherited; the partitioned table's, for a key cloned onto partitions.
    /// pg_dump names only the first of such a family.
    pub tags: Vec<String>,
}

/// Constraints left NOT VALID on the given tables (all tables when empty).
pub async fn unvalidated_constraints(client: &Client, tables: &[String]) -> Result<Vec<NotValid>> {
    let rows = client
        .query(
            "SELECT CASE WHEN con.conrelid <> 0 THEN con.conrelid::regclass::text ELSE con.contypid::regtype::text END \
                    || '.' || con.conname, \
                    ARRAY(WITH RECURSIVE up(oid) AS ( \
                              SELECT con.oid \
                              UNION SELECT p.oid FROM up JOIN pg_constraint c ON c.oid = up.oid \
                                JOIN pg_constraint p ON p.oid = c.conparentid \
                                  OR (NOT c.conislocal AND p.conname = c.conname AND p.contype = c.contype \
                                      AND p.conrelid IN (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.conrelid))) \
                          SELECT translate(COALESCE(r.relname, t.typname) || ' ' || u.conname, E'\\n\\r', '  ')::text \
                          FROM up JOIN pg_constraint u ON u.oid = up.oid \
                          LEFT JOIN pg_class r ON r.oid = u.conrelid LEFT JOIN pg_type t ON t.oid = u.contypid) \
             FROM pg_constraint con \
             WHERE NOT con.convalidated AND (cardinality($1::text[]) = 0 OR con.conrelid = ANY (($1::text[])::regclass[]))",
            &[&tables],
        )
        .await
        .map_err(Error::db("checking for NOT VALID constraints"))?;
    Ok(rows
        .iter()
        .map(|r| NotValid {
            name: r.get(0),
            tags: r.get(1),
        })
        .collect())
}

/// The partitioned tables (qualified) all of whose leaf partitions are among `tables`.
pub async fn partitioned_covered_by(client: &Client, tables: &[String]) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'p' \
               AND EXISTS (SELECT 1 FROM pg_partition_tree(c.oid) t WHERE t.isleaf) \
               AND NOT EXISTS (SELECT 1 FROM pg_partition_tree(c.oid) t \
                               WHERE t.isleaf AND t.relid <> ALL (($1::text[])::regclass[]))",
            &[&tables],
        )
        .await
        .map_err(Error::db(
            "finding partitioned tables the restore empties whole",
        ))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Partitioned tables in the database, as (schema, name).
pub async fn partitioned_tables(client: &Client) -> Result<HashSet<(String, String)>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'p'",
            &[],
        )
        .await
        .map_err(Error::db("listing partitioned tables"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The enabled user triggers on `tables`: (table, quoted trigger name, `tgenabled`), so a
/// restore can turn them off for its rows and back on exactly as they were.
pub async fn enabled_user_triggers(
    client: &Client,
    tables: &[String],
) -> Result<Vec<(String, String, String)>> {
    let rows = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), quote_ident(t.tgname), t.tgenabled::text \
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE t.tgrelid = ANY (($1::text[])::regclass[]) AND NOT t.tgisinternal AND t.tgenabled <> 'D' \
             ORDER BY 1, 2",
            &[&tables],
        )
        .await
        .map_err(Error::db("listing triggers on the restored tables"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}
