//! The new-database strategy: build the restore in a database created for it under a
//! temporary name ([`partial_name`]), give it its name only once built and verified, and drop
//! it again if anything fails or a signal stops it (nothing existing is touched).

use super::job::{Job, Outcome};
use super::plan::{Verification, admin_connection};
use super::step::{Progression, Step};
use super::{load, post_data, replay, schedule, schema, sequences, vacuum, verify};
use crate::engine::interrupt::{CleanupGuard, interruptible};
use crate::error::{Error, Result};
use crate::pg::{catalog, ddl, session};
use crate::repository::manifest::{quote_ident, quote_literal};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio_postgres::Client;

/// The smallest table (COPY text bytes) loaded with `COPY … FREEZE`.
const FREEZE_MIN_BYTES: u64 = 1 << 20;

/// The smallest table (COPY text bytes) autovacuum is paused on while the restore builds it.
/// A smaller one loads, is indexed and is analyzed in milliseconds, so autovacuum has little
/// to compete with or to make a build wait for, while pausing and resetting it are two
/// catalog updates a table on the restore's one schema session (0.36 s of server time on
/// 5,000 tables, BENCHMARKS, "Restore of thousands of tables").
const AUTOVACUUM_PAUSE_MIN_BYTES: u64 = 1 << 20;

/// Restores into a database created for it under a temporary name, renamed to the destination's
/// name once built and verified; dropped again if anything fails or a signal stops it.
pub(super) async fn run(job: &Job, steps: &Progression) -> Result<Outcome> {
    let _cleanup = CleanupGuard::new();
    let destination = &job.plan.destination_settings;
    let partial = partial_name(&destination.dbname);
    let admin = admin_connection(destination, &job.manifest.source.database).await?;
    let db = quote_ident(&partial);
    let roles = job.role_statements();
    // Set once the database exists: from then on a failure drops it.
    let created = AtomicBool::new(false);
    let built = async {
        let leftover_dropped = steps
            .run(Step::CreateDatabase, async {
                let leftover = drop_leftover(&admin, &partial, &destination.dbname).await?;
                let creation = job.plan.new_database.as_ref().ok_or_else(|| {
                    Error::Internal("the plan does not say how to create the new database".into())
                })?;
                if !roles.is_empty() {
                    admin
                        .batch_execute(&format!("BEGIN; {roles}; COMMIT"))
                        .await
                        .map_err(Error::db("creating the backup's roles (--create-roles)"))?;
                }
                // Not interruptible: a signal now is seen as soon as the part below starts,
                // which then drops what this created.
                admin
                    .batch_execute(&creation.create_sql(&partial))
                    .await
                    .map_err(Error::db(format!(
                        "creating database {partial} (to become {}) from {}",
                        destination.dbname,
                        creation.describe()
                    )))?;
                created.store(true, Ordering::SeqCst);
                interruptible(async {
                    let marker = format!(
                        "{PARTIAL_MARKER} of backup {} into {}; renamed when complete, dropped if it fails",
                        job.manifest.id, destination.dbname
                    );
                    admin
                        .batch_execute(&format!(
                            "COMMENT ON DATABASE {db} IS {}",
                            quote_literal(&marker)
                        ))
                        .await
                        .map_err(Error::db(format!("marking {partial} as a partial restore")))?;
                    // The source's settings and privileges now; its comment once the marker is gone.
                    apply_database_properties(job, &admin, &partial, false).await
                })
                .await?;
                Ok(leftover)
            })
            .await?;
        let outcome = interruptible(build(job, steps, &partial)).await?;
        // Not interruptible: once the rename is sent, the database is complete under its name.
        let by_hand = steps
            .run(Step::Rename, rename(job, &admin, &partial))
            .await?;
        Ok::<_, Error>(Outcome {
            leftover_dropped,
            by_hand,
            ..outcome
        })
    }
    .await;
    let e = match built {
        Ok(outcome) => return Ok(outcome),
        Err(e) if !created.load(Ordering::SeqCst) => return Err(e),
        Err(e) => e,
    };
    let mut state = match drop_half_built(&admin, &partial).await {
        Ok(()) => format!(
            "the half-built database {} was dropped (it was being built as {partial}); nothing else was changed",
            destination.dbname
        ),
        Err(d) => format!(
            "the half-built database {partial} (to become {}) could not be dropped ({d}); drop it by hand, or the next restore into {} drops it",
            destination.dbname, destination.dbname
        ),
    };
    if !roles.is_empty() {
        let created = &job.plan.globals.roles_to_create;
        let drop: String = created
            .iter()
            .rev()
            .map(|r| format!("DROP ROLE IF EXISTS {};", quote_ident(r)))
            .collect();
        state.push_str(&match admin.batch_execute(&drop).await {
            Ok(()) => format!(
                "; the roles it created ({}) were dropped",
                created.join(", ")
            ),
            Err(d) => format!(
                "; the roles it created ({}) could not be dropped ({d})",
                created.join(", ")
            ),
        });
    }
    Err(match e {
        Error::Interrupted { signal, .. } => Error::Interrupted {
            signal,
            state: format!(
                "the restore of backup {} stopped while {}\n  {state}\n  \
                 run the same command again to restore it",
                job.manifest.id,
                steps.current().map_or("starting", Step::doing)
            ),
        },
        other => Error::Recovery {
            source: Box::new(other),
            state,
        },
    })
}

/// The steps from the schema to the verification, in `partial`, the temporary name.
async fn build(job: &Job, steps: &Progression, partial: &str) -> Result<Outcome> {
    let started = Instant::now();
    let destination = job.plan.destination_settings.with_dbname(partial);
    let names = job.selected_names();
    let (main, pre, mut post, paused) = steps
        .run(Step::Schema, async {
            let pre = schema::section(job, &job.manifest.pre_data, "pre-data").await?;
            let post = schema::section(job, &job.manifest.post_data, "post-data").await?;
            let main = session::restore(&destination).await?;
            schema::create(&main, &pre).await?;
            // Autovacuum would start on the new tables mid-restore, competing for CPU and
            // taking locks that index builds and foreign keys then wait for. It is paused on
            // the big tables that leave it at the server's default and reset once they are
            // built and analyzed.
            let big: Vec<String> = job
                .selected()
                .iter()
                .filter(|t| t.logical_bytes >= AUTOVACUUM_PAUSE_MIN_BYTES)
                .map(|t| t.qualified())
                .collect();
            let paused = if big.is_empty() {
                Vec::new()
            } else {
                catalog::autovacuum_at_default(&main, &big).await?
            };
            vacuum::set_autovacuum(&main, &paused, false).await?;
            Ok((main, pre, post, paused))
        })
        .await?;
    // A table stored in one range is loaded in one transaction, so it can be loaded frozen
    // (`load::range`); a table whose ranges load on several sessions cannot, and a small one
    // is not worth it: the TRUNCATE FREEZE needs gives the table new files, which costs more
    // than its vacuum and hint bits would (BENCHMARKS, "COPY … FREEZE").
    let freezable = catalog::freezable(&main, &names).await?;
    let frozen: HashSet<usize> = job
        .plan
        .selected
        .iter()
        .copied()
        .filter(|&t| {
            let table = &job.manifest.tables[t];
            table.parts.len() == 1
                && table.logical_bytes >= FREEZE_MIN_BYTES
                && freezable.contains(&table.qualified())
        })
        .collect();
    let event_triggers = post.take_event_triggers();
    let mut builds = post_data::builds(job, &main, &post).await?;
    let rows_loaded = steps
        .run(Step::Load, async {
            // Without a replay, which must find no index yet, each table's indexes and keys
            // are built as soon as its last range is in, beside the other tables' loads.
            let rows = match job.plan.replay {
                None => {
                    let parallel = std::mem::take(&mut builds.parallel);
                    schedule::load_and_build(job, &destination, &post.preamble, parallel, &frozen)
                        .await?
                }
                Some(_) => load::in_parallel(job, &destination, &frozen).await?,
            };
            load::large_objects(job, &main).await?;
            Ok(rows)
        })
        .await?;
    tracing::info!(
        "schema and data loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Before post-data: no key, index, foreign key or trigger is there yet to slow or trip it,
    // so tables are replayed in parallel, on `--jobs` sessions.
    let replayed = match &job.plan.replay {
        Some(_) => Some(
            steps
                .run(Step::Replay, async {
                    let mut workers = Vec::new();
                    for _ in 1..job.jobs {
                        workers.push(session::restore(&destination).await?);
                    }
                    replay::apply(
                        job,
                        &main,
                        &workers,
                        &replay::themselves(job),
                        replay::Order::ByTable,
                        false,
                    )
                    .await
                })
                .await?,
        ),
        None => None,
    };
    // A replayed table is counted: the rows COPY stored are the base's.
    let rows_loaded: HashMap<usize, u64> = rows_loaded
        .into_iter()
        .filter(|(t, _)| !replayed.as_ref().is_some_and(|r| r.changed.contains(t)))
        .collect();
    let mut work = steps
        .run(
            Step::PostData,
            post_data::build(job, &main, &destination, &post, builds),
        )
        .await?;
    // A table loaded frozen is all-visible already, so its keys are validated from the index
    // after ANALYZE alone; one a replay changed has rows and pages to vacuum again.
    for w in &mut work {
        if w.table.is_some_and(|t| {
            frozen.contains(&t) && !replayed.as_ref().is_some_and(|r| r.changed.contains(&t))
        }) {
            w.vacuum = false;
        }
    }
    steps
        .run(Step::Sequences, sequences::all(job, &main))
        .await?;
    steps
        .run(Step::VacuumAnalyze, async {
            vacuum::vacuum_and_validate(job, &destination, &post.preamble, work).await?;
            vacuum::set_autovacuum(&main, &paused, true).await
        })
        .await?;
    steps
        .run(
            Step::EventTriggers,
            post_data::event_triggers(&main, &post.preamble, &event_triggers),
        )
        .await?;
    steps
        .run(Step::Verify, async {
            let verification = job.plan.verification;
            let loaded = |t: usize| rows_loaded.get(&t).copied();
            let mut results = Vec::new();
            match verification {
                // The rows COPY stored are the count: nothing to read.
                Verification::Rows => {
                    for &t in &job.plan.selected {
                        let table =
                            verify::after_replay(&job.manifest.tables[t], t, replayed.as_ref());
                        results.push(verify::table(&main, &table, verification, loaded(t)).await?);
                    }
                }
                // Re-reading every table: as many sessions as the load had.
                Verification::Checksums => {
                    let worker = job.clone();
                    let replayed = std::sync::Arc::new(replayed.clone());
                    results = job
                        .in_parallel(&destination, job.plan.selected.clone(), move |client, t| {
                            let (job, replayed) = (worker.clone(), replayed.clone());
                            async move {
                                let table = verify::after_replay(
                                    &job.manifest.tables[t],
                                    t,
                                    replayed.as_ref().as_ref(),
                                );
                                verify::table(&client, &table, verification, None).await
                            }
                        })
                        .await?;
                }
            }
            results.sort_by(|a, b| a.name.cmp(&b.name));
            let large_objects = verify::large_objects(job, &main).await?;
            let outcome =
                verify::outcome(&main, results, &[], &verify::not_valid_in(&[&pre, &post])).await?;
            verify::checked(Outcome {
                large_objects,
                replayed: replayed.clone(),
                ..outcome
            })
        })
        .await
}

/// Gives the verified database its name and the source's comment, then the database settings
/// of the backup's globals (last, so a setting such as default_transaction_read_only cannot
/// get in the restore's way); a setting the restoring role may not make is left by hand.
async fn rename(job: &Job, admin: &Client, partial: &str) -> Result<Vec<String>> {
    let destination = &job.plan.destination_settings;
    rename_into_place(admin, partial, &destination.dbname).await?;
    if let Err(e) = apply_database_properties(job, admin, &destination.dbname, true).await {
        tracing::warn!(
            "database {} lacks the source's comment: {e}",
            destination.dbname
        );
    }
    let mut by_hand = job.plan.globals.by_hand.clone();
    for statement in &job.plan.globals.database_sql {
        if let Err(e) = admin.batch_execute(statement).await {
            by_hand.push(format!(
                "{statement}; (failed: {}; run it as a superuser)",
                e.as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string())
            ));
        }
    }
    Ok(by_hand)
}

/// The source database's comment, privileges and settings, applied to the new database as
/// `pg_restore --create` would, to database `to`: its comment alone (`comment`), or all but
/// its comment. `--no-owner` leaves out what names roles (privileges and per-role
/// settings), as it does for objects.
async fn apply_database_properties(
    job: &Job,
    admin: &Client,
    to: &str,
    comment: bool,
) -> Result<()> {
    let from = &job.manifest.source.database;
    for property in &job.manifest.database_properties {
        if (property.kind == "COMMENT") != comment || (job.plan.no_owner && property.kind == "ACL")
        {
            continue;
        }
        let sql: String = ddl::statements(&property.sql)
            .filter(|s| !(job.plan.no_owner && ddl::names_a_role(s)))
            .collect();
        admin
            .batch_execute(&ddl::retarget_database(&sql, from, to))
            .await
            .map_err(Error::db(format!(
                "applying the database's {} from the backup to {to} (--no-owner leaves out privileges and per-role settings)",
                property.kind.to_lowercase()
            )))?;
    }
    Ok(())
}

/// The first words of the comment a partial database carries, which mark it as ours.
const PARTIAL_MARKER: &str = "Larder: partial restore";

/// Drops the half-built database after a failure. A server short of locks or still ending the
/// failed sessions can refuse the first attempt: then wait until no session is left on the
/// database (at most ~10 s) and try again, three times in all. The error is the server's own
/// message of the last attempt.
async fn drop_half_built(admin: &Client, partial: &str) -> std::result::Result<(), String> {
    let drop = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(partial)
    );
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            for _ in 0..20 {
                let sessions = admin
                    .query_one(
                        "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = $1",
                        &[&partial],
                    )
                    .await
                    .map(|row| row.get::<_, i64>(0))
                    .unwrap_or(0);
                if sessions == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        match admin.batch_execute(&drop).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                last = crate::error::error_chain(&e);
                tracing::warn!(
                    "dropping {partial} failed (attempt {}): {last}",
                    attempt + 1
                );
            }
        }
    }
    Err(last)
}

/// The temporary name a new database is built under: a partial database never carries the
/// destination's name, even after SIGKILL. At most 63 bytes (PostgreSQL's limit); a long destination
/// name is shortened and made unique with a hash of it.
pub fn partial_name(destination: &str) -> String {
    const SUFFIX: &str = "_larder_partial";
    if destination.len() + SUFFIX.len() <= 63 {
        return format!("{destination}{SUFFIX}");
    }
    let mut cut = 63 - SUFFIX.len() - 9;
    while !destination.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = crate::repository::sha256_hex(destination.as_bytes());
    format!("{}_{}{SUFFIX}", &destination[..cut], &hash[..8])
}

/// Drops the partial database an interrupted or killed restore into `destination` left behind, and
/// says so; refuses when it is not ours or another restore is still building it.
async fn drop_leftover(admin: &Client, partial: &str, destination: &str) -> Result<Option<String>> {
    let row = admin
        .query_opt(
            "SELECT coalesce(pg_catalog.shobj_description(d.oid, 'pg_database'), ''), \
             (SELECT count(*) FROM pg_catalog.pg_stat_activity a WHERE a.datname = d.datname) \
             FROM pg_catalog.pg_database d WHERE d.datname = $1",
            &[&partial],
        )
        .await
        .map_err(Error::db(format!(
            "looking for a partial database {partial}"
        )))?;
    let Some(row) = row else { return Ok(None) };
    let (comment, sessions): (String, i64) = (row.get(0), row.get(1));
    if !comment.starts_with(PARTIAL_MARKER) {
        return Err(Error::Refused(format!(
            "database {partial} exists and was not made by a Larder restore, but a restore into {destination} \
             builds under that name; rename or drop it, then retry"
        )));
    }
    if sessions > 0 {
        return Err(Error::Refused(format!(
            "another restore is building {destination} (as {partial}, {sessions} session(s) connected); \
             wait for it to finish, or stop it, then retry (a killed restore's sessions end with \
             their statements: SELECT pid, query FROM pg_stat_activity WHERE datname = {} lists them)",
            quote_literal(partial)
        )));
    }
    admin
        .batch_execute(&format!("DROP DATABASE {}", quote_ident(partial)))
        .await
        .map_err(Error::db(format!(
            "dropping {partial}, left by an interrupted restore"
        )))?;
    Ok(Some(format!(
        "dropped {partial}, left by an interrupted restore ({comment})"
    )))
}

/// Gives the finished database its name. Sessions of the restore that just closed can take a
/// moment to leave the server, and a rename needs the database to itself.
async fn rename_into_place(admin: &Client, partial: &str, destination: &str) -> Result<()> {
    let (from, to) = (quote_ident(partial), quote_ident(destination));
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match admin
            .batch_execute(&format!("ALTER DATABASE {from} RENAME TO {to}"))
            .await
        {
            Ok(()) => break,
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(Error::db(format!("renaming {partial} to {destination}"))(e));
            }
        }
    }
    if let Err(e) = admin
        .batch_execute(&format!("COMMENT ON DATABASE {to} IS NULL"))
        .await
    {
        tracing::warn!(
            "database {destination} keeps the comment of a partial restore: {}",
            crate::error::error_chain(&e)
        );
    }
    Ok(())
}
