//! The minimal role: `heartbeat` answers every heartbeat it receives and, with
//! `to = "NODE"`, sends one to that node every `interval` and measures the
//! round trip. It is what the scale benchmark runs on 1,000 vehicles.

use std::time::Duration;

use serde::Deserialize;

use super::{Context, connect, duration_option, serve};
use crate::events::Event;

/// Connections a heartbeat agent serves at once (a hub for a 1,000-car fleet).
const MAX_CONNECTIONS: usize = 2048;
/// A heartbeat is the sender's clock (unix µs), echoed back unchanged.
const HEARTBEAT_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The node to send heartbeats to (it must run `heartbeat` too).
    pub to: Option<String>,
    /// Time between heartbeats, e.g. "1s" (default), at least 10ms.
    pub interval: Option<String>,
}

impl Options {
    pub fn interval(&self) -> Result<Duration, String> {
        duration_option(
            "interval",
            self.interval.as_deref(),
            Duration::from_secs(1),
            Duration::from_millis(10),
        )
    }
}

pub async fn run(options: Options, ctx: Context) {
    let interval = options.interval().unwrap_or(Duration::from_secs(1));
    let server = tokio::spawn(serve(ctx.clone(), MAX_CONNECTIONS, echo));
    let Some(peer) = options.to else {
        ctx.ready();
        let _ = server.await;
        return;
    };
    let mut ready = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect(&ctx, &peer).await {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                if !ready {
                    ctx.ready();
                    ready = true;
                }
                let reason = beat(&ctx, &conn, interval).await;
                ctx.event(Event::PeerLost {
                    peer: peer.clone(),
                    reason,
                });
            }
            Err(e) => {
                tracing::debug!(peer, "connect: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Send heartbeats and time their echoes until the connection ends.
async fn beat(ctx: &Context, conn: &quinn::Connection, interval: Duration) -> String {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = crate::events::unix_us().to_be_bytes();
                if let Err(e) = conn.send_datagram(now.to_vec().into()) {
                    return e.to_string();
                }
                ctx.metrics().sent += 1;
            }
            d = conn.read_datagram() => match d {
                Ok(d) => {
                    if let Ok(sent) = <[u8; HEARTBEAT_LEN]>::try_from(d.as_ref()) {
                        let rtt = crate::events::unix_us().saturating_sub(u64::from_be_bytes(sent));
                        let mut m = ctx.metrics();
                        m.received += 1;
                        m.latency.observe(rtt as f64 / 1e6);
                    }
                }
                Err(e) => return e.to_string(),
            }
        }
    }
}

/// Echo each heartbeat back to its sender.
async fn echo(ctx: Context, conn: quinn::Connection, _peer: String) {
    while let Ok(d) = conn.read_datagram().await {
        if d.len() == HEARTBEAT_LEN {
            ctx.metrics().received += 1;
            if conn.send_datagram(d).is_ok() {
                ctx.metrics().sent += 1;
            }
        }
    }
}
