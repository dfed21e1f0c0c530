//! The typed, validated model of a topology file.
//!
//! [`load`] parses a TOML file, expands groups, resolves profiles and allocates
//! addresses. Every error names the file, line and column of the offending value.
//! The file format is described in `docs/topology.md`.

mod addressing;
mod error;
mod model;
mod names;
mod nodes;
mod parse;
mod profiles;
mod raw;
mod wiring;

pub use error::TopologyError;
pub(crate) use error::{Issue, Source};
pub use model::*;
pub use names::{MAX_LAB_NAME_LEN, check_lab_name};
pub use nodes::{MAX_GROUP_COUNT, MAX_NODES};
pub use parse::{DEFAULT_POOL, DEFAULT_SEED, load, parse_str};
pub use profiles::MAX_QUEUE_LIMIT;
