//! The benchmark's datasets, created in a throwaway server: the Kitchen Pantry sample
//! (`examples/kitchen-pantry`), the same with one dominant table (`benches/datasets/
//! dominant.sql`) and thousands of small tables (`benches/datasets/many-tables.sql`).

use super::{Failure, Server};

const SCHEMA: &str = include_str!("../../examples/kitchen-pantry/schema.sql");
const GENERATE: &str = include_str!("../../examples/kitchen-pantry/generate.sql");
const DOMINANT: &str = include_str!("../datasets/dominant.sql");
const MANY_TABLES: &str = include_str!("../datasets/many-tables.sql");

/// The many-tables dataset's size unless `--tables` says otherwise.
pub const DEFAULT_TABLES: usize = 5000;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    /// Kitchen Pantry: a CRM of 7 tables, `interactions` the biggest (about half the rows).
    Pantry,
    /// Kitchen Pantry at a quarter of the scale plus `contact_events`, about 75 % of the
    /// rows, with an unindexed foreign key to `contacts`.
    Dominant,
    /// This many tables of 50 rows each.
    ManyTables(usize),
}

impl Dataset {
    /// `pantry`, `dominant` or `many-tables` (with `tables` tables).
    pub fn parse(name: &str, tables: usize) -> Result<Dataset, Failure> {
        match name {
            "pantry" => Ok(Dataset::Pantry),
            "dominant" => Ok(Dataset::Dominant),
            "many-tables" => Ok(Dataset::ManyTables(tables)),
            other => {
                Err(format!("unknown dataset {other}: use pantry, dominant or many-tables").into())
            }
        }
    }

    /// The database the dataset is created in.
    pub fn database(self) -> &'static str {
        match self {
            Dataset::Pantry => "kitchen_pantry",
            Dataset::Dominant => "dominant",
            Dataset::ManyTables(_) => "many_tables",
        }
    }

    /// How the report names it.
    pub fn describe(self) -> String {
        match self {
            Dataset::Pantry => "Kitchen Pantry".into(),
            Dataset::Dominant => {
                "one dominant table (Kitchen Pantry at scale/4 + contact_events, ~75 % of the rows, unindexed FK to contacts)".into()
            }
            Dataset::ManyTables(n) => format!("{n} tables of 50 rows"),
        }
    }

    /// Creates the database and its data (`VACUUM ANALYZE` at the end); returns its size on
    /// disk. `scale` is ignored by the many-tables dataset.
    pub fn create(self, server: &Server, scale: f64) -> Result<u64, Failure> {
        match self {
            Dataset::Pantry => server.create_database(
                self.database(),
                &[
                    SCHEMA,
                    &format!("SET larder.scale = '{scale}';\n{GENERATE}"),
                ],
            ),
            Dataset::Dominant => server.create_database(
                self.database(),
                &[
                    SCHEMA,
                    &format!("SET larder.scale = '{}';\n{GENERATE}", scale / 4.0),
                    &format!("SET larder.scale = '{scale}';\n{DOMINANT}"),
                ],
            ),
            Dataset::ManyTables(n) => server.create_database(
                self.database(),
                &[&format!("SET larder.tables = '{n}'"), MANY_TABLES],
            ),
        }
    }
}
