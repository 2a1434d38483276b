//! Egress safety for webhook deliveries: which addresses a delivery may reach.
//!
//! - `class`: [`classify`], a pure function from an address to why it must not be reached
//!   (private, loopback, link-local, CGNAT, cloud metadata, ... and the IPv6 forms that embed
//!   such an IPv4 address), or `None` for a public address.
//! - `policy`: [`EgressPolicy`], the classifier plus the operator's allow-list of CIDRs;
//!   [`EgressPolicy::check_url`] for URLs whose host is an address literal.
//! - `resolve`: [`GuardedResolver`], a reqwest resolver that resolves (through an injectable
//!   [`Lookup`]) and keeps only permitted addresses, so the check applies at connect time to
//!   the addresses actually dialled; [`denial_in`] finds the refusal in a client error.
#![forbid(unsafe_code)]

mod class;
mod policy;
mod resolve;

pub use class::{Class, Embedding, Refusal, classify};
pub use ipnet::IpNet;
pub use policy::{Denied, EgressPolicy};
pub use resolve::{GuardedResolver, Lookup, LookupFuture, ResolveError, SystemLookup, denial_in};
