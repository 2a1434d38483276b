//! The extract producer: balance extracts (Target: Webhook, Data source: Balances).
//!
//! - [`run`]: the balances store, the view of `extracts`, the scheduler, the resumer and the
//!   HTTP API; [`run_with_clock`] the same with the clock schedules read (tests).
//! - `api`: configurations (create, list, get, replace, patch, delete) and runs (run now,
//!   list, get, cancel); the OpenAPI document.
//! - `query`: the Balance Query without I/O: filters, exact decimal ranges, `data` fields.
//! - `records`: keys, lookups and writes of the extracts topic's records, shared by the
//!   modules below.
//! - `store`: the balances view on disk (redb), rows streamed in key order from a snapshot.
//! - `driver`: one run, exactly once across crashes: each batch of events and the run's
//!   checkpoint in one Kafka transaction.
//! - `schedule`: cron and time zone, tick claims decided by log order, resuming runs whose
//!   driver died.
#![forbid(unsafe_code)]

mod api;
mod driver;
mod openapi;
mod query;
mod records;
mod schedule;
mod store;

use std::sync::Arc;

use axum::Router;
use hookline_auth::{HasTokens, TokenTable};
use hookline_config::Config;
use hookline_kafka::rdkafka::Message as _;
use hookline_kafka::view::{TopicView, Update};
use hookline_proto::Message as _;
use hookline_proto::v1::ExtractRecord;
use hookline_proto::v1::extract_record::Record;
use hookline_runtime::{CancellationToken, Service};
use tokio::net::TcpListener;

pub use driver::EVENT_TYPE;
pub use schedule::{Clock, ManualClock, SystemClock};

#[derive(Clone)]
pub(crate) struct AppState {
    pub config: Arc<Config>,
    pub balances: store::BalanceStore,
    pub extracts: TopicView<ExtractRecord>,
    pub claims: schedule::Claims,
    pub driving: schedule::Driving,
    pub clock: Arc<dyn Clock>,
    /// Names this process's tick claims.
    pub process_id: String,
    pub producer: Arc<hookline_kafka::Producer>,
    pub tokens: Arc<TokenTable>,
    pub shutdown: CancellationToken,
}

impl HasTokens for AppState {
    fn tokens(&self) -> &TokenTable {
        &self.tokens
    }
}

/// Serves the extract API on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), hookline_runtime::Error> {
    run_with_clock(config, listener, shutdown, Arc::new(SystemClock)).await
}

/// [`run`], with schedules read against `clock`.
pub async fn run_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
) -> Result<(), hookline_runtime::Error> {
    // This service's own Kafka principal (`{service}` in the credential keys).
    let config = config.for_service(hookline_kafka::acl::Principal::ExtractProducer.name())?;
    let service = Service::start(
        "extract-producer",
        Some(hookline_telemetry::metrics::Role::Extracts),
        &config,
        &shutdown,
    )
    .await?;
    let balances = store::BalanceStore::start(&config)?;
    let claims = schedule::Claims::default();
    let folded = claims.clone();
    let extracts = TopicView::start(&config, &config.topic_extracts, move |msg| {
        let Some(key) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return Update::Skip;
        };
        match msg.payload().map(ExtractRecord::decode) {
            // Claims are folded first-wins, beside the table.
            None if key.starts_with("claim/") => {
                folded.fold(key, None);
                Update::Skip
            }
            None => Update::Delete(key),
            Some(Ok(ExtractRecord {
                record: Some(Record::Claim(c)),
            })) => {
                folded.fold(key, Some(c));
                Update::Skip
            }
            Some(Ok(r)) => Update::Upsert(key, r),
            Some(Err(e)) => {
                tracing::warn!(offset = msg.offset(), error = %e, "undecodable extract record skipped");
                Update::Skip
            }
        }
    })?;
    let state = AppState {
        config: Arc::new(config.clone()),
        balances: balances.clone(),
        extracts: extracts.clone(),
        claims,
        driving: schedule::Driving::default(),
        clock,
        process_id: uuid::Uuid::new_v4().to_string(),
        producer: service.producer()?,
        tokens: TokenTable::from_config(&config)?,
        shutdown: shutdown.clone(),
    };
    service.require_current(&extracts);
    let app = service.app(
        Router::new().merge(api::routes()).with_state(state.clone()),
        openapi::document(),
    );
    service.ready_when({
        let (b, e) = (balances.clone(), extracts.clone());
        async move {
            tokio::join!(b.sync(), e.sync());
        }
    });
    tokio::spawn(schedule::scheduler(state.clone(), shutdown.clone()));
    tokio::spawn(schedule::resumer(state.clone(), shutdown.clone()));
    let served = service.serve(listener, app).await;
    balances.stop();
    extracts.stop();
    served
}
