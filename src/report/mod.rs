//! The result of one scenario run and the three files written from it:
//! `report.json` (the [`RunReport`] itself), `junit.xml` (for CI systems) and
//! `report.html` (self-contained, for people). [`RunReport::verdict_table`]
//! renders the same verdict for a terminal. `docs/reports.md` describes the
//! files.

mod html;
mod junit;
mod plot;
mod text;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything known about one run of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Scenario description (may be empty).
    pub description: String,
    /// Scenario file path as given.
    pub file: String,
    /// Topology file path.
    pub topology: String,
    /// Lab name.
    pub lab: String,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// Start time, RFC 3339 UTC.
    pub started: String,
    /// The scenario's planned duration in seconds.
    pub duration_s: f64,
    /// Wall-clock seconds of the whole run, teardown included.
    pub wall_s: f64,
    /// What is needed to reproduce the run.
    pub environment: Environment,
    /// Pass iff every assertion passed and there was no error
    /// (see [`Verdict::of`]).
    pub verdict: Verdict,
    /// Why the run could not complete (the lab failed to come up, ...).
    pub error: Option<String>,
    pub assertions: Vec<AssertionResult>,
    pub timeline: Vec<TimelineEntry>,
    pub attacks: Vec<AttackSummary>,
    pub series: Vec<Series>,
    /// The command line that reproduces this run.
    pub reproduce: String,
}

/// The machine and build a run happened on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub testbed_version: String,
    pub git_commit: Option<String>,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Link backend: `userspace` or `kernel`.
    pub backend: String,
    pub hostname: String,
}

/// The outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

impl Verdict {
    /// Pass iff there was no run error and every assertion passed.
    pub fn of(assertions: &[AssertionResult], error: Option<&str>) -> Verdict {
        if error.is_none() && assertions.iter().all(|a| a.passed) {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    /// `PASS` or `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One evaluated assertion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssertionResult {
    /// The user's name for it, unique within a scenario.
    pub name: String,
    /// What it checks, in words, e.g.
    /// `events input-rejected{node=controller, reason=replayed} >= 10`.
    pub check: String,
    pub passed: bool,
    /// The measured value (None when there was nothing to measure).
    pub observed: Option<f64>,
    /// The expectation, e.g. `>= 10`, `== 0`, `alive`.
    pub expected: String,
    /// One line: why it failed or what was seen.
    pub message: String,
}

/// One scheduled action of the scenario and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Seconds since the start.
    pub at_s: f64,
    pub action: String,
    /// `ok` or the error.
    pub outcome: String,
}

/// One attack of the run and what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackSummary {
    pub id: u64,
    pub kind: String,
    /// Where it ran (node or link).
    pub on: String,
    pub filter: String,
    pub started_s: f64,
    pub stopped_s: Option<f64>,
    /// Packets the filter matched.
    pub matched: u64,
    /// Packets the attack acted on.
    pub acted: u64,
    /// pcapng file name in the report folder.
    pub capture: Option<String>,
}

/// A measured quantity over the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub unit: String,
    /// (seconds since start, value).
    pub points: Vec<(f64, f64)>,
}

/// Writing a report failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("encoding report.json: {0}")]
    Json(#[from] serde_json::Error),
}

impl RunReport {
    /// Writes report.json, junit.xml and report.html into `dir` (created if
    /// missing). Each file is written to a temporary name in `dir` and
    /// renamed, so a reader never sees half a file.
    pub fn write(&self, dir: &Path) -> Result<(), ReportError> {
        fs::create_dir_all(dir).map_err(|source| ReportError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        write_atomic(&dir.join("report.json"), &json)?;
        write_atomic(&dir.join("junit.xml"), self.junit().as_bytes())?;
        write_atomic(&dir.join("report.html"), self.html().as_bytes())
    }

    /// The JUnit XML report: one testsuite named after the scenario, one
    /// testcase per assertion, and a failed testcase `run` for a run error.
    pub fn junit(&self) -> String {
        junit::render(self)
    }

    /// The self-contained HTML report (no scripts, no external resources).
    pub fn html(&self) -> String {
        html::render(self)
    }

    /// The verdict table for a terminal: one row per assertion (PASS/FAIL,
    /// name, expected, observed, message), then a summary line
    /// `PASS: 7/7 assertions held` or
    /// `FAIL: 2 of 7 assertions failed: name1, name2`. With `color`, PASS is
    /// green and FAIL red.
    pub fn verdict_table(&self, color: bool) -> String {
        text::render(self, color)
    }

    /// Names of the assertions that failed, in order.
    fn failed_names(&self) -> Vec<&str> {
        self.assertions
            .iter()
            .filter(|a| !a.passed)
            .map(|a| a.name.as_str())
            .collect()
    }
}

/// Write `bytes` to `.NAME.tmp` beside `path`, fsync, and rename it to `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        ReportError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// A measured value for people: integers without decimals, others with up to
/// three, `-` when absent or not finite.
fn format_value(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format_number(v),
        _ => "-".to_string(),
    }
}

/// A finite number with at most three decimals and no trailing zeros.
fn format_number(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Seconds for a table cell: `12.5 s`.
fn format_seconds(v: f64) -> String {
    if v.is_finite() {
        format!("{} s", format_number(v))
    } else {
        "-".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_number(12.0), "12");
        assert_eq!(format_number(-3.0), "-3");
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(2.0 / 3.0), "0.667");
        assert_eq!(format_number(-0.0001), "0");
        assert_eq!(format_value(None), "-");
        assert_eq!(format_value(Some(f64::NAN)), "-");
        assert_eq!(format_value(Some(f64::INFINITY)), "-");
        assert_eq!(format_seconds(1.25), "1.25 s");
    }

    #[test]
    fn verdict_of() {
        let a = |passed| AssertionResult {
            name: "a".into(),
            check: String::new(),
            passed,
            observed: None,
            expected: String::new(),
            message: String::new(),
        };
        assert_eq!(Verdict::of(&[], None), Verdict::Pass);
        assert_eq!(Verdict::of(&[a(true), a(true)], None), Verdict::Pass);
        assert_eq!(Verdict::of(&[a(true), a(false)], None), Verdict::Fail);
        assert_eq!(Verdict::of(&[a(true)], Some("lab down")), Verdict::Fail);
    }
}
