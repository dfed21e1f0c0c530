//! `cps-sensor`: one of seed 002's six sensors. Every `interval` it takes a
//! value from its model, seals it (AES-256-GCM under the session key it
//! shares with the controller; nonce = its id ‖ a counter that survives
//! restarts) and sends it over its transport: a QUIC datagram or stream, or a
//! plain UDP datagram. The controller's sealed ACK gives the round trip. The
//! transports differ only in how the bytes move ([`Link`]).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use super::counter::NonceCounter;
use super::model::ValueModel;
use super::reading::{Ack, Reading, SensorKind};
use super::seal::{self, Frame, FrameKind, SessionKeys};
use super::{CPS_UDP_PORT, sensor_id, session_keys};
use crate::agent::identity;
use crate::agent::{
    AgentConfig, AgentError, Context, connect, duration_option, peer_cert, state_file,
};
use crate::events::{Event, Reason, unix_us};

/// Readings awaiting an ACK, oldest first; older ones are forgotten (dropped).
const MAX_PENDING: usize = 1024;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// temperature, motion, humidity, door, smoke or energy.
    pub sensor: SensorKind,
    /// Time between readings (default "1s", at least "1ms").
    pub interval: Option<String>,
    /// The controller's node name (default "controller").
    pub controller: Option<String>,
    /// "datagram" (default): each reading is one QUIC datagram, lost when
    /// the network loses it. "stream": each reading on its own QUIC stream,
    /// retransmitted until delivered (seed 002's TCP), so losses show up as
    /// latency instead. "udp": each reading one plain UDP datagram to the
    /// controller's [`CPS_UDP_PORT`], without TLS (seed 002's setup: only the
    /// seal protects it).
    pub transport: Option<Transport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Datagram,
    Stream,
    Udp,
}

impl Options {
    pub fn interval(&self) -> Result<Duration, String> {
        duration_option(
            "interval",
            self.interval.as_deref(),
            Duration::from_secs(1),
            Duration::from_millis(1),
        )
    }

    pub fn controller(&self) -> &str {
        self.controller.as_deref().unwrap_or("controller")
    }

    pub fn transport(&self) -> Transport {
        self.transport.unwrap_or(Transport::Datagram)
    }
}

/// A sensor with its nonce counter open (a root-owned 0600 file).
pub struct Sensor {
    options: Options,
    counter: NonceCounter,
    /// The controller's certificate, read at start for the `udp` transport
    /// (no handshake brings it); `None` for the QUIC transports.
    udp_peer: Option<CertificateDer<'static>>,
}

impl Sensor {
    pub fn prepare(options: Options, config: &AgentConfig) -> Result<Sensor, AgentError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = state_file(&config.lab, &config.node, "counter");
        let io = |source| AgentError::Io {
            what: format!("nonce counter {}", path.display()),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let counter = NonceCounter::open(file).map_err(io)?;
        let udp_peer = match options.transport() {
            Transport::Udp => Some(identity::load_cert(&config.lab, options.controller())?),
            Transport::Datagram | Transport::Stream => None,
        };
        Ok(Sensor {
            options,
            counter,
            udp_peer,
        })
    }

    pub async fn run(mut self, ctx: Context) -> Result<(), AgentError> {
        let interval = self.options.interval().unwrap_or(Duration::from_secs(1));
        let controller = self.options.controller().to_string();
        let me = ctx.node().to_string();
        let mut model = ValueModel::new(self.options.sensor, ctx.config().seed);
        tracing::info!(
            sensor = %self.options.sensor,
            id = sensor_id(&me),
            next_counter = self.counter.peek(),
            "nonce counter resumes"
        );
        if let Some(cert) = self.udp_peer.take() {
            let addr = ctx
                .addr_of(&controller)
                .ok_or_else(|| AgentError::UnknownPeer(controller.clone()))?;
            let io = |source| AgentError::Io {
                what: "UDP socket".into(),
                source,
            };
            let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .await
                .map_err(io)?;
            let keys = session_keys(ctx.identity(), &cert, true, &me)?;
            ctx.ready();
            let link = Link::Udp {
                socket: &socket,
                to: SocketAddr::new(addr, CPS_UDP_PORT),
            };
            let why = self
                .session(&ctx, &link, &keys, &mut model, interval)
                .await?;
            return Err(io(std::io::Error::other(why)));
        }
        let streams = self.options.transport() == Transport::Stream;
        let mut ready = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let conn = match connect(&ctx, &controller).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(controller, "connect: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let Some(cert) = peer_cert(&conn) else {
                conn.close(1u32.into(), b"no certificate");
                continue;
            };
            let keys = session_keys(ctx.identity(), &cert, true, &me)?;
            if !ready {
                ctx.ready();
                ready = true;
            }
            let link = Link::Quic {
                conn: &conn,
                streams,
            };
            let reason = self
                .session(&ctx, &link, &keys, &mut model, interval)
                .await?;
            ctx.event(Event::PeerLost {
                peer: controller.clone(),
                reason,
            });
        }
    }

    /// Send readings and match ACKs until the link ends (its reason).
    async fn session(
        &mut self,
        ctx: &Context,
        link: &Link<'_>,
        keys: &SessionKeys,
        model: &mut ValueModel,
        interval: Duration,
    ) -> Result<String, AgentError> {
        let id = sensor_id(ctx.node());
        let peer = self.options.controller().to_string();
        let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let counter = self.counter.next().map_err(|source| AgentError::Io {
                        what: "advancing the nonce counter".into(),
                        source,
                    })?;
                    let now = unix_us();
                    let reading = Reading {
                        sensor_id: id,
                        kind: self.options.sensor,
                        counter,
                        timestamp_us: now,
                        value: model.next(now as f64 / 1e6),
                    };
                    match link.send(seal::seal_reading(keys, &reading)).await {
                        Ok(true) => ctx.metrics().sent += 1,
                        Ok(false) => continue,
                        Err(e) => return Ok(e),
                    }
                    if pending.len() == MAX_PENDING {
                        pending.pop_front();
                    }
                    pending.push_back((counter, now));
                }
                d = link.recv() => {
                    let d = match d {
                        Ok(d) => d,
                        Err(e) => return Ok(e),
                    };
                    match open_ack(keys, &d) {
                        Ok(ack) => {
                            if let Some(i) = pending.iter().position(|(c, _)| *c == ack.counter) {
                                let (_, sent) = pending.remove(i).unwrap_or_default();
                                let mut m = ctx.metrics();
                                m.received += 1;
                                m.latency.observe(unix_us().saturating_sub(sent) as f64 / 1e6);
                            }
                        }
                        Err((reason, detail)) => ctx.reject(&peer, reason, detail),
                    }
                }
            }
        }
    }
}

/// How readings reach the controller and its ACKs come back.
enum Link<'a> {
    /// A mutual-TLS QUIC connection: readings as datagrams, or each on a
    /// stream of its own; ACKs as datagrams.
    Quic {
        conn: &'a quinn::Connection,
        streams: bool,
    },
    /// Plain UDP to the controller's [`CPS_UDP_PORT`]; ACKs come back to the
    /// same socket.
    Udp {
        socket: &'a tokio::net::UdpSocket,
        to: SocketAddr,
    },
}

impl Link<'_> {
    /// Send one sealed reading: `Ok(false)` if it was lost on the way out (a
    /// UDP send error; the link stays), `Err` once the link is gone (why).
    async fn send(&self, frame: Vec<u8>) -> Result<bool, String> {
        match self {
            Link::Quic {
                conn,
                streams: false,
            } => conn
                .send_datagram(frame.into())
                .map(|()| true)
                .map_err(|e| e.to_string()),
            Link::Quic {
                conn,
                streams: true,
            } => send_stream(conn, frame).await.map(|()| true),
            Link::Udp { socket, to } => match socket.send_to(&frame, to).await {
                Ok(_) => Ok(true),
                Err(e) => {
                    tracing::debug!(%to, "UDP send: {e}");
                    Ok(false)
                }
            },
        }
    }

    /// The next datagram from the controller (UDP: read into a fixed buffer
    /// one byte longer than a frame, so a longer one shows as oversize).
    /// `Err` once the link is gone.
    async fn recv(&self) -> Result<Vec<u8>, String> {
        match self {
            Link::Quic { conn, .. } => conn
                .read_datagram()
                .await
                .map(|d| d.to_vec())
                .map_err(|e| e.to_string()),
            Link::Udp { socket, .. } => loop {
                let mut buf = [0u8; seal::MAX_FRAME + 1];
                match socket.recv_from(&mut buf).await {
                    Ok((n, _)) => return Ok(buf[..n].to_vec()),
                    Err(e) => tracing::debug!("UDP receive: {e}"),
                }
            },
        }
    }
}

/// One reading on a stream of its own. Only opening the stream is awaited
/// (it waits for the controller's stream credit); delivery runs on.
async fn send_stream(conn: &quinn::Connection, frame: Vec<u8>) -> Result<(), String> {
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if send.write_all(&frame).await.is_ok() {
            let _ = send.finish();
        }
    });
    Ok(())
}

fn open_ack(keys: &SessionKeys, bytes: &[u8]) -> Result<Ack, (Reason, String)> {
    let frame = Frame::parse(bytes).map_err(|e| {
        let reason = if bytes.len() > seal::MAX_FRAME {
            Reason::Oversize
        } else {
            Reason::Malformed
        };
        (reason, e.to_string())
    })?;
    if frame.kind != FrameKind::Ack {
        return Err((Reason::Malformed, "expected an ACK frame".into()));
    }
    let plain = seal::open(keys, &frame).map_err(|e| (Reason::Undecryptable, e.to_string()))?;
    Ack::decode(&plain).map_err(|e| (Reason::Malformed, e.to_string()))
}
