//! The forge's part of planning as the commands see it: [`load`] loads the spec, has
//! [`crate::plan::resolve`] ask the forge for its `select` entries and PR targets, and turns a
//! failure into a command error that names the spec. `plan`, `render`, `run` and `doctor`
//! share it.

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
    path: &Path,
    state_dir: &Path,
    offline: bool,
) -> Result<(LoadedSpec, Found), CommandError> {
    let mut loaded = ui.load_spec(path)?;
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
