//! Log lines for systemd's journal: each prefixed with its syslog priority, as
//! sd-daemon(3) describes for programs whose standard error journald reads.

use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Changes the log's filter: set once by `init_logging`.
type SetLevel = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();
/// Set when `POPLAR_LOG` chose the filter: `log.level` is then not used.
static FIXED: AtomicBool = AtomicBool::new(false);

pub fn set_level_handle(set: impl Fn(EnvFilter) -> Result<(), String> + Send + Sync + 'static) {
    let _ = SET_LEVEL.set(Box::new(set));
}

pub fn set_fixed(fixed: bool) {
    FIXED.store(fixed, Ordering::Relaxed);
}

/// `log.level` as a filter, or why it is not one.
pub fn parse_level(level: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("log.level = {level:?}: {e}"))
}

/// Puts `log.level` in force, unless `POPLAR_LOG` set the filter.
pub fn apply_level(level: &str) -> anyhow::Result<()> {
    if FIXED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let filter = parse_level(level)?;
    if let Some(set) = SET_LEVEL.get() {
        set(filter).map_err(|e| anyhow::anyhow!("changing the log level: {e}"))?;
    }
    Ok(())
}

/// Whether standard error is the stream systemd connected to the journal: its device
/// and inode are those `JOURNAL_STREAM` names (a child whose standard error was
/// redirected elsewhere inherits the variable, so its presence alone says nothing).
pub fn stderr_is_the_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == journal_stream(meta.dev(), meta.ino())
}

/// Writes one informational line to standard error outside the log (which
/// configuration a command uses), with the journal's `<6>` when standard error is the
/// journal, so that every line there carries a priority.
pub fn say(text: &str) {
    if stderr_is_the_journal() {
        eprintln!("{}{text}", prefix(&Level::INFO));
    } else {
        eprintln!("{text}");
    }
}

/// `JOURNAL_STREAM`'s form: device and inode, in decimal.
fn journal_stream(dev: u64, ino: u64) -> String {
    format!("{dev}:{ino}")
}

/// The sd-daemon(3) prefix for a level: `<3>` error, `<4>` warning, `<6>` info,
/// `<7>` debug and trace.
fn prefix(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Wraps an event format, writing the priority prefix first.
pub struct Priority<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(prefix(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_level_that_is_not_one_is_refused() {
        assert!(parse_level("info").is_ok());
        assert!(parse_level("warn,server::conn=debug").is_ok());
        assert!(parse_level("server=loud").is_err());
    }

    #[test]
    fn prefixes_follow_sd_daemon() {
        assert_eq!(prefix(&Level::ERROR), "<3>");
        assert_eq!(prefix(&Level::WARN), "<4>");
        assert_eq!(prefix(&Level::INFO), "<6>");
        assert_eq!(prefix(&Level::DEBUG), "<7>");
    }

    #[test]
    fn the_stream_is_device_and_inode() {
        assert_eq!(journal_stream(8, 12345), "8:12345");
    }
}
