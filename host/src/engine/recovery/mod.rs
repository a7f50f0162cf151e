//! Recovery: the plan (what a restore would do and whether it may) and its execution.
//! `plan` reads the destination and judges the request; `restore` carries it out.
//! Both share the vocabulary of strategies and verification levels defined in `plan`.

pub mod plan;
pub mod restore;
pub mod step;

pub use step::{Step, StepReport, steps};
