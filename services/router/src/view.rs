//! The router's subscription view: the compacted `subscriptions` topic read by a
//! [`TopicView`], whose record hook keeps a [`SubscriptionIndex`] current one change at a
//! time (O(patterns of that subscription), never a rebuild). A subscription's payload filter
//! is compiled here, once per change, and kept in the index beside its patterns.
//!
//! The hook runs on the view's reader thread before the view publishes its new position and
//! `caught_up_at_ms`, so whenever the view says it has seen a record, the index has too.

use std::sync::{Arc, RwLock};

use hookline_config::Config;
use hookline_kafka::KafkaError;
use hookline_kafka::rdkafka::Message as _;
use hookline_kafka::rdkafka::message::BorrowedMessage;
use hookline_kafka::view::{TopicView, Update};
use hookline_proto::Message as _;
use hookline_proto::v1::{Dialect, Subscription};
use hookline_routing::{Filter, SubscriptionIndex};

/// Subscriptions in force, indexed for matching, with the view's freshness.
#[derive(Clone)]
pub struct SubscriptionMatcher {
    // The table only records which ids exist; the index holds what matching needs.
    view: TopicView<()>,
    index: Arc<RwLock<SubscriptionIndex>>,
}

impl SubscriptionMatcher {
    /// Starts reading `subscriptions` from the beginning.
    pub fn start(config: &Config) -> Result<Self, KafkaError> {
        let index = Arc::new(RwLock::new(SubscriptionIndex::new()));
        let hook = index.clone();
        let view = TopicView::start(config, &config.topic_subscriptions, move |msg| {
            apply(&hook, msg)
        })?;
        Ok(Self { view, index })
    }

    /// Runs `f` over the index under a read lock (hold it only for synchronous work).
    pub fn read<R>(&self, f: impl FnOnce(&SubscriptionIndex) -> R) -> R {
        let guard = self.index.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Waits until every subscription change acknowledged before `since_ms` is in the index.
    pub async fn wait_caught_up(&self, since_ms: i64) {
        self.view.wait_caught_up(since_ms).await;
    }

    /// The view of `subscriptions` the index is kept from.
    pub fn view(&self) -> &TopicView<()> {
        &self.view
    }

    /// Waits until everything acknowledged up to now is in the index.
    pub async fn sync(&self) {
        self.view.sync().await;
    }

    pub fn stop(&self) {
        self.view.stop();
    }
}

fn apply(index: &RwLock<SubscriptionIndex>, msg: &BorrowedMessage<'_>) -> Update<()> {
    let Some(id) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
        return Update::Skip;
    };
    let mut index = index.write().unwrap_or_else(|p| p.into_inner());
    match msg.payload() {
        None => {
            index.remove(&id);
            Update::Delete(id)
        }
        Some(bytes) => match Subscription::decode(bytes) {
            Ok(sub) => {
                // A Synctera webhook enabled for no events selects nothing; in the Fynapse
                // dialect no event types means every type.
                let mut selects =
                    !(sub.dialect() == Dialect::Synctera && sub.event_types.is_empty());
                // The API validated the filter; one refused now (limits tightened since)
                // selects nothing rather than everything the tenant filtered out.
                let filter = match sub.filter.as_deref().map(|f| Filter::parse(f, "filter")) {
                    None => None,
                    Some(Ok(f)) => Some(f),
                    Some(Err(e)) => {
                        tracing::warn!(subscription = %id, error = %e, "filter refused: the subscription selects nothing");
                        selects = false;
                        None
                    }
                };
                let refused = index.upsert_filtered(
                    &id,
                    &sub.tenant,
                    sub.application.as_deref(),
                    sub.enabled && selects,
                    &sub.event_types,
                    filter,
                );
                for e in refused {
                    tracing::warn!(subscription = %id, error = %e, "pattern selects nothing");
                }
                Update::Upsert(id, ())
            }
            Err(e) => {
                tracing::warn!(offset = msg.offset(), error = %e, "undecodable subscription record skipped");
                Update::Skip
            }
        },
    }
}
