//! Named attacks: each a composition of primitives with parameters and a
//! description (`testbed attack list-kinds`).
//!
//! **Adding an attack.** Write an [`AttackKind`] (a name, a description, its
//! parameters with defaults, and a `build` function that turns checked
//! arguments into a [`Program`]) and list it in [`KINDS`]. Applications add
//! their own this way (BSM spoofing, OTA rollback): `build` gets typed
//! accessors for durations, numbers, byte strings and lab nodes ([`Args`]),
//! and every parameter error names the attack and the parameter.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::packet;
use super::primitives::{Edit, Injection, MAX_COPIES, MAX_DELAY, Primitive, Program};
use super::{AttackError, Directory, Host};

/// One parameter of an attack kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    /// `None`: the parameter is required.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// A named attack. See the module docs.
#[derive(Debug)]
pub struct AttackKind {
    pub name: &'static str,
    pub description: &'static str,
    pub params: &'static [Param],
    /// The program for these (checked) arguments.
    pub build: fn(&Args<'_>) -> Result<Program, AttackError>,
}

/// Every attack kind testbed knows, in `list-kinds` order.
pub static KINDS: &[&AttackKind] = &[
    &SNIFF, &DROP, &DELAY, &DUPLICATE, &TAMPER, &REPLAY, &INJECT, &FLOOD,
];

/// The kind called `name`.
pub fn kind(name: &str) -> Result<&'static AttackKind, AttackError> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.name == name)
        .ok_or_else(|| AttackError::UnknownKind {
            kind: name.to_string(),
            known: KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
        })
}

/// Most crafted frames one attack may send.
pub const MAX_INJECT: u64 = 1_000_000;
/// Largest crafted payload.
pub const MAX_PAYLOAD: usize = 8_192;

/// An attack's arguments, checked against its parameters: unknown names are
/// refused when built, and a missing one takes its default.
pub struct Args<'a> {
    kind: &'static AttackKind,
    values: &'a BTreeMap<String, String>,
    directory: &'a Directory,
    /// The network the attack runs on (a segment or link name), where
    /// crafted frames are addressed.
    pub network: &'a str,
    /// How many frames the attack acts on (or, for injections, sends).
    pub count: Option<u64>,
    pub seed: u64,
}

impl<'a> Args<'a> {
    /// Checks `values` against `kind`'s parameters.
    pub fn new(
        kind: &'static AttackKind,
        values: &'a BTreeMap<String, String>,
        directory: &'a Directory,
        network: &'a str,
        count: Option<u64>,
        seed: u64,
    ) -> Result<Args<'a>, AttackError> {
        for name in values.keys() {
            if !kind.params.iter().any(|p| p.name == name) {
                return Err(AttackError::Param {
                    kind: kind.name,
                    param: name.clone(),
                    message: format!(
                        "unknown parameter; {} takes: {}",
                        kind.name,
                        param_list(kind)
                    ),
                });
            }
        }
        Ok(Args {
            kind,
            values,
            directory,
            network,
            count,
            seed,
        })
    }

    fn error(&self, param: &str, message: impl Into<String>) -> AttackError {
        AttackError::Param {
            kind: self.kind.name,
            param: param.to_string(),
            message: message.into(),
        }
    }

    /// The value given, else the default; `None` for an optional parameter
    /// left out.
    pub fn text(&self, name: &str) -> Result<Option<&str>, AttackError> {
        let param = self
            .kind
            .params
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                self.error(name, "not a parameter of this attack (a bug in its build)")
            })?;
        Ok(self
            .values
            .get(name)
            .map(String::as_str)
            .or(param.default)
            .filter(|v| !v.is_empty()))
    }

    fn required(&self, name: &str) -> Result<&str, AttackError> {
        self.text(name)?.ok_or_else(|| self.error(name, "required"))
    }

    pub fn duration(&self, name: &str) -> Result<Duration, AttackError> {
        let text = self.required(name)?;
        let d = humantime::parse_duration(text).map_err(|e| {
            self.error(
                name,
                format!("expected a duration such as 1s or 250ms: {e}"),
            )
        })?;
        if d > MAX_DELAY {
            return Err(self.error(
                name,
                format!("at most {}", humantime::format_duration(MAX_DELAY)),
            ));
        }
        Ok(d)
    }

    pub fn number(&self, name: &str, max: u64) -> Result<u64, AttackError> {
        let text = self.required(name)?;
        let n: u64 = text
            .parse()
            .map_err(|_| self.error(name, format!("expected a whole number, found `{text}`")))?;
        if n > max {
            return Err(self.error(name, format!("at most {max}")));
        }
        Ok(n)
    }

    pub fn fraction(&self, name: &str) -> Result<f64, AttackError> {
        let text = self.required(name)?;
        match text.parse::<f64>() {
            Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
            _ => Err(self.error(
                name,
                format!("expected a probability from 0 to 1, found `{text}`"),
            )),
        }
    }

    pub fn bytes(&self, name: &str) -> Result<Option<Vec<u8>>, AttackError> {
        self.text(name)?
            .map(|t| packet::parse_hex(t).map_err(|e| self.error(name, e.to_string())))
            .transpose()
    }

    /// Frames per second, as the interval between two frames.
    pub fn rate(&self, name: &str) -> Result<Duration, AttackError> {
        let per_s = self.number(name, 1_000_000)?;
        if per_s == 0 {
            return Err(self.error(name, "must be at least 1"));
        }
        Ok(Duration::from_nanos(1_000_000_000 / per_s))
    }

    /// The address of node `name`'s interface on the attack's network.
    pub fn host(&self, param: &str) -> Result<&'a Host, AttackError> {
        let node = self.required(param)?;
        self.directory.on(node, self.network).ok_or_else(|| {
            self.error(
                param,
                format!("no node `{node}` with an address on {}", self.network),
            )
        })
    }

    /// The payload edits given by `offset` with `xor` and/or `write`.
    fn edits(&self) -> Result<Vec<Edit>, AttackError> {
        let offset = self.number("offset", 65_535)? as usize;
        let mut edits = Vec::new();
        if let Some(mask) = self.bytes("xor")? {
            edits.push(Edit::Xor { offset, mask });
        }
        if let Some(bytes) = self.bytes("write")? {
            edits.push(Edit::Write { offset, bytes });
        }
        Ok(edits)
    }
}

fn param_list(kind: &AttackKind) -> String {
    kind.params
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

const OFFSET: Param = Param {
    name: "offset",
    default: Some("0"),
    help: "payload byte where `xor`/`write` start (UDP/TCP payload)",
};

pub static SNIFF: AttackKind = AttackKind {
    name: "sniff",
    description: "record matching frames (use --capture); change nothing",
    params: &[],
    build: build_sniff,
};

fn build_sniff(_: &Args<'_>) -> Result<Program, AttackError> {
    Ok(Program::default())
}

pub static DROP: AttackKind = AttackKind {
    name: "drop",
    description: "drop matching frames, all or with a probability",
    params: &[Param {
        name: "probability",
        default: Some("1"),
        help: "chance that a matching frame is dropped",
    }],
    build: build_drop,
};

fn build_drop(a: &Args<'_>) -> Result<Program, AttackError> {
    Ok(Program {
        steps: vec![Primitive::Drop {
            probability: a.fraction("probability")?,
        }],
        inject: None,
    })
}

pub static DELAY: AttackKind = AttackKind {
    name: "delay",
    description: "hold matching frames, then send them on; with probability < 1 only some, which reorders them",
    params: &[
        Param {
            name: "delay",
            default: Some("1s"),
            help: "how long a delayed frame is held",
        },
        Param {
            name: "probability",
            default: Some("1"),
            help: "chance that a matching frame is delayed",
        },
    ],
    build: build_delay,
};

fn build_delay(a: &Args<'_>) -> Result<Program, AttackError> {
    Ok(Program {
        steps: vec![Primitive::Delay {
            delay: a.duration("delay")?,
            probability: a.fraction("probability")?,
        }],
        inject: None,
    })
}

pub static DUPLICATE: AttackKind = AttackKind {
    name: "duplicate",
    description: "send matching frames more than once, at once",
    params: &[Param {
        name: "copies",
        default: Some("1"),
        help: "extra copies of each matching frame",
    }],
    build: build_duplicate,
};

fn build_duplicate(a: &Args<'_>) -> Result<Program, AttackError> {
    Ok(Program {
        steps: vec![Primitive::Duplicate {
            copies: a.number("copies", u64::from(MAX_COPIES))? as u32,
        }],
        inject: None,
    })
}

pub static TAMPER: AttackKind = AttackKind {
    name: "tamper",
    description: "flip bits in or overwrite bytes of matching payloads, fixing IP/UDP/TCP checksums",
    params: &[
        OFFSET,
        Param {
            name: "xor",
            default: Some("0x01"),
            help: "bytes XORed into the payload at `offset` (bit flips)",
        },
        Param {
            name: "write",
            default: None,
            help: "bytes written over the payload at `offset` (after `xor`)",
        },
    ],
    build: build_tamper,
};

fn build_tamper(a: &Args<'_>) -> Result<Program, AttackError> {
    Ok(Program {
        steps: vec![Primitive::Modify { edits: a.edits()? }],
        inject: None,
    })
}

pub static REPLAY: AttackKind = AttackKind {
    name: "replay",
    description: "record matching frames and send copies later, once or at a rate, optionally rewritten",
    params: &[
        Param {
            name: "after",
            default: Some("1s"),
            help: "when the first copy leaves, after the original",
        },
        Param {
            name: "copies",
            default: Some("1"),
            help: "copies of each recorded frame",
        },
        Param {
            name: "interval",
            default: Some("100ms"),
            help: "time between copies of one frame",
        },
        OFFSET,
        Param {
            name: "xor",
            default: None,
            help: "bytes XORed into each copy's payload at `offset`",
        },
        Param {
            name: "write",
            default: None,
            help: "bytes written over each copy's payload at `offset`",
        },
    ],
    build: build_replay,
};

fn build_replay(a: &Args<'_>) -> Result<Program, AttackError> {
    Ok(Program {
        steps: vec![Primitive::Replay {
            after: a.duration("after")?,
            copies: a.number("copies", u64::from(MAX_COPIES))? as u32,
            interval: a.duration("interval")?,
            edits: a.edits()?,
        }],
        inject: None,
    })
}

const FROM: Param = Param {
    name: "from",
    default: None,
    help: "node whose address and MAC the frames claim",
};
const TO: Param = Param {
    name: "to",
    default: None,
    help: "node the frames are sent to",
};
const PORT: Param = Param {
    name: "port",
    default: Some("4433"),
    help: "UDP destination port",
};
const SPORT: Param = Param {
    name: "sport",
    default: Some("40000"),
    help: "UDP source port",
};

/// UDP frames from `from` to `to` on the attack's network carrying `payloads`.
fn udp_frames(a: &Args<'_>, payloads: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, AttackError> {
    let (from, to) = (a.host("from")?, a.host("to")?);
    let src = SocketAddr::new(from.ip, a.number("sport", 65_535)? as u16);
    let dst = SocketAddr::new(to.ip, a.number("port", 65_535)? as u16);
    payloads
        .iter()
        .map(|p| {
            packet::build_udp(from.mac, to.mac, src, dst, p)
                .map_err(|e| a.error("from", e.to_string()))
        })
        .collect()
}

pub static INJECT: AttackKind = AttackKind {
    name: "inject",
    description: "send crafted UDP frames claiming to come from a node (count = frames sent)",
    params: &[
        FROM,
        TO,
        PORT,
        SPORT,
        Param {
            name: "payload",
            default: Some("0x00"),
            help: "the UDP payload, hex",
        },
        Param {
            name: "rate",
            default: Some("10"),
            help: "frames per second",
        },
    ],
    build: build_inject,
};

fn build_inject(a: &Args<'_>) -> Result<Program, AttackError> {
    let payload = a.bytes("payload")?.unwrap_or_default();
    if payload.len() > MAX_PAYLOAD {
        return Err(a.error("payload", format!("at most {MAX_PAYLOAD} bytes")));
    }
    Ok(Program {
        steps: vec![],
        inject: Some(Injection {
            frames: udp_frames(a, &[payload])?,
            count: a.count.unwrap_or(1).min(MAX_INJECT),
            interval: a.rate("rate")?,
        }),
    })
}

/// Distinct random payloads a flood cycles through.
const FLOOD_VARIANTS: usize = 16;

pub static FLOOD: AttackKind = AttackKind {
    name: "flood",
    description: "send many random UDP payloads of a given size at a rate (count = frames sent, default 10000)",
    params: &[
        FROM,
        TO,
        PORT,
        SPORT,
        Param {
            name: "size",
            default: Some("1200"),
            help: "payload bytes per frame",
        },
        Param {
            name: "rate",
            default: Some("2000"),
            help: "frames per second",
        },
    ],
    build: build_flood,
};

fn build_flood(a: &Args<'_>) -> Result<Program, AttackError> {
    let size = a.number("size", MAX_PAYLOAD as u64)? as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let payloads: Vec<Vec<u8>> = (0..FLOOD_VARIANTS)
        .map(|_| {
            let mut p = vec![0u8; size];
            rng.fill_bytes(&mut p);
            p
        })
        .collect();
    Ok(Program {
        steps: vec![],
        inject: Some(Injection {
            frames: udp_frames(a, &payloads)?,
            count: a.count.unwrap_or(10_000).min(MAX_INJECT),
            interval: a.rate("rate")?,
        }),
    })
}

/// `testbed attack list-kinds`: one block per kind.
pub fn describe_kinds() -> String {
    let mut out = String::new();
    for k in KINDS {
        out.push_str(&format!("{:<10} {}\n", k.name, k.description));
        for p in k.params {
            let default = p
                .default
                .map_or("required".to_string(), |d| format!("default {d}"));
            out.push_str(&format!("    {:<12} {} ({default})\n", p.name, p.help));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<'a>(
        kind: &'static AttackKind,
        values: &'a BTreeMap<String, String>,
        dir: &'a Directory,
    ) -> Result<Program, AttackError> {
        (kind.build)(&Args::new(kind, values, dir, "lan", Some(5), 1)?)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_kind_builds_with_its_defaults_where_it_needs_no_node() {
        let dir = Directory::default();
        for k in KINDS {
            let needs_node = k.params.iter().any(|p| p.name == "from");
            let built = args(k, &BTreeMap::new(), &dir);
            assert_eq!(built.is_err(), needs_node, "{}: {built:?}", k.name);
        }
        assert!(describe_kinds().contains("replay"));
    }

    #[test]
    fn parameter_errors_name_the_attack_and_parameter() {
        let dir = Directory::default();
        let e = args(kind("replay").unwrap(), &map(&[("aftr", "1s")]), &dir).unwrap_err();
        assert!(
            e.to_string().contains("replay: aftr: unknown parameter"),
            "{e}"
        );
        let e = args(kind("drop").unwrap(), &map(&[("probability", "2")]), &dir).unwrap_err();
        assert!(e.to_string().contains("probability from 0 to 1"), "{e}");
        let e = args(kind("delay").unwrap(), &map(&[("delay", "2h")]), &dir).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        assert!(
            kind("nope")
                .map(|k| k.name)
                .unwrap_err()
                .to_string()
                .contains("sniff, drop")
        );
    }

    #[test]
    fn inject_addresses_frames_from_the_directory() {
        let mut dir = Directory::default();
        dir.insert("a", "lan", "10.0.0.1".parse().unwrap(), [2, 0, 0, 0, 0, 1]);
        dir.insert("b", "lan", "10.0.0.2".parse().unwrap(), [2, 0, 0, 0, 0, 2]);
        let p = args(
            kind("inject").unwrap(),
            &map(&[("from", "a"), ("to", "b"), ("payload", "0xabcd")]),
            &dir,
        )
        .unwrap();
        let inj = p.inject.unwrap();
        assert_eq!(inj.count, 5);
        let f = &inj.frames[0];
        assert_eq!(&f[..6], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(&f[packet::payload_range(f).unwrap()], &[0xab, 0xcd]);
        let e = args(
            kind("flood").unwrap(),
            &map(&[("from", "a"), ("to", "c")]),
            &dir,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no node `c`"), "{e}");
    }
}
