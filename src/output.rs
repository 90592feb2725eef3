//! Standard output and error of every command, written without panics: `println!` panics
//! when the reader has gone (`flashgen info | head -1`). A closed pipe drops the rest of that
//! stream while the command finishes its work (config and JSON files, cache entries); any
//! other write error on stdout is kept and turns the exit status into 1 ([`finish`]).

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

/// What has gone wrong with one stream so far.
struct State {
    /// The reader closed the pipe: later writes are dropped.
    closed: bool,
    /// The first other write error: later writes are dropped too.
    error: Option<io::Error>,
}

impl State {
    const fn new() -> Self {
        State {
            closed: false,
            error: None,
        }
    }
}

static STDOUT: Mutex<State> = Mutex::new(State::new());
static STDERR: Mutex<State> = Mutex::new(State::new());

fn write_to(state: &Mutex<State>, stream: &mut dyn Write, bytes: &[u8]) {
    // A panic elsewhere while printing must not silence the rest of the output.
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    if state.closed || state.error.is_some() {
        return;
    }
    match stream.write_all(bytes).and_then(|()| stream.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => state.closed = true,
        Err(e) => state.error = Some(e),
    }
}

/// Writes `text` to stdout as is.
pub fn out_str(text: &str) {
    write_to(&STDOUT, &mut io::stdout().lock(), text.as_bytes());
}

/// Writes one line to stdout.
pub fn out_line(args: fmt::Arguments<'_>) {
    out_str(&format!("{args}\n"));
}

/// Writes one line to stderr (errors writing it have nowhere to go and are dropped).
pub fn err_line(args: fmt::Arguments<'_>) {
    write_to(
        &STDERR,
        &mut io::stderr().lock(),
        format!("{args}\n").as_bytes(),
    );
}

/// The first stdout write error other than a closed pipe, if any: the command's output is
/// incomplete (a full disk, a device error).
pub fn finish() -> Option<io::Error> {
    out_str("");
    let mut state = STDOUT.lock().unwrap_or_else(|e| e.into_inner());
    state.error.take()
}

/// `println!` without the panic: see the module docs.
macro_rules! outln {
    () => {
        $crate::output::out_str("\n")
    };
    ($($arg:tt)*) => {
        $crate::output::out_line(format_args!($($arg)*))
    };
}

/// `eprintln!` without the panic.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::err_line(format_args!($($arg)*))
    };
}

pub(crate) use {errln, outln};

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone, or that fails another way.
    struct Failing(io::ErrorKind, usize);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.1 += 1;
            Err(io::Error::from(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_drops_the_rest_and_is_not_an_error() {
        let state = Mutex::new(State::new());
        let mut w = Failing(io::ErrorKind::BrokenPipe, 0);
        write_to(&state, &mut w, b"one\n");
        write_to(&state, &mut w, b"two\n");
        let s = state.lock().unwrap();
        assert!(s.closed && s.error.is_none());
        assert_eq!(w.1, 1, "nothing is written after the pipe closed");
    }

    #[test]
    fn other_errors_are_kept() {
        let state = Mutex::new(State::new());
        let mut w = Failing(io::ErrorKind::StorageFull, 0);
        write_to(&state, &mut w, b"one\n");
        write_to(&state, &mut w, b"two\n");
        let s = state.lock().unwrap();
        assert!(!s.closed);
        assert_eq!(s.error.as_ref().unwrap().kind(), io::ErrorKind::StorageFull);
        assert_eq!(w.1, 1);
    }
}
