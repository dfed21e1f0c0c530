//! Assertions: what a scenario checks at the end of a run, over the events,
//! metrics, agents and attacks it observed.
//!
//! Each assertion has one subject (a metric, a kind of event, a latency
//! percentile, agents alive, an attack's counter), an optional time window,
//! and bounds (`min`, `max`). Counters and event counts are taken over the
//! window (the change between its first and last sample); gauges are the
//! highest value seen in it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Cx;
use super::prom::{Metrics, Sample};
use crate::attack::stage::AttackCounters;
use crate::events::{Event, Record};
use crate::report::AssertionResult;

type Str = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAssert {
    name: Str,
    metric: Option<Str>,
    labels: Option<BTreeMap<String, String>>,
    events: Option<Str>,
    node: Option<Str>,
    reason: Option<Str>,
    latency: Option<Str>,
    percentile: Option<Spanned<f64>>,
    alive: Option<Spanned<Vec<String>>>,
    attack: Option<Str>,
    field: Option<Str>,
    from: Option<Str>,
    to: Option<Str>,
    per_second: Option<bool>,
    min: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
}

/// What an assertion measures.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// Sum over the series of `name` whose labels include `labels`.
    Metric {
        name: String,
        labels: BTreeMap<String, String>,
    },
    /// Events of `kind`, optionally of one node and (input-rejected) reason.
    Events {
        kind: String,
        node: Option<String>,
        reason: Option<String>,
    },
    /// A percentile of one node's message latency, in milliseconds.
    Latency { node: String, percentile: f64 },
    /// These agents are running and ready at the end (observed = how many
    /// are not).
    Alive { nodes: Vec<String> },
    /// A counter of a scenario attack (matched, acted, dropped, ...).
    Attack { name: String, field: String },
}

/// A checked assertion.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    pub name: String,
    pub subject: Subject,
    pub from: Option<Duration>,
    pub to: Option<Duration>,
    pub per_second: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

const ATTACK_FIELDS: &[&str] = &[
    "matched",
    "acted",
    "dropped",
    "delayed",
    "duplicated",
    "modified",
    "replayed",
    "injected",
    "unmodifiable",
];

fn field(c: &AttackCounters, name: &str) -> u64 {
    match name {
        "matched" => c.matched,
        "acted" => c.acted,
        "dropped" => c.dropped,
        "delayed" => c.delayed,
        "duplicated" => c.duplicated,
        "modified" => c.modified,
        "replayed" => c.replayed,
        "injected" => c.injected,
        _ => c.unmodifiable,
    }
}

type Failure = (Range<usize>, String);

/// Checks one `[[assert]]` against the scenario.
pub(crate) fn check(raw: &Spanned<RawAssert>, cx: &Cx) -> Result<Assertion, Failure> {
    let a = raw.get_ref();
    let at = |s: &Str, m: String| (s.span(), m);
    let node_ok = |s: &Str| -> Result<String, Failure> {
        if cx.topo.node_index(s.get_ref()).is_none() {
            return Err(at(s, format!("no node `{}` in the topology", s.get_ref())));
        }
        Ok(s.get_ref().clone())
    };
    let subjects = [
        a.metric.is_some(),
        a.events.is_some(),
        a.latency.is_some(),
        a.alive.is_some(),
        a.attack.is_some(),
    ];
    if subjects.iter().filter(|x| **x).count() != 1 {
        return Err((
            raw.span(),
            "an assertion needs exactly one of metric, events, latency, alive, attack".into(),
        ));
    }
    let subject = if let Some(m) = &a.metric {
        if !m.get_ref().starts_with("testbed_") {
            return Err(at(
                m,
                format!(
                    "`{}`: testbed's metrics start with testbed_ (docs/events.md lists them)",
                    m.get_ref()
                ),
            ));
        }
        Subject::Metric {
            name: m.get_ref().clone(),
            labels: a.labels.clone().unwrap_or_default(),
        }
    } else if let Some(k) = &a.events {
        if !Event::KINDS.contains(&k.get_ref().as_str()) {
            return Err(at(
                k,
                format!(
                    "unknown event kind `{}`; expected one of {}",
                    k.get_ref(),
                    Event::KINDS.join(", ")
                ),
            ));
        }
        let reason = a.reason.as_ref().map(|r| {
            if crate::events::Reason::ALL
                .iter()
                .any(|x| x.as_str() == r.get_ref())
            {
                Ok(r.get_ref().clone())
            } else {
                Err(at(r, format!("unknown reason `{}`", r.get_ref())))
            }
        });
        Subject::Events {
            kind: k.get_ref().clone(),
            node: a.node.as_ref().map(node_ok).transpose()?,
            reason: reason.transpose()?,
        }
    } else if let Some(n) = &a.latency {
        let p = a.percentile.as_ref().map_or(99.0, |p| *p.get_ref());
        if !(0.0..=100.0).contains(&p) {
            let span = a.percentile.as_ref().map_or(raw.span(), |p| p.span());
            return Err((span, "percentile must be from 0 to 100".into()));
        }
        Subject::Latency {
            node: node_ok(n)?,
            percentile: p,
        }
    } else if let Some(nodes) = &a.alive {
        for n in nodes.get_ref() {
            let Some(i) = cx.topo.node_index(n) else {
                return Err((nodes.span(), format!("no node `{n}` in the topology")));
            };
            if cx.topo.nodes[i].role.is_none() {
                return Err((nodes.span(), format!("node `{n}` runs no agent")));
            }
        }
        Subject::Alive {
            nodes: nodes.get_ref().clone(),
        }
    } else {
        let name = a.attack.as_ref().expect("one subject");
        if !cx.attacks.contains(name.get_ref()) {
            return Err(at(
                name,
                format!("no attack named `{}` in the timeline", name.get_ref()),
            ));
        }
        let f = a
            .field
            .as_ref()
            .map_or("acted".to_string(), |f| f.get_ref().clone());
        if !ATTACK_FIELDS.contains(&f.as_str()) {
            let span = a.field.as_ref().map_or(raw.span(), |f| f.span());
            return Err((
                span,
                format!(
                    "unknown attack field `{f}`; expected {}",
                    ATTACK_FIELDS.join(", ")
                ),
            ));
        }
        Subject::Attack {
            name: name.get_ref().clone(),
            field: f,
        }
    };
    let time = |s: &Option<Str>| -> Result<Option<Duration>, Failure> {
        s.as_ref()
            .map(|s| {
                let d = super::duration(s.get_ref()).map_err(|m| at(s, m))?;
                if d > cx.duration {
                    return Err(at(s, "after the end of the scenario".into()));
                }
                Ok(d)
            })
            .transpose()
    };
    let (from, to) = (time(&a.from)?, time(&a.to)?);
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err((raw.span(), "`from` must come before `to`".into()));
    }
    let (min, max) = (
        a.min.as_ref().map(|m| *m.get_ref()),
        a.max.as_ref().map(|m| *m.get_ref()),
    );
    if matches!(subject, Subject::Alive { .. }) {
        if min.is_some() || max.is_some() {
            return Err((raw.span(), "`alive` takes no min or max".into()));
        }
    } else if min.is_none() && max.is_none() {
        return Err((raw.span(), "an assertion needs `min`, `max` or both".into()));
    }
    Ok(Assertion {
        name: a.name.get_ref().clone(),
        subject,
        from,
        to,
        per_second: a.per_second.unwrap_or(false),
        min,
        max,
    })
}

/// Everything a run observed.
#[derive(Debug, Default)]
pub struct Observed {
    /// Scrapes of the lab's metrics, the first at the start of the run.
    pub samples: Vec<Sample>,
    /// The lab's events; `start_us` is the run's start (Unix µs).
    pub events: Vec<Record>,
    pub start_us: u64,
    /// Each agent: running and ready at the end.
    pub alive: BTreeMap<String, bool>,
    /// Each scenario attack's final counters.
    pub attacks: BTreeMap<String, AttackCounters>,
    /// How long the run lasted (the window's default end).
    pub elapsed: Duration,
}

impl Assertion {
    /// What it checks, in words.
    pub fn describe(&self) -> String {
        let labels = |l: &BTreeMap<String, String>| {
            if l.is_empty() {
                String::new()
            } else {
                format!(
                    "{{{}}}",
                    l.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        let what = match &self.subject {
            Subject::Metric { name, labels: l } => format!("metric {name}{}", labels(l)),
            Subject::Events { kind, node, reason } => {
                let mut l = BTreeMap::new();
                if let Some(n) = node {
                    l.insert("node".to_string(), n.clone());
                }
                if let Some(r) = reason {
                    l.insert("reason".to_string(), r.clone());
                }
                format!("events {kind}{}", labels(&l))
            }
            Subject::Latency { node, percentile } => {
                format!("p{percentile} latency of {node} (ms)")
            }
            Subject::Alive { nodes } => format!("agents alive at the end: {}", nodes.join(", ")),
            Subject::Attack { name, field } => format!("attack {name}: frames {field}"),
        };
        let window = match (self.from, self.to) {
            (None, None) => String::new(),
            (f, t) => format!(
                " from {} to {}",
                humantime::format_duration(f.unwrap_or_default()),
                t.map_or("the end".to_string(), |t| humantime::format_duration(t)
                    .to_string())
            ),
        };
        format!(
            "{what}{}{window}",
            if self.per_second { " per second" } else { "" }
        )
    }

    fn expected(&self) -> String {
        match (&self.subject, self.min, self.max) {
            (Subject::Alive { .. }, ..) => "alive".to_string(),
            (_, Some(a), Some(b)) if a == b => format!("== {a}"),
            (_, Some(a), Some(b)) => format!("{a} ..= {b}"),
            (_, Some(a), None) => format!(">= {a}"),
            (_, None, Some(b)) => format!("<= {b}"),
            (_, None, None) => String::new(),
        }
    }

    /// Evaluates the assertion against what the run observed.
    pub fn evaluate(&self, o: &Observed) -> AssertionResult {
        let from = self.from.unwrap_or_default();
        let to = self.to.unwrap_or(o.elapsed).min(o.elapsed);
        let seconds = (to.saturating_sub(from)).as_secs_f64().max(1e-3);
        let measured: Result<f64, String> = match &self.subject {
            Subject::Metric { name, labels } => metric(o, name, labels, from, to),
            Subject::Events { kind, node, reason } => {
                Ok(events(o, kind, node, reason, from, to) as f64)
            }
            Subject::Latency { node, percentile } => latency(o, node, *percentile, from, to),
            Subject::Alive { nodes } => {
                let dead: Vec<&String> = nodes
                    .iter()
                    .filter(|n| !o.alive.get(*n).copied().unwrap_or(false))
                    .collect();
                let passed = dead.is_empty();
                return AssertionResult {
                    name: self.name.clone(),
                    check: self.describe(),
                    passed,
                    observed: Some(dead.len() as f64),
                    expected: self.expected(),
                    message: if passed {
                        "all running and ready".to_string()
                    } else {
                        format!(
                            "not running or not ready: {}",
                            dead.iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                };
            }
            Subject::Attack { name, field: f } => o
                .attacks
                .get(name)
                .map(|c| field(c, f) as f64)
                .ok_or_else(|| format!("attack {name} never started")),
        };
        let result = |passed, observed, message| AssertionResult {
            name: self.name.clone(),
            check: self.describe(),
            passed,
            observed,
            expected: self.expected(),
            message,
        };
        match measured {
            Err(m) => result(false, None, m),
            Ok(v) => {
                let v = if self.per_second { v / seconds } else { v };
                let low = self.min.is_none_or(|m| v >= m);
                let high = self.max.is_none_or(|m| v <= m);
                let message = match (low, high) {
                    (true, true) => format!("observed {}", fmt(v)),
                    (false, _) => format!(
                        "observed {}, below the minimum {}",
                        fmt(v),
                        fmt(self.min.unwrap_or_default())
                    ),
                    (_, false) => format!(
                        "observed {}, above the maximum {}",
                        fmt(v),
                        fmt(self.max.unwrap_or_default())
                    ),
                };
                result(low && high, Some(v), message)
            }
        }
    }
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The samples at the window's ends: the last one at or before `from` (else
/// the first), and the last at or before `to`.
fn ends(o: &Observed, from: Duration, to: Duration) -> Option<(&Metrics, &Metrics)> {
    let at = |t: Duration| {
        o.samples
            .iter()
            .rev()
            .find(|s| s.at <= t + Duration::from_millis(500))
            .or(o.samples.first())
    };
    Some((&at(from)?.metrics, &at(to)?.metrics))
}

fn metric(
    o: &Observed,
    name: &str,
    labels: &BTreeMap<String, String>,
    from: Duration,
    to: Duration,
) -> Result<f64, String> {
    let (first, last) = ends(o, from, to).ok_or("no metrics were scraped")?;
    if last.is_gauge(name) {
        return o
            .samples
            .iter()
            .filter(|s| {
                s.at + Duration::from_millis(500) >= from && s.at <= to + Duration::from_millis(500)
            })
            .filter_map(|s| s.metrics.sum(name, labels))
            .reduce(f64::max)
            .ok_or_else(|| format!("no series {name} with those labels"));
    }
    let end = last.sum(name, labels);
    let start = first.sum(name, labels).unwrap_or(0.0);
    // A counter never seen is zero (no rejection of that reason, say).
    Ok(end.unwrap_or(0.0) - start)
}

fn events(
    o: &Observed,
    kind: &str,
    node: &Option<String>,
    reason: &Option<String>,
    from: Duration,
    to: Duration,
) -> usize {
    let (lo, hi) = (
        o.start_us + from.as_micros() as u64,
        o.start_us + to.as_micros() as u64,
    );
    o.events
        .iter()
        .filter(|r| r.ts_us >= lo && r.ts_us <= hi)
        .filter(|r| r.event.kind() == kind)
        .filter(|r| node.as_ref().is_none_or(|n| *n == r.node))
        .filter(|r| match (&r.event, reason) {
            (_, None) => true,
            (Event::InputRejected { reason: got, .. }, Some(want)) => got.as_str() == want,
            _ => false,
        })
        .count()
}

fn latency(
    o: &Observed,
    node: &str,
    percentile: f64,
    from: Duration,
    to: Duration,
) -> Result<f64, String> {
    let (first, last) = ends(o, from, to).ok_or("no metrics were scraped")?;
    let labels = BTreeMap::from([("node".to_string(), node.to_string())]);
    let end = last.buckets("testbed_latency_seconds", &labels);
    let start = first.buckets("testbed_latency_seconds", &labels);
    let counts: Vec<(f64, f64)> = end
        .iter()
        .map(|(le, c)| {
            let before = start.iter().find(|(l, _)| l == le).map_or(0.0, |(_, c)| *c);
            (*le, c - before)
        })
        .collect();
    let total = counts.last().map_or(0.0, |(_, c)| *c);
    if total <= 0.0 {
        return Err(format!(
            "{node} accepted no message in the window, so it has no latency"
        ));
    }
    let rank = total * percentile / 100.0;
    let mut lower = (0.0, 0.0);
    for &(le, c) in &counts {
        if c >= rank {
            if le.is_infinite() {
                return Ok(lower.0 * 1e3);
            }
            // Linear within the bucket, as Prometheus' histogram_quantile.
            let share = if c > lower.1 {
                (rank - lower.1) / (c - lower.1)
            } else {
                1.0
            };
            return Ok((lower.0 + (le - lower.0) * share) * 1e3);
        }
        lower = (le, c);
    }
    Ok(lower.0 * 1e3)
}
