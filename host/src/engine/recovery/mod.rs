//! Recovery: the plan (what a restore would do and whether it may) and its execution.
//! `plan` reads the destination once (`facts`) and judges the request with pure rules
//! (`plan`, `privileges`); `restore` runs the strategy's [`Step`]s (one file per strategy,
//! one per step); `step` is the list both share.

pub mod chain;
pub mod facts;
pub mod plan;
#[cfg(test)]
mod plan_tests;
mod privileges;
pub mod provenance;
pub mod replay;
pub mod replay_plan;
pub mod request;
pub mod restore;
pub mod step;

mod job;
mod load;
mod missing_rows;
mod new_database;
mod post_data;
mod replace;
mod schedule;
mod schema;
mod sequences;
mod vacuum;
mod verify;

pub use step::{Step, StepReport, steps};
