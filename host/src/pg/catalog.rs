//! Catalog queries run inside the backup snapshot: server facts, the tables that hold data,
//! sequences and large objects.

use crate::error::{Error, Result};
use crate::repository::manifest::{SequenceValue, quote_ident};
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

pub async fn large_object_count(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(Error::db("counting large objects"))?
        .get(0))
}
