//! Reading pg_dump's plain-SQL sections so they can be executed without psql.
//!
//! pg_dump 15.14+ wraps its output in `\restrict KEY` / `\unrestrict KEY`: psql meta-commands,
//! not SQL, so they are dropped here. Each object in the output starts with a table-of-contents
//! comment (`-- Name: …; Type: INDEX; Schema: …; Owner: …`), which lets restore build
//! independent indexes and constraints in parallel and run the rest in pg_dump's order.

/// One object's statements from a pg_dump section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// pg_dump's object type: `INDEX`, `CONSTRAINT`, `FK CONSTRAINT`, `TRIGGER`, …
    pub kind: String,
    pub name: String,
    pub sql: String,
}

/// A pg_dump section split into its session preamble and its objects.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// `SET …` statements every session running the entries needs first.
    pub preamble: String,
    pub entries: Vec<Entry>,
}

fn is_meta_command(line: &str) -> bool {
    line.starts_with("\\restrict") || line.starts_with("\\unrestrict")
}

impl Script {
    pub fn parse(sql: &str) -> Script {
        let mut script = Script::default();
        let mut current: Option<Entry> = None;
        for line in sql.split_inclusive('\n') {
            if is_meta_command(line) {
                continue;
            }
            if let Some(header) = line.strip_prefix("-- Name: ") {
                if let Some(done) = current.take() {
                    script.entries.push(done);
                }
                let mut fields = header.trim_end().split("; ");
                let name = fields.next().unwrap_or_default().to_string();
                let kind = fields
                    .find_map(|f| f.strip_prefix("Type: "))
                    .unwrap_or_default()
                    .to_string();
                current = Some(Entry {
                    kind,
                    name,
                    sql: String::new(),
                });
                continue;
            }
            match current.as_mut() {
                Some(entry) => entry.sql.push_str(line),
                None => script.preamble.push_str(line),
            }
        }
        if let Some(done) = current {
            script.entries.push(done);
        }
        script
    }

    /// The whole section as one executable batch.
    pub fn to_sql(&self) -> String {
        let mut out = self.preamble.clone();
        for entry in &self.entries {
            out.push_str(&entry.sql);
        }
        out
    }

    /// pg_dump's tags (`table constraint`) of the constraints this section adds NOT VALID:
    /// they were NOT VALID at the source and a faithful restore keeps them so.
    pub fn not_valid_tags(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|e| e.kind.ends_with("CONSTRAINT") && e.sql.contains(" NOT VALID"))
            .map(|e| e.name.as_str())
    }

    /// Drops ownership and privilege statements (`--no-owner`): for targets that lack the
    /// source's roles. Objects then belong to the restoring user.
    pub fn without_ownership(mut self) -> Script {
        self.entries
            .retain(|e| e.kind != "ACL" && e.kind != "DEFAULT ACL");
        for entry in &mut self.entries {
            entry.sql = entry
                .sql
                .split_inclusive('\n')
                .filter(|line| !(line.starts_with("ALTER ") && line.contains(" OWNER TO ")))
                .collect();
        }
        self
    }
}

/// A foreign key split in two steps: adding it `NOT VALID` (a catalog change that briefly locks
/// both tables) and validating it (a scan that locks only the referencing table against other
/// schema changes, and the referenced table hardly at all). Validations of different tables can
/// then run in parallel even when they reference the same table; `ADD … FOREIGN KEY` cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The referencing table as the statement names it (`public.orders`).
    pub table: String,
    pub add_not_valid: String,
    pub validate: String,
}

impl Entry {
    /// The two steps of a foreign key pg_dump adds with one `ALTER TABLE ONLY … ADD CONSTRAINT`.
    /// None for anything else, for keys the source already had `NOT VALID` (they stay so), and
    /// for keys on partitioned tables (written without `ONLY`; PostgreSQL before 18 cannot add
    /// those `NOT VALID`).
    pub fn foreign_key(&self) -> Option<ForeignKey> {
        if self.kind != "FK CONSTRAINT" {
            return None;
        }
        // The statement without pg_dump's comment lines around it.
        let sql: Vec<&str> = self
            .sql
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
            .collect();
        let sql = sql.join("\n");
        let statement = sql.trim().strip_suffix(';')?;
        if statement.contains(';') || statement.contains("NOT VALID") {
            return None;
        }
        let rest = statement.strip_prefix("ALTER TABLE ONLY ")?;
        let (table, rest) = rest.split_once("ADD CONSTRAINT ")?;
        let (name, _) = rest.split_once(" FOREIGN KEY ")?;
        let table = table.trim();
        Some(ForeignKey {
            table: table.to_string(),
            add_not_valid: format!("{statement} NOT VALID;\n"),
            validate: format!("ALTER TABLE ONLY {table} VALIDATE CONSTRAINT {name};\n"),
        })
    }
}

/// Whether restore may build this object in parallel with others of the same phase.
pub fn builds_in_parallel(kind: &str) -> bool {
    matches!(kind, "INDEX" | "CONSTRAINT")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\\restrict abc\nSET statement_timeout = 0;\n\n--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: bob\n--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n--\n-- Name: t_idx; Type: INDEX; Schema: public; Owner: bob\n--\n\nCREATE INDEX t_idx ON public.t USING btree (v);\nALTER TABLE public.t OWNER TO bob;\n\n\\unrestrict abc\n";

    #[test]
    fn sections_split_into_typed_entries_without_psql_meta_commands() {
        let script = Script::parse(SAMPLE);
        assert_eq!(script.preamble, "SET statement_timeout = 0;\n\n--\n");
        let kinds: Vec<&str> = script.entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, vec!["CONSTRAINT", "INDEX"]);
        assert_eq!(script.entries[1].name, "t_idx");
        assert!(!script.to_sql().contains("restrict"));
        assert!(script.to_sql().contains("CREATE INDEX t_idx"));
    }

    #[test]
    fn foreign_keys_split_into_not_valid_and_validate_unless_they_cannot() {
        let entry = |sql: &str| Entry {
            kind: "FK CONSTRAINT".into(),
            name: "orders orders_contact_fkey".into(),
            sql: sql.into(),
        };
        let fk = entry(
            "--\n\nALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_contact_fkey FOREIGN KEY (contact_id) REFERENCES public.contacts(id);\n\n\n--\n",
        )
        .foreign_key()
        .expect("a plain foreign key splits");
        assert_eq!(fk.table, "public.orders");
        assert_eq!(
            fk.add_not_valid,
            "ALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_contact_fkey FOREIGN KEY (contact_id) REFERENCES public.contacts(id) NOT VALID;\n"
        );
        assert_eq!(
            fk.validate,
            "ALTER TABLE ONLY public.orders VALIDATE CONSTRAINT orders_contact_fkey;\n"
        );
        // Already NOT VALID at the source, on a partitioned table, or not a foreign key.
        assert!(entry("ALTER TABLE ONLY public.orders\n    ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES public.c(id) NOT VALID;\n").foreign_key().is_none());
        assert!(entry("ALTER TABLE public.parted\n    ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES public.c(id);\n").foreign_key().is_none());
        let mut index = entry("CREATE INDEX i ON public.orders USING btree (a);\n");
        index.kind = "INDEX".into();
        assert!(index.foreign_key().is_none());
        // What the source had NOT VALID is known by pg_dump's tag.
        let mut check =
            entry("ALTER TABLE public.orders\n    ADD CONSTRAINT c CHECK ((a > 0)) NOT VALID;\n");
        check.kind = "CHECK CONSTRAINT".into();
        check.name = "orders c".into();
        let script = Script {
            preamble: String::new(),
            entries: vec![check, index],
        };
        assert_eq!(
            script.not_valid_tags().collect::<Vec<_>>(),
            vec!["orders c"]
        );
    }

    #[test]
    fn no_owner_drops_owner_statements_only() {
        let sql = Script::parse(SAMPLE).without_ownership().to_sql();
        assert!(!sql.contains("OWNER TO"));
        assert!(sql.contains("CREATE INDEX t_idx"));
    }
}
