//! dispatch: run AI coding agents against many git repositories from committed specs.
//!
//! Data flows one way: [`spec`] (load, validate) -> [`plan`] (DAG) -> [`exec`] (scheduler and
//! node handlers) -> [`report`]. Below the executor: [`runtime`] (containers), [`forge`] (PRs),
//! [`git`] and [`state`] (the journal). [`vocab`] holds the words they share (node kinds,
//! statuses, outcomes, the reason a run stops); [`backoff`] is the one retry pacing.
//! [`agents`] turns agent references into argv, env and mounts; [`prompt`] renders every
//! template; [`cli`] maps commands onto these layers, a file per command.
//!
//! Where to look:
//! - a node going from running to finished, and what happens next:
//!   `exec/dispatcher.rs`, `Dispatcher::node_ended` (every transition is in `handle`);
//! - a container's configuration (agent, review and QA alike): `exec/node/container.rs`;
//! - what each node kind does: `exec/node/<kind>.rs`; how its errors become outcomes and
//!   retries: `exec/error.rs`, `NodeError::verdict`;
//! - SQL: `state/` only (`journal.rs` writes a run's events, `db.rs` and `views.rs` read);
//! - a command's flags and messages: `cli/<command>.rs`, its error type `cli/error.rs`;
//! - the forge-side resolution of targets: `plan/resolve.rs`;
//! - which runs and units may run at once (the spec and workspace locks): `state/lock.rs`,
//!   taken in `cli/runner.rs` and `exec/node/mod.rs`.

pub mod agents;
pub mod backoff;
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
pub mod vocab;

/// The allocator of the dispatch binary (and of its tests and benches, so they measure what
/// ships). The dispatcher, the node tasks on tokio's workers and the journal's writer thread
/// each free what another allocated; glibc's malloc serialises that on its arena locks, and
/// mimalloc frees to the owning thread's heap without a lock (the scheduler benchmark, A/B on
/// one machine: median 1.14 s with mimalloc, 1.35 s with glibc's malloc, and less CPU).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
