//! Logging: JSON lines through `tracing`, level from `LOG_LEVEL`, each line cut at
//! `LOG_MAX_LEN` bytes. Callers never put user data, phone numbers or keys in fields
//! (invariant 12); [`mask_phone`] is the one way a number may appear.

use std::io::Write;

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

use crate::config::LogConfig;

/// Crates whose verbose levels print request data (`tokio_postgres` logs query parameters at
/// DEBUG, i.e. phone numbers and user data): capped at INFO whatever `LOG_LEVEL` says.
const CAPPED: &str =
    "tokio_postgres=info,postgres_protocol=info,hyper=info,hyper_util=info,h2=info,redis=info";

/// Maps a GES level name (TRACE … FATAL) or an `EnvFilter` directive to a directive.
pub fn level_directive(level: &str) -> Option<String> {
    let lower = level.trim().to_ascii_lowercase();
    let base = match lower.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" => lower,
        "fatal" => "error".into(),
        _ if lower.contains('=') => lower,
        _ => return None,
    };
    Some(format!("{base},{CAPPED}"))
}

/// Where log lines go: servers log to stdout (collected by the platform); command-line
/// subcommands log to stderr so their stdout stays machine-readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Standard output: the servers (the platform collects it).
    Stdout,
    /// Standard error: the CLI subcommands, whose stdout carries JSON.
    Stderr,
}

/// Installs the global subscriber (once; later calls are no-ops, as in tests).
pub fn init(cfg: &LogConfig, target: Target) {
    let directive = level_directive(&cfg.level).unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = Truncating {
        max: cfg.max_len,
        target,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = if cfg.format == "text" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
}

/// Shows only the last 4 digits of a phone number.
pub fn mask_phone(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits.iter().skip(digits.len().saturating_sub(4)).collect();
    format!("***{tail}")
}

/// `MakeWriter` that buffers one event and writes it cut to `max` bytes.
struct Truncating {
    max: usize,
    target: Target,
}

impl<'a> MakeWriter<'a> for Truncating {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            max: self.max,
            target: self.target,
            buf: Vec::with_capacity(256),
        }
    }
}

struct LineWriter {
    max: usize,
    target: Target,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.buf.len() > self.max {
            const MARK: &[u8] = b" [truncated]\n";
            let mut cut = self.max.saturating_sub(MARK.len());
            while cut > 0 && (self.buf[cut] & 0xC0) == 0x80 {
                cut -= 1; // stay on a UTF-8 boundary
            }
            self.buf.truncate(cut);
            self.buf.extend_from_slice(MARK);
        }
        let written = match self.target {
            Target::Stdout => std::io::stdout().lock().write_all(&self.buf),
            Target::Stderr => std::io::stderr().lock().write_all(&self.buf),
        };
        if written.is_err() {
            ::metrics::counter!(crate::metrics::LOGGING_FAILURE).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_masking() {
        assert!(level_directive("FATAL").unwrap().starts_with("error,"));
        assert!(level_directive("Debug").unwrap().starts_with("debug,"));
        assert!(
            level_directive("TRACE")
                .unwrap()
                .contains("tokio_postgres=info")
        );
        assert_eq!(level_directive("LOUD"), None);
        assert_eq!(mask_phone("+1 555 010 9876"), "***9876");
        assert_eq!(mask_phone("12"), "***12");
    }
}
