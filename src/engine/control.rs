//! The engine's control socket: `engine.sock` in the lab's state folder, a
//! Unix stream socket only root can open (mode 0600, root's folder). One JSON
//! request per connection, one JSON response, then the engine closes it.
//! Requests are limited to [`MAX_REQUEST_BYTES`] and must arrive within
//! [`REQUEST_TIMEOUT`]; the engine answers each connection in turn.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::emulation::pipeline::{Direction, DirectionParams};
use crate::emulation::relay::{LaneStats, RelayHandle};
use crate::lab::state;

/// Largest request the engine reads.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Largest response a client reads.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// How long either side waits for the other.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Path of a lab's engine control socket.
pub fn socket_path(lab: &str) -> PathBuf {
    state::lab_dir(lab).join("engine.sock")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Every link's parameters and counters.
    Show,
    /// Change one direction of one link (frames already held keep their
    /// release times; the queue is kept).
    Set {
        link: String,
        direction: Direction,
        params: Box<DirectionParams>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Report(Report),
    Done,
    Error(String),
}

/// What the engine carries now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub pid: u32,
    pub links: Vec<LinkReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    pub name: String,
    pub ab: DirectionReport,
    pub ba: DirectionReport,
}

impl LinkReport {
    pub fn direction(&self, direction: Direction) -> &DirectionReport {
        match direction {
            Direction::AToB => &self.ab,
            Direction::BToA => &self.ba,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionReport {
    pub params: DirectionParams,
    pub stats: LaneStats,
}

/// Binds the control socket (replacing a stale one), readable by root only.
pub fn bind(lab: &str) -> io::Result<UnixListener> {
    let path = socket_path(lab);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests until the process ends.
pub fn serve(listener: &UnixListener, links: &[(String, RelayHandle)]) {
    for conn in listener.incoming() {
        let result = conn.and_then(|mut stream| {
            stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
            stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
            let mut line = String::new();
            BufReader::new((&stream).take(MAX_REQUEST_BYTES)).read_line(&mut line)?;
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(request) => answer(request, links),
                Err(e) => Response::Error(format!("bad request: {e}")),
            };
            let mut bytes = serde_json::to_vec(&response).map_err(io::Error::other)?;
            bytes.push(b'\n');
            stream.write_all(&bytes)
        });
        if let Err(e) = result {
            warn!("control connection: {e}");
        }
    }
}

fn answer(request: Request, links: &[(String, RelayHandle)]) -> Response {
    match request {
        Request::Show => Response::Report(Report {
            pid: std::process::id(),
            links: links
                .iter()
                .map(|(name, h)| {
                    let report = |d| DirectionReport {
                        params: h.params(d),
                        stats: h.stats(d),
                    };
                    LinkReport {
                        name: name.clone(),
                        ab: report(Direction::AToB),
                        ba: report(Direction::BToA),
                    }
                })
                .collect(),
        }),
        Request::Set {
            link,
            direction,
            params,
        } => match links.iter().find(|(name, _)| *name == link) {
            None => Response::Error(format!("the engine carries no link named {link}")),
            Some((_, h)) => match h.set_params(direction, *params) {
                Ok(()) => Response::Done,
                Err(e) => Response::Error(e.to_string()),
            },
        },
    }
}

/// Sends one request to a lab's engine and reads its response.
pub fn request(lab: &str, request: &Request) -> io::Result<Response> {
    let mut stream = UnixStream::connect(socket_path(lab))?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut bytes = serde_json::to_vec(request).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)?;
    let mut line = String::new();
    BufReader::new(stream.take(MAX_RESPONSE_BYTES)).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad response from the engine: {e}"),
        )
    })
}

/// The engine's report, if it answers.
pub fn show(lab: &str) -> io::Result<Report> {
    match request(lab, &Request::Show)? {
        Response::Report(r) => Ok(r),
        Response::Error(e) => Err(io::Error::other(e)),
        Response::Done => Err(io::Error::other("unexpected answer to show")),
    }
}
