//! dispatch's integration tests, one binary: each module drives the real `dispatch` binary (or,
//! for the runtime and the forges, the library) in one area, through the builder in `support`.

mod support;

mod agents;
mod budget;
mod crash;
mod forge;
mod fuzz;
mod githttp;
mod hostile;
mod kube_fake;
mod kubernetes;
mod locks;
mod mcp;
mod outputs;
mod plan;
mod real_claude;
mod real_codex;
mod resume;
mod rollout;
mod run;
mod runtime;
mod spec;
mod terminal;
