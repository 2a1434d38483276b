//! The classifier over a table of every refused class, reached through URL hosts written the
//! way attackers write them (decimal, octal, hex, short IPv4; IPv6 embeddings). Hosts are
//! parsed by the `url` crate, as the HTTP client parses them; no connection is attempted.

use std::net::IpAddr;

use hookline_egress::{Class, EgressPolicy, Embedding, IpNet, classify};
use url::{Host, Url};

/// The address a URL's host denotes, as the HTTP client would dial it.
fn host_ip(url: &str) -> IpAddr {
    match Url::parse(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .host()
    {
        Some(Host::Ipv4(ip)) => ip.into(),
        Some(Host::Ipv6(ip)) => ip.into(),
        other => panic!("{url}: host {other:?} is not an address"),
    }
}

use Class::*;

/// (URL, the address its host is, the expected class; `None` = public).
const TABLE: &[(&str, &str, Option<Class>)] = &[
    // Loopback in every spelling a URL parser accepts.
    ("http://127.0.0.1/", "127.0.0.1", Some(Loopback)),
    ("http://2130706433/", "127.0.0.1", Some(Loopback)), // decimal
    ("http://0177.0.0.1/", "127.0.0.1", Some(Loopback)), // octal
    ("http://0x7f.0.0.1/", "127.0.0.1", Some(Loopback)), // hex
    ("http://0x7f000001/", "127.0.0.1", Some(Loopback)), // hex, one part
    ("http://017700000001/", "127.0.0.1", Some(Loopback)), // octal, one part
    ("http://127.1/", "127.0.0.1", Some(Loopback)),      // short form
    ("http://127.0.1/", "127.0.0.1", Some(Loopback)),    // short form
    ("http://0x7f.1/", "127.0.0.1", Some(Loopback)),     // short hex
    ("http://127.0.0.1./", "127.0.0.1", Some(Loopback)), // trailing dot
    ("http://127.255.255.254/", "127.255.255.254", Some(Loopback)),
    ("http://[::1]/", "::1", Some(Loopback)),
    ("http://[0:0:0:0:0:0:0:1]/", "::1", Some(Loopback)),
    // Unspecified.
    ("http://0.0.0.0/", "0.0.0.0", Some(Unspecified)),
    ("http://0/", "0.0.0.0", Some(Unspecified)),
    ("http://0.1.2.3/", "0.1.2.3", Some(Unspecified)),
    ("http://[::]/", "::", Some(Unspecified)),
    // RFC 1918.
    ("http://10.0.0.1/", "10.0.0.1", Some(Private)),
    ("http://167772161/", "10.0.0.1", Some(Private)),
    ("http://012.0.0.1/", "10.0.0.1", Some(Private)),
    ("http://172.16.0.1/", "172.16.0.1", Some(Private)),
    ("http://172.31.255.255/", "172.31.255.255", Some(Private)),
    ("http://192.168.1.1/", "192.168.1.1", Some(Private)),
    ("http://0xc0.0xa8.1.1/", "192.168.1.1", Some(Private)),
    ("http://3232235777/", "192.168.1.1", Some(Private)),
    ("http://192.168.257/", "192.168.1.1", Some(Private)), // last part spans two bytes
    // CGNAT.
    ("http://100.64.0.1/", "100.64.0.1", Some(Cgnat)),
    ("http://100.127.255.254/", "100.127.255.254", Some(Cgnat)),
    // Link-local and cloud metadata.
    ("http://169.254.1.1/", "169.254.1.1", Some(LinkLocal)),
    ("http://[fe80::1]/", "fe80::1", Some(LinkLocal)),
    ("http://[febf::1]/", "febf::1", Some(LinkLocal)),
    (
        "http://169.254.169.254/",
        "169.254.169.254",
        Some(CloudMetadata),
    ),
    ("http://2852039166/", "169.254.169.254", Some(CloudMetadata)),
    ("http://0xa9fea9fe/", "169.254.169.254", Some(CloudMetadata)),
    (
        "http://0251.0376.0251.0376/",
        "169.254.169.254",
        Some(CloudMetadata),
    ),
    (
        "http://169.254.43518/",
        "169.254.169.254",
        Some(CloudMetadata),
    ),
    (
        "http://169.254.170.2/",
        "169.254.170.2",
        Some(CloudMetadata),
    ),
    (
        "http://100.100.100.200/",
        "100.100.100.200",
        Some(CloudMetadata),
    ),
    ("http://192.0.0.192/", "192.0.0.192", Some(CloudMetadata)),
    (
        "http://168.63.129.16/",
        "168.63.129.16",
        Some(CloudMetadata),
    ),
    (
        "http://[fd00:ec2::254]/",
        "fd00:ec2::254",
        Some(CloudMetadata),
    ),
    (
        "http://[fd20:ce::254]/",
        "fd20:ce::254",
        Some(CloudMetadata),
    ),
    // Multicast and broadcast.
    ("http://224.0.0.1/", "224.0.0.1", Some(Multicast)),
    (
        "http://239.255.255.250/",
        "239.255.255.250",
        Some(Multicast),
    ),
    ("http://[ff02::1]/", "ff02::1", Some(Multicast)),
    (
        "http://255.255.255.255/",
        "255.255.255.255",
        Some(Broadcast),
    ),
    ("http://4294967295/", "255.255.255.255", Some(Broadcast)),
    // Documentation, benchmarking, reserved.
    ("http://192.0.2.1/", "192.0.2.1", Some(Documentation)),
    ("http://198.51.100.7/", "198.51.100.7", Some(Documentation)),
    ("http://203.0.113.9/", "203.0.113.9", Some(Documentation)),
    ("http://[2001:db8::1]/", "2001:db8::1", Some(Documentation)),
    ("http://[3fff::1]/", "3fff::1", Some(Documentation)),
    ("http://198.18.0.1/", "198.18.0.1", Some(Benchmarking)),
    (
        "http://198.19.255.255/",
        "198.19.255.255",
        Some(Benchmarking),
    ),
    ("http://[2001:2::1]/", "2001:2::1", Some(Benchmarking)),
    ("http://240.0.0.1/", "240.0.0.1", Some(Reserved)),
    ("http://192.0.0.8/", "192.0.0.8", Some(Reserved)),
    ("http://192.88.99.1/", "192.88.99.1", Some(Reserved)),
    ("http://[100::1]/", "100::1", Some(Reserved)), // discard-only
    ("http://[fec0::1]/", "fec0::1", Some(Reserved)), // deprecated site-local
    ("http://[2001:10::1]/", "2001:10::1", Some(Reserved)), // ORCHID
    ("http://[4000::1]/", "4000::1", Some(Reserved)), // outside global unicast
    // Unique local.
    ("http://[fc00::1]/", "fc00::1", Some(UniqueLocal)),
    ("http://[fd12:3456::1]/", "fd12:3456::1", Some(UniqueLocal)),
    // Teredo, whatever it embeds.
    (
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        Some(Teredo),
    ),
    // Public addresses pass (no packet is sent: this is a pure function).
    ("http://93.184.215.14/", "93.184.215.14", None),
    ("http://1.1.1.1/", "1.1.1.1", None),
    ("http://16843009/", "1.1.1.1", None),
    ("http://172.32.0.1/", "172.32.0.1", None), // just past 172.16/12
    ("http://100.128.0.1/", "100.128.0.1", None), // just past 100.64/10
    (
        "http://[2606:4700:4700::1111]/",
        "2606:4700:4700::1111",
        None,
    ),
    ("http://[::ffff:1.1.1.1]/", "::ffff:101:101", None),
    ("http://[64:ff9b::1.1.1.1]/", "64:ff9b::101:101", None),
    ("http://[2002:101:101::1]/", "2002:101:101::1", None),
];

/// IPv6 forms embedding a refused IPv4 address: (URL, embedding, embedded, class).
const EMBEDDED: &[(&str, Embedding, &str, Class)] = &[
    (
        "http://[::ffff:127.0.0.1]/",
        Embedding::Ipv4Mapped,
        "127.0.0.1",
        Loopback,
    ),
    (
        "http://[::ffff:7f00:1]/",
        Embedding::Ipv4Mapped,
        "127.0.0.1",
        Loopback,
    ),
    (
        "http://[::ffff:169.254.169.254]/",
        Embedding::Ipv4Mapped,
        "169.254.169.254",
        CloudMetadata,
    ),
    (
        "http://[::ffff:10.0.0.1]/",
        Embedding::Ipv4Mapped,
        "10.0.0.1",
        Private,
    ),
    (
        "http://[::ffff:0:0]/",
        Embedding::Ipv4Mapped,
        "0.0.0.0",
        Unspecified,
    ),
    (
        "http://[::127.0.0.1]/",
        Embedding::Ipv4Compatible,
        "127.0.0.1",
        Loopback,
    ),
    (
        "http://[::192.168.0.1]/",
        Embedding::Ipv4Compatible,
        "192.168.0.1",
        Private,
    ),
    (
        "http://[::1.1.1.1]/",
        Embedding::Ipv4Compatible,
        "1.1.1.1",
        Reserved,
    ), // deprecated form
    (
        "http://[64:ff9b::127.0.0.1]/",
        Embedding::Nat64,
        "127.0.0.1",
        Loopback,
    ),
    (
        "http://[64:ff9b::a9fe:a9fe]/",
        Embedding::Nat64,
        "169.254.169.254",
        CloudMetadata,
    ),
    (
        "http://[64:ff9b::10.1.1.1]/",
        Embedding::Nat64,
        "10.1.1.1",
        Private,
    ),
    (
        "http://[64:ff9b:1::10.1.1.1]/",
        Embedding::Nat64,
        "10.1.1.1",
        Private,
    ), // local-use /96
    (
        "http://[64:ff9b:1::1.1.1.1]/",
        Embedding::Nat64,
        "1.1.1.1",
        Reserved,
    ), // local-use only
    (
        "http://[2002:7f00:1::]/",
        Embedding::SixToFour,
        "127.0.0.1",
        Loopback,
    ),
    (
        "http://[2002:a9fe:a9fe::1]/",
        Embedding::SixToFour,
        "169.254.169.254",
        CloudMetadata,
    ),
    (
        "http://[2002:c0a8:101::]/",
        Embedding::SixToFour,
        "192.168.1.1",
        Private,
    ),
];

#[test]
fn every_class_in_every_spelling() {
    let mut failures = Vec::new();
    for &(url, ip, class) in TABLE {
        let got_ip = host_ip(url);
        if got_ip != ip.parse::<IpAddr>().unwrap() {
            failures.push(format!("{url}: host is {got_ip}, expected {ip}"));
            continue;
        }
        let got = classify(got_ip).map(|r| r.class);
        if got != class {
            failures.push(format!("{url} ({got_ip}): {got:?}, expected {class:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn embedded_ipv4_forms_are_judged_by_what_they_embed() {
    let mut failures = Vec::new();
    for &(url, embedding, v4, class) in EMBEDDED {
        let got = classify(host_ip(url));
        let expected = Some((class, Some((embedding, v4.parse().unwrap()))));
        if got.map(|r| (r.class, r.via)) != expected {
            failures.push(format!("{url}: {got:?}, expected {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_allow_list_permits_127_0_0_1_alone() {
    let allow: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
    let policy = EgressPolicy::new(allow);
    let check = |url: &str| policy.check_url(&Url::parse(url).unwrap());
    for permitted in [
        "http://127.0.0.1:8080/hook",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
    ] {
        assert_eq!(check(permitted), Ok(()), "{permitted}");
    }
    for refused in [
        "http://127.0.0.2/",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://[64:ff9b::127.0.0.1]/", // reaches 127.0.0.1 of a NAT64 gateway, not ours
        "http://169.254.169.254/",
    ] {
        let e = check(refused).expect_err(refused).to_string();
        assert!(e.starts_with("egress denied: "), "{refused}: {e}");
    }
}

#[test]
fn non_http_hosts_without_ipv4_parsing_stay_domains() {
    // Only special schemes get IPv4 number parsing; the client sends only http(s).
    let url = Url::parse("foo://2130706433/").unwrap();
    assert!(matches!(url.host(), Some(Host::Domain(_))));
}
