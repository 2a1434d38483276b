//! The egress policy: the classifier plus the operator's allow-list, applied to one address
//! or to a URL whose host is an address literal.

use std::net::IpAddr;

use ipnet::IpNet;
use url::{Host, Url};

use crate::class::{Refusal, classify};

/// A destination the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress denied: {ip} is {refusal}")]
pub struct Denied {
    pub ip: IpAddr,
    pub refusal: Refusal,
}

/// Which addresses deliveries may reach: every public address, plus the refused ones an
/// operator allow-listed (for example `127.0.0.1/32` in tests and `make run`).
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allow: Vec<IpNet>,
}

impl EgressPolicy {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    pub fn allow_list(&self) -> &[IpNet] {
        &self.allow
    }

    fn allow_listed(&self, ip: IpAddr) -> bool {
        // `::ffff:a.b.c.d` is the same host as `a.b.c.d`, so an IPv4 entry covers it.
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
    }

    /// `Ok` when a connection to `ip` is permitted.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        if self.allow_listed(ip) {
            return Ok(());
        }
        match classify(ip) {
            Some(refusal) => Err(Denied { ip, refusal }),
            None => Ok(()),
        }
    }

    /// Checks a URL whose host is an address literal; a domain passes here and is checked
    /// after resolution ([`crate::GuardedResolver`]). HTTP clients connect to literals without
    /// asking the resolver, so this check must run before every request.
    ///
    /// The `url` crate parses hosts as browsers and WHATWG do: `2130706433`, `0177.0.0.1`,
    /// `0x7f.1` and `127.1` are all the address `127.0.0.1` here, which is the address the
    /// client would connect to.
    pub fn check_url(&self, url: &Url) -> Result<(), Denied> {
        match url.host() {
            Some(Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            Some(Host::Domain(_)) | None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> EgressPolicy {
        EgressPolicy::new(allow.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn the_allow_list_permits_exactly_its_entries() {
        let p = policy(&["127.0.0.1/32"]);
        assert!(p.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        let denied = p.check("127.0.0.2".parse().unwrap()).unwrap_err();
        assert_eq!(denied.to_string(), "egress denied: 127.0.0.2 is loopback");
        assert!(p.check("::1".parse().unwrap()).is_err());
        assert!(p.check("93.184.215.14".parse().unwrap()).is_ok());
        assert!(policy(&[]).check("127.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn url_literals_are_checked_and_domains_left_to_the_resolver() {
        let p = policy(&["127.0.0.1/32"]);
        let check = |u: &str| p.check_url(&Url::parse(u).unwrap());
        assert!(check("http://127.0.0.1:9/x").is_ok());
        assert!(check("http://2130706433/").is_ok()); // 127.0.0.1
        assert!(check("http://127.0.0.2/").is_err());
        assert!(check("http://[::1]:8080/").is_err());
        assert!(check("http://localhost/").is_ok());
    }
}
