//! The Rust NAT: the router under test that the suite judges every other
//! router against.
//!
//! [`engine`] is the NAT itself, sans I/O and deterministic: a packet, the
//! side it came from and the time go in; a verdict comes out, the packet
//! rewritten in place, read and written through the typed views of
//! [`crate::wire`]. [`table`] holds its mappings, [`tcp`] its connection tracking,
//! [`frag`] its fragment tracking, [`alg`] the passthrough ALGs,
//! [`profile`] the behaviours and bounds it can be given, [`counters`] what
//! it counts. [`link`] puts it on two Ethernet links (ARP, next hops,
//! [`impair`]ments); [`socket`], [`run`] and [`control`] run it on real
//! interfaces with its control socket.

pub mod alg;
pub mod control;
pub mod counters;
pub mod engine;
pub mod first_packet;
pub mod frag;
pub mod impair;
pub mod link;
pub mod profile;
pub mod quota;
pub mod run;
pub mod serial;
pub mod socket;
pub mod table;
pub mod tcp;
pub(crate) mod translate;

pub use counters::{Counters, DropReason};
pub use engine::{Config, L4Checksum, Nat, Transmit, Verdict};
pub use link::{FrameVerdict, Interface, Link, Offload, OutFrame};
pub use profile::{Behaviour, Profile, Protocol};

/// Which interface a packet came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The private side.
    Lan,
    /// The public side.
    Wan,
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
pub(crate) mod tests;
