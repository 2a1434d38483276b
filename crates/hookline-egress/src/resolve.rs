//! The connect-time guard: a reqwest resolver that drops refused addresses after DNS.
//!
//! Checking a host when a subscription is saved is not enough: DNS may answer differently
//! when the worker connects (rebinding). reqwest connects only to the addresses its resolver
//! returns, so filtering here checks exactly the addresses that will be dialled.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use crate::policy::{Denied, EgressPolicy};

/// The future a [`Lookup`] returns.
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Host name to addresses. [`SystemLookup`] in production; tests inject their own answers.
/// Any `Fn(&str) -> LookupFuture` is a `Lookup`.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> LookupFuture;
}

impl<F> Lookup for F
where
    F: Fn(&str) -> LookupFuture + Send + Sync + 'static,
{
    fn lookup(&self, host: &str) -> LookupFuture {
        self(host)
    }
}

/// The operating system's resolver, through `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Why a host could not be resolved to a permitted address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address the host resolved to is refused; this is the first of them.
    #[error(transparent)]
    Denied(Denied),
    #[error("resolving {host}: {source}")]
    Lookup { host: String, source: io::Error },
    #[error("resolving {host}: no addresses")]
    NoAddresses { host: String },
}

/// A reqwest [`reqwest::dns::Resolve`] that resolves through a [`Lookup`] and keeps only
/// the addresses the [`EgressPolicy`] permits.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<EgressPolicy>, lookup: Arc<dyn Lookup>) -> Self {
        Self { policy, lookup }
    }

    /// A resolver over the operating system's resolver.
    pub fn system(policy: Arc<EgressPolicy>) -> Self {
        Self::new(policy, Arc::new(SystemLookup))
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// The permitted addresses of `host`, in the resolver's order.
    pub async fn resolve_permitted(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let answers = self
            .lookup
            .lookup(host)
            .await
            .map_err(|source| ResolveError::Lookup {
                host: host.to_owned(),
                source,
            })?;
        let mut first_denied = None;
        let mut permitted = Vec::with_capacity(answers.len());
        for ip in answers {
            match self.policy.check(ip) {
                Ok(()) => permitted.push(ip),
                Err(denied) => {
                    first_denied.get_or_insert(denied);
                }
            }
        }
        if !permitted.is_empty() {
            return Ok(permitted);
        }
        Err(match first_denied {
            Some(denied) => ResolveError::Denied(denied),
            None => ResolveError::NoAddresses {
                host: host.to_owned(),
            },
        })
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            match this.resolve_permitted(name.as_str()).await {
                // Port 0: reqwest substitutes the URL's port.
                Ok(ips) => Ok(Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)))
                    as reqwest::dns::Addrs),
                // Boxed bare so `denial_in` finds it by downcasting along the error chain.
                Err(ResolveError::Denied(denied)) => Err(Box::new(denied) as _),
                Err(other) => Err(Box::new(other) as _),
            }
        })
    }
}

/// The egress refusal somewhere in `error`'s source chain, if the error is one.
pub fn denial_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Denied> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(denied) = e.downcast_ref::<Denied>() {
            return Some(denied);
        }
        if let Some(ResolveError::Denied(denied)) = e.downcast_ref::<ResolveError>() {
            return Some(denied);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn answering(ips: &'static [&'static str]) -> Arc<dyn Lookup> {
        Arc::new(move |_: &str| -> LookupFuture {
            Box::pin(async move { Ok(ips.iter().map(|s| s.parse().unwrap()).collect()) })
        })
    }

    fn loopback_one() -> Arc<EgressPolicy> {
        Arc::new(EgressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]))
    }

    #[tokio::test]
    async fn refused_answers_are_dropped_and_permitted_ones_kept() {
        let r = GuardedResolver::new(loopback_one(), answering(&["127.0.0.2", "127.0.0.1"]));
        let ips = r.resolve_permitted("receiver.test").await.unwrap();
        assert_eq!(ips, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn only_refused_answers_is_a_denial_naming_the_address() {
        let r = GuardedResolver::new(loopback_one(), answering(&["127.0.0.2", "::1"]));
        let e = r.resolve_permitted("receiver.test").await.unwrap_err();
        assert_eq!(e.to_string(), "egress denied: 127.0.0.2 is loopback");
        assert!(denial_in(&e).is_some());
    }

    #[tokio::test]
    async fn every_resolution_is_checked_so_rebinding_is_caught() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let rebinding = Arc::new(move |_: &str| -> LookupFuture {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            let ip = if first { "127.0.0.1" } else { "127.0.0.2" };
            Box::pin(async move { Ok(vec![ip.parse().unwrap()]) })
        });
        let r = GuardedResolver::new(loopback_one(), rebinding);
        assert!(r.resolve_permitted("receiver.test").await.is_ok());
        let e = r.resolve_permitted("receiver.test").await.unwrap_err();
        assert_eq!(e.to_string(), "egress denied: 127.0.0.2 is loopback");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_reqwest_resolver_reports_a_denial_that_denial_in_finds() {
        use reqwest::dns::Resolve as _;
        let r = GuardedResolver::new(loopback_one(), answering(&["10.0.0.1"]));
        let e = r
            .resolve("receiver.test".parse().unwrap())
            .await
            .err()
            .unwrap();
        let denied = denial_in(&*e).expect("a denial");
        assert_eq!(denied.to_string(), "egress denied: 10.0.0.1 is private");
    }
}
