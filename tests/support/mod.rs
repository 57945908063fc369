//! What the integration tests share: the [`Test`] builder (a fixture directory with a spec,
//! seed repositories and a scripted agent, and the real binary run in it), the [`Output`] of
//! one run with its JSON, the binary run on terminals ([`OnTerminal`]), the Docker engine with
//! the test image built once, and [`xml`], a strict reader of the XML documents dispatch writes.
//! For the Kubernetes backend: [`kube`], a fake API server that runs each Job's pod as Docker
//! containers, [`githttp`], a real git server over HTTP with read and write tokens, and
//! [`network`], the Docker network its pods' containers reach it on.

pub mod docker;
pub mod githttp;
pub mod kube;
pub mod mcp;
pub mod model;
pub mod network;
mod scripted;
mod terminal;
mod test;
pub mod xml;

pub use terminal::OnTerminal;
pub use test::{dispatch, outcomes, unit, Output, Running, Test};
