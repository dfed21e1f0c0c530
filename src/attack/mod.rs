//! The raw-packet attacker.

pub mod matcher;
pub mod packet;
