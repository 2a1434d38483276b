//! The address classifier: which destinations a webhook must never reach, as a pure function.
//!
//! IPv4 follows the IANA special-purpose registry (every block that is not globally
//! reachable). IPv6 is refused outside global unicast `2000::/3`, and inside it where the
//! registry says so. IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible,
//! NAT64, 6to4) are judged by the IPv4 address they lead to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// `0.0.0.0/8` ("this network"), `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// RFC 6598 shared address space `100.64.0.0/10` (carrier-grade NAT).
    Cgnat,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// A cloud provider's instance metadata or platform endpoint.
    CloudMetadata,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// `fc00::/7`.
    UniqueLocal,
    /// `2001::/32`: the real destination hides behind an obfuscated NAT mapping.
    Teredo,
    /// Everything else that is not globally routable: `240/4`, `192.0.0/24`, IETF protocol
    /// assignments, deprecated site-local, IPv6 outside global unicast.
    Reserved,
}

impl Class {
    /// The stable name used in error messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Unspecified => "unspecified",
            Class::Loopback => "loopback",
            Class::Private => "private",
            Class::Cgnat => "cgnat",
            Class::LinkLocal => "link-local",
            Class::CloudMetadata => "cloud-metadata",
            Class::Multicast => "multicast",
            Class::Broadcast => "broadcast",
            Class::Documentation => "documentation",
            Class::Benchmarking => "benchmarking",
            Class::UniqueLocal => "unique-local",
            Class::Teredo => "teredo",
            Class::Reserved => "reserved",
        }
    }
}

/// How an IPv6 address carries the IPv4 address it was judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Embedding {
    /// `::ffff:a.b.c.d`: the same host as `a.b.c.d` on a dual-stack socket.
    Ipv4Mapped,
    /// `::a.b.c.d` (deprecated).
    Ipv4Compatible,
    /// `64:ff9b::/96` and the local-use `64:ff9b:1::/48` (RFC 6052, RFC 8215), IPv4 in the
    /// last 32 bits.
    Nat64,
    /// `2002::/16`.
    SixToFour,
}

impl Embedding {
    pub fn as_str(self) -> &'static str {
        match self {
            Embedding::Ipv4Mapped => "IPv4-mapped",
            Embedding::Ipv4Compatible => "IPv4-compatible",
            Embedding::Nat64 => "NAT64",
            Embedding::SixToFour => "6to4",
        }
    }
}

/// The verdict on a refused address: its class, and the IPv4 address it was judged by when
/// it is an IPv6 form of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub class: Class,
    pub via: Option<(Embedding, Ipv4Addr)>,
}

impl Refusal {
    const fn direct(class: Class) -> Self {
        Self { class, via: None }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class.as_str())?;
        if let Some((embedding, v4)) = self.via {
            write!(f, " ({} {v4})", embedding.as_str())?;
        }
        Ok(())
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// Checked in order: the first match wins, so specific entries come before their blocks.
const V4_BLOCKS: &[(Ipv4Net, Class)] = &[
    // Instance metadata and platform endpoints; most also sit inside a block below, but
    // naming them makes the refusal explain itself.
    (v4(169, 254, 169, 254, 32), Class::CloudMetadata), // AWS, GCP, Azure, OCI, DO...
    (v4(169, 254, 170, 2, 32), Class::CloudMetadata),   // AWS ECS task metadata
    (v4(169, 254, 170, 23, 32), Class::CloudMetadata),  // AWS EKS pod identity
    (v4(169, 254, 0, 23, 32), Class::CloudMetadata),    // Tencent Cloud
    (v4(100, 100, 100, 200, 32), Class::CloudMetadata), // Alibaba Cloud
    (v4(192, 0, 0, 192, 32), Class::CloudMetadata),     // Oracle Cloud (legacy)
    (v4(168, 63, 129, 16, 32), Class::CloudMetadata),   // Azure WireServer (public block)
    (v4(0, 0, 0, 0, 8), Class::Unspecified),
    (v4(10, 0, 0, 0, 8), Class::Private),
    (v4(100, 64, 0, 0, 10), Class::Cgnat),
    (v4(127, 0, 0, 0, 8), Class::Loopback),
    (v4(169, 254, 0, 0, 16), Class::LinkLocal),
    (v4(172, 16, 0, 0, 12), Class::Private),
    (v4(192, 0, 0, 0, 24), Class::Reserved),
    (v4(192, 0, 2, 0, 24), Class::Documentation),
    (v4(192, 88, 99, 0, 24), Class::Reserved), // deprecated 6to4 relay anycast
    (v4(192, 168, 0, 0, 16), Class::Private),
    (v4(198, 18, 0, 0, 15), Class::Benchmarking),
    (v4(198, 51, 100, 0, 24), Class::Documentation),
    (v4(203, 0, 113, 0, 24), Class::Documentation),
    (v4(224, 0, 0, 0, 4), Class::Multicast),
    (v4(255, 255, 255, 255, 32), Class::Broadcast),
    (v4(240, 0, 0, 0, 4), Class::Reserved),
];

/// Blocks of IPv6 without an embedded IPv4 address, checked in order.
const V6_BLOCKS: &[(Ipv6Net, Class)] = &[
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        Class::CloudMetadata,
    ), // AWS IMDS
    (
        v6([0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254], 128),
        Class::CloudMetadata,
    ), // GCP
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Class::LinkLocal),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Class::UniqueLocal),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Class::Multicast),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), Class::Teredo),
    (v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48), Class::Benchmarking),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        Class::Documentation,
    ),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), Class::Documentation),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), Class::Reserved), // IETF protocol assignments
];

const GLOBAL_UNICAST: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
const NAT64_WELL_KNOWN: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const NAT64_LOCAL_USE: Ipv6Net = v6([0x64, 0xff9b, 0x1, 0, 0, 0, 0, 0], 48);
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);
const IPV4_COMPATIBLE: Ipv6Net = v6([0, 0, 0, 0, 0, 0, 0, 0], 96);

/// Why `ip` must not be reached, or `None` when it is a public address.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    V4_BLOCKS
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, class)| Refusal::direct(class))
}

/// The refusal of an IPv6 address judged by the IPv4 address `v4` it leads to.
fn via(embedding: Embedding, v4: Ipv4Addr) -> Option<Refusal> {
    classify_v4(v4).map(|r| Refusal {
        class: r.class,
        via: Some((embedding, v4)),
    })
}

/// Like [`via`], but refused as reserved when the embedded address is public.
fn via_or_reserved(embedding: Embedding, v4: Ipv4Addr) -> Option<Refusal> {
    via(embedding, v4).or(Some(Refusal {
        class: Class::Reserved,
        via: Some((embedding, v4)),
    }))
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let bits = ip.to_bits();
    if ip.is_unspecified() {
        return Some(Refusal::direct(Class::Unspecified));
    }
    if ip.is_loopback() {
        return Some(Refusal::direct(Class::Loopback));
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return via(Embedding::Ipv4Mapped, v4);
    }
    if IPV4_COMPATIBLE.contains(&ip) {
        // Deprecated and never routed today; some stacks still treat it as the IPv4 host.
        return via_or_reserved(Embedding::Ipv4Compatible, Ipv4Addr::from_bits(bits as u32));
    }
    if NAT64_WELL_KNOWN.contains(&ip) {
        return via(Embedding::Nat64, Ipv4Addr::from_bits(bits as u32));
    }
    if NAT64_LOCAL_USE.contains(&ip) {
        // Local-use NAT64 (RFC 8215) is not globally reachable: it translates inside one
        // operator's network. Refused whatever it embeds; the common /96 layout names the
        // class when it embeds a refused address.
        return via_or_reserved(Embedding::Nat64, Ipv4Addr::from_bits(bits as u32));
    }
    if SIX_TO_FOUR.contains(&ip) {
        return via(
            Embedding::SixToFour,
            Ipv4Addr::from_bits((bits >> 80) as u32),
        );
    }
    if let Some(&(_, class)) = V6_BLOCKS.iter().find(|(net, _)| net.contains(&ip)) {
        return Some(Refusal::direct(class));
    }
    if !GLOBAL_UNICAST.contains(&ip) {
        return Some(Refusal::direct(Class::Reserved));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_explain_the_embedding() {
        let r = classify("::ffff:10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(r.to_string(), "private (IPv4-mapped 10.1.2.3)");
        let r = classify("169.254.169.254".parse().unwrap()).unwrap();
        assert_eq!(r.to_string(), "cloud-metadata");
    }
}
