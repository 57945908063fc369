//! dispatch's integration tests, one binary: each module drives the real `dispatch` binary in
//! one area, through the builder in `support`.

mod support;

mod agents;
mod fuzz;
mod plan;
mod resume;
mod run;
mod spec;
