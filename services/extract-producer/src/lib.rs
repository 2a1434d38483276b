//! The extract producer: balance extracts (Target: Webhook, Data source: Balances).
//!
//! - [`run`]: views over `balances` and `extracts`, and the HTTP API.
//! - `api`: configure an extract, run it now, list its runs.
//! - `extract`: one run: the matching balance rows become `balance.extracted` events on
//!   `events`, in the seed's envelope, the balance kept as its exact decimal text.
#![forbid(unsafe_code)]

mod api;
mod extract;

use std::sync::Arc;

use axum::Router;
use hookline_auth::{HasTokens, TokenTable};
use hookline_config::Config;
use hookline_events::{BalanceRow, CONTENT_TYPE_HEADER, decode_balance};
use hookline_kafka::rdkafka::Message as _;
use hookline_kafka::view::{TopicView, Update};
use hookline_proto::v1::ExtractRecord;
use hookline_runtime::{CancellationToken, Health};
use tokio::net::TcpListener;

pub use extract::EVENT_TYPE;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] hookline_kafka::KafkaError),
    #[error(transparent)]
    Auth(#[from] hookline_auth::AuthError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub balances: TopicView<BalanceRow>,
    pub extracts: TopicView<ExtractRecord>,
    pub producer: hookline_kafka::Producer,
    pub topic_events: String,
    pub topic_extracts: String,
    pub tokens: Arc<TokenTable>,
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
) -> Result<(), Error> {
    if config.create_topics {
        hookline_kafka::ensure_topics(&config).await?;
    }
    let balances = TopicView::start(&config, &config.topic_balances, |msg| {
        let Some(value) = msg.payload() else {
            return msg.key().map_or(Update::Skip, |k| {
                Update::Delete(String::from_utf8_lossy(k).into_owned())
            });
        };
        match decode_balance(hookline_kafka::header(msg, CONTENT_TYPE_HEADER), value) {
            // Keyed by the row itself, so rows from any producer compact alike.
            Ok(row) => Update::Upsert(hookline_events::balance_key(&row), row),
            Err(e) => {
                tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "invalid balance row skipped");
                Update::Skip
            }
        }
    })?;
    let started = hookline_events::time_fmt::now_ms();
    let extracts =
        hookline_kafka::keyed_protobuf_view(&config, &config.topic_extracts, move |r| {
            count_rows(r, started)
        })?;
    let state = AppState {
        balances: balances.clone(),
        extracts: extracts.clone(),
        producer: hookline_kafka::producer(&config)?,
        topic_events: config.topic_events.clone(),
        topic_extracts: config.topic_extracts.clone(),
        tokens: TokenTable::from_config(&config)?,
    };
    let health = Health::kafka();
    hookline_telemetry::metrics::announce(hookline_telemetry::metrics::Role::Extracts);
    let app = Router::new().merge(api::routes()).with_state(state).merge(
        hookline_runtime::health_routes(health.clone(), api::document()),
    );
    let app = hookline_runtime::json_fallbacks(app);
    {
        let (b, e, health) = (balances.clone(), extracts.clone(), health.clone());
        tokio::spawn(async move {
            tokio::join!(b.sync(), e.sync());
            health.set_ready(true);
        });
    }
    let served = hookline_runtime::serve(listener, app, shutdown).await;
    balances.stop();
    extracts.stop();
    Ok(served?)
}

/// Counts the rows of a run that finished after this process started
/// (`hookline_extract_rows_total`). Every replica reads every run record, so each counts
/// every run: take the maximum over replicas, not the sum.
fn count_rows(record: &ExtractRecord, started_ms: i64) {
    use hookline_proto::v1::RunStatus;
    use hookline_proto::v1::extract_record::Record;
    let Some(Record::Run(run)) = &record.record else {
        return;
    };
    let finished_ms = hookline_events::time_fmt::parse_rfc3339(&run.finished_on)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
    if run.status() == RunStatus::Succeeded && finished_ms.is_some_and(|t| t >= started_ms) {
        hookline_telemetry::metrics::metrics()
            .extract_rows
            .add(run.rows_emitted, &[]);
    }
}
