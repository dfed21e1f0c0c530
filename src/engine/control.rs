//! The engine's control socket: `engine.sock` in the lab's state folder, a
//! Unix stream socket only root can open (mode 0600, root's folder). One JSON
//! request per connection, one JSON response, then the engine closes it.
//! Requests are limited to [`MAX_REQUEST_BYTES`] and must arrive within
//! [`REQUEST_TIMEOUT`]; the engine answers each connection in turn.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::warn;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::attack::stage::{Armed, AttackCounters, Capture, SharedCapture};
use crate::attack::{AttackSpec, Directory};
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
    /// Start an attack. With `capture`, the request carries a file
    /// descriptor (SCM_RIGHTS) for the attack's pcapng.
    AttackStart {
        spec: Box<AttackSpec>,
        directory: Directory,
        capture: bool,
    },
    /// Stop a running attack.
    AttackStop { id: u64 },
    /// Every attack started, with counters.
    AttackList,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Report(Report),
    Done,
    Started { id: u64, lanes: Vec<String> },
    Attacks(Vec<AttackReport>),
    Error(String),
}

/// One attack the engine started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackReport {
    pub id: u64,
    pub spec: AttackSpec,
    /// `RELAY a->b` for each direction it runs on.
    pub lanes: Vec<String>,
    /// Running on at least one direction (started, not stopped, not expired,
    /// budget left).
    pub active: bool,
    pub stopped: bool,
    /// Summed over its directions.
    pub counters: AttackCounters,
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

/// The engine's side of the control socket: its links and the attacks it
/// started.
pub struct Control {
    links: Vec<(String, RelayHandle)>,
    /// The relay clock's zero (captures stamp frames in wall time).
    clock: Instant,
    attacks: Vec<Started>,
    next_id: u64,
}

struct Started {
    id: u64,
    spec: AttackSpec,
    lanes: Vec<(usize, Direction)>,
    stopped: bool,
    capture: Option<SharedCapture>,
}

/// Most attacks one engine keeps (running or stopped, for `attack list`).
pub const MAX_ATTACKS: usize = 1_024;

impl Control {
    pub fn new(links: Vec<(String, RelayHandle)>, clock: Instant) -> Control {
        Control {
            links,
            clock,
            attacks: Vec::new(),
            next_id: 1,
        }
    }

    /// Answers requests until the process ends.
    pub fn serve(mut self, listener: &UnixListener) {
        for conn in listener.incoming() {
            let result = conn.and_then(|mut stream| {
                stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
                stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
                let (line, fds) = read_request(&stream)?;
                let response = match serde_json::from_str::<Request>(&line) {
                    Ok(request) => self.answer(request, fds),
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

    fn answer(&mut self, request: Request, mut fds: Vec<OwnedFd>) -> Response {
        let links = &self.links;
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
            Request::AttackStart {
                spec,
                directory,
                capture,
            } => {
                let file =
                    if capture {
                        match fds.pop() {
                            Some(fd) => Some(File::from(fd)),
                            None => return Response::Error(
                                "capture asked for but no file descriptor came with the request"
                                    .into(),
                            ),
                        }
                    } else {
                        None
                    };
                match self.start(*spec, &directory, file) {
                    Ok(r) => r,
                    Err(e) => Response::Error(e),
                }
            }
            Request::AttackStop { id } => {
                let Some(a) = self.attacks.iter_mut().find(|a| a.id == id) else {
                    return Response::Error(format!("no attack {id}"));
                };
                a.stopped = true;
                for &(i, d) in &a.lanes {
                    self.links[i].1.stop_attack(d, id);
                }
                if let Some(c) = &a.capture {
                    c.lock().unwrap_or_else(PoisonError::into_inner).flush();
                }
                Response::Done
            }
            Request::AttackList => Response::Attacks(self.list()),
        }
    }

    fn start(
        &mut self,
        spec: AttackSpec,
        directory: &Directory,
        capture: Option<File>,
    ) -> Result<Response, String> {
        if self.attacks.len() >= MAX_ATTACKS {
            return Err(format!("the engine keeps at most {MAX_ATTACKS} attacks"));
        }
        let names: Vec<String> = self.links.iter().map(|(n, _)| n.clone()).collect();
        let lanes = spec.lanes(&names).map_err(|e| e.to_string())?;
        let checked = spec.arm(directory).map_err(|e| e.to_string())?;
        let id = self.next_id;
        let now = self.clock.elapsed().as_nanos() as u64;
        let capture = capture
            .map(|f| Capture::new(f, id, now))
            .transpose()
            .map_err(|e| format!("capture: {e}"))?;
        // Crafted frames enter the path once: on a segment, on the way from
        // the bridge into the `to` node's port (the bridge would not send a
        // frame back out of the port it came in on); on a link, a to b.
        let lanes = if checked.program.inject.is_some() {
            let member = spec
                .params
                .get("to")
                .map(|to| format!("{}:{to}", spec.network()));
            let into = member
                .and_then(|m| names.iter().position(|n| *n == m))
                .map(|i| (i, Direction::BToA));
            vec![into.unwrap_or(lanes[0])]
        } else {
            lanes
        };
        // Injections count frames sent (in the program); others share one
        // budget of frames acted on across their directions.
        let budget = match (&checked.program.inject, spec.count) {
            (None, Some(c)) => Some(Arc::new(AtomicU64::new(c))),
            _ => None,
        };
        let program = Arc::new(checked.program);
        for (k, &(i, d)) in lanes.iter().enumerate() {
            self.links[i].1.start_attack(
                d,
                Armed {
                    id,
                    matcher: checked.matcher.clone(),
                    program: Arc::clone(&program),
                    after: spec.after,
                    duration: spec.duration,
                    budget: budget.clone(),
                    seed: spec.seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    capture: capture.clone(),
                },
            );
        }
        self.next_id += 1;
        let lane_names = lanes
            .iter()
            .map(|&(i, d)| lane_name(&names[i], d))
            .collect();
        tracing::info!(id, kind = spec.kind, on = spec.on, "attack started");
        self.attacks.push(Started {
            id,
            spec,
            lanes,
            stopped: false,
            capture,
        });
        Ok(Response::Started {
            id,
            lanes: lane_names,
        })
    }

    fn list(&self) -> Vec<AttackReport> {
        self.attacks
            .iter()
            .map(|a| {
                let mut counters = AttackCounters::default();
                let mut active = false;
                for &(i, d) in &a.lanes {
                    for s in self.links[i].1.attacks(d).iter().filter(|s| s.id == a.id) {
                        counters.add(&s.counters);
                        active |= s.active;
                    }
                }
                AttackReport {
                    id: a.id,
                    spec: a.spec.clone(),
                    lanes: a
                        .lanes
                        .iter()
                        .map(|&(i, d)| lane_name(&self.links[i].0, d))
                        .collect(),
                    active: active && !a.stopped,
                    stopped: a.stopped,
                    counters,
                }
            })
            .collect()
    }
}

fn lane_name(relay: &str, d: Direction) -> String {
    match d {
        Direction::AToB => format!("{relay} a->b"),
        Direction::BToA => format!("{relay} b->a"),
    }
}

/// Reads one request line and any file descriptors sent with it.
fn read_request(stream: &UnixStream) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !line.contains(&b'\n') {
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these descriptors in this
                // process for us (SCM_RIGHTS); nothing else owns them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = msg.bytes;
        if n == 0 {
            break;
        }
        if line.len() + n > MAX_REQUEST_BYTES as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too long",
            ));
        }
        line.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "request is not UTF-8"))?;
    Ok((text, fds))
}

/// Sends one request to a lab's engine and reads its response.
pub fn request(lab: &str, request: &Request) -> io::Result<Response> {
    request_with_fd(lab, request, None)
}

/// Like [`request`], passing `fd` along (SCM_RIGHTS).
pub fn request_with_fd(
    lab: &str,
    request: &Request,
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<Response> {
    let mut stream = UnixStream::connect(socket_path(lab))?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut bytes = serde_json::to_vec(request).map_err(io::Error::other)?;
    bytes.push(b'\n');
    match fd {
        Some(fd) => {
            let fds = [fd.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let sent = sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(&bytes)],
                &cmsg,
                MsgFlags::empty(),
                None,
            )?;
            stream.write_all(&bytes[sent..])?;
        }
        None => stream.write_all(&bytes)?,
    }
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
        other => Err(io::Error::other(format!(
            "unexpected answer to show: {other:?}"
        ))),
    }
}
