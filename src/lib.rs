//! testbed: a network-emulation testbed for connected-vehicle and IoT security.
//!
//! Data flows one way: a topology file is parsed and validated into a
//! [`topology::Topology`], turned by a pure function into a [`plan::Plan`], and
//! applied by [`lab`] over netlink into a live lab of namespaces and links.

pub mod agent;
pub mod attack;
pub mod capture;
pub mod cps;
pub mod emulation;
pub mod engine;
pub mod events;
pub mod lab;
pub mod metrics;
pub mod netlink;
pub mod plan;
pub mod privilege;
pub mod report;
pub mod scenario;
pub mod topology;
