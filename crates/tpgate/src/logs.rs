//! The daemon's logging: the stderr formatter, a log level that can change while running
//! (`PATCH /configs {"log-level": ...}`), and a tracing layer that fans every event out to
//! the controller's `/logs` subscribers through a bounded broadcast channel (a subscriber
//! that falls behind loses lines, never slows the daemon down).
//!
//! Deliberately not here: how `/logs` streams them (`controller::streams`).

use std::fmt::Write as _;
use std::sync::OnceLock;

use tokio::sync::broadcast;
use tpgate_core::config::LogLevel;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Lines held for slow subscribers before they lose the oldest.
const BACKLOG: usize = 1024;

/// One log event as `/logs` sends it.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) level: LogLevel,
    /// The message and its fields, as the stderr line shows them.
    pub(crate) payload: String,
}

/// mihomo's level names (`/logs?level=`, `log-level`).
pub(crate) fn level_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Silent => "silent",
        LogLevel::Error => "error",
        LogLevel::Warning => "warning",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    }
}

pub(crate) fn parse_level(s: &str) -> Option<LogLevel> {
    [
        LogLevel::Silent,
        LogLevel::Error,
        LogLevel::Warning,
        LogLevel::Info,
        LogLevel::Debug,
    ]
    .into_iter()
    .find(|&l| level_name(l) == s)
}

/// Higher is more verbose: a subscriber at `info` gets `info`, `warning` and `error`.
pub(crate) fn verbosity(l: LogLevel) -> u8 {
    match l {
        LogLevel::Silent => 0,
        LogLevel::Error => 1,
        LogLevel::Warning => 2,
        LogLevel::Info => 3,
        LogLevel::Debug => 4,
    }
}

fn directive(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Silent => "off",
        LogLevel::Error => "error",
        LogLevel::Warning => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    }
}

struct Global {
    lines: broadcast::Sender<Line>,
    filter: Option<reload::Handle<EnvFilter, Registry>>,
    level: std::sync::Mutex<LogLevel>,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();

fn global() -> &'static Global {
    GLOBAL.get_or_init(|| Global {
        lines: broadcast::channel(BACKLOG).0,
        filter: None,
        level: std::sync::Mutex::new(LogLevel::Info),
    })
}

/// Installs the process's subscriber: `level` (or `TPGATE_LOG`) to stderr and to `/logs`.
pub(crate) fn init(level: LogLevel) {
    let filter =
        EnvFilter::try_from_env("TPGATE_LOG").unwrap_or_else(|_| EnvFilter::new(directive(level)));
    let (filter, handle) = reload::Layer::new(filter);
    let _ = GLOBAL.set(Global {
        lines: broadcast::channel(BACKLOG).0,
        filter: Some(handle),
        level: std::sync::Mutex::new(level),
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(FanOut)
        .init();
}

/// The level in force (what `GET /configs` reports).
pub(crate) fn level() -> LogLevel {
    global().level.lock().map_or(LogLevel::Info, |l| *l)
}

/// Changes the level of stderr and `/logs` at once; false when logging was not set up by
/// [`init`] (in-process tests), where only the reported level changes.
pub(crate) fn set_level(level: LogLevel) -> bool {
    let g = global();
    if let Ok(mut l) = g.level.lock() {
        *l = level;
    }
    g.filter
        .as_ref()
        .is_some_and(|h| h.reload(EnvFilter::new(directive(level))).is_ok())
}

/// A receiver of every line logged from now on.
pub(crate) fn subscribe() -> broadcast::Receiver<Line> {
    global().lines.subscribe()
}

#[cfg(test)]
/// Sends `line` to the `/logs` subscribers (what the layer does for each event).
pub(crate) fn publish(line: Line) {
    let _ = global().lines.send(line);
}

/// The layer that feeds [`subscribe`]rs. Formatting costs nothing while nobody listens.
struct FanOut;

impl<S: Subscriber> Layer<S> for FanOut {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let g = global();
        if g.lines.receiver_count() == 0 {
            return;
        }
        let level = match *event.metadata().level() {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warning,
            Level::INFO => LogLevel::Info,
            Level::DEBUG | Level::TRACE => LogLevel::Debug,
        };
        let mut text = Text(String::new());
        event.record(&mut text);
        let _ = g.lines.send(Line {
            level,
            payload: text.0,
        });
    }
}

/// `message key=value key=value`, as the stderr formatter writes it.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !rest.is_empty() {
                self.0.push(' ');
                self.0.push_str(&rest);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_fields() {
        for l in ["silent", "error", "warning", "info", "debug"] {
            assert_eq!(parse_level(l).map(level_name), Some(l));
        }
        assert_eq!(parse_level("warn"), None);
        assert!(verbosity(LogLevel::Debug) > verbosity(LogLevel::Info));
        let sub = tracing_subscriber::registry().with(FanOut);
        let mut rx = subscribe();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(port = 7893, name = "x", "ready: intercepting");
        });
        let line = std::iter::from_fn(|| rx.try_recv().ok())
            .find(|l| l.payload.starts_with("ready"))
            .expect("the line");
        assert_eq!(line.level, LogLevel::Info);
        assert_eq!(line.payload, "ready: intercepting port=7893 name=x");
    }
}
