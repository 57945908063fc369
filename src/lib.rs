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

/// The allocator of the dispatch binary (and of its tests and benches, so they measure what
/// ships). The dispatcher, the node tasks on tokio's workers and the journal's writer thread
/// each free what another allocated; glibc's malloc serialises that on its arena locks
/// (futex waits and `malloc_consolidate` were a third of the scheduler benchmark's time), and
/// mimalloc frees to the owning thread's heap without a lock.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
