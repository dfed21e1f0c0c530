//! Metrics: each agent keeps cumulative [`NodeMetrics`] and sends them to the
//! supervisor every second; the supervisor's [`Board`] holds the latest of
//! every node and serves them in the Prometheus text format (prometheus-client
//! encoders), per node and aggregated per role.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::events::Reason;

/// Upper bounds (seconds) of the latency and RTT histogram buckets; a last
/// `+Inf` bucket is implied.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram over [`BUCKETS`]: `counts[i]` observations fell in bucket `i`
/// (not cumulative), the last entry counting those above every bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS.len() + 1],
            sum: 0.0,
        }
    }
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let i = BUCKETS.partition_point(|b| *b < seconds);
        self.counts[i] += 1;
        self.sum += seconds;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// Has the shape [`BUCKETS`] asks for (what an agent sends is checked).
    fn well_formed(&self) -> bool {
        self.counts.len() == BUCKETS.len() + 1 && self.sum.is_finite() && self.sum >= 0.0
    }

    /// (upper bound, count in that bucket alone), as the encoder wants them.
    fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// One agent's counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMetrics {
    /// Application messages sent (readings, heartbeats, ...).
    pub sent: u64,
    /// Application messages received and accepted.
    pub received: u64,
    /// Inputs refused, by reason.
    pub rejected: BTreeMap<Reason, u64>,
    /// End-to-end latency of accepted messages (sender's clock to receipt).
    pub latency: Histogram,
    /// QUIC's smoothed RTT of each connection, sampled once a second.
    pub quic_rtt: Histogram,
    /// Packets QUIC declared lost, over all connections.
    pub quic_lost_packets: u64,
    /// Inputs accepted that a switched-off defence would have refused, by
    /// defence (`replay_window`, `authenticate`, ...). Empty while every
    /// defence is on.
    pub defence_misses: BTreeMap<String, u64>,
    /// The agent's resident set size in bytes, sampled each second.
    pub resident_bytes: u64,
}

/// Defence names an agent may report ([`NodeMetrics::well_formed`]): a few
/// short lowercase words, so a label cannot inject text or blow up the
/// series count.
const MAX_DEFENCES: usize = 16;
const MAX_DEFENCE_NAME: usize = 32;

impl NodeMetrics {
    pub fn reject(&mut self, reason: Reason) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    /// Count an input that got past the switched-off defence `defence`.
    pub fn miss(&mut self, defence: &str) {
        *self.defence_misses.entry(defence.to_string()).or_default() += 1;
    }

    pub fn well_formed(&self) -> bool {
        let defence_name = |d: &String| {
            (1..=MAX_DEFENCE_NAME).contains(&d.len())
                && d.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        };
        self.latency.well_formed()
            && self.quic_rtt.well_formed()
            && self.defence_misses.len() <= MAX_DEFENCES
            && self.defence_misses.keys().all(defence_name)
    }
}

/// What the supervisor knows of one node.
#[derive(Debug, Clone, Default)]
pub struct NodeEntry {
    pub role: String,
    pub metrics: NodeMetrics,
    pub restarts: u32,
    pub up: bool,
}

/// Every node's latest metrics; encodes itself on each scrape.
#[derive(Debug, Default)]
pub struct Board {
    pub lab: String,
    pub nodes: BTreeMap<String, NodeEntry>,
}

type Labels = Vec<(&'static str, String)>;

impl Board {
    /// The Prometheus text exposition of every family.
    pub fn render(board: &Arc<Mutex<Board>>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(Arc::clone(board))));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let node = |name: &str, e: &NodeEntry| -> Labels {
            vec![
                ("lab", self.lab.clone()),
                ("node", name.to_string()),
                ("role", e.role.clone()),
            ]
        };
        let mut roles: BTreeMap<&str, NodeMetrics> = BTreeMap::new();
        for e in self.nodes.values() {
            let r = roles.entry(&e.role).or_default();
            r.sent += e.metrics.sent;
            r.received += e.metrics.received;
            for (reason, n) in &e.metrics.rejected {
                *r.rejected.entry(*reason).or_default() += n;
            }
            for (defence, n) in &e.metrics.defence_misses {
                *r.defence_misses.entry(defence.clone()).or_default() += n;
            }
            r.latency.add(&e.metrics.latency);
            r.quic_rtt.add(&e.metrics.quic_rtt);
            r.quic_lost_packets += e.metrics.quic_lost_packets;
        }
        let role =
            |name: &str| -> Labels { vec![("lab", self.lab.clone()), ("role", name.to_string())] };
        type Get = fn(&NodeMetrics) -> u64;
        let counters: [(&str, &str, Get); 3] = [
            ("testbed_messages_sent", "Application messages sent", |m| {
                m.sent
            }),
            (
                "testbed_messages_received",
                "Application messages received and accepted",
                |m| m.received,
            ),
            (
                "testbed_quic_lost_packets",
                "Packets QUIC declared lost",
                |m| m.quic_lost_packets,
            ),
        ];
        for (name, help, get) in counters {
            let mut f = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (n, e) in &self.nodes {
                f.encode_family(&node(n, e))?
                    .encode_counter::<Labels, _, f64>(&get(&e.metrics), None)?;
            }
            let role_name = format!("testbed_role_{}", &name[8..]);
            let mut f = enc.encode_descriptor(
                &role_name,
                &format!("{help}, summed per role"),
                None,
                MetricType::Counter,
            )?;
            for (r, m) in &roles {
                f.encode_family(&role(r))?
                    .encode_counter::<Labels, _, f64>(&get(m), None)?;
            }
        }
        // Counters split by one more label: (family, help, label, values).
        type GetBy = fn(&NodeMetrics) -> Vec<(String, u64)>;
        let split: [(&str, &str, &str, GetBy); 2] = [
            (
                "testbed_messages_rejected",
                "Inputs refused, by reason",
                "reason",
                |m| {
                    m.rejected
                        .iter()
                        .map(|(r, n)| (r.to_string(), *n))
                        .collect()
                },
            ),
            (
                "testbed_defence_misses",
                "Inputs accepted that a switched-off defence would have refused, by defence",
                "defence",
                |m| {
                    m.defence_misses
                        .iter()
                        .map(|(d, n)| (d.clone(), *n))
                        .collect()
                },
            ),
        ];
        for (name, help, label, get) in split {
            let mut f = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (n, e) in &self.nodes {
                for (value, count) in get(&e.metrics) {
                    let mut l = node(n, e);
                    l.push((label, value));
                    f.encode_family(&l)?
                        .encode_counter::<Labels, _, f64>(&count, None)?;
                }
            }
            let role_name = format!("testbed_role_{}", &name[8..]);
            let mut f = enc.encode_descriptor(
                &role_name,
                &format!("{help}, summed per role"),
                None,
                MetricType::Counter,
            )?;
            for (r, m) in &roles {
                for (value, count) in get(m) {
                    let mut l = role(r);
                    l.push((label, value));
                    f.encode_family(&l)?
                        .encode_counter::<Labels, _, f64>(&count, None)?;
                }
            }
        }
        type GetH = fn(&NodeMetrics) -> &Histogram;
        let histograms: [(&str, &str, GetH); 2] = [
            (
                "testbed_latency_seconds",
                "End-to-end latency of accepted messages",
                |m| &m.latency,
            ),
            (
                "testbed_quic_rtt_seconds",
                "QUIC smoothed RTT, sampled each second per connection",
                |m| &m.quic_rtt,
            ),
        ];
        for (name, help, get) in histograms {
            let mut f = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (n, e) in &self.nodes {
                let h = get(&e.metrics);
                f.encode_family(&node(n, e))?.encode_histogram::<Labels>(
                    h.sum,
                    h.count(),
                    &h.buckets(),
                    None,
                )?;
            }
            let role_name = format!("testbed_role_{}", &name[8..]);
            let mut f = enc.encode_descriptor(
                &role_name,
                &format!("{help}, per role"),
                None,
                MetricType::Histogram,
            )?;
            for (r, m) in &roles {
                let h = get(m);
                f.encode_family(&role(r))?.encode_histogram::<Labels>(
                    h.sum,
                    h.count(),
                    &h.buckets(),
                    None,
                )?;
            }
        }
        let mut f = enc.encode_descriptor(
            "testbed_agent_restarts",
            "Times the supervisor restarted the node's agent",
            None,
            MetricType::Counter,
        )?;
        for (n, e) in &self.nodes {
            f.encode_family(&node(n, e))?
                .encode_counter::<Labels, _, f64>(&u64::from(e.restarts), None)?;
        }
        let mut f = enc.encode_descriptor(
            "testbed_agent_up",
            "1 while the node's agent runs",
            None,
            MetricType::Gauge,
        )?;
        for (n, e) in &self.nodes {
            f.encode_family(&node(n, e))?
                .encode_gauge(&i64::from(e.up))?;
        }
        let mut f = enc.encode_descriptor(
            "testbed_agent_resident_bytes",
            "The agent's resident set size, sampled each second",
            None,
            MetricType::Gauge,
        )?;
        for (n, e) in &self.nodes {
            let bytes = i64::try_from(e.metrics.resident_bytes).unwrap_or(i64::MAX);
            f.encode_family(&node(n, e))?.encode_gauge(&bytes)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Scrape(Arc<Mutex<Board>>);

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match self.0.lock() {
            Ok(board) => board.encode(encoder),
            Err(_) => Err(std::fmt::Error),
        }
    }
}

/// Serve `GET /metrics` (anything else: 404) on `listener` until the task is
/// dropped. Requests are read up to 8 KiB; one request per connection.
pub async fn serve(
    listener: std::net::TcpListener,
    board: Arc<Mutex<Board>>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let board = Arc::clone(&board);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => len += n,
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let response = if head.starts_with("GET ")
                && (path == "/metrics" || path.starts_with("/metrics?"))
            {
                let body = Board::render(&board);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\nConnection: close\r\n\r\ntry GET /metrics here\n".to_string()
            };
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defence_misses_and_resident_memory_are_exported_per_node_and_role() {
        let mut board = Board {
            lab: "l".into(),
            ..Board::default()
        };
        for (node, misses) in [("c1", 2), ("c2", 3)] {
            let mut m = NodeMetrics {
                resident_bytes: 5 << 20,
                ..NodeMetrics::default()
            };
            for _ in 0..misses {
                m.miss("replay_window");
            }
            m.reject(Reason::Stale);
            assert!(m.well_formed());
            board.nodes.insert(
                node.into(),
                NodeEntry {
                    role: "cps-controller".into(),
                    metrics: m,
                    restarts: 0,
                    up: true,
                },
            );
        }
        let text = Board::render(&Arc::new(Mutex::new(board)));
        for line in [
            "testbed_defence_misses_total{lab=\"l\",node=\"c1\",role=\"cps-controller\",defence=\"replay_window\"} 2",
            "testbed_role_defence_misses_total{lab=\"l\",role=\"cps-controller\",defence=\"replay_window\"} 5",
            "testbed_messages_rejected_total{lab=\"l\",node=\"c2\",role=\"cps-controller\",reason=\"stale\"} 1",
            "testbed_role_messages_rejected_total{lab=\"l\",role=\"cps-controller\",reason=\"stale\"} 2",
            "testbed_agent_resident_bytes{lab=\"l\",node=\"c2\",role=\"cps-controller\"} 5242880",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }

    #[test]
    fn odd_defence_names_are_not_well_formed() {
        let mut m = NodeMetrics::default();
        m.miss("replay_window");
        assert!(m.well_formed());
        for bad in ["", "x\"} 1\nevil{a=\"", "Limits", &"a".repeat(33)] {
            let mut m = m.clone();
            m.miss(bad);
            assert!(!m.well_formed(), "{bad:?}");
        }
        let mut many = NodeMetrics::default();
        for i in 0..=MAX_DEFENCES {
            many.miss(&"d".repeat(i + 1));
        }
        assert!(!many.well_formed());
    }
}
