//! Recovery: the plan (what a restore would do and whether it may) and its execution.
//! `plan` reads the destination once (`facts`) and judges the request with pure rules
//! (`plan`, `privileges`); `restore` carries it out.
//! Both share the vocabulary of strategies and verification levels defined in `plan`.

pub mod facts;
pub mod plan;
#[cfg(test)]
mod plan_tests;
mod privileges;
pub mod restore;
pub mod step;

pub use step::{Step, StepReport, steps};
