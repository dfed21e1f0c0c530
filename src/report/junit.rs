//! `junit.xml`: the shape Jenkins, GitLab and GitHub Actions read.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{AssertionResult, RunReport, format_value};

/// One `<testsuite>` named after the scenario, one `<testcase>` per assertion
/// (failing ones with `<failure type="assertion">`), and a failed testcase
/// `run` for a run error.
pub(super) fn render(r: &RunReport) -> String {
    let wall = seconds(r.wall_s);
    let env = &r.environment;

    let mut suite = TestSuite::new(r.scenario.as_str());
    suite.set_time(wall);
    suite.add_properties([
        Property::new("seed", r.seed.to_string()),
        Property::new("lab", r.lab.as_str()),
        Property::new("topology", r.topology.as_str()),
        Property::new("file", r.file.as_str()),
        Property::new("started", r.started.as_str()),
        Property::new("testbed_version", env.testbed_version.as_str()),
        Property::new("git_commit", env.git_commit.as_deref().unwrap_or("")),
        Property::new("kernel", env.kernel.as_str()),
        Property::new("backend", env.backend.as_str()),
        Property::new("hostname", env.hostname.as_str()),
    ]);

    for a in &r.assertions {
        suite.add_test_case(case(&r.scenario, &a.name, status(a), a));
    }
    if let Some(error) = &r.error {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
        status
            .set_message(first_line(error))
            .set_type("run")
            .set_description(format!("the run did not complete: {error}"));
        let mut run = TestCase::new("run", status);
        run.set_classname(r.scenario.as_str())
            .set_time(Duration::ZERO);
        suite.add_test_case(run);
    }

    let mut report = Report::new(r.scenario.as_str());
    report.set_time(wall);
    report.add_test_suite(suite);
    // Serializing to memory only fails on I/O errors, which a Vec never has.
    report
        .to_string()
        .expect("a JUnit report serializes to memory")
}

fn case(scenario: &str, name: &str, status: TestCaseStatus, a: &AssertionResult) -> TestCase {
    let mut case = TestCase::new(name, status);
    case.set_classname(scenario).set_time(Duration::ZERO);
    if a.passed && !a.message.is_empty() {
        case.set_system_out(a.message.as_str());
    }
    case
}

fn status(a: &AssertionResult) -> TestCaseStatus {
    if a.passed {
        return TestCaseStatus::success();
    }
    let observed = format_value(a.observed);
    let message = if a.message.is_empty() {
        format!("expected {}, observed {observed}", a.expected)
    } else {
        first_line(&a.message).to_string()
    };
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
    status
        .set_message(message)
        .set_type("assertion")
        .set_description(format!(
            "check: {}\nexpected: {}\nobserved: {observed}\n{}",
            a.check, a.expected, a.message
        ));
    status
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Seconds as a Duration; zero for negative or non-finite values.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}
