//! A progress line for long jobs (loading a breach corpus, importing many users or their
//! UIDLs, copying a directory): on a
//! terminal, one line on standard error redrawn at most five times a second; elsewhere
//! (a pipe, a log, a script) nothing, so output stays the same as without it.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// How often the line is redrawn at most.
const EVERY: Duration = Duration::from_millis(200);

/// One job's progress line.
pub struct Progress {
    label: String,
    total: u64,
    shown: bool,
    on_terminal: bool,
    last: Option<Instant>,
}

impl Progress {
    /// A line for `label`, counting up to `total` (bytes, lines, ...).
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        Self::to(label, total, std::io::stderr().is_terminal())
    }

    fn to(label: impl Into<String>, total: u64, on_terminal: bool) -> Self {
        Progress {
            label: label.into(),
            total,
            shown: false,
            on_terminal,
            last: None,
        }
    }

    /// What the line says at `done` of the total.
    fn text(&self, done: u64) -> String {
        let pct = done
            .saturating_mul(100)
            .checked_div(self.total)
            .unwrap_or(100);
        format!("{}: {pct}% ({done} of {})", self.label, self.total)
    }

    /// Sets the total, when it is known only once the job has begun.
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
    }

    /// `done` so far; redraws the line if it is time.
    pub fn set(&mut self, done: u64) {
        if !self.on_terminal || self.last.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        self.shown = true;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{}", self.text(done));
        let _ = err.flush();
    }

    /// Prints `line` above the progress line, which is drawn again at the next
    /// [`Progress::set`] that the redraw interval allows.
    pub fn println(&mut self, line: &str) {
        self.clear();
        eprintln!("{line}");
    }

    /// Removes the line.
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_how_far() {
        let p = Progress::to("loading", 200, false);
        assert_eq!(p.text(50), "loading: 25% (50 of 200)");
        assert_eq!(Progress::to("x", 0, false).text(0), "x: 100% (0 of 0)");
    }

    #[test]
    fn nothing_is_drawn_off_a_terminal() {
        let mut p = Progress::to("loading", 10, false);
        p.set(5);
        assert!(!p.shown && p.last.is_none());
    }
}
