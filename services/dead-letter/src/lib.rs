//! The dead-letter service: reads the `dead-letters` topic from the beginning into a view and
//! lists its entries over HTTP, filtered by tenant, subscription and event type.
//!
//! - [`run`]: the view and the HTTP server.
//! - `GET /api/v1/dead-letters`: the list, newest first.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use hookline_auth::{HasTokens, Principal, Role, TokenTable};
use hookline_config::Config;
use hookline_events::time_fmt::rfc3339_millis;
use hookline_kafka::rdkafka::Message as _;
use hookline_kafka::view::{TopicView, Update};
use hookline_proto::Message as _;
use hookline_proto::v1::DeadLetter;
use hookline_runtime::{ApiError, CancellationToken, Health, JsonQuery};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use utoipa::{IntoParams, OpenApi, ToSchema};

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
struct AppState {
    letters: TopicView<DeadLetter>,
    tokens: Arc<TokenTable>,
}

impl HasTokens for AppState {
    fn tokens(&self) -> &TokenTable {
        &self.tokens
    }
}

/// Serves the dead letters on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if config.create_topics {
        hookline_kafka::ensure_topics(&config).await?;
    }
    let tokens = TokenTable::from_config(&config)?;
    // Keyed by position: one delivery may be dead-lettered more than once (after a replay).
    let letters = TopicView::start(&config, &config.topic_dead_letters, |msg| {
        match msg.payload().map(DeadLetter::decode) {
            Some(Ok(letter)) => {
                Update::Upsert(format!("{}/{}", msg.partition(), msg.offset()), letter)
            }
            _ => {
                tracing::warn!(
                    partition = msg.partition(),
                    offset = msg.offset(),
                    "undecodable dead letter skipped"
                );
                Update::Skip
            }
        }
    })?;
    let health = Health::with_probe(hookline_kafka::brokers_reachable);
    let app = Router::new()
        .route("/api/v1/dead-letters", get(list))
        .with_state(AppState {
            letters: letters.clone(),
            tokens,
        })
        .merge(hookline_runtime::health_routes(health.clone(), document()));
    let app = hookline_runtime::json_fallbacks(app);
    {
        let (letters, health) = (letters.clone(), health.clone());
        tokio::spawn(async move {
            letters.sync().await;
            health.set_ready(true);
        });
    }
    let served = hookline_runtime::serve(listener, app, shutdown).await;
    letters.stop();
    Ok(served?)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hookline dead letters",
        description = "Deliveries that exhausted their retries or could not be delivered, \
            newest first. Every call but health and this document carries `Authorization: \
            Bearer <token>`; a viewer sees its tenant's, an admin every tenant's. Errors are \
            JSON `{code, message, field}`."
    ),
    paths(list),
    components(schemas(ErrorOut))
)]
struct DeadLetterDoc;

fn document() -> utoipa::openapi::OpenApi {
    let mut doc = DeadLetterDoc::openapi();
    hookline_runtime::add_common_components(&mut doc);
    doc
}

/// The error body (see `hookline_runtime::ApiError`).
#[derive(Serialize, ToSchema)]
#[schema(as = ErrorBody)]
struct ErrorOut {
    code: String,
    message: String,
    field: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct Filter {
    /// Only this subscription's.
    subscription_id: Option<String>,
    /// Only this event type's.
    event_type: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct LetterOut {
    delivery_id: String,
    subscription_id: String,
    tenant: String,
    event_id: String,
    event_type: String,
    reason: String,
    attempts: u32,
    last_status: Option<u32>,
    last_error: Option<String>,
    dead_lettered_at: String,
    #[serde(skip)]
    #[schema(ignore)]
    at_ms: i64,
}

#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "dead-letters", params(Filter),
    responses((status = 200, description = "Newest first", body = Vec<LetterOut>),
        (status = 400, body = ErrorOut), (status = 401, body = ErrorOut),
        (status = 403, body = ErrorOut)))]
async fn list(
    State(state): State<AppState>,
    who: Principal,
    JsonQuery(filter): JsonQuery<Filter>,
) -> Result<Json<Vec<LetterOut>>, ApiError> {
    who.require(Role::Viewer)?;
    let limit = filter.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "`limit` must be 1-1000"));
    }
    let mut out: Vec<LetterOut> = state.letters.read(|t| {
        t.values()
            .filter_map(|l| {
                let job = l.job.as_ref()?;
                let event = job.event.as_ref()?;
                let wanted = who.can_see(&job.tenant)
                    && filter
                        .subscription_id
                        .as_ref()
                        .is_none_or(|s| *s == job.subscription_id)
                    && filter
                        .event_type
                        .as_ref()
                        .is_none_or(|t| *t == event.r#type);
                wanted.then(|| LetterOut {
                    delivery_id: job.delivery_id.clone(),
                    subscription_id: job.subscription_id.clone(),
                    tenant: job.tenant.clone(),
                    event_id: event.id.clone(),
                    event_type: event.r#type.clone(),
                    reason: l.reason.clone(),
                    attempts: job.attempt,
                    last_status: l
                        .last_attempt
                        .as_ref()
                        .map(|a| a.status_code)
                        .filter(|s| *s != 0),
                    last_error: l
                        .last_attempt
                        .as_ref()
                        .map(|a| a.error.clone())
                        .filter(|e| !e.is_empty()),
                    dead_lettered_at: rfc3339_millis(l.dead_lettered_at_ms),
                    at_ms: l.dead_lettered_at_ms,
                })
            })
            .collect()
    });
    out.sort_by(|a, b| {
        b.at_ms
            .cmp(&a.at_ms)
            .then_with(|| a.delivery_id.cmp(&b.delivery_id))
    });
    out.truncate(limit);
    Ok(Json(out))
}
