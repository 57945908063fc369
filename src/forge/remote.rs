//! The names `crate::forge::remote` offered before the forge modules were laid out one way
//! (see the [`super`] module doc), re-exported for callers elsewhere (src/exec/, tests/) that
//! still use them. New code names the modules that define them.
//!
//! Invariant: nothing is defined here, so nothing in src/forge/ imports this module.

pub use super::any::AnyForge;
/// The remote forges' former enum, now the variants [`AnyForge::Gitea`] and
/// [`AnyForge::Github`] of the one forge enum.
pub use super::any::AnyForge as RemoteForge;
pub use super::options::{RemoteOptions, DEFAULT_CHECKS_TIMEOUT};
pub use super::pr::{Checks, ExistingPr};
pub use super::target::{glob, RemoteIssue, RemotePr, RemoteRepo, RepoFilter};
pub use super::{PublishOptions, DEFAULT_LABEL_COLOUR};
