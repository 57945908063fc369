//! The `dispatch` binary: parse the command line, run, map errors to exit codes.

fn main() -> std::process::ExitCode {
    dispatch::cli::main()
}
