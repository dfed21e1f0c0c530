//! `cps-controller`: receives sealed readings from sensors over mutual-TLS
//! QUIC (datagrams, or one frame per unidirectional stream) and checks each,
//! cheapest first: size, the sender's rate, frame syntax, the sender's id,
//! the replay window, the AEAD tag, the reading's syntax, freshness. A reading
//! that passes every check is acknowledged with a sealed ACK and written to
//! `results.csv` and `controller.log` in the lab's output folder; anything
//! else is refused with its reason, counted, and logged (rows and events for
//! refusals are rate-limited per reason; the counters see every one). State
//! per sensor, connections, streams and windows are all capped (CWE-770).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::reading::{Ack, Reading};
use super::seal::{self, Frame, FrameKind, SessionKeys};
use super::window::{Replay, ReplayWindow, WIDTH};
use super::{sensor_id, session_keys};
use crate::agent::transport::Limits;
use crate::agent::{AgentConfig, AgentError, Context, duration_option, peer_cert, serve};
use crate::events::{Reason, unix_us};

/// Refusal rows in `results.csv` and `controller.log` per reason and second.
const LOGGED_REJECTS_PER_SECOND: u32 = 20;
/// A reading stamped further ahead than this of the controller's clock is
/// not fresh either.
const MAX_FUTURE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Readings older than this are stale (default "5s"); a reading missing
    /// this long after a later one arrived is reported as dropped.
    pub max_age: Option<String>,
    /// Readings per second one sensor may send (default 100; bursts of up to
    /// one second's worth).
    pub max_rate: Option<u32>,
    /// Sensors the controller keeps state for (default 256).
    pub max_sensors: Option<usize>,
    /// Connections at once, all sensors together (default 64).
    pub max_connections: Option<usize>,
    /// Connections at once from one sensor (default 2).
    pub max_connections_per_sensor: Option<usize>,
    /// Only these nodes may send readings (default: any node of the lab).
    pub sensors: Option<Vec<String>>,
}

impl Options {
    pub fn max_age(&self) -> Result<Duration, String> {
        duration_option(
            "max_age",
            self.max_age.as_deref(),
            Duration::from_secs(5),
            Duration::from_millis(1),
        )
    }

    /// Every option, checked (what the topology check calls).
    pub fn validate(&self) -> Result<(), String> {
        self.max_age()?;
        for (name, v) in [
            ("max_rate", self.max_rate.map(|r| r as usize)),
            ("max_sensors", self.max_sensors),
            ("max_connections", self.max_connections),
            (
                "max_connections_per_sensor",
                self.max_connections_per_sensor,
            ),
        ] {
            if v == Some(0) {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Caps in force (options with their defaults).
#[derive(Debug, Clone)]
struct Caps {
    max_age: Duration,
    max_rate: u32,
    max_sensors: usize,
    max_connections: usize,
    per_sensor: usize,
    allowed: Option<Vec<String>>,
}

/// The controller with its output files open.
pub struct Controller {
    caps: Caps,
    csv: File,
    log: File,
}

impl Controller {
    pub fn prepare(options: Options, config: &AgentConfig) -> Result<Controller, AgentError> {
        let open = |name: &str| -> Result<File, AgentError> {
            use std::os::unix::fs::OpenOptionsExt;
            let path = config.out.join(name);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o644)
                .open(&path)
                .map_err(|source| AgentError::Io {
                    what: format!("opening {}", path.display()),
                    source,
                })
        };
        let mut csv = open("results.csv")?;
        if csv.metadata().map(|m| m.len() == 0).unwrap_or(false) {
            let _ = csv.write_all(
                b"timestamp,sensor,kind,value,latency_ms,dropped,encrypted,outcome,reason,counter\n",
            );
        }
        let caps = Caps {
            max_age: options.max_age().unwrap_or(Duration::from_secs(5)),
            max_rate: options.max_rate.unwrap_or(100),
            max_sensors: options.max_sensors.unwrap_or(256),
            max_connections: options.max_connections.unwrap_or(64),
            per_sensor: options.max_connections_per_sensor.unwrap_or(2),
            allowed: options.sensors,
        };
        Ok(Controller {
            caps,
            csv,
            log: open("controller.log")?,
        })
    }

    /// Sensors send datagrams and at most a few single-frame streams.
    pub fn limits() -> Limits {
        Limits {
            bidi_streams: 0,
            uni_streams: 4,
            stream_window: seal::MAX_FRAME as u32 * 2,
            connection_window: 64 * 1024,
            datagram_buffer: 64 * 1024,
        }
    }

    pub async fn run(self, ctx: Context) -> Result<(), AgentError> {
        let state = Arc::new(Mutex::new(State {
            caps: self.caps,
            started_us: unix_us(),
            sensors: HashMap::new(),
            csv: BufWriter::new(self.csv),
            log: BufWriter::new(self.log),
            budget: HashMap::new(),
            suppressed: HashMap::new(),
        }));
        let flusher = Arc::clone(&state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut second = 0u32;
            loop {
                tick.tick().await;
                second = (second + 1) % 4;
                let mut s = lock(&flusher);
                if second == 0 {
                    s.new_second();
                }
                let _ = s.csv.flush();
                let _ = s.log.flush();
            }
        });
        let max_connections = lock(&state).caps.max_connections;
        ctx.ready();
        serve(ctx, max_connections, move |ctx, conn, peer| {
            let state = Arc::clone(&state);
            async move { connection(ctx, conn, peer, state).await }
        })
        .await;
        Ok(())
    }
}

struct SensorState {
    window: ReplayWindow,
    /// Counters skipped over, each with the time (unix µs) after which it can
    /// no longer be fresh: the timestamp of the reading that skipped it plus
    /// `max_age` (a sensor stamps its readings in counter order). At most
    /// [`WIDTH`] are tracked; a larger jump is logged as a count.
    gaps: VecDeque<(u64, u64)>,
    /// The next accepted reading is the first of a new connection: a sensor
    /// that restarted resumes at its next reserved counter, so what it skips
    /// is not lost.
    reconnected: bool,
    tokens: f64,
    refilled: Instant,
    connections: usize,
}

struct State {
    caps: Caps,
    /// Readings stamped before this are stale (a replay from an earlier run).
    started_us: u64,
    sensors: HashMap<String, SensorState>,
    csv: BufWriter<File>,
    log: BufWriter<File>,
    /// Refusals logged this second, per reason.
    budget: HashMap<Reason, u32>,
    suppressed: HashMap<Reason, u64>,
}

impl State {
    fn new_second(&mut self) {
        self.budget.clear();
        let now = unix_us();
        let mut lost = Vec::new();
        for (name, sensor) in &mut self.sensors {
            while let Some(&(counter, deadline)) = sensor.gaps.front() {
                if deadline > now {
                    break;
                }
                sensor.gaps.pop_front();
                lost.push((name.clone(), counter));
            }
        }
        for (name, counter) in lost {
            self.dropped(&name, counter);
        }
        let now = stamp();
        for (reason, n) in self.suppressed.drain() {
            let _ = writeln!(
                self.log,
                "{now} {n} more inputs refused as {reason} in the last second (not logged one by one)"
            );
        }
    }

    fn delivered(&mut self, peer: &str, r: &Reading, latency_ms: f64) {
        let now = stamp();
        let value = r.describe();
        let _ = writeln!(
            self.csv,
            "{now},{peer},{},{value},{latency_ms:.3},false,true,delivered,,{}",
            r.kind, r.counter
        );
        let _ = writeln!(
            self.log,
            "{now} delivered {peer} #{} {value} ({latency_ms:.3} ms)",
            r.counter
        );
    }

    fn dropped(&mut self, peer: &str, counter: u64) {
        let now = stamp();
        let _ = writeln!(self.csv, "{now},{peer},,,,true,true,dropped,lost,{counter}");
        let _ = writeln!(self.log, "{now} dropped {peer} #{counter}: never arrived");
    }

    fn refused(&mut self, peer: &str, reason: Reason, detail: &str, counter: Option<u64>) {
        let n = self.budget.entry(reason).or_default();
        *n += 1;
        if *n > LOGGED_REJECTS_PER_SECOND {
            *self.suppressed.entry(reason).or_default() += 1;
            return;
        }
        let now = stamp();
        let counter = counter.map(|c| c.to_string()).unwrap_or_default();
        let encrypted = !matches!(reason, Reason::Malformed | Reason::Oversize);
        let _ = writeln!(
            self.csv,
            "{now},{peer},,,,false,{encrypted},rejected,{reason},{counter}"
        );
        let _ = writeln!(self.log, "{now} rejected {peer}: {reason}: {detail}");
    }
}

fn stamp() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Serve one sensor connection: admit it (allow-list, caps), then check every
/// frame it sends until it goes.
async fn connection(ctx: Context, conn: quinn::Connection, peer: String, state: Arc<Mutex<State>>) {
    let admitted = admit(&mut lock(&state), &peer);
    if let Err((reason, detail)) = admitted {
        ctx.reject(&peer, reason, &detail);
        lock(&state).refused(&peer, reason, &detail, None);
        conn.close(1u32.into(), reason.as_str().as_bytes());
        return;
    }
    let keys = match peer_cert(&conn).map(|c| session_keys(ctx.identity(), &c, false, &peer)) {
        Some(Ok(k)) => Arc::new(k),
        _ => {
            ctx.reject(
                &peer,
                Reason::Unauthorized,
                "certificate without a P-256 key",
            );
            conn.close(1u32.into(), b"unauthorized");
            release(&state, &peer);
            return;
        }
    };
    loop {
        tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(d) => check(&ctx, &conn, &peer, &keys, &state, &d),
                Err(_) => break,
            },
            s = conn.accept_uni() => match s {
                Ok(mut recv) => {
                    let (ctx, conn, peer, keys, state) =
                        (ctx.clone(), conn.clone(), peer.clone(), Arc::clone(&keys), Arc::clone(&state));
                    tokio::spawn(async move {
                        let read = tokio::time::timeout(Duration::from_secs(2), recv.read_to_end(seal::MAX_FRAME)).await;
                        match read {
                            Ok(Ok(bytes)) => check(&ctx, &conn, &peer, &keys, &state, &bytes),
                            Ok(Err(quinn::ReadToEndError::TooLong)) => {
                                let detail = format!("stream longer than {} bytes", seal::MAX_FRAME);
                                ctx.reject(&peer, Reason::Oversize, &detail);
                                lock(&state).refused(&peer, Reason::Oversize, &detail, None);
                                let _ = recv.stop(1u32.into());
                            }
                            _ => {}
                        }
                    });
                }
                Err(_) => break,
            },
        }
    }
    release(&state, &peer);
}

impl SensorState {
    /// Accept `r`'s counter: fill its gap if it is one, or note the counters it
    /// skips. Returns how many skipped counters were too many to track.
    fn note_accepted(&mut self, r: &Reading, max_age: Duration) -> u64 {
        let before = self.window.highest();
        let reconnected = std::mem::take(&mut self.reconnected);
        // The window reports counters sliding out; gaps are tracked here
        // instead, so they are reported once they can no longer be fresh.
        let _ = self.window.accept(r.counter);
        match before {
            Some(h) if r.counter <= h => {
                self.gaps.retain(|(c, _)| *c != r.counter);
                0
            }
            _ if reconnected => 0,
            _ => {
                let first = before.map_or(r.counter, |h| h + 1);
                let deadline = r.timestamp_us.saturating_add(max_age.as_micros() as u64);
                let skipped = r.counter - first;
                let tracked = skipped.min(WIDTH);
                for c in r.counter - tracked..r.counter {
                    if self.gaps.len() == WIDTH as usize {
                        self.gaps.pop_front();
                    }
                    self.gaps.push_back((c, deadline));
                }
                skipped - tracked
            }
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Let a connection from `peer` in, within the allow-list and the caps.
fn admit(s: &mut State, peer: &str) -> Result<(), (Reason, String)> {
    let caps = s.caps.clone();
    if caps
        .allowed
        .as_ref()
        .is_some_and(|a| !a.iter().any(|n| n == peer))
    {
        return Err((Reason::Unauthorized, "not an allowed sensor".to_string()));
    }
    if !s.sensors.contains_key(peer) && s.sensors.len() >= caps.max_sensors {
        return Err((
            Reason::OverLimit,
            format!("more than {} sensors", caps.max_sensors),
        ));
    }
    let entry = s
        .sensors
        .entry(peer.to_string())
        .or_insert_with(|| SensorState {
            window: ReplayWindow::default(),
            gaps: VecDeque::new(),
            reconnected: true,
            tokens: f64::from(caps.max_rate),
            refilled: Instant::now(),
            connections: 0,
        });
    if entry.connections >= caps.per_sensor {
        return Err((
            Reason::OverLimit,
            format!("more than {} connections from one sensor", caps.per_sensor),
        ));
    }
    entry.connections += 1;
    entry.reconnected = true;
    Ok(())
}

fn release(state: &Mutex<State>, peer: &str) {
    if let Some(e) = lock(state).sensors.get_mut(peer) {
        e.connections = e.connections.saturating_sub(1);
    }
}

/// Check one input from `peer`; accept and ACK it, or refuse it.
fn check(
    ctx: &Context,
    conn: &quinn::Connection,
    peer: &str,
    keys: &SessionKeys,
    state: &Mutex<State>,
    bytes: &[u8],
) {
    let mut s = lock(state);
    match verify(&mut s, peer, keys, bytes) {
        Ok(reading) => {
            let latency = unix_us().saturating_sub(reading.timestamp_us) as f64 / 1e6;
            let max_age = s.caps.max_age;
            let skipped = s
                .sensors
                .get_mut(peer)
                .map_or(0, |e| e.note_accepted(&reading, max_age));
            if skipped > 0 {
                let now = stamp();
                let _ = writeln!(
                    s.log,
                    "{now} {peer}: counter jumped to {}; {skipped} readings before it never seen",
                    reading.counter
                );
            }
            s.delivered(peer, &reading, latency * 1e3);
            drop(s);
            {
                let mut m = ctx.metrics();
                m.received += 1;
                m.latency.observe(latency);
            }
            let ack = Ack {
                counter: reading.counter,
                received_us: unix_us(),
            };
            if conn
                .send_datagram(seal::seal_ack(keys, &ack).into())
                .is_ok()
            {
                ctx.metrics().sent += 1;
            }
        }
        Err(Refusal {
            reason,
            detail,
            counter,
        }) => {
            s.refused(peer, reason, &detail, counter);
            drop(s);
            ctx.reject(peer, reason, detail);
        }
    }
}

struct Refusal {
    reason: Reason,
    detail: String,
    counter: Option<u64>,
}

fn refuse(reason: Reason, detail: impl Into<String>, counter: Option<u64>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
        counter,
    }
}

/// The checks, cheapest first. Changes nothing but the sender's rate budget:
/// the caller accepts the counter into the window only on success.
fn verify(s: &mut State, peer: &str, keys: &SessionKeys, bytes: &[u8]) -> Result<Reading, Refusal> {
    if bytes.len() > seal::MAX_FRAME {
        return Err(refuse(
            Reason::Oversize,
            format!("{} bytes, limit {}", bytes.len(), seal::MAX_FRAME),
            None,
        ));
    }
    let (max_rate, max_age, started) = (s.caps.max_rate, s.caps.max_age, s.started_us);
    let Some(sensor) = s.sensors.get_mut(peer) else {
        return Err(refuse(Reason::Unauthorized, "no admitted connection", None));
    };
    let now = Instant::now();
    let rate = f64::from(max_rate);
    sensor.tokens =
        (sensor.tokens + now.duration_since(sensor.refilled).as_secs_f64() * rate).min(rate);
    sensor.refilled = now;
    if sensor.tokens < 1.0 {
        return Err(refuse(
            Reason::OverRate,
            format!("more than {max_rate} readings/s"),
            None,
        ));
    }
    sensor.tokens -= 1.0;
    let frame = Frame::parse(bytes).map_err(|e| refuse(Reason::Malformed, e.to_string(), None))?;
    if frame.kind != FrameKind::Reading {
        return Err(refuse(Reason::Malformed, "expected a reading frame", None));
    }
    let counter = frame.counter();
    if frame.sender_id() != sensor_id(peer) {
        return Err(refuse(
            Reason::Unauthorized,
            format!("sender id {:#010x} is not {peer}'s", frame.sender_id()),
            Some(counter),
        ));
    }
    if let Err(e) = sensor.window.check(counter) {
        let detail = match e {
            Replay::Duplicate => format!("counter {counter} already accepted"),
            Replay::TooOld => format!("counter {counter} is below the replay window"),
        };
        return Err(refuse(Reason::Replayed, detail, Some(counter)));
    }
    let plain = seal::open(keys, &frame)
        .map_err(|e| refuse(Reason::Undecryptable, e.to_string(), Some(counter)))?;
    let reading = Reading::decode(&plain)
        .map_err(|e| refuse(Reason::Malformed, e.to_string(), Some(counter)))?;
    if reading.sensor_id != frame.sender_id() || reading.counter != counter {
        return Err(refuse(
            Reason::Malformed,
            "sealed reading disagrees with its frame header",
            Some(counter),
        ));
    }
    let now_us = unix_us();
    let age = Duration::from_micros(now_us.saturating_sub(reading.timestamp_us));
    if reading.timestamp_us < started {
        return Err(refuse(
            Reason::Stale,
            "stamped before the controller started",
            Some(counter),
        ));
    }
    if age > max_age {
        return Err(refuse(
            Reason::Stale,
            format!("{age:?} old, limit {max_age:?}"),
            Some(counter),
        ));
    }
    if Duration::from_micros(reading.timestamp_us.saturating_sub(now_us)) > MAX_FUTURE {
        return Err(refuse(
            Reason::Stale,
            "stamped in the future",
            Some(counter),
        ));
    }
    Ok(reading)
}
