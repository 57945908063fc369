//! Running the binary on a terminal: its stdout and its stderr each on a pseudo-terminal of
//! their own, in raw mode (no newline translation), so the bytes read are exactly the bytes
//! dispatch wrote, and `isatty` is true for both as for a person at a terminal.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What one run of `dispatch` wrote on its terminals, byte for byte, and how it exited.
pub struct OnTerminal {
    /// Exit code (-1 when killed by a signal).
    pub status: i32,
    /// What reached the terminal of stdout.
    pub stdout: Vec<u8>,
    /// What reached the terminal of stderr.
    pub stderr: Vec<u8>,
}

impl OnTerminal {
    /// Asserts the exit code, showing both terminals when it differs.
    #[track_caller]
    pub fn expect_status(self, code: i32) -> Self {
        assert_eq!(
            self.status,
            code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        );
        self
    }

    /// Stdout as text (it must be UTF-8).
    #[track_caller]
    pub fn stdout_text(&self) -> &str {
        std::str::from_utf8(&self.stdout).expect("stdout on the terminal is UTF-8")
    }

    /// Asserts that stdout holds `text`.
    #[track_caller]
    pub fn expect_shown(&self, text: &str) -> &Self {
        let stdout = self.stdout_text();
        assert!(stdout.contains(text), "{text} is not shown:\n{stdout}");
        self
    }
}

/// One pseudo-terminal: the side the child writes to and a thread reading the other side.
struct Pty {
    child_side: OwnedFd,
    reader: JoinHandle<Vec<u8>>,
}

impl Pty {
    /// A pseudo-terminal of 50 rows and 160 columns in raw mode, read until `done` is set and
    /// nothing more arrives.
    fn open(done: Arc<AtomicBool>) -> Self {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize {
            ws_row: 50,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into the given places; the name pointer may
        // be null, and the termios and winsize pointers point to valid values or are null.
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        for fd in [&master, &slave] {
            // Not inherited by processes other tests start meanwhile (the child gets the
            // slave as its stdout or stderr, which dup2 leaves open).
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        // SAFETY: termios is plain data; tcgetattr fills it before cfmakeraw and tcsetattr
        // read it.
        unsafe {
            let mut mode: libc::termios = std::mem::zeroed();
            assert_eq!(
                libc::tcgetattr(slave.as_raw_fd(), &mut mode),
                0,
                "tcgetattr"
            );
            libc::cfmakeraw(&mut mode);
            assert_eq!(
                libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &mode),
                0,
                "tcsetattr"
            );
        }
        let reader = std::thread::spawn(move || drain(master, &done));
        Self {
            child_side: slave,
            reader,
        }
    }
}

/// Reads `master` until `done` is set and nothing arrived for 200 ms (or the child side is
/// closed everywhere).
fn drain(master: OwnedFd, done: &AtomicBool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut file = File::from(master);
    let mut buffer = [0u8; 65536];
    loop {
        let mut poll = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, 200) };
        if ready > 0 {
            match file.read(&mut buffer) {
                Ok(0) | Err(_) => return out, // EIO: no process holds the child side
                Ok(n) => out.extend_from_slice(&buffer[..n]),
            }
        } else if done.load(Ordering::Acquire) {
            return out;
        }
    }
}

/// Runs `command` with stdin from /dev/null and stdout and stderr on terminals of their own.
pub fn run(mut command: Command) -> OnTerminal {
    let done = Arc::new(AtomicBool::new(false));
    let (out, err) = (Pty::open(done.clone()), Pty::open(done.clone()));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.child_side))
        .stderr(Stdio::from(err.child_side));
    let status = command.status().expect("the dispatch binary runs");
    drop(command); // closes this process's copies of the child sides
    done.store(true, Ordering::Release);
    let stdout = out.reader.join().expect("the stdout reader");
    let stderr = err.reader.join().expect("the stderr reader");
    let output = OnTerminal {
        status: status.code().unwrap_or(-1),
        stdout,
        stderr,
    };
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("panicked"),
        "dispatch panicked:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
