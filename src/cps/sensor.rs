//! `cps-sensor`: one of seed 002's six sensors. Every `interval` it takes a
//! value from its model, seals it (AES-256-GCM under the session key it
//! shares with the controller; nonce = its id ‖ a counter that survives
//! restarts) and sends it as a QUIC datagram; the controller's sealed ACK
//! gives the round trip.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;

use super::counter::NonceCounter;
use super::model::ValueModel;
use super::reading::{Ack, Reading, SensorKind};
use super::seal::{self, Frame, FrameKind, SessionKeys};
use super::{sensor_id, session_keys};
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
    /// latency instead.
    pub transport: Option<Transport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Datagram,
    Stream,
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
}

/// A sensor with its nonce counter open (a root-owned 0600 file).
pub struct Sensor {
    options: Options,
    counter: NonceCounter,
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
        Ok(Sensor { options, counter })
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
            let reason = self
                .session(&ctx, &conn, &keys, &mut model, interval)
                .await?;
            ctx.event(Event::PeerLost {
                peer: controller.clone(),
                reason,
            });
        }
    }

    /// Send readings and match ACKs until the connection ends (its reason).
    async fn session(
        &mut self,
        ctx: &Context,
        conn: &quinn::Connection,
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
                    let frame = seal::seal_reading(keys, &reading);
                    let sent = match self.options.transport.unwrap_or(Transport::Datagram) {
                        Transport::Datagram => conn.send_datagram(frame.into()).map_err(|e| e.to_string()),
                        Transport::Stream => send_stream(conn, frame).await,
                    };
                    if let Err(e) = sent {
                        return Ok(e);
                    }
                    ctx.metrics().sent += 1;
                    if pending.len() == MAX_PENDING {
                        pending.pop_front();
                    }
                    pending.push_back((counter, now));
                }
                d = conn.read_datagram() => {
                    let d = match d {
                        Ok(d) => d,
                        Err(e) => return Ok(e.to_string()),
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
