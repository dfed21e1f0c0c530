//! The verdict table for a terminal.

use super::{RunReport, Verdict, format_value};

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const BOLD_GREEN: &str = "\x1b[1;32m";
const BOLD_RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

/// Columns: result, name, expected, observed, message (unpadded, last).
/// A run error adds a failed row `run`.
pub(super) fn render(r: &RunReport, color: bool) -> String {
    let mut rows: Vec<[String; 5]> = r
        .assertions
        .iter()
        .map(|a| {
            [
                label(a.passed).to_string(),
                clean(&a.name),
                clean(&a.expected),
                format_value(a.observed),
                clean(&a.message),
            ]
        })
        .collect();
    if let Some(error) = &r.error {
        rows.push([
            label(false).to_string(),
            "run".to_string(),
            "-".to_string(),
            "-".to_string(),
            clean(error),
        ]);
    }

    let header = ["RESULT", "NAME", "EXPECTED", "OBSERVED", "MESSAGE"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }

    let mut out = String::new();
    for (i, row) in std::iter::once(&header).chain(&rows).enumerate() {
        let mut line = String::new();
        for (col, cell) in row.iter().enumerate() {
            if col == 0 && i > 0 && color {
                let c = if cell == "PASS" { GREEN } else { RED };
                line.push_str(&format!("{c}{cell}{RESET}"));
            } else {
                line.push_str(cell);
            }
            if let Some(&w) = widths.get(col) {
                let pad = w - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }

    let summary = summary(r);
    if color {
        let c = if r.verdict == Verdict::Pass {
            BOLD_GREEN
        } else {
            BOLD_RED
        };
        out.push_str(&format!("{c}{summary}{RESET}\n"));
    } else {
        out.push_str(&summary);
        out.push('\n');
    }
    out
}

/// `PASS: 7/7 assertions held` or `FAIL: 2 of 7 assertions failed: a, b`,
/// led by the run error when there is one.
pub(super) fn summary(r: &RunReport) -> String {
    let total = r.assertions.len();
    let failed = r.failed_names();
    let verdict = r.verdict.label();
    let counts = if failed.is_empty() {
        format!("{total}/{total} assertions held")
    } else {
        let names: Vec<String> = failed.iter().map(|n| clean(n)).collect();
        format!(
            "{} of {total} assertions failed: {}",
            failed.len(),
            names.join(", ")
        )
    };
    match &r.error {
        Some(error) => format!(
            "{verdict}: the run did not complete: {}; {counts}",
            clean(error)
        ),
        None => format!("{verdict}: {counts}"),
    }
}

fn label(passed: bool) -> &'static str {
    if passed { "PASS" } else { "FAIL" }
}

/// One line without control characters, so user text cannot break the table
/// or send escape sequences to the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(clean("a\nb\x1b[31mc\t"), "a b [31mc ");
    }
}
