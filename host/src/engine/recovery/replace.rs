//! The replace strategy, inside the recovery transaction: the whole database (drop the
//! backup's schemas and rebuild them from the backup) or, with `-t`, the chosen tables (empty
//! them and reload them, their triggers switched off and the foreign keys checked after).

use super::job::{Job, Outcome};
use super::step::{Progression, Step};
use super::{load, post_data, replay, schema, sequences, verify};
use crate::error::{Error, Result};
use crate::pg::catalog;
use crate::repository::manifest::TableEntry;
use tokio_postgres::Client;

/// Whole-database replace: drop the backup's schemas and rebuild them.
pub(super) async fn all(job: &Job, client: &Client, steps: &Progression) -> Result<Outcome> {
    let (pre, mut post) = steps
        .run(Step::Schema, async {
            // CREATE ROLE is transactional: a rollback takes the roles back too.
            client
                .batch_execute(&job.role_statements())
                .await
                .map_err(Error::db("creating the backup's roles (--create-roles)"))?;
            let pre = schema::section(job, &job.manifest.pre_data, "pre-data").await?;
            let post = schema::section(job, &job.manifest.post_data, "post-data").await?;
            schema::drop_for_replace(job, client, &pre, &post).await?;
            schema::create(client, &pre).await?;
            Ok((pre, post))
        })
        .await?;
    steps
        .run(Step::Load, async {
            load::in_order(job, client, &job.plan.selected).await?;
            load::large_objects(job, client).await
        })
        .await?;
    // Before post-data, as for a new database: no key or trigger is there yet.
    let replayed = replay_step(job, client, steps, replay::Order::ByTable, false).await?;
    let event_triggers = post.take_event_triggers();
    steps
        .run(Step::PostData, post_data::apply(client, &post))
        .await?;
    steps
        .run(Step::Sequences, sequences::all(job, client))
        .await?;
    steps
        .run(
            Step::EventTriggers,
            post_data::event_triggers(client, &post.preamble, &event_triggers),
        )
        .await?;
    steps
        .run(Step::Verify, async {
            let tables = verify::tables_in(job, client, replayed.as_ref()).await?;
            let large_objects = verify::large_objects(job, client).await?;
            let outcome =
                verify::outcome(client, tables, &[], &verify::not_valid_in(&[&pre, &post])).await?;
            verify::checked(Outcome {
                large_objects,
                replayed: replayed.clone(),
                ..outcome
            })
        })
        .await
}

/// The replay step into the restored tables themselves, when the plan has a chain
/// (`indexed`: their keys are indexed already).
async fn replay_step(
    job: &Job,
    client: &Client,
    steps: &Progression,
    order: replay::Order,
    indexed: bool,
) -> Result<Option<super::job::Replayed>> {
    if job.plan.replay.is_none() {
        return Ok(None);
    }
    let into = replay::themselves(job);
    let replayed = steps
        .run(
            Step::Replay,
            replay::apply(job, client, &[], &into, order, indexed),
        )
        .await?;
    Ok(Some(replayed))
}

/// Subset replace: empty the chosen tables and reload them.
pub(super) async fn tables(job: &Job, client: &Client, steps: &Progression) -> Result<Outcome> {
    let names = job.selected_names();
    let (before, triggers_on) = steps
        .run(Step::EmptyTables, async {
            let before = verify::not_valid_now(client, &names).await?;
            let triggers_on = post_data::user_triggers_off(client, &names).await?;
            empty(job, client, &names).await?;
            Ok((before, triggers_on))
        })
        .await?;
    steps
        .run(
            Step::Load,
            load::in_order(
                job,
                client,
                &load::parents_first(&job.manifest, &job.plan.selected),
            ),
        )
        .await?;
    // The tables' keys and foreign keys are live: the commit order is kept across tables
    // unless the foreign-key triggers are off (a superuser's restore checks them after).
    let order = if job.plan.skip_foreign_key_triggers {
        replay::Order::ByTable
    } else {
        replay::Order::Commit
    };
    let replayed = replay_step(job, client, steps, order, true).await?;
    steps
        .run(Step::CheckForeignKeys, async {
            post_data::check_foreign_keys(job, client).await?;
            post_data::restore_triggers(client, &triggers_on).await
        })
        .await?;
    steps
        .run(Step::Sequences, sequences::owned_by(job, client, &names))
        .await?;
    steps
        .run(Step::Verify, async {
            let tables = verify::tables_in(job, client, replayed.as_ref()).await?;
            let outcome = verify::outcome(client, tables, &names, &before).await?;
            verify::checked(Outcome {
                replayed: replayed.clone(),
                ..outcome
            })
        })
        .await
}

/// Empties the chosen tables (`names`, qualified).
async fn empty(job: &Job, client: &Client, names: &[String]) -> Result<()> {
    // An extension configuration table keeps the rows its extension made; the user's
    // rows (those its filter selects) are replaced.
    let (filtered, whole): (Vec<&TableEntry>, Vec<&TableEntry>) =
        job.selected().into_iter().partition(|t| t.filter.is_some());
    let mut empty: Vec<String> = filtered
        .iter()
        .map(|t| {
            format!(
                "DELETE FROM ONLY {} {}",
                t.qualified(),
                t.filter.as_deref().unwrap_or_default()
            )
        })
        .collect();
    // A partitioned table whose leaves are all being emptied goes into the same TRUNCATE:
    // foreign keys on it reference (or are referenced by) those leaves, and PostgreSQL
    // refuses to empty one side of a key alone.
    if !whole.is_empty() {
        let whole: Vec<String> = whole.iter().map(|t| t.qualified()).collect();
        let parents = catalog::partitioned_covered_by(client, &whole).await?;
        let listed: Vec<String> = whole
            .iter()
            .map(|n| format!("ONLY {n}"))
            .chain(parents)
            .collect();
        empty.push(format!("TRUNCATE {}", listed.join(", ")));
    }
    client
        .batch_execute(&empty.join(";\n"))
        .await
        .map_err(Error::db(format!("emptying {}", names.join(", "))))
}
