//! Reading the lab's `/metrics` (Prometheus text format 0.0.4) during a run:
//! scrape, parse, sum series by labels.
//!
//! Only what testbed itself exports is parsed: `# TYPE` lines, and samples
//! `name{label="value",...} number` with escaped quotes in values. Anything
//! else is skipped, and limits bound what a scrape may hold.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest scrape read.
pub const MAX_SCRAPE_BYTES: u64 = 32 << 20;

/// One parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Family name → `counter`, `gauge`, `histogram`, ...
    types: BTreeMap<String, String>,
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// A scrape and when it was taken (from the start of the run).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    pub metrics: Metrics,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    m.types.insert(name.to_string(), kind.trim().to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(s) = sample(line) {
                m.series.push(s);
            }
        }
        m
    }

    /// Whether `name` is (part of) a gauge family.
    pub fn is_gauge(&self, name: &str) -> bool {
        self.types.get(name).is_some_and(|t| t == "gauge")
    }

    /// The sum of every series called `name` whose labels include `labels`;
    /// `None` when there is none.
    pub fn sum(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.series
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(k) == Some(v)))
            .map(|(_, _, v)| *v)
            .reduce(|a, b| a + b)
    }

    /// A histogram's cumulative buckets `(le, count)`, summed over the series
    /// matching `labels`, in increasing `le`.
    pub fn buckets(&self, family: &str, labels: &BTreeMap<String, String>) -> Vec<(f64, f64)> {
        let name = format!("{family}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (n, l, v) in &self.series {
            if *n != name || !labels.iter().all(|(k, val)| l.get(k) == Some(val)) {
                continue;
            }
            let Some(le) = l.get("le").and_then(|s| parse_number(s)) else {
                continue;
            };
            // Order by value; f64 bits of non-negative numbers sort as the numbers.
            let e = by_le.entry(le.max(0.0).to_bits()).or_insert((le, 0.0));
            e.1 += v;
        }
        by_le.into_values().collect()
    }
}

fn parse_number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let value_text = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            // label name
            let start = chars.peek()?.0;
            if body[start..].starts_with('}') {
                end = Some(start + 1);
                break;
            }
            let eq = body[start..].find('=')? + start;
            let key = body[start..eq].trim_start_matches(',').trim().to_string();
            while chars.peek()?.0 <= eq {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
            if let Some(&(_, ',')) = chars.peek() {
                chars.next();
            }
            if let Some(&(i, '}')) = chars.peek() {
                end = Some(i + 1);
                break;
            }
        }
        &body[end?..]
    } else {
        rest
    };
    let value = parse_number(value_text.split_whitespace().next()?)?;
    Some((name.to_string(), labels, value))
}

/// GETs `/metrics` from `addr`.
pub fn scrape(addr: SocketAddr) -> std::io::Result<Metrics> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: testbed\r\n\r\n")?;
    let mut body = String::new();
    s.take(MAX_SCRAPE_BYTES).read_to_string(&mut body)?;
    let text = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(Metrics::parse(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP testbed_messages_rejected_total Inputs refused
# TYPE testbed_messages_rejected counter
testbed_messages_rejected_total{lab="l",node="controller",reason="replayed"} 4
testbed_messages_rejected_total{lab="l",node="controller",reason="stale"} 2
testbed_messages_rejected_total{lab="l",node="other",reason="replayed"} 1
# TYPE testbed_agent_resident_bytes gauge
testbed_agent_resident_bytes{lab="l",node="controller"} 5.5e6
# TYPE testbed_latency_seconds histogram
testbed_latency_seconds_bucket{lab="l",node="c",le="0.01"} 5
testbed_latency_seconds_bucket{lab="l",node="c",le="0.1"} 9
testbed_latency_seconds_bucket{lab="l",node="c",le="+Inf"} 10
testbed_odd{lab="a \"quoted\", name"} 3
"#;

    #[test]
    fn sums_series_by_labels_and_reads_types_and_buckets() {
        let m = Metrics::parse(TEXT);
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(m.sum("testbed_messages_rejected_total", &l(&[])), Some(7.0));
        assert_eq!(
            m.sum(
                "testbed_messages_rejected_total",
                &l(&[("reason", "replayed")])
            ),
            Some(5.0)
        );
        assert_eq!(m.sum("testbed_nothing", &l(&[])), None);
        assert!(m.is_gauge("testbed_agent_resident_bytes"));
        assert_eq!(
            m.buckets("testbed_latency_seconds", &l(&[("node", "c")])),
            [(0.01, 5.0), (0.1, 9.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!(
            m.sum("testbed_odd", &l(&[("lab", "a \"quoted\", name")])),
            Some(3.0)
        );
    }
}
