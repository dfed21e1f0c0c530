//! Kernel plumbing: named network namespaces and netlink sockets opened inside them.

pub mod netns;
pub mod ops;
mod socket;

pub use socket::{Netlink, NetlinkError};
