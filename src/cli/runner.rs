//! The runner: the `dispatch` process that executes a run and whose pid the journal records.
//! `run`, `resume` and `cancel` ask whether it is still there.

/// Whether the runner process of a run is alive.
pub fn alive(pid: i64) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}
