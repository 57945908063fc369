//! What the integration tests share: the [`Test`] builder (a fixture directory with a spec,
//! seed repositories and a scripted agent, and the real binary run in it), the [`Output`] of
//! one run with its JSON, the binary run on terminals ([`OnTerminal`]), and the Docker engine
//! with the test image built once.

pub mod docker;
pub mod model;
mod scripted;
mod terminal;
mod test;

pub use terminal::OnTerminal;
pub use test::{dispatch, outcomes, unit, Output, Running, Test};
