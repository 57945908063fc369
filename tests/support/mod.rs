//! What the integration tests share: the [`Test`] builder (a fixture directory with a spec,
//! seed repositories and a scripted agent, and the real binary run in it), the [`Output`] of
//! one run with its JSON, the binary run on terminals ([`OnTerminal`]), the Docker engine with
//! the test image built once, and [`xml`], a strict reader of the XML documents dispatch writes.

pub mod docker;
pub mod kube;
pub mod mcp;
pub mod model;
mod scripted;
mod terminal;
mod test;
pub mod xml;

pub use terminal::OnTerminal;
pub use test::{dispatch, outcomes, unit, Output, Running, Test};
