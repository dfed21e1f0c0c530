//! `cps-controller`: receives sealed readings from sensors over mutual-TLS
//! QUIC (datagrams, or one frame per unidirectional stream), and as plain UDP
//! datagrams on [`CPS_UDP_PORT`] (no TLS: the seal is all there is), and
//! checks each, cheapest first: size, the sender's rate, frame syntax, the
//! sender's id, the replay window, the AEAD tag, the reading's syntax,
//! freshness. A reading that passes every check is acknowledged with a sealed
//! ACK and written to `results.csv` and `controller.log` in the lab's output
//! folder; anything else is refused with its reason, counted, and logged
//! (rows and events for refusals are rate-limited per reason; the counters
//! see every one). State per sensor, connections, streams and windows are all
//! capped (CWE-770).
//!
//! A UDP datagram has no certificate behind it: its sender is the node whose
//! sensor id the frame header claims, among the certificates loaded at start,
//! and only the tag under that node's keys authenticates it. So over UDP the
//! rate check follows the id lookup (the id is what names the sender). A
//! sensor has one state (window, gaps, rate) whichever way its readings come.
//!
//! Defences can be switched off for negative controls ([`super::defence`]).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use tokio::time::Instant;

use super::defence::{Defence, DefenceSet, Switch, Switches};
use super::reading::{Ack, Reading};
use super::seal::{self, Frame, FrameKind, SessionKeys};
use super::window::{Replay, ReplayWindow, WIDTH};
use super::{CPS_UDP_PORT, sensor_id, session_keys};
use crate::agent::identity::{self, Identity};
use crate::agent::transport::Limits;
use crate::agent::{AgentConfig, AgentError, Context, duration_option, peer_cert, serve};
use crate::events::{Event, Reason, unix_us};

/// Refusal rows in `results.csv` and `controller.log` per reason and second.
const LOGGED_REJECTS_PER_SECOND: u32 = 20;
/// A reading stamped further ahead than this of the controller's clock is
/// not fresh either.
const MAX_FUTURE: Duration = Duration::from_secs(2);
/// The one receive buffer of the UDP port: any UDP datagram fits, so an
/// oversize one is reported with its true length.
const UDP_BUFFER: usize = 64 * 1024;

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
    /// Defence switch ("on" by default, or "off"; for negative controls
    /// only): the 128-wide replay window.
    pub replay_window: Option<Switch>,
    /// Defence switch: the AES-GCM tag (off: readings are decrypted without).
    pub authenticate: Option<Switch>,
    /// Defence switch: the `max_age`, before-start and future checks.
    pub freshness: Option<Switch>,
    /// Defence switch: the size and rate checks (the caps on sensors and
    /// connections stay).
    pub limits: Option<Switch>,
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

    /// The defences in force.
    pub fn switches(&self) -> Switches {
        let mut switches = Switches::all_on();
        for (d, switch) in [
            (Defence::ReplayWindow, self.replay_window),
            (Defence::Authenticate, self.authenticate),
            (Defence::Freshness, self.freshness),
            (Defence::Limits, self.limits),
        ] {
            switches.set(d, switch.unwrap_or_default());
        }
        switches
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

impl Caps {
    fn new(options: &Options) -> Caps {
        Caps {
            max_age: options.max_age().unwrap_or(Duration::from_secs(5)),
            max_rate: options.max_rate.unwrap_or(100),
            max_sensors: options.max_sensors.unwrap_or(256),
            max_connections: options.max_connections.unwrap_or(64),
            per_sensor: options.max_connections_per_sensor.unwrap_or(2),
            allowed: options.sensors.clone(),
        }
    }
}

/// The controller with its output files open, its UDP port bound and the
/// certificates of the nodes that may send over UDP loaded.
pub struct Controller {
    caps: Caps,
    switches: Switches,
    senders: UdpSenders,
    udp: std::net::UdpSocket,
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
        let switches = options.switches();
        let caps = Caps::new(&options);
        let senders = UdpSenders::load(&config.lab, &config.node, caps.allowed.as_deref())?;
        let udp = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, CPS_UDP_PORT))
            .and_then(|u| u.set_nonblocking(true).map(|()| u))
            .map_err(|source| AgentError::Io {
                what: format!("binding UDP port {CPS_UDP_PORT}"),
                source,
            })?;
        Ok(Controller {
            caps,
            switches,
            senders,
            udp,
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
        for d in self.switches.off().iter() {
            let message = format!("defence {d} is OFF: {}", d.consequence());
            tracing::warn!("{message}");
            ctx.event(Event::Notice { message });
        }
        let udp = tokio::net::UdpSocket::from_std(self.udp).map_err(|source| AgentError::Io {
            what: "the CPS UDP port".into(),
            source,
        })?;
        let state = Arc::new(Mutex::new(State::new(
            self.caps,
            self.switches,
            self.senders,
            self.csv,
            self.log,
        )));
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
        let datagrams = receive_udp(ctx.clone(), udp, Arc::clone(&state));
        let quic = serve(ctx, max_connections, move |ctx, conn, peer| {
            let state = Arc::clone(&state);
            async move { connection(ctx, conn, peer, state).await }
        });
        // The UDP port is served as long as the QUIC endpoint.
        tokio::select! {
            () = quic => {}
            () = datagrams => {}
        }
        Ok(())
    }
}

/// Who may send readings over UDP: the nodes whose certificates were loaded
/// at start, by sensor id. Holds at most one entry per loaded certificate;
/// session keys are derived on an id's first frame and kept.
#[derive(Default)]
struct UdpSenders {
    by_id: HashMap<u32, UdpSender>,
}

enum UdpSender {
    Node {
        name: String,
        cert: CertificateDer<'static>,
        keys: Option<Arc<SessionKeys>>,
    },
    /// An id no frame can be attributed to (two nodes share it, or the
    /// node's certificate holds no usable key): why.
    Refused(String),
}

impl UdpSenders {
    /// The certificates of `allowed`, or else of every node of the lab but
    /// `own` (read while root).
    fn load(lab: &str, own: &str, allowed: Option<&[String]>) -> Result<UdpSenders, AgentError> {
        let names = match allowed {
            Some(a) => a.to_vec(),
            None => identity::certified_nodes(lab)?,
        };
        let mut by_id = HashMap::new();
        for name in names.into_iter().filter(|n| n != own) {
            let cert = match identity::load_cert(lab, &name) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(node = name, "cannot send over UDP: {e}");
                    continue;
                }
            };
            let id = sensor_id(&name);
            match by_id.entry(id) {
                Entry::Vacant(v) => {
                    v.insert(UdpSender::Node {
                        name,
                        cert,
                        keys: None,
                    });
                }
                Entry::Occupied(mut o) => {
                    let why = format!("sensor id {id:#010x} belongs to more than one node");
                    tracing::warn!(node = name, "{why}: no UDP reading with it is accepted");
                    o.insert(UdpSender::Refused(why));
                }
            }
        }
        Ok(UdpSenders { by_id })
    }

    /// The node that sensor id `id` belongs to, with its session keys.
    fn sender(
        &mut self,
        own: &Identity,
        id: u32,
        counter: u64,
    ) -> Result<(String, Arc<SessionKeys>), Refusal> {
        let unauthorized = |detail: String| refuse(Reason::Unauthorized, detail, Some(counter));
        let entry = self
            .by_id
            .get_mut(&id)
            .ok_or_else(|| unauthorized(format!("sender id {id:#010x} is no allowed node's")))?;
        let (name, cert, keys) = match entry {
            UdpSender::Refused(why) => return Err(unauthorized(why.clone())),
            UdpSender::Node { name, cert, keys } => (name, cert, keys),
        };
        if let Some(k) = keys {
            return Ok((name.clone(), Arc::clone(k)));
        }
        match session_keys(own, cert, false, name) {
            Ok(k) => {
                let k = Arc::new(k);
                *keys = Some(Arc::clone(&k));
                Ok((name.clone(), k))
            }
            Err(e) => {
                let why = format!("{name}'s certificate: {e}");
                *entry = UdpSender::Refused(why.clone());
                Err(unauthorized(why))
            }
        }
    }
}

struct SensorState {
    /// Counters accepted, whether or not the `replay_window` defence is on:
    /// the ground truth of "accepted before".
    window: ReplayWindow,
    /// Counters skipped over, each with the time (unix µs) after which it can
    /// no longer be fresh: the timestamp of the reading that skipped it plus
    /// `max_age` (a sensor stamps its readings in counter order). At most
    /// [`WIDTH`] are tracked; a larger jump is logged as a count.
    gaps: VecDeque<(u64, u64)>,
    /// The next accepted reading is the first of a new connection (or the
    /// sensor's first): a sensor that restarted resumes at its next reserved
    /// counter, so what it skips is not lost. (A restart over UDP cannot be
    /// seen: its skip shows as dropped readings.)
    reconnected: bool,
    tokens: f64,
    refilled: Instant,
    /// QUIC connections open (UDP senders hold none).
    connections: usize,
}

impl SensorState {
    fn new(max_rate: u32) -> SensorState {
        SensorState {
            window: ReplayWindow::default(),
            gaps: VecDeque::new(),
            reconnected: true,
            tokens: f64::from(max_rate),
            refilled: Instant::now(),
            connections: 0,
        }
    }

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

struct State {
    caps: Caps,
    switches: Switches,
    /// Readings stamped before this are stale (a replay from an earlier run).
    started_us: u64,
    /// Per sensor node, at most `max_sensors`.
    sensors: HashMap<String, SensorState>,
    senders: UdpSenders,
    csv: BufWriter<File>,
    log: BufWriter<File>,
    /// Refusals logged this second, per reason.
    budget: HashMap<Reason, u32>,
    suppressed: HashMap<Reason, u64>,
}

impl State {
    fn new(caps: Caps, switches: Switches, senders: UdpSenders, csv: File, log: File) -> State {
        State {
            caps,
            switches,
            started_us: unix_us(),
            sensors: HashMap::new(),
            senders,
            csv: BufWriter::new(csv),
            log: BufWriter::new(log),
            budget: HashMap::new(),
            suppressed: HashMap::new(),
        }
    }

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

    /// An accepted reading; `misses` names the switched-off defences that
    /// would have refused it (the row's reason).
    fn delivered(&mut self, peer: &str, r: &Reading, latency_ms: f64, misses: DefenceSet) {
        let now = stamp();
        let value = r.describe();
        let reason = misses.reason();
        let _ = writeln!(
            self.csv,
            "{now},{peer},{},{value},{latency_ms:.3},false,true,delivered,{reason},{}",
            r.kind, r.counter
        );
        let note = if misses.is_empty() {
            String::new()
        } else {
            format!(" [{reason}]")
        };
        let _ = writeln!(
            self.log,
            "{now} delivered {peer} #{} {value} ({latency_ms:.3} ms){note}",
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

    /// The state of sensor `peer`, made on its first connection or UDP
    /// reading, within the allow-list and `max_sensors`.
    fn enter(&mut self, peer: &str) -> Result<&mut SensorState, Refusal> {
        let caps = &self.caps;
        if caps
            .allowed
            .as_ref()
            .is_some_and(|a| !a.iter().any(|n| n == peer))
        {
            return Err(refuse(Reason::Unauthorized, "not an allowed sensor", None));
        }
        if !self.sensors.contains_key(peer) && self.sensors.len() >= caps.max_sensors {
            return Err(refuse(
                Reason::OverLimit,
                format!("more than {} sensors", caps.max_sensors),
                None,
            ));
        }
        let max_rate = caps.max_rate;
        Ok(self
            .sensors
            .entry(peer.to_string())
            .or_insert_with(|| SensorState::new(max_rate)))
    }

    /// Size (`limits`).
    fn check_size(&self, bytes: &[u8], misses: &mut DefenceSet) -> Result<(), Refusal> {
        let verdict = if bytes.len() > seal::MAX_FRAME {
            Err(refuse(
                Reason::Oversize,
                format!("{} bytes, limit {}", bytes.len(), seal::MAX_FRAME),
                None,
            ))
        } else {
            Ok(())
        };
        self.switches.enforce(Defence::Limits, verdict, misses)
    }

    /// The sender's token bucket (`limits`); a waived refusal takes no token.
    fn check_rate(&mut self, peer: &str, misses: &mut DefenceSet) -> Result<(), Refusal> {
        let max_rate = self.caps.max_rate;
        let Some(sensor) = self.sensors.get_mut(peer) else {
            return Err(refuse(Reason::Unauthorized, "no admitted connection", None));
        };
        let now = Instant::now();
        let rate = f64::from(max_rate);
        sensor.tokens =
            (sensor.tokens + now.duration_since(sensor.refilled).as_secs_f64() * rate).min(rate);
        sensor.refilled = now;
        let verdict = if sensor.tokens < 1.0 {
            Err(refuse(
                Reason::OverRate,
                format!("more than {max_rate} readings/s"),
                None,
            ))
        } else {
            sensor.tokens -= 1.0;
            Ok(())
        };
        self.switches.enforce(Defence::Limits, verdict, misses)
    }

    /// The checks once the sender and its keys are known: replay window
    /// (`replay_window`), tag (`authenticate`), reading syntax, freshness
    /// (`freshness`). Changes nothing: the caller accepts the counter into
    /// the window only when the reading is accepted.
    fn check_sealed(
        &self,
        peer: &str,
        keys: &SessionKeys,
        frame: &Frame,
        misses: &mut DefenceSet,
    ) -> Result<Reading, Refusal> {
        let counter = frame.counter();
        let switches = self.switches;
        let Some(sensor) = self.sensors.get(peer) else {
            return Err(refuse(Reason::Unauthorized, "no admitted sender", None));
        };
        let replay = sensor.window.check(counter).map_err(|e| {
            let detail = match e {
                Replay::Duplicate => format!("counter {counter} already accepted"),
                Replay::TooOld => format!("counter {counter} is below the replay window"),
            };
            refuse(Reason::Replayed, detail, Some(counter))
        });
        switches.enforce(Defence::ReplayWindow, replay, misses)?;
        let plain = match seal::open(keys, frame) {
            Ok(plain) => plain,
            Err(e) => {
                let refused = refuse(Reason::Undecryptable, e.to_string(), Some(counter));
                switches.enforce(Defence::Authenticate, Err(refused), misses)?;
                seal::decrypt_unauthenticated(keys, frame)
            }
        };
        let reading = Reading::decode(&plain)
            .map_err(|e| refuse(Reason::Malformed, e.to_string(), Some(counter)))?;
        if reading.sensor_id != frame.sender_id() || reading.counter != counter {
            return Err(refuse(
                Reason::Malformed,
                "sealed reading disagrees with its frame header",
                Some(counter),
            ));
        }
        let fresh = self.freshness(&reading, unix_us());
        switches.enforce(Defence::Freshness, fresh, misses)?;
        Ok(reading)
    }

    /// Stamped after the controller started, at most `max_age` old and not
    /// more than [`MAX_FUTURE`] ahead of `now_us`.
    fn freshness(&self, reading: &Reading, now_us: u64) -> Result<(), Refusal> {
        let (max_age, counter) = (self.caps.max_age, Some(reading.counter));
        let age = Duration::from_micros(now_us.saturating_sub(reading.timestamp_us));
        if reading.timestamp_us < self.started_us {
            return Err(refuse(
                Reason::Stale,
                "stamped before the controller started",
                counter,
            ));
        }
        if age > max_age {
            return Err(refuse(
                Reason::Stale,
                format!("{age:?} old, limit {max_age:?}"),
                counter,
            ));
        }
        if Duration::from_micros(reading.timestamp_us.saturating_sub(now_us)) > MAX_FUTURE {
            return Err(refuse(Reason::Stale, "stamped in the future", counter));
        }
        Ok(())
    }
}

fn stamp() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serve one sensor connection: admit it (allow-list, caps), then check every
/// frame it sends until it goes.
async fn connection(ctx: Context, conn: quinn::Connection, peer: String, state: Arc<Mutex<State>>) {
    let admitted = admit(&mut lock(&state), &peer);
    if let Err(refusal) = admitted {
        let reason = refusal.reason;
        refuse_input(&ctx, lock(&state), &peer, refusal);
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
                                refuse_input(&ctx, lock(&state), &peer, refuse(Reason::Oversize, detail, None));
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

/// Let a connection from `peer` in, within the allow-list and the caps.
fn admit(s: &mut State, peer: &str) -> Result<(), Refusal> {
    let per_sensor = s.caps.per_sensor;
    let sensor = s.enter(peer)?;
    if sensor.connections >= per_sensor {
        return Err(refuse(
            Reason::OverLimit,
            format!("more than {per_sensor} connections from one sensor"),
            None,
        ));
    }
    sensor.connections += 1;
    sensor.reconnected = true;
    Ok(())
}

fn release(state: &Mutex<State>, peer: &str) {
    if let Some(e) = lock(state).sensors.get_mut(peer) {
        e.connections = e.connections.saturating_sub(1);
    }
}

/// Check one input of a QUIC connection; accept and ACK it, or refuse it.
fn check(
    ctx: &Context,
    conn: &quinn::Connection,
    peer: &str,
    keys: &SessionKeys,
    state: &Mutex<State>,
    bytes: &[u8],
) {
    let mut s = lock(state);
    match verify_quic(&mut s, peer, keys, bytes) {
        Ok(accepted) => {
            let ack = deliver(ctx, s, peer, keys, accepted);
            if conn.send_datagram(ack.into()).is_ok() {
                ctx.metrics().sent += 1;
            }
        }
        Err(refusal) => refuse_input(ctx, s, peer, refusal),
    }
}

/// Readings as plain UDP datagrams, read one at a time into one fixed
/// buffer; each accepted one is ACKed to its source address.
async fn receive_udp(ctx: Context, socket: tokio::net::UdpSocket, state: Arc<Mutex<State>>) {
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("CPS UDP port: {e}");
                continue;
            }
        };
        let Some(ack) = udp_input(&ctx, &state, &buf[..n], from) else {
            continue;
        };
        if socket.send_to(&ack, from).await.is_ok() {
            ctx.metrics().sent += 1;
        }
    }
}

/// Check one UDP datagram; the sealed ACK if it was accepted.
fn udp_input(
    ctx: &Context,
    state: &Mutex<State>,
    bytes: &[u8],
    from: SocketAddr,
) -> Option<Vec<u8>> {
    let mut s = lock(state);
    match verify_udp(&mut s, ctx.identity(), bytes) {
        Ok((peer, keys, accepted)) => Some(deliver(ctx, s, &peer, &keys, accepted)),
        Err((peer, refusal)) => {
            let peer = peer.unwrap_or_else(|| from.to_string());
            refuse_input(ctx, s, &peer, refusal);
            None
        }
    }
}

/// Record an accepted reading (row, log, metrics, its counter in the window)
/// and seal its ACK.
fn deliver(
    ctx: &Context,
    mut s: MutexGuard<'_, State>,
    peer: &str,
    keys: &SessionKeys,
    accepted: Accepted,
) -> Vec<u8> {
    let Accepted { reading, misses } = accepted;
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
    s.delivered(peer, &reading, latency * 1e3, misses);
    drop(s);
    {
        let mut m = ctx.metrics();
        m.received += 1;
        m.latency.observe(latency);
        for d in misses.iter() {
            m.miss(d.as_str());
        }
    }
    seal::seal_ack(
        keys,
        &Ack {
            counter: reading.counter,
            received_us: unix_us(),
        },
    )
}

/// Record and report a refused input from `peer`.
fn refuse_input(ctx: &Context, mut s: MutexGuard<'_, State>, peer: &str, refusal: Refusal) {
    s.refused(peer, refusal.reason, &refusal.detail, refusal.counter);
    drop(s);
    ctx.reject(peer, refusal.reason, refusal.detail);
}

#[derive(Debug)]
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

/// A reading that passed every check in force.
#[derive(Debug)]
struct Accepted {
    reading: Reading,
    /// Switched-off defences that would have refused it.
    misses: DefenceSet,
}

/// A reading frame, or `malformed`.
fn reading_frame(bytes: &[u8]) -> Result<Frame<'_>, Refusal> {
    let frame = Frame::parse(bytes).map_err(|e| refuse(Reason::Malformed, e.to_string(), None))?;
    if frame.kind != FrameKind::Reading {
        return Err(refuse(Reason::Malformed, "expected a reading frame", None));
    }
    Ok(frame)
}

/// The checks of an input from the QUIC peer `peer`, cheapest first. Changes
/// nothing but the sender's rate budget.
fn verify_quic(
    s: &mut State,
    peer: &str,
    keys: &SessionKeys,
    bytes: &[u8],
) -> Result<Accepted, Refusal> {
    let mut misses = DefenceSet::default();
    s.check_size(bytes, &mut misses)?;
    s.check_rate(peer, &mut misses)?;
    let frame = reading_frame(bytes)?;
    if frame.sender_id() != sensor_id(peer) {
        return Err(refuse(
            Reason::Unauthorized,
            format!("sender id {:#010x} is not {peer}'s", frame.sender_id()),
            Some(frame.counter()),
        ));
    }
    let reading = s.check_sealed(peer, keys, &frame, &mut misses)?;
    Ok(Accepted { reading, misses })
}

/// A UDP datagram accepted (its sender's node and keys, and the reading), or
/// refused (its sender's node once known, `None` before: the source address
/// stands for it).
type UdpVerdict = Result<(String, Arc<SessionKeys>, Accepted), (Option<String>, Refusal)>;

/// The checks of a UDP datagram: size, frame, the id's node (its sender),
/// then as for QUIC from the rate on. Makes the sender's state (no more than
/// `max_sensors`) and keys; changes nothing else but its rate budget.
fn verify_udp(s: &mut State, own: &Identity, bytes: &[u8]) -> UdpVerdict {
    let mut misses = DefenceSet::default();
    s.check_size(bytes, &mut misses).map_err(|r| (None, r))?;
    let frame = reading_frame(bytes).map_err(|r| (None, r))?;
    let (peer, keys) = s
        .senders
        .sender(own, frame.sender_id(), frame.counter())
        .map_err(|r| (None, r))?;
    let named = |r| (Some(peer.clone()), r);
    s.enter(&peer).map_err(named)?;
    s.check_rate(&peer, &mut misses).map_err(named)?;
    let reading = s
        .check_sealed(&peer, &keys, &frame, &mut misses)
        .map_err(named)?;
    Ok((peer, keys, Accepted { reading, misses }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cps::reading::SensorKind;
    use rustls::pki_types::PrivatePkcs8KeyDer;

    const PEER: &str = "s1";

    fn keys() -> SessionKeys {
        SessionKeys::from_bytes([1; 32], [2; 32])
    }

    /// A controller with `options` that has admitted [`PEER`], whose UDP
    /// keys are already derived.
    fn state(options: serde_json::Value) -> State {
        let options: Options = serde_json::from_value(options).unwrap();
        let mut senders = UdpSenders::default();
        senders.by_id.insert(
            sensor_id(PEER),
            UdpSender::Node {
                name: PEER.into(),
                cert: CertificateDer::from(Vec::new()),
                keys: Some(Arc::new(keys())),
            },
        );
        let file = || tempfile::tempfile().unwrap();
        let mut s = State::new(
            Caps::new(&options),
            options.switches(),
            senders,
            file(),
            file(),
        );
        admit(&mut s, PEER).unwrap();
        s
    }

    /// A reading of [`PEER`] sealed `age` ago (negative: in the future).
    fn sealed(counter: u64, age_s: i64) -> Vec<u8> {
        let timestamp_us = unix_us().saturating_add_signed(-age_s * 1_000_000);
        seal::seal_reading(
            &keys(),
            &Reading {
                sensor_id: sensor_id(PEER),
                kind: SensorKind::Temperature,
                counter,
                timestamp_us,
                value: 21.5,
            },
        )
    }

    /// Check a QUIC input and, if it passes, accept it as [`deliver`] does:
    /// the defences it got past, or why it was refused.
    fn offer(s: &mut State, bytes: &[u8]) -> Result<(Reading, DefenceSet), Reason> {
        let a = verify_quic(s, PEER, &keys(), bytes).map_err(|r| r.reason)?;
        let max_age = s.caps.max_age;
        s.sensors
            .get_mut(PEER)
            .unwrap()
            .note_accepted(&a.reading, max_age);
        Ok((a.reading, a.misses))
    }

    fn misses(r: Result<(Reading, DefenceSet), Reason>) -> Result<Vec<Defence>, Reason> {
        r.map(|(_, m)| m.iter().collect())
    }

    /// A copy of `frame` with one bit of the sealed value flipped.
    fn tampered(frame: &[u8]) -> Vec<u8> {
        let mut bad = frame.to_vec();
        bad[seal::HEADER_LEN + Reading::LEN - 1] ^= 0x01;
        bad
    }

    #[test]
    fn with_every_defence_on_bad_inputs_are_refused_and_nothing_is_missed() {
        let mut s = state(serde_json::json!({ "max_rate": 4 }));
        let good = sealed(1, 0);
        assert_eq!(misses(offer(&mut s, &good)), Ok(vec![]));
        assert_eq!(misses(offer(&mut s, &good)), Err(Reason::Replayed));
        assert_eq!(
            misses(offer(&mut s, &tampered(&sealed(2, 0)))),
            Err(Reason::Undecryptable)
        );
        assert_eq!(misses(offer(&mut s, &sealed(3, 60))), Err(Reason::Stale));
        assert_eq!(misses(offer(&mut s, &sealed(4, 0))), Err(Reason::OverRate));
        assert_eq!(
            misses(offer(&mut s, &vec![0; seal::MAX_FRAME + 1])),
            Err(Reason::Oversize)
        );
    }

    #[test]
    fn replay_window_off_accepts_replays_as_misses_and_keeps_the_window() {
        let mut s = state(serde_json::json!({ "replay_window": "off" }));
        let first = sealed(200, 0);
        assert_eq!(misses(offer(&mut s, &first)), Ok(vec![]));
        for _ in 0..2 {
            assert_eq!(
                misses(offer(&mut s, &first)),
                Ok(vec![Defence::ReplayWindow])
            );
        }
        // Below the window: too old to tell, which the window refuses too.
        assert_eq!(
            misses(offer(&mut s, &sealed(1, 0))),
            Ok(vec![Defence::ReplayWindow])
        );
        // A counter never accepted (inside the window) is no miss.
        assert_eq!(misses(offer(&mut s, &sealed(199, 0))), Ok(vec![]));
        assert_eq!(misses(offer(&mut s, &sealed(201, 0))), Ok(vec![]));
        // Other defences still stand.
        assert_eq!(misses(offer(&mut s, &sealed(202, 60))), Err(Reason::Stale));
    }

    #[test]
    fn authenticate_off_decrypts_tampered_readings_as_misses() {
        let mut s = state(serde_json::json!({ "authenticate": "off" }));
        let good = sealed(1, 0);
        let (r, m) = offer(&mut s, &good).unwrap();
        assert!(m.is_empty());
        assert_eq!(r.value, 21.5);
        let (r, m) = offer(&mut s, &tampered(&sealed(2, 0))).unwrap();
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![Defence::Authenticate]);
        assert_eq!(r.value.to_bits(), 21.5f64.to_bits() ^ 1);
        // Random ciphertext decrypts to garbage: malformed, not accepted.
        let mut junk = sealed(3, 0);
        for (i, b) in junk[seal::HEADER_LEN..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ 0x5a;
        }
        assert_eq!(misses(offer(&mut s, &junk)), Err(Reason::Malformed));
        assert_eq!(misses(offer(&mut s, &good)), Err(Reason::Replayed));
    }

    #[test]
    fn freshness_off_accepts_stale_and_future_readings_as_misses() {
        let mut s = state(serde_json::json!({ "freshness": "off" }));
        assert_eq!(misses(offer(&mut s, &sealed(1, 0))), Ok(vec![]));
        assert_eq!(
            misses(offer(&mut s, &sealed(2, 60))),
            Ok(vec![Defence::Freshness])
        );
        assert_eq!(
            misses(offer(&mut s, &sealed(3, -60))),
            Ok(vec![Defence::Freshness])
        );
        assert_eq!(
            misses(offer(&mut s, &tampered(&sealed(4, 0)))),
            Err(Reason::Undecryptable)
        );
    }

    #[test]
    fn limits_off_accepts_over_rate_readings_as_misses_but_frames_stay_bounded() {
        let mut s = state(serde_json::json!({ "limits": "off", "max_rate": 2 }));
        assert_eq!(misses(offer(&mut s, &sealed(1, 0))), Ok(vec![]));
        assert_eq!(misses(offer(&mut s, &sealed(2, 0))), Ok(vec![]));
        assert_eq!(
            misses(offer(&mut s, &sealed(3, 0))),
            Ok(vec![Defence::Limits])
        );
        assert_eq!(
            misses(offer(&mut s, &vec![0; seal::MAX_FRAME + 1])),
            Err(Reason::Malformed)
        );
    }

    #[test]
    fn every_missed_defence_is_named() {
        let mut s = state(serde_json::json!({
            "replay_window": "off", "freshness": "off", "authenticate": "off"
        }));
        let old = sealed(1, 60);
        assert_eq!(misses(offer(&mut s, &old)), Ok(vec![Defence::Freshness]));
        let (_, m) = offer(&mut s, &tampered(&old)).unwrap();
        assert_eq!(
            m.reason(),
            "miss:replay_window;miss:authenticate;miss:freshness"
        );
    }

    fn nobody() -> Identity {
        Identity {
            node: "controller".into(),
            cert: CertificateDer::from(Vec::new()),
            key: PrivatePkcs8KeyDer::from(Vec::new()),
            ca: CertificateDer::from(Vec::new()),
        }
    }

    fn udp(s: &mut State, bytes: &[u8]) -> Result<String, (Option<String>, Reason)> {
        let (peer, keys, a) = verify_udp(s, &nobody(), bytes).map_err(|(p, r)| (p, r.reason))?;
        let max_age = s.caps.max_age;
        s.sensors
            .get_mut(&peer)
            .unwrap()
            .note_accepted(&a.reading, max_age);
        assert!(Arc::ptr_eq(
            &keys,
            &s.senders.sender(&nobody(), sensor_id(PEER), 0).unwrap().1
        ));
        Ok(peer)
    }

    #[test]
    fn udp_senders_are_named_by_their_id_and_share_the_sensor_state() {
        let mut s = state(serde_json::json!({}));
        let good = sealed(1, 0);
        assert_eq!(udp(&mut s, &good), Ok(PEER.to_string()));
        // One replay window for both ways in.
        assert_eq!(misses(offer(&mut s, &good)), Err(Reason::Replayed));
        assert_eq!(offer(&mut s, &sealed(2, 0)).map(|_| ()), Ok(()));
        assert_eq!(
            udp(&mut s, &sealed(2, 0)),
            Err((Some(PEER.to_string()), Reason::Replayed))
        );
        // An id no certificate was loaded for: unauthorized, no state made.
        let mut other = good.clone();
        other[4..8].copy_from_slice(&sensor_id("mallory").to_be_bytes());
        assert_eq!(udp(&mut s, &other), Err((None, Reason::Unauthorized)));
        assert!(!s.sensors.contains_key("mallory"));
        assert_eq!(udp(&mut s, &[0x42; 40]), Err((None, Reason::Malformed)));
        assert_eq!(
            udp(&mut s, &tampered(&sealed(3, 0))),
            Err((Some(PEER.to_string()), Reason::Undecryptable))
        );
        assert_eq!(s.sensors.len(), 1);
    }
}
