//! The forge's part of planning as the commands see it: [`load`] loads the spec, has
//! [`crate::plan::resolve`] ask the forge for its `select` entries and PR targets, and turns a
//! failure into a command error that names the spec. `plan`, `render`, `run` and `doctor`
//! share it, and `plan` and `render` the default branch of a repository the way prep finds it
//! ([`default_branch`]).

use std::path::Path;

use super::{CommandError, Ui};
use crate::plan::resolve::find;
use crate::plan::target::Found;
use crate::spec::LoadedSpec;

/// Loads the spec and resolves its `select` entries and PR targets: through the forge, or not
/// at all when `offline` (the entries then stay in `selections`, and the plan lists them as
/// unresolved; PR targets keep a branch of their own). Returns the forge's answer too, which a
/// run records so that a resume plans the same units.
pub fn load(
    ui: &Ui,
    source: &super::source::Source,
    state_dir: &Path,
    offline: bool,
) -> Result<(LoadedSpec, Found), CommandError> {
    let mut loaded = source.load(ui)?;
    let path = source.file();
    let asks = !loaded.selections.is_empty() || loaded.targets.iter().any(|t| t.pr.is_some());
    if !asks || offline {
        return Ok((loaded, Found::default()));
    }
    let runtime = super::tokio_runtime(false)?;
    match runtime.block_on(find(&loaded, state_dir)) {
        Ok(found) => {
            loaded.expand(&found);
            Ok((loaded, found))
        }
        Err(message) => Err(CommandError::failure(format_args!(
            "{}: {message}",
            path.display()
        ))),
    }
}

/// The default branch of `org/repo`: the remote forge's, else the one HEAD of the local forge's
/// bare repository names.
pub async fn default_branch(
    remote: Option<&crate::forge::any::AnyForge>,
    state_dir: &std::path::Path,
    org: &str,
    repo: &str,
) -> Option<String> {
    if let Some(forge) = remote {
        use crate::forge::Forge;
        return forge.default_branch(org, repo).await.ok().flatten();
    }
    let bare = crate::forge::local::LocalForge::root_in(state_dir)
        .join(org)
        .join(format!("{repo}.git"));
    crate::git::git(&bare, &["symbolic-ref", "--short", "HEAD"])
        .await
        .ok()
}
