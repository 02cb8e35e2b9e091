//! Human output: the output format switch, docker-style borderless tables,
//! and the words and units people read (sizes, ages, short digests).

use std::io::IsTerminal;
use std::time::Duration;

use clap::ValueEnum;
use comfy_table::{Table, presets};

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences for people
    #[default]
    Table,
    /// The daemon's answers as JSON, for scripts
    Json,
}

impl OutputFormat {
    pub fn is_json(self) -> bool {
        self == Self::Json
    }

    /// Progress bars and spinners: only for people watching a terminal.
    pub fn shows_progress(self) -> bool {
        self == Self::Table && std::io::stderr().is_terminal()
    }
}

/// A borderless table with docker's look: upper-case headers, columns three
/// spaces apart, no frame.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header(header);
    for column in table.column_iter_mut() {
        column.set_padding((0, 3));
    }
    table
}

/// Prints a table on stdout without the trailing padding of its last column.
pub fn print_table(table: &Table) {
    for line in table.lines() {
        println!("{}", line.trim_end());
    }
}

/// Sizes as people read them: one decimal, binary units (`2.1 GiB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)] // one decimal is all that is shown
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // 1023.96 KiB would round to "1024.0 KiB"; show the next unit instead.
    if value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `sha256:0123456789abcdef…` -> `0123456789ab`, like docker's IMAGE ID.
pub fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// An RFC 3339 time as an age (`3 hours ago`), or the text itself when it
/// does not parse; `now` is a parameter so the words can be tested.
pub fn age(rfc3339: &str, now: jiff::Timestamp) -> String {
    let Ok(then) = rfc3339.parse::<jiff::Timestamp>() else {
        return rfc3339.to_owned();
    };
    let elapsed = Duration::try_from(now.duration_since(then)).unwrap_or_default();
    if elapsed < Duration::from_secs(1) {
        return "just now".to_owned();
    }
    format!("{} ago", indicatif::HumanDuration(elapsed))
}

/// An empty string as `-` so that table columns never look shifted.
pub fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(2_254_857_830), "2.1 GiB");
        assert_eq!(human_size(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn digests_shorten_to_twelve_hex_digits() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            "0123456789ab"
        );
        assert_eq!(short_digest("abc"), "abc");
    }

    #[test]
    fn ages_are_words() {
        let now: jiff::Timestamp = "2025-01-01T12:00:00Z".parse().expect("timestamp");
        assert_eq!(age("2025-01-01T09:00:00Z", now), "3 hours ago");
        assert_eq!(age("2025-01-01T12:00:00Z", now), "just now");
        assert_eq!(age("2025-01-01T12:00:05Z", now), "just now");
        assert_eq!(age("yesterday", now), "yesterday");
    }

    #[test]
    fn tables_have_no_frame_and_no_trailing_spaces() {
        let mut table = table(["NAME", "STATE"]);
        table.add_row(["web", "running"]);
        let lines: Vec<String> = table
            .lines()
            .map(|line| line.trim_end().to_owned())
            .collect();
        assert_eq!(lines, ["NAME   STATE", "web    running"]);
    }
}
