//! Svix messages under `/api/v1/app/{app_id}/msg`.
//!
//! `POST` records the message on the `messages` topic and publishes it to the events topic
//! as an event naming the application (id `msg_…`, the payload as `data`, verbatim), keyed
//! by the application id (or the `orderingKey` extension field), and answers 202 once Kafka
//! acknowledged both: an application's messages reach each endpoint in the order they were
//! accepted. Without an `eventId` the two records are produced at once (one acknowledgement
//! round, batched with other requests' records); with one, the record comes first (below).
//!
//! `eventId` is unique per application for a day, decided by log order: a message with one
//! is recorded under the key `tenant/app/event/{eventId}`, and the first record of that key
//! within a day holds it (every replica folds the same sequence, as name claims do). The
//! writer waits until its own view applied its record and publishes only if it holds the
//! key; a later one answers 409, as Svix does, and publishes nothing.
//!
//! [`Messages`] folds the topic into the most recent [`PER_APP`] messages of each
//! application (what list and get answer from) and the `eventId`s of the last day; the
//! topic's retention (`svix_message_retention`) bounds what a restart reads.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hookline_auth::{Principal, Role};
use hookline_config::Config;
use hookline_events::time_fmt::{now_ms, parse_rfc3339, rfc3339_millis};
use hookline_kafka::KafkaError;
use hookline_kafka::rdkafka::Message as _;
use hookline_kafka::view::{TopicView, Update};
use hookline_proto::Message as _;
use hookline_proto::v1::{Event, SvixMessage};
use hookline_runtime::{ApiError, JsonBody, JsonPath};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::apps::{self, ApplicationIn};
use super::{ListQuery, ListResponse, check_id, new_id, page};
use crate::AppState;

/// Messages kept per application for list and get.
pub const PER_APP: usize = 1_000;
/// How long an `eventId` stays taken.
const EVENT_ID_MS: i64 = 24 * 3600 * 1000;
/// Channels a message may carry.
const CHANNELS_MAX: usize = 5;

#[derive(Default)]
struct Recent {
    /// `tenant/app` → message id → message.
    by_app: HashMap<String, BTreeMap<String, SvixMessage>>,
    /// `tenant/app/event/{eventId}` → (message id, time).
    event_ids: HashMap<String, (String, i64)>,
    /// Event-id keys by time, to forget them after a day.
    expiry: VecDeque<(i64, String)>,
}

impl Recent {
    fn apply(&mut self, key: &str, value: Option<SvixMessage>) {
        let Some(m) = value else {
            // A tombstone: the event of that record was never published.
            let id = match self.event_ids.remove(key) {
                Some((id, _)) => id,
                None => key.rsplit('/').next().unwrap_or_default().to_owned(),
            };
            let app = app_key(key);
            if let Some(msgs) = self.by_app.get_mut(&app) {
                msgs.remove(&id);
            }
            return;
        };
        while let Some((at, k)) = self.expiry.front() {
            if *at > m.timestamp_ms - EVENT_ID_MS {
                break;
            }
            if self.event_ids.get(k).is_some_and(|(_, t)| t == at) {
                self.event_ids.remove(k);
            }
            self.expiry.pop_front();
        }
        if m.event_id.is_some() {
            let holder = self.event_ids.get(key);
            let held =
                holder.is_some_and(|(id, at)| *id != m.id && *at > m.timestamp_ms - EVENT_ID_MS);
            if held {
                return;
            }
            self.event_ids
                .insert(key.to_owned(), (m.id.clone(), m.timestamp_ms));
            self.expiry.push_back((m.timestamp_ms, key.to_owned()));
        }
        let msgs = self
            .by_app
            .entry(format!("{}/{}", m.tenant, m.application))
            .or_default();
        msgs.insert(m.id.clone(), m);
        while msgs.len() > PER_APP {
            msgs.pop_first();
        }
    }
}

/// `tenant/app` of a record key.
fn app_key(key: &str) -> String {
    let mut parts = key.splitn(3, '/');
    format!(
        "{}/{}",
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default()
    )
}

/// The recent messages of every application, folded from the `messages` topic.
#[derive(Clone)]
pub struct Messages {
    view: TopicView<()>,
    recent: Arc<RwLock<Recent>>,
}

impl Messages {
    pub fn start(config: &Config) -> Result<Self, KafkaError> {
        let recent: Arc<RwLock<Recent>> = Arc::default();
        let fold = recent.clone();
        let view = TopicView::start(config, &config.topic_messages, move |msg| {
            let Some(key) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                return Update::Skip;
            };
            let value = match msg.payload().map(SvixMessage::decode) {
                None => None,
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => {
                    tracing::warn!(offset = msg.offset(), error = %e, "undecodable message record skipped");
                    return Update::Skip;
                }
            };
            fold.write()
                .unwrap_or_else(|p| p.into_inner())
                .apply(&key, value);
            Update::Skip
        })?;
        Ok(Self { view, recent })
    }

    pub fn view(&self) -> &TopicView<()> {
        &self.view
    }

    fn read<R>(&self, f: impl FnOnce(&Recent) -> R) -> R {
        f(&self.recent.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether record `key` is held by message `id`.
    fn holds(&self, key: &str, id: &str) -> bool {
        self.read(|r| r.event_ids.get(key).is_some_and(|(held, _)| held == id))
    }

    /// Message `id_or_event_id` of application `app` of `tenant`.
    pub(super) fn find(
        &self,
        tenant: &str,
        app: &str,
        id_or_event_id: &str,
    ) -> Option<SvixMessage> {
        self.read(|r| {
            let msgs = r.by_app.get(&format!("{tenant}/{app}"))?;
            let by_event = || {
                let key = format!("{tenant}/{app}/event/{id_or_event_id}");
                r.event_ids.get(&key).and_then(|(id, _)| msgs.get(id))
            };
            msgs.get(id_or_event_id).or_else(by_event).cloned()
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageIn {
    #[schema(min_length = 1, max_length = 255)]
    pub event_type: String,
    /// The body every endpoint receives, verbatim: a JSON object.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// Unique per application for a day (a repeat: 409).
    #[schema(min_length = 1, max_length = 256, pattern = r"^[a-zA-Z0-9\-_.]+$")]
    pub event_id: Option<String>,
    /// Shown with the message (endpoints cannot filter by channel yet).
    #[schema(max_items = 5)]
    pub channels: Option<Vec<String>>,
    /// Creates the application (with the path's `uid`) when it does not exist; ignored
    /// when it does. Its `uid`, if given, must be the path's (Hookline: 409 otherwise, Svix:
    /// 422).
    pub application: Option<ApplicationIn>,
    /// The ordering key (a Hookline extension): messages of one key reach each endpoint in
    /// the order they were accepted. Default: the application, so all of its messages are
    /// in order; a finer key (an account id, say) delivers different keys concurrently.
    #[schema(min_length = 1, max_length = 255)]
    pub ordering_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageOut {
    pub id: String,
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// `{}` when asked `with_content=false`.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    #[schema(format = DateTime)]
    pub timestamp: String,
}

impl MessageOut {
    pub(super) fn of(m: &SvixMessage, with_content: bool) -> Self {
        let payload = if with_content { &m.payload_json } else { "{}" };
        Self {
            id: m.id.clone(),
            event_type: m.event_type.clone(),
            event_id: m.event_id.clone(),
            payload: RawValue::from_string(payload.to_owned())
                .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("JSON")),
            channels: Some(m.channels.clone()).filter(|c| !c.is_empty()),
            timestamp: rfc3339_millis(m.timestamp_ms),
        }
    }
}

fn check(body: &MessageIn) -> Result<(), ApiError> {
    hookline_events::validate_event_type(&body.event_type).map_err(|_| {
        ApiError::invalid(
            "eventType",
            "`eventType` must be dot-separated words of letters, digits, `_` or `-`",
        )
    })?;
    if !body.payload.get().trim_start().starts_with('{') {
        return Err(ApiError::invalid(
            "payload",
            "`payload` must be a JSON object",
        ));
    }
    if let Some(id) = &body.event_id {
        check_id("eventId", id)?;
    }
    let channels = body.channels.as_deref().unwrap_or_default();
    if channels.len() > CHANNELS_MAX {
        return Err(ApiError::invalid(
            "channels",
            format!("at most {CHANNELS_MAX} channels"),
        ));
    }
    for c in channels {
        crate::input::check_ident("channels", c, super::doc::CHANNEL_MAX)?;
    }
    if let Some(k) = &body.ordering_key
        && !(1..=255).contains(&k.chars().count())
    {
        return Err(ApiError::invalid(
            "orderingKey",
            "`orderingKey` must be 1-255 characters",
        ));
    }
    // Checked even when the application exists (and the field is not used), as the
    // document says.
    if let Some(app) = &body.application {
        apps::check_in(app)?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/app/{app_id}/msg", tag = "svix-message",
    params(("app_id" = String, Path, description = "Id or uid"),
        ("with_content" = Option<bool>, Query)),
    request_body = MessageIn,
    responses((status = 202, description = "Published: Kafka acknowledged the event",
        body = MessageOut),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut),
        (status = 409, body = super::HttpErrorOut, description = "`eventId` already used, \
            or the application does not exist and `application.uid` is not the path's"),
        (status = 422, body = super::HttpValidationError),
        (status = 503, body = super::HttpErrorOut)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(app_id): JsonPath<String>,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody<MessageIn>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    let with_content = ListQuery::parse(query.as_deref())?.flag("with_content", true)?;
    check(&body)?;
    super::schemas::check_payload(&state, &body.event_type, &body.payload)?;
    let app = match apps::find(&state, &who, &app_id) {
        Ok(app) => app,
        Err(not_found) => match body.application {
            None => return Err(not_found),
            Some(mut new) => {
                check_id("path", &app_id)?;
                // Svix answers 422; a conflict between the path and the body is a 409 here,
                // as the document can only spell one value at a time.
                if new.uid.as_ref().is_some_and(|u| *u != app_id) {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "application_uid_mismatch",
                        "the path's application does not exist, and `application.uid` names \
                         another one: give the path's uid (or none) to create it",
                    ));
                }
                new.uid = Some(app_id);
                apps::create_app(&state, &who, new).await?
            }
        },
    };
    let now = now_ms();
    let message = SvixMessage {
        id: new_id("msg_"),
        tenant: app.tenant.clone(),
        application: app.id.clone(),
        event_id: body.event_id.clone(),
        event_type: body.event_type.clone(),
        payload_json: body.payload.get().to_owned(),
        timestamp_ms: now,
        channels: body.channels.clone().unwrap_or_default(),
    };
    let key = match &message.event_id {
        Some(e) => format!("{}/{}/event/{e}", app.tenant, app.id),
        None => format!("{}/{}/{}", app.tenant, app.id, message.id),
    };
    let event = Event {
        id: message.id.clone(),
        r#type: message.event_type.clone(),
        time: rfc3339_millis(now),
        tenant: app.tenant.clone(),
        metadata: HashMap::new(),
        data_json: message.payload_json.clone(),
        changed_fields_json: String::new(),
        application: Some(app.id.clone()),
    };
    let ordering_key = body.ordering_key.as_deref().unwrap_or(&app.id);
    let store = &state.store;
    let topic = state.messages.view().topic();
    let record = message.encode_to_vec();
    let cx = hookline_telemetry::trace::new_root();
    if message.event_id.is_some() {
        // Log order decides who holds the eventId: the record first, then this replica's
        // view of it, then the event only if this message holds the key.
        let (p, o) = store.write(topic, &key, Some(&record)).await?;
        state.messages.view().wait_for_offset(p, o).await;
        if !state.messages.holds(&key, &message.id) {
            return Err(ApiError::conflict(
                "eventId",
                "a message with this `eventId` already exists in the application",
            ));
        }
        if let Err(e) = store.publish_event(ordering_key, &event, &cx).await {
            // Not published: the record goes too, so the message is neither listed nor its
            // eventId held (a retry may use it).
            let _ = store.write(topic, &key, None).await;
            return Err(e);
        }
    } else {
        // Nothing to decide: the record and the event are produced together, in the
        // producer's same batches, and the answer waits for both acknowledgements. A list
        // syncs its view before answering, so it shows the message once this answers.
        let (written, published) = tokio::join!(
            store.write(topic, &key, Some(&record)),
            store.publish_event(ordering_key, &event, &cx)
        );
        match (written, published) {
            (Ok(_), Ok(())) => {}
            (Ok(_), Err(e)) => {
                // As above: not published, not listed.
                let _ = store.write(topic, &key, None).await;
                return Err(e);
            }
            (Err(e), published) => {
                if published.is_ok() {
                    // Like a publish that timed out and landed later: the answer says
                    // failure, the event may be delivered; a retry is a new message.
                    tracing::warn!(message = %message.id, "message published but not recorded");
                }
                return Err(e);
            }
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageOut::of(&message, with_content)),
    ))
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/msg", tag = "svix-message",
    params(("app_id" = String, Path, description = "Id or uid"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 250),
        ("iterator" = Option<String>, Query),
        ("event_types" = Option<String>, Query, description = "Comma-separated"),
        ("channel" = Option<String>, Query),
        ("before" = Option<String>, Query, format = DateTime),
        ("after" = Option<String>, Query, format = DateTime),
        ("with_content" = Option<bool>, Query)),
    responses((status = 200, description = "Newest first; the application's most recent \
        1,000 messages within the retention", body = ListResponse<MessageOut>),
        (status = 401, body = super::HttpErrorOut), (status = 404, body = super::HttpErrorOut),
        (status = 422, body = super::HttpValidationError)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(app_id): JsonPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse<MessageOut>>, ApiError> {
    let q = ListQuery::parse(query.as_deref())?;
    let with_content = q.flag("with_content", true)?;
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        q.param(name)
            .map(|t| {
                parse_rfc3339(t)
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                    .ok_or_else(|| {
                        ApiError::invalid(name, format!("`{name}` must be an RFC 3339 time"))
                    })
            })
            .transpose()
    };
    let (before, after) = (time("before")?, time("after")?);
    let types: Option<Vec<&str>> = q
        .param("event_types")
        .map(|t| t.split(',').filter(|s| !s.is_empty()).collect());
    let channel = q.param("channel");
    let app = apps::find(&state, &who, &app_id)?;
    state.messages.view().sync().await;
    let items: Vec<(String, MessageOut)> = state.messages.read(|r| {
        r.by_app
            .get(&format!("{}/{}", app.tenant, app.id))
            .map(|msgs| {
                msgs.values()
                    .filter(|m| before.is_none_or(|b| m.timestamp_ms < b))
                    .filter(|m| after.is_none_or(|a| m.timestamp_ms > a))
                    .filter(|m| {
                        types
                            .as_ref()
                            .is_none_or(|t| t.contains(&m.event_type.as_str()))
                    })
                    .filter(|m| channel.is_none_or(|c| m.channels.iter().any(|x| x == c)))
                    .map(|m| (m.id.clone(), MessageOut::of(m, with_content)))
                    .collect()
            })
            .unwrap_or_default()
    });
    Ok(Json(page(items, &q, q.descending.unwrap_or(true))))
}

#[utoipa::path(get, path = "/api/v1/app/{app_id}/msg/{msg_id}", tag = "svix-message",
    params(("app_id" = String, Path), ("msg_id" = String, Path, description = "Id or eventId"),
        ("with_content" = Option<bool>, Query)),
    responses((status = 200, body = MessageOut), (status = 401, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut)))]
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, msg_id)): JsonPath<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<MessageOut>, ApiError> {
    let with_content = ListQuery::parse(query.as_deref())?.flag("with_content", true)?;
    let app = apps::find(&state, &who, &app_id)?;
    state.messages.view().sync().await;
    state
        .messages
        .find(&app.tenant, &app.id, &msg_id)
        .map(|m| Json(MessageOut::of(&m, with_content)))
        .ok_or_else(|| ApiError::not_found("message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, event_id: Option<&str>, at: i64) -> SvixMessage {
        SvixMessage {
            id: id.into(),
            tenant: "t".into(),
            application: "app_1".into(),
            event_id: event_id.map(Into::into),
            event_type: "a.b".into(),
            payload_json: "{}".into(),
            timestamp_ms: at,
            channels: Vec::new(),
        }
    }

    #[test]
    fn the_first_record_of_an_event_id_holds_it_for_a_day() {
        let mut r = Recent::default();
        let key = "t/app_1/event/e1";
        r.apply(key, Some(m("msg_1", Some("e1"), 1_000)));
        r.apply(key, Some(m("msg_2", Some("e1"), 2_000)));
        assert_eq!(r.event_ids[key].0, "msg_1");
        assert_eq!(r.by_app["t/app_1"].len(), 1, "the duplicate is not listed");
        // A day later the eventId is free again.
        r.apply(key, Some(m("msg_3", Some("e1"), 1_000 + EVENT_ID_MS + 1)));
        assert_eq!(r.event_ids[key].0, "msg_3");
        // A tombstone (publish failed) removes the record and frees the eventId.
        r.apply(key, None);
        assert!(!r.event_ids.contains_key(key));
        assert!(!r.by_app["t/app_1"].contains_key("msg_3"));
        r.apply("t/app_1/msg_9", Some(m("msg_9", None, 5)));
        r.apply("t/app_1/msg_9", None);
        assert!(!r.by_app["t/app_1"].contains_key("msg_9"));
    }

    #[test]
    fn an_application_keeps_its_most_recent_messages() {
        let mut r = Recent::default();
        for i in 0..PER_APP + 5 {
            let id = format!("msg_{i:06}");
            r.apply(&format!("t/app_1/{id}"), Some(m(&id, None, i as i64)));
        }
        let msgs = &r.by_app["t/app_1"];
        assert_eq!(msgs.len(), PER_APP);
        assert_eq!(msgs.keys().next().unwrap(), "msg_000005");
    }
}
