//! dispatch: run AI coding agents against many git repositories from committed specs.
//!
//! Data flows one way: [`spec`] (load, validate) -> [`plan`] (DAG) -> [`exec`] (scheduler and
//! node handlers) -> [`report`]. Below the executor: [`runtime`] (containers), [`forge`] (PRs),
//! [`git`] and [`state`] (the journal). [`agents`] turns agent references into argv, env and
//! mounts; [`prompt`] renders every template; [`cli`] maps commands onto these layers.

pub mod agents;
pub mod cli;
pub mod exec;
pub mod forge;
pub mod git;
pub mod plan;
pub mod prompt;
pub mod report;
pub mod runtime;
pub mod spec;
pub mod state;
