//! The error a command ends with, classified once: what the user reads and which exit status
//! it gives. Commands return `Result<u8, CommandError>`; [`super::main`] prints the error
//! ([`CommandError::report`]) and exits with its status, so no command prints its own
//! `error:` line.
//!
//! `Ok(status)` is not an error: it carries a status the command already explained in its
//! output (1 when some unit failed or some check failed, 2 when some spec is invalid), and
//! nothing more is printed.

use std::fmt;

/// The exit status of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// Something failed (1).
    Failure,
    /// An invalid spec or usage (2).
    Invalid,
    /// The Docker engine cannot be reached (3).
    NoEngine,
}

impl ExitKind {
    /// The process exit status.
    pub const fn code(self) -> u8 {
        match self {
            Self::Failure => 1,
            Self::Invalid => 2,
            Self::NoEngine => 3,
        }
    }
}

/// What the user reads of an error.
#[derive(Debug)]
pub enum Text {
    /// A message, printed as `error: {message}`.
    Message(String),
    /// Diagnostics rendered already (a spec's problems with spans and carets), printed as
    /// they are.
    Rendered(String),
}

/// The error a command ends with.
#[derive(Debug)]
pub struct CommandError {
    /// The exit status.
    pub exit: ExitKind,
    /// What the user reads.
    pub text: Text,
    /// What to do about it, one line each, printed after the message.
    pub hints: Vec<String>,
}

impl CommandError {
    /// An error of `exit` with `message`.
    pub fn new(exit: ExitKind, message: impl fmt::Display) -> Self {
        Self {
            exit,
            text: Text::Message(message.to_string()),
            hints: Vec::new(),
        }
    }

    /// A failure (exit 1).
    pub fn failure(message: impl fmt::Display) -> Self {
        Self::new(ExitKind::Failure, message)
    }

    /// An invalid spec or usage (exit 2).
    pub fn invalid(message: impl fmt::Display) -> Self {
        Self::new(ExitKind::Invalid, message)
    }

    /// The Docker engine cannot be reached (exit 3).
    pub fn no_engine(message: impl fmt::Display) -> Self {
        Self::new(ExitKind::NoEngine, message)
    }

    /// Diagnostics rendered already, of an invalid spec (exit 2).
    pub fn rendered(text: String) -> Self {
        Self {
            exit: ExitKind::Invalid,
            text: Text::Rendered(text),
            hints: Vec::new(),
        }
    }

    /// The error with a hint added.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// What [`CommandError::report`] prints: `error: {message}` (or the rendered
    /// diagnostics), then each hint on a line of its own. A message and its hints may quote
    /// a forge, an engine or a repository, so they are shown through
    /// [`crate::report::text::shown_lines`]; rendered diagnostics are dispatch's own.
    pub fn stderr(&self) -> String {
        use crate::report::text::shown_lines;
        let mut out = match &self.text {
            Text::Message(message) => format!("error: {}\n", shown_lines(message)),
            Text::Rendered(text) => text.clone(),
        };
        for hint in &self.hints {
            out.push_str(&shown_lines(hint));
            out.push('\n');
        }
        out
    }

    /// Prints the error on stderr and gives its exit status.
    pub fn report(self) -> u8 {
        eprint!("{}", self.stderr());
        self.exit.code()
    }
}

impl From<crate::state::StateError> for CommandError {
    /// A state directory's error (it names the database file) fails the command.
    fn from(error: crate::state::StateError) -> Self {
        Self::failure(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_status() {
        assert_eq!(CommandError::failure("x").exit.code(), 1);
        assert_eq!(CommandError::invalid("x").exit.code(), 2);
        assert_eq!(CommandError::no_engine("x").exit.code(), 3);
        assert_eq!(CommandError::rendered(String::new()).exit.code(), 2);
    }

    #[test]
    fn the_message_comes_first_and_each_hint_on_its_own_line() {
        let error = CommandError::no_engine("cannot reach the Docker engine")
            .hint("Start it.")
            .hint("Or set DOCKER_HOST.");
        assert_eq!(
            error.stderr(),
            "error: cannot reach the Docker engine\nStart it.\nOr set DOCKER_HOST.\n"
        );
        let rendered = CommandError::rendered("  x spec.yaml:1:1\n".to_owned());
        assert_eq!(rendered.stderr(), "  x spec.yaml:1:1\n");
    }

    #[test]
    fn a_message_quoting_a_forge_cannot_drive_the_terminal() {
        let quoted = "core/go-io: 404 \x1b]8;;https://evil\x07here\x1b]8;;\x07";
        let shown = r"error: core/go-io: 404 \x1b]8;;https://evil\x07here\x1b]8;;\x07";
        let error = CommandError::failure(quoted).hint("see \u{202e}txt.exe");
        assert_eq!(error.stderr(), format!("{shown}\nsee \\u{{202e}}txt.exe\n"));
        // Diagnostics dispatch rendered in colour keep their colour.
        let colour = "\x1b[31mx\x1b[0m\n";
        assert_eq!(CommandError::rendered(colour.to_owned()).stderr(), colour);
    }
}
