//! dispatch: run AI coding agents against many git repositories from committed specs.
//!
//! Data flows one way: [`spec`] (load, validate) -> [`plan`] (DAG) -> exec -> report.
//! [`prompt`] renders every template; [`cli`] maps commands onto these layers.

pub mod cli;
pub mod plan;
pub mod prompt;
pub mod spec;
