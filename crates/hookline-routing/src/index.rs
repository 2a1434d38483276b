//! The subscription index: which subscriptions of a tenant select an event type, at a cost per
//! event that does not grow with the number of subscriptions.
//!
//! Per scope (a tenant, or one application of a tenant: Svix endpoints belong to an
//! application, and an event naming an application reaches only its subscriptions), a trie
//! keyed by dot-separated segments. An event without an application looks up its tenant's
//! trie exactly as before applications existed; one with an application looks up that
//! application's trie instead (one more hash lookup). The node reached by `A.B` holds the
//! subscriptions with the exact pattern `A.B` and those with `A.B.*`; match-all subscriptions
//! (`*`, or no patterns) sit in a list beside the trie. Matching `A.B.C` walks at most three
//! nodes, collecting the `prefix` sets of the nodes it passes and the `exact` set of the node
//! it ends on: O(segments + matches). Upserting or removing a subscription touches only the
//! nodes of its own patterns.
//!
//! A subscription may also carry a payload [`Filter`]. Filters are evaluated only for the
//! subscriptions the trie already selected ([`SubscriptionIndex::matching_event`]), so the
//! cost per event grows with the matches, never with the number of filtered subscriptions;
//! the event's `data` is parsed at most once per event, and only when a matched filter reads
//! it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::filter::{Filter, Subject};
use crate::pattern::{Pattern, PatternError};

/// A subscription id, shared between the index and the jobs built from it.
pub type SubscriptionId = Arc<str>;

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    exact: HashSet<SubscriptionId>,
    prefix: HashSet<SubscriptionId>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.exact.is_empty() && self.prefix.is_empty()
    }

    fn insert<'a>(
        &mut self,
        mut segments: impl Iterator<Item = &'a str>,
        leaf: Leaf,
        id: &SubscriptionId,
    ) {
        match segments.next() {
            None => {
                self.leaf_set(leaf).insert(id.clone());
            }
            Some(seg) => self
                .children
                .entry(seg.into())
                .or_default()
                .insert(segments, leaf, id),
        }
    }

    /// Removes `id` below this node, dropping nodes left empty so churn does not leak memory.
    fn remove<'a>(&mut self, mut segments: impl Iterator<Item = &'a str>, leaf: Leaf, id: &str) {
        match segments.next() {
            None => {
                self.leaf_set(leaf).remove(id);
            }
            Some(seg) => {
                if let Some(child) = self.children.get_mut(seg) {
                    child.remove(segments, leaf, id);
                    if child.is_empty() {
                        self.children.remove(seg);
                    }
                }
            }
        }
    }

    fn leaf_set(&mut self, leaf: Leaf) -> &mut HashSet<SubscriptionId> {
        match leaf {
            Leaf::Exact => &mut self.exact,
            Leaf::Prefix => &mut self.prefix,
        }
    }
}

#[derive(Clone, Copy)]
enum Leaf {
    Exact,
    Prefix,
}

#[derive(Default)]
struct TenantIndex {
    all: HashSet<SubscriptionId>,
    root: Node,
}

impl TenantIndex {
    fn insert(&mut self, pattern: &Pattern, id: &SubscriptionId) {
        match pattern {
            Pattern::All => {
                self.all.insert(id.clone());
            }
            Pattern::Exact(_) => self.root.insert(pattern.segments(), Leaf::Exact, id),
            Pattern::Prefix(_) => self.root.insert(pattern.segments(), Leaf::Prefix, id),
        }
    }

    fn remove(&mut self, pattern: &Pattern, id: &str) {
        match pattern {
            Pattern::All => {
                self.all.remove(id);
            }
            Pattern::Exact(_) => self.root.remove(pattern.segments(), Leaf::Exact, id),
            Pattern::Prefix(_) => self.root.remove(pattern.segments(), Leaf::Prefix, id),
        }
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty() && self.root.is_empty()
    }

    /// The subscriptions selecting `event_type`, unsorted, possibly repeated.
    fn collect(&self, event_type: &str, out: &mut Vec<SubscriptionId>) {
        if !crate::is_operational(event_type) {
            out.extend(self.all.iter().cloned());
        }
        let mut node = &self.root;
        let mut segments = event_type.split('.').peekable();
        while let Some(seg) = segments.next() {
            let Some(child) = node.children.get(seg) else {
                break;
            };
            if segments.peek().is_some() {
                out.extend(child.prefix.iter().cloned());
            } else {
                out.extend(child.exact.iter().cloned());
            }
            node = child;
        }
    }
}

/// What the index remembers of a subscription, so a change can undo exactly its entries.
struct Registration {
    tenant: Box<str>,
    application: Option<Box<str>>,
    patterns: Vec<Pattern>,
}

/// Enabled subscriptions by tenant (and application), indexed by their patterns.
#[derive(Default)]
pub struct SubscriptionIndex {
    /// Subscriptions without an application, by tenant.
    tenants: HashMap<Box<str>, TenantIndex>,
    /// Subscriptions of an application, by tenant, then application.
    apps: HashMap<Box<str>, HashMap<Box<str>, TenantIndex>>,
    registered: HashMap<SubscriptionId, Registration>,
    filters: HashMap<SubscriptionId, Filter>,
}

/// The fields of an event a match needs; `data_json` is parsed only if a filter reads it.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    pub r#type: &'a str,
    pub tenant: &'a str,
    /// The application the event is for: only its subscriptions are matched.
    pub application: Option<&'a str>,
    pub metadata: &'a HashMap<String, String>,
    pub data_json: &'a str,
}

/// The subscriptions an event goes to, and how many selected it by type but filtered it out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Matched {
    pub subscriptions: Vec<SubscriptionId>,
    pub filtered: usize,
}

impl SubscriptionIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts subscription `id` in force with its current state, replacing what the index held
    /// for it. A disabled subscription is removed. Patterns that cannot select any
    /// well-formed event type are left out and returned, so the caller can log them; a
    /// subscription whose patterns were all refused selects nothing. No patterns at all
    /// selects everything.
    pub fn upsert<S: AsRef<str>>(
        &mut self,
        id: &str,
        tenant: &str,
        enabled: bool,
        event_types: &[S],
    ) -> Vec<PatternError> {
        self.upsert_filtered(id, tenant, None, enabled, event_types, None)
    }

    /// [`upsert`](Self::upsert) with the subscription's application (`None`: the tenant's)
    /// and payload filter (compiled once, here; `None`: every event of its types).
    pub fn upsert_filtered<S: AsRef<str>>(
        &mut self,
        id: &str,
        tenant: &str,
        application: Option<&str>,
        enabled: bool,
        event_types: &[S],
        filter: Option<Filter>,
    ) -> Vec<PatternError> {
        self.remove(id);
        if !enabled {
            return Vec::new();
        }
        let mut refused = Vec::new();
        let mut patterns: Vec<Pattern> = if event_types.is_empty() {
            vec![Pattern::All]
        } else {
            event_types
                .iter()
                .filter_map(|t| Pattern::parse(t.as_ref()).map_err(|e| refused.push(e)).ok())
                .collect()
        };
        if patterns.contains(&Pattern::All) {
            patterns = vec![Pattern::All];
        }
        patterns.sort();
        patterns.dedup();
        if patterns.is_empty() {
            return refused;
        }
        let id: SubscriptionId = id.into();
        if let Some(f) = filter {
            self.filters.insert(id.clone(), f);
        }
        let index = match application {
            None => self.tenants.entry(tenant.into()).or_default(),
            Some(app) => self
                .apps
                .entry(tenant.into())
                .or_default()
                .entry(app.into())
                .or_default(),
        };
        for p in &patterns {
            index.insert(p, &id);
        }
        self.registered.insert(
            id,
            Registration {
                tenant: tenant.into(),
                application: application.map(Into::into),
                patterns,
            },
        );
        refused
    }

    /// Takes subscription `id` out of force (deleted or disabled). Unknown ids are ignored.
    pub fn remove(&mut self, id: &str) {
        self.filters.remove(id);
        let Some(reg) = self.registered.remove(id) else {
            return;
        };
        let unindex = |index: &mut TenantIndex| {
            for p in &reg.patterns {
                index.remove(p, id);
            }
            index.is_empty()
        };
        match &reg.application {
            None => {
                if self.tenants.get_mut(&reg.tenant).is_some_and(unindex) {
                    self.tenants.remove(&reg.tenant);
                }
            }
            Some(app) => {
                let Some(apps) = self.apps.get_mut(&reg.tenant) else {
                    return;
                };
                if apps.get_mut(app).is_some_and(unindex) {
                    apps.remove(app);
                }
                if apps.is_empty() {
                    self.apps.remove(&reg.tenant);
                }
            }
        }
    }

    /// The subscriptions of `tenant` (without an application) that select the well-formed
    /// `event_type`, sorted by id, each once.
    pub fn matching(&self, tenant: &str, event_type: &str) -> Vec<SubscriptionId> {
        self.matching_in(tenant, None, event_type)
    }

    /// The subscriptions of `tenant`'s `application` (`None`: of the tenant, without an
    /// application) that select the well-formed `event_type`, sorted by id, each once.
    pub fn matching_in(
        &self,
        tenant: &str,
        application: Option<&str>,
        event_type: &str,
    ) -> Vec<SubscriptionId> {
        let mut out = Vec::new();
        let index = match application {
            None => self.tenants.get(tenant),
            Some(app) => self.apps.get(tenant).and_then(|a| a.get(app)),
        };
        let Some(index) = index else {
            return out;
        };
        index.collect(event_type, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The subscriptions of the event's tenant that select its type and whose filter (if any)
    /// it matches, sorted by id. Filters are evaluated only for the subscriptions selected by
    /// type; `data_json` is parsed once, when the first of them reads `data` (data that is
    /// not JSON has no `data` paths).
    pub fn matching_event(&self, event: &EventFields<'_>) -> Matched {
        let mut subscriptions = self.matching_in(event.tenant, event.application, event.r#type);
        if self.filters.is_empty() {
            return Matched {
                subscriptions,
                filtered: 0,
            };
        }
        let mut data: Option<Option<serde_json::Value>> = None;
        let before = subscriptions.len();
        subscriptions.retain(|id| {
            let Some(filter) = self.filters.get(id) else {
                return true;
            };
            let data = if filter.needs_data() {
                data.get_or_insert_with(|| serde_json::from_str(event.data_json).ok())
                    .as_ref()
            } else {
                None
            };
            filter.matches(&Subject {
                r#type: event.r#type,
                tenant: event.tenant,
                metadata: event.metadata,
                data,
            })
        });
        Matched {
            filtered: before - subscriptions.len(),
            subscriptions,
        }
    }

    /// The payload filter of subscription `id`, if it has one.
    pub fn filter(&self, id: &str) -> Option<&Filter> {
        self.filters.get(id)
    }

    /// Subscriptions in force.
    pub fn len(&self) -> usize {
        self.registered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: Vec<SubscriptionId>) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_prefix_all_and_tenants() {
        let mut ix = SubscriptionIndex::new();
        ix.upsert("exact", "t1", true, &["CARD.CREATED"]);
        ix.upsert("card", "t1", true, &["CARD.*"]);
        ix.upsert("all", "t1", true, &["*"]);
        ix.upsert("empty", "t1", true, &[] as &[&str]);
        ix.upsert("off", "t1", false, &["*"]);
        ix.upsert("other", "t2", true, &["*"]);
        ix.upsert("both", "t1", true, &["CARD.*", "CARD.CREATED"]);
        assert_eq!(
            ids(ix.matching("t1", "CARD.CREATED")),
            ["all", "both", "card", "empty", "exact"]
        );
        assert_eq!(
            ids(ix.matching("t1", "CARD.DIGITALWALLETTOKEN.CREATED")),
            ["all", "both", "card", "empty"]
        );
        assert_eq!(ids(ix.matching("t1", "CARD")), ["all", "empty"]);
        assert_eq!(ids(ix.matching("t2", "CARD")), ["other"]);
        assert!(ix.matching("t3", "CARD").is_empty());
    }

    #[test]
    fn changes_replace_and_removals_prune() {
        let mut ix = SubscriptionIndex::new();
        ix.upsert("s", "t1", true, &["A.B.C"]);
        ix.upsert("s", "t1", true, &["X.*"]);
        assert!(ix.matching("t1", "A.B.C").is_empty());
        assert_eq!(ids(ix.matching("t1", "X.Y")), ["s"]);
        ix.upsert("s", "t1", false, &["X.*"]);
        assert!(ix.matching("t1", "X.Y").is_empty());
        assert!(ix.is_empty() && ix.tenants.is_empty());
        let refused = ix.upsert("bad", "t1", true, &["A..B", "*.X"]);
        assert_eq!(refused.len(), 2);
        assert!(ix.matching("t1", "A.B").is_empty());
        assert!(ix.is_empty());
    }

    #[test]
    fn an_application_scopes_its_subscriptions() {
        let mut ix = SubscriptionIndex::new();
        ix.upsert("tenant-wide", "t1", true, &["*"]);
        ix.upsert_filtered("a1-all", "t1", Some("app_1"), true, &[] as &[&str], None);
        ix.upsert_filtered("a1-card", "t1", Some("app_1"), true, &["CARD.*"], None);
        ix.upsert_filtered("a2", "t1", Some("app_2"), true, &["*"], None);
        ix.upsert_filtered("other", "t2", Some("app_1"), true, &["*"], None);
        assert_eq!(ids(ix.matching("t1", "CARD.X")), ["tenant-wide"]);
        assert_eq!(
            ids(ix.matching_in("t1", Some("app_1"), "CARD.X")),
            ["a1-all", "a1-card"]
        );
        assert_eq!(ids(ix.matching_in("t1", Some("app_2"), "CARD.X")), ["a2"]);
        assert!(ix.matching_in("t1", Some("app_3"), "CARD.X").is_empty());
        assert_eq!(
            ids(ix.matching_in("t2", Some("app_1"), "CARD.X")),
            ["other"]
        );
        // Moving a subscription to another application, then removing every one, prunes.
        ix.upsert_filtered("a1-card", "t1", Some("app_2"), true, &["CARD.*"], None);
        assert_eq!(
            ids(ix.matching_in("t1", Some("app_1"), "CARD.X")),
            ["a1-all"]
        );
        assert_eq!(
            ids(ix.matching_in("t1", Some("app_2"), "CARD.X")),
            ["a1-card", "a2"]
        );
        for id in ["tenant-wide", "a1-all", "a1-card", "a2", "other"] {
            ix.remove(id);
        }
        assert!(ix.is_empty() && ix.tenants.is_empty() && ix.apps.is_empty());
    }

    #[test]
    fn filters_apply_after_the_type_match() {
        let mut ix = SubscriptionIndex::new();
        let filter = |v: serde_json::Value| Some(Filter::compile(&v, "filter").unwrap());
        ix.upsert_filtered(
            "big",
            "t1",
            None,
            true,
            &["PAY.*"],
            filter(serde_json::json!({"data.amount": {"$gte": 100}})),
        );
        ix.upsert_filtered(
            "eu",
            "t1",
            None,
            true,
            &["PAY.*"],
            filter(serde_json::json!({"metadata.region": "eu"})),
        );
        ix.upsert("all", "t1", true, &["PAY.*"]);
        let eu = HashMap::from([("region".to_owned(), "eu".to_owned())]);
        let none = HashMap::new();
        let at = |ix: &SubscriptionIndex, metadata, data_json| {
            let m = ix.matching_event(&EventFields {
                r#type: "PAY.MADE",
                tenant: "t1",
                application: None,
                metadata,
                data_json,
            });
            (ids(m.subscriptions), m.filtered)
        };
        assert_eq!(
            at(&ix, &eu, r#"{"amount": 150}"#),
            (vec!["all".into(), "big".into(), "eu".into()], 0)
        );
        assert_eq!(at(&ix, &none, r#"{"amount": 50}"#), (vec!["all".into()], 2));
        assert_eq!(
            at(&ix, &eu, "not json"),
            (vec!["all".into(), "eu".into()], 1)
        );
        ix.upsert("big", "t1", true, &["PAY.*"]);
        assert!(ix.filter("big").is_none() && ix.filter("eu").is_some());
        ix.remove("eu");
        assert!(ix.filter("eu").is_none());
        assert_eq!(at(&ix, &none, "{}"), (vec!["all".into(), "big".into()], 0));
    }
}
