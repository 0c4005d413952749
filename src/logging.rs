//! Logging: a tracing subscriber writing to stderr, pretty or one JSON object
//! per line (`logging.format`), filtered by `logging.level` unless `RUST_LOG`
//! is set. Credentials never reach a log line: the request span records the
//! route pattern, never the raw path or query.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

/// Reads a filter (`logging.level`, `RUST_LOG`) with field values matched
/// as plain text, not compiled as regular expressions: a directive such as
/// `palaver[{f=E.....}]` would otherwise build an automaton exponential in
/// its length (the config fuzz target's one timeout: 28 s and counting for
/// a 382-byte config). Nothing in palaver's logs needs a pattern there.
pub fn filter(level: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    filter_builder().parse(level)
}

fn filter_builder() -> tracing_subscriber::filter::Builder {
    EnvFilter::builder().with_regex(false)
}

pub fn init(config: &LoggingConfig) {
    let filter = filter_builder()
        .try_from_env()
        .or_else(|_| filter(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, not for journald or a file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests running two servers in one process) is harmless.
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field values are text, not patterns: one that is no valid regular
    /// expression is accepted (it would be refused if compiled), and so is
    /// the config fuzz target's timeout, whose pattern would take an
    /// exponential automaton.
    #[test]
    fn field_values_in_a_filter_are_text_not_patterns() {
        let not_a_regex = "palaver[{reason=(}]=debug";
        assert!(
            EnvFilter::try_new(not_a_regex).is_err(),
            "compiled as a regex"
        );
        assert!(filter(not_a_regex).is_ok());
        let fuzzed = format!("palaver=debug,nap[{{sx=EEEEEE{}Eyyy}}]", ".".repeat(70));
        assert!(filter(&fuzzed).is_ok());
        assert!(filter("palaver=debug,,=").is_err(), "still a parser");
    }
}
