//! `/api/v1/extracts`: configurations (create, list, get, replace, patch, delete) and runs
//! (run now, list, get, cancel). `extractions-editor`, editor or admin configure and run;
//! viewers read. Bodies are strict (unknown fields refused) and every error names its field.

use std::sync::LazyLock;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts as RequestParts;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, rfc3339_micros, rfc3339_millis};
use hookline_proto::v1::extract_record::Record;
use hookline_proto::v1::{
    BalanceQuery, ExtractConfig, ExtractRecord, ExtractRun, RunCancel, RunStatus,
};
use hookline_runtime::{ApiError, JsonBody, JsonPath, JsonQuery};
use serde::{Deserialize, Deserializer, Serialize};

use crate::AppState;
use crate::driver::{cancel_key, committed_run, is_final, run_key};
use crate::query::{DECIMAL_PATTERN, FIELDS};
use crate::records::{config_key, config_of, write, write_value};
use crate::schedule::{Schedule, next_run_at, spawn_driver};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/extracts", get(list).post(create))
        .route(
            "/api/v1/extracts/{name}",
            get(get_one).put(replace).patch(patch).delete(delete),
        )
        .route("/api/v1/extracts/{name}/runs", post(run_now).get(list_runs))
        .route("/api/v1/extracts/{name}/runs/{run_id}", get(get_run))
        .route("/api/v1/extracts/{name}/runs/{run_id}/cancel", post(cancel))
}

pub const NAME_MAX: usize = 255;
pub const DESCRIPTION_MAX: usize = 1000;

/// A cron expression Hookline accepts: five fields (minute hour day-of-month month
/// day-of-week), or six with seconds first; each `*`, `*/step` or a list of numbers.
pub static CRON_PATTERN: LazyLock<String> = LazyLock::new(|| {
    let field = |n: &str, s: &str| format!(r"(\*(/({s}))?|({n})(,({n}))*)");
    let sec = field("[1-5]?[0-9]", "[1-9]|[1-5][0-9]");
    let hour = field("1?[0-9]|2[0-3]", "[1-9]|1[0-9]|2[0-3]");
    let dom = field("[1-9]|[12][0-9]|3[01]", "[1-9]|[12][0-9]|3[01]");
    let mon = field("[1-9]|1[0-2]", "[1-9]|1[0-2]");
    let dow = field("[0-7]", "[1-7]");
    format!("^({sec} )?{sec} {hour} {dom} {mon} {dow}$")
});
static CRON: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(&CRON_PATTERN).expect("the cron pattern compiles"));
static DECIMAL: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(DECIMAL_PATTERN).expect("the decimal pattern compiles"));

/// The Balance Query (empty lists: every value).
#[derive(Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct QueryIn {
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub product_names: Vec<String>,
    #[serde(default)]
    pub transaction_currencies: Vec<String>,
    /// Inclusive lower bound on the balance (exact decimal text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_min: Option<String>,
    /// Inclusive upper bound on the balance (exact decimal text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_max: Option<String>,
    /// Fields of `data`; empty: all five.
    #[serde(default)]
    pub fields: Vec<Field>,
}

#[derive(Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    #[serde(rename = "node")]
    Node,
    #[serde(rename = "account")]
    Account,
    #[serde(rename = "balance")]
    Balance,
    #[serde(rename = "productName")]
    ProductName,
    #[serde(rename = "transactionCurrency")]
    TransactionCurrency,
}

impl Field {
    fn name(self) -> &'static str {
        FIELDS[self as usize]
    }

    fn of(name: &str) -> Option<Self> {
        [
            Field::Node,
            Field::Account,
            Field::Balance,
            Field::ProductName,
            Field::TransactionCurrency,
        ]
        .into_iter()
        .find(|f| f.name() == name)
    }
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ScheduleIn {
    pub cron: String,
    /// IANA time zone; absent: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CreateExtract {
    pub name: String,
    pub target: String,
    pub data_source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub query: Option<QueryIn>,
    #[serde(default)]
    pub schedule: Option<ScheduleIn>,
    #[serde(default)]
    pub active: Option<bool>,
}

/// A body that must be a JSON object (serde would also take an array for a struct).
pub(crate) struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(Obj)
    }
}

/// A whole configuration but its name (the path's; an extract is not renamed).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplaceExtract {
    pub target: String,
    pub data_source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub query: Option<QueryIn>,
    #[serde(default)]
    pub schedule: Option<ScheduleIn>,
    #[serde(default)]
    pub active: Option<bool>,
}

/// Present (`Some`), even when null (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PatchExtract {
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub data_source: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub query: Option<Option<QueryIn>>,
    #[serde(default, deserialize_with = "present")]
    pub schedule: Option<Option<ScheduleIn>>,
    #[serde(default, deserialize_with = "present")]
    pub active: Option<Option<bool>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExtractOut {
    name: String,
    target: String,
    data_source: String,
    description: Option<String>,
    query: QueryIn,
    schedule: Option<ScheduleIn>,
    active: bool,
    next_run_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl ExtractOut {
    fn of(c: &ExtractConfig, now: i64) -> Self {
        let q = c.query.clone().unwrap_or_default();
        let fields = if q.fields.is_empty() {
            FIELDS.iter().filter_map(|f| Field::of(f)).collect()
        } else {
            q.fields.iter().filter_map(|f| Field::of(f)).collect()
        };
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            name: c.name.clone(),
            target: c.target.clone(),
            data_source: c.data_source.clone(),
            description: opt(&c.description),
            query: QueryIn {
                nodes: q.nodes,
                accounts: q.accounts,
                product_names: q.product_names,
                transaction_currencies: q.transaction_currencies,
                balance_min: opt(&q.balance_min),
                balance_max: opt(&q.balance_max),
                fields,
            },
            schedule: opt(&c.schedule).map(|cron| ScheduleIn {
                cron,
                time_zone: Some(opt(&c.time_zone).unwrap_or_else(|| "UTC".into())),
            }),
            active: c.active,
            next_run_at: next_run_at(c, now).map(rfc3339_millis),
            created_at: rfc3339_millis(c.created_at_ms),
            updated_at: rfc3339_millis(c.updated_at_ms),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunOut {
    run_id: String,
    extract_name: String,
    status: &'static str,
    /// `manual` or `schedule`.
    trigger: &'static str,
    scheduled_for: Option<String>,
    started_on: String,
    finished_on: Option<String>,
    rows_emitted: u64,
    rows_skipped: u64,
    error: Option<String>,
}

pub(crate) fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Queued | RunStatus::Unspecified => "QUEUED",
        RunStatus::Running => "RUNNING",
        RunStatus::Succeeded => "SUCCEEDED",
        RunStatus::Failed => "FAILED",
        RunStatus::Cancelled => "CANCELLED",
    }
}

impl RunOut {
    fn of(r: &ExtractRun) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            run_id: r.run_id.clone(),
            extract_name: r.extract_name.clone(),
            status: status_name(r.status()),
            trigger: if r.tick_ms > 0 { "schedule" } else { "manual" },
            scheduled_for: (r.tick_ms > 0).then(|| rfc3339_millis(r.tick_ms)),
            started_on: r.started_on.clone(),
            finished_on: opt(&r.finished_on),
            rows_emitted: r.rows_emitted,
            rows_skipped: r.rows_skipped,
            error: opt(&r.error),
        }
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    if !(1..=NAME_MAX).contains(&n) || name.contains('/') {
        return Err(ApiError::invalid(
            "name",
            "`name` must be 1-255 characters without `/`",
        ));
    }
    Ok(())
}

/// The parts every write checks; builds the stored configuration (times left to the caller).
struct Parts {
    target: String,
    data_source: String,
    description: Option<String>,
    query: Option<QueryIn>,
    schedule: Option<ScheduleIn>,
    active: bool,
}

fn build(tenant: &str, name: &str, p: Parts) -> Result<ExtractConfig, ApiError> {
    if p.target != "Webhook" {
        return Err(ApiError::invalid("target", "`target` must be \"Webhook\""));
    }
    if p.data_source != "Balances" {
        return Err(ApiError::invalid(
            "dataSource",
            "`dataSource` must be \"Balances\"",
        ));
    }
    if p.description
        .as_ref()
        .is_some_and(|d| d.chars().count() > DESCRIPTION_MAX)
    {
        return Err(ApiError::invalid(
            "description",
            "`description` must be at most 1000 characters",
        ));
    }
    let q = p.query.unwrap_or_default();
    for (field, v) in [
        ("query.balanceMin", &q.balance_min),
        ("query.balanceMax", &q.balance_max),
    ] {
        if v.as_ref().is_some_and(|v| !DECIMAL.is_match(v)) {
            return Err(ApiError::invalid(
                field,
                format!("`{field}` must be a decimal such as \"-12.50\""),
            ));
        }
    }
    let (schedule, time_zone) = match p.schedule {
        None => (String::new(), String::new()),
        Some(s) => {
            if !CRON.is_match(&s.cron) {
                return Err(ApiError::invalid(
                    "schedule.cron",
                    "`schedule.cron` must be 5 or 6 fields, each `*`, `*/step` or numbers",
                ));
            }
            let tz = s.time_zone.unwrap_or_default();
            Schedule::parse(&s.cron, &tz).map_err(|(f, m)| ApiError::invalid(f, m))?;
            (s.cron, tz)
        }
    };
    Ok(ExtractConfig {
        name: name.to_owned(),
        tenant: tenant.to_owned(),
        target: p.target,
        data_source: p.data_source,
        query: Some(BalanceQuery {
            nodes: q.nodes,
            accounts: q.accounts,
            product_names: q.product_names,
            transaction_currencies: q.transaction_currencies,
            balance_min: q.balance_min.unwrap_or_default(),
            balance_max: q.balance_max.unwrap_or_default(),
            fields: q.fields.iter().map(|f| f.name().to_owned()).collect(),
        }),
        schedule,
        time_zone,
        active: p.active,
        description: p.description.unwrap_or_default(),
        ..Default::default()
    })
}

/// Stores `config`, keeping what the schedule needs to know: ticks before it was (re)set or
/// activated are not run.
async fn store(
    state: &AppState,
    mut config: ExtractConfig,
    previous: Option<&ExtractConfig>,
) -> Result<ExtractConfig, ApiError> {
    let now = now_ms();
    config.updated_at_ms = now;
    config.created_at_ms = previous.map_or(now, |p| p.created_at_ms);
    let unchanged = previous.is_some_and(|p| {
        p.active
            && config.active
            && p.schedule == config.schedule
            && p.time_zone == config.time_zone
    });
    config.schedule_since_ms = match previous {
        Some(p) if unchanged => p.schedule_since_ms,
        _ => state.clock.now_ms(),
    };
    let record = ExtractRecord {
        record: Some(Record::Config(config.clone())),
    };
    write(state, &config_key(&config.tenant, &config.name), &record)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(config)
}

async fn create(
    State(state): State<AppState>,
    Editor(who): Editor,
    JsonBody(Obj(body)): JsonBody<Obj<CreateExtract>>,
) -> Result<impl IntoResponse, ApiError> {
    check_name(&body.name)?;
    let config = build(
        &who.tenant,
        &body.name,
        Parts {
            target: body.target,
            data_source: body.data_source,
            description: body.description,
            query: body.query,
            schedule: body.schedule,
            active: body.active.unwrap_or(false),
        },
    )?;
    state.extracts.sync().await;
    if config_of(&state, &who.tenant, &body.name).is_some() {
        return Err(ApiError::conflict(
            "name",
            format!("an extract named {:?} already exists", body.name),
        ));
    }
    let config = store(&state, config, None).await?;
    Ok((
        StatusCode::CREATED,
        Json(ExtractOut::of(&config, state.clock.now_ms())),
    ))
}

async fn list(State(state): State<AppState>, who: Principal) -> Json<Vec<ExtractOut>> {
    let prefix = config_key(&who.tenant, "");
    let now = state.clock.now_ms();
    let mut out: Vec<ExtractOut> = state.extracts.read(|t| {
        t.iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, r)| match &r.record {
                Some(Record::Config(c)) => Some(ExtractOut::of(c, now)),
                _ => None,
            })
            .collect()
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Json(out)
}

/// A caller allowed to configure and run extracts (`extractions-editor`, editor or admin):
/// anyone else is refused (403) before the request is read further.
pub(crate) struct Editor(Principal);

impl FromRequestParts<AppState> for Editor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut RequestParts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let who = Principal::from_request_parts(parts, state).await?;
        who.require(Role::ExtractionsEditor)?;
        Ok(Editor(who))
    }
}

fn found(state: &AppState, who: &Principal, name: &str) -> Result<ExtractConfig, ApiError> {
    config_of(state, &who.tenant, name).ok_or_else(|| ApiError::not_found("extract"))
}

async fn get_one(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(name): JsonPath<String>,
) -> Result<Json<ExtractOut>, ApiError> {
    let c = found(&state, &who, &name)?;
    Ok(Json(ExtractOut::of(&c, state.clock.now_ms())))
}

async fn replace(
    State(state): State<AppState>,
    Editor(who): Editor,
    JsonPath(name): JsonPath<String>,
    JsonBody(Obj(body)): JsonBody<Obj<ReplaceExtract>>,
) -> Result<Json<ExtractOut>, ApiError> {
    let config = build(
        &who.tenant,
        &name,
        Parts {
            target: body.target,
            data_source: body.data_source,
            description: body.description,
            query: body.query,
            schedule: body.schedule,
            active: body.active.unwrap_or(false),
        },
    )?;
    let previous = found(&state, &who, &name)?;
    let config = store(&state, config, Some(&previous)).await?;
    Ok(Json(ExtractOut::of(&config, state.clock.now_ms())))
}

async fn patch(
    State(state): State<AppState>,
    Editor(who): Editor,
    JsonPath(name): JsonPath<String>,
    JsonBody(Obj(body)): JsonBody<Obj<PatchExtract>>,
) -> Result<Json<ExtractOut>, ApiError> {
    let previous = found(&state, &who, &name)?;
    let current = ExtractOut::of(&previous, 0);
    let config = build(
        &who.tenant,
        &name,
        Parts {
            target: body.target.unwrap_or(current.target),
            data_source: body.data_source.unwrap_or(current.data_source),
            description: body.description.unwrap_or(current.description),
            query: body.query.unwrap_or(Some(current.query)),
            schedule: body.schedule.unwrap_or(current.schedule),
            active: body.active.map_or(current.active, |a| a.unwrap_or(false)),
        },
    )?;
    let config = store(&state, config, Some(&previous)).await?;
    Ok(Json(ExtractOut::of(&config, state.clock.now_ms())))
}

async fn delete(
    State(state): State<AppState>,
    Editor(who): Editor,
    JsonPath(name): JsonPath<String>,
) -> Result<StatusCode, ApiError> {
    found(&state, &who, &name)?;
    write_value(&state, &config_key(&who.tenant, &name), None)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunParams {
    /// Answer only when the run has finished.
    #[serde(default)]
    wait: bool,
}

async fn run_now(
    State(state): State<AppState>,
    Editor(who): Editor,
    JsonPath(name): JsonPath<String>,
    JsonQuery(params): JsonQuery<RunParams>,
) -> Result<impl IntoResponse, ApiError> {
    let config = found(&state, &who, &name)?;
    let run = ExtractRun {
        run_id: uuid::Uuid::new_v4().to_string(),
        extract_name: config.name.clone(),
        tenant: config.tenant.clone(),
        started_on: rfc3339_micros(time::OffsetDateTime::now_utc()),
        status: RunStatus::Queued as i32,
        heartbeat_ms: now_ms(),
        ..Default::default()
    };
    let key = run_key(&run.tenant, &run.extract_name, &run.run_id);
    let record = ExtractRecord {
        record: Some(Record::Run(run.clone())),
    };
    write(&state, &key, &record)
        .await
        .map_err(ApiError::unavailable)?;
    let driver = spawn_driver(&state, &run, &state.shutdown);
    if params.wait {
        if let Some(d) = driver {
            let _ = d.await;
        }
        // The driver's last transaction is committed, but its markers may not be written
        // yet, so a read_committed view can be caught up and still not show it: read until
        // the run shows as finished (or a while has passed: a driver stopped by shutdown
        // leaves it running).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let run = loop {
            state.extracts.sync().await;
            let current = committed_run(&state, &run.tenant, &run.extract_name, &run.run_id);
            match current {
                Some(c) if crate::driver::is_final(&c) => break c,
                _ if tokio::time::Instant::now() >= deadline => break current.unwrap_or(run),
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        return Ok((StatusCode::CREATED, Json(RunOut::of(&run))));
    }
    Ok((StatusCode::ACCEPTED, Json(RunOut::of(&run))))
}

/// The runs of an extract: run records and claimed ticks without one yet.
fn runs_of(state: &AppState, tenant: &str, name: &str) -> Vec<ExtractRun> {
    let prefix = run_key(tenant, name, "");
    let mut runs: Vec<ExtractRun> = state.extracts.read(|t| {
        t.iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, r)| match &r.record {
                Some(Record::Run(run)) => Some(run.clone()),
                _ => None,
            })
            .collect()
    });
    for c in state.claims.of(tenant, name) {
        if !runs.iter().any(|r| r.run_id == c.run_id) {
            runs.push(c);
        }
    }
    runs.sort_by(|a, b| b.started_on.cmp(&a.started_on));
    runs
}

/// Page size of the runs list: default and most.
pub(crate) const LIMIT_DEFAULT: usize = 50;
pub(crate) const LIMIT_MAX: usize = 100;
/// Longest cursor accepted (hex of a run's sort key).
pub(crate) const CURSOR_MAX: usize = 2048;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// One page of runs, newest first, as the subscription lists page (`limit`, `cursor`,
/// `nextCursor`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunList {
    items: Vec<RunOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// A run's place in the list: its start time, then its id (unique).
fn run_sort_key(run: &ExtractRun) -> String {
    format!("{}/{}", run.started_on, run.run_id)
}

async fn list_runs(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(name): JsonPath<String>,
    JsonQuery(page): JsonQuery<PageParams>,
) -> Result<Json<RunList>, ApiError> {
    let limit = match &page.limit {
        None => LIMIT_DEFAULT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=LIMIT_MAX).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", format!("`limit` must be 1-{LIMIT_MAX}")))?,
    };
    let after = match &page.cursor {
        None => None,
        Some(c) => Some(
            hookline_runtime::cursor::decode(c, CURSOR_MAX).ok_or_else(|| {
                ApiError::invalid("cursor", "`cursor` is not a cursor of a previous page")
            })?,
        ),
    };
    found(&state, &who, &name)?;
    let mut runs: Vec<(String, ExtractRun)> = runs_of(&state, &who.tenant, &name)
        .into_iter()
        .map(|r| (run_sort_key(&r), r))
        .collect();
    // Newest first; a page holds the runs before the cursor's.
    runs.sort_by(|a, b| b.0.cmp(&a.0));
    let mut rest = runs
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k.as_bytes() < a.as_slice()))
        .peekable();
    let mut items = Vec::new();
    let mut last = None;
    while items.len() < limit {
        let Some((k, r)) = rest.next() else { break };
        items.push(RunOut::of(&r));
        last = Some(k);
    }
    let next_cursor = rest
        .peek()
        .and(last)
        .map(|k| hookline_runtime::cursor::encode(k.as_bytes()));
    Ok(Json(RunList { items, next_cursor }))
}

async fn get_run(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((name, run_id)): JsonPath<(String, String)>,
) -> Result<Json<RunOut>, ApiError> {
    found(&state, &who, &name)?;
    committed_run(&state, &who.tenant, &name, &run_id)
        .map(|r| Json(RunOut::of(&r)))
        .ok_or_else(|| ApiError::not_found("run"))
}

async fn cancel(
    State(state): State<AppState>,
    Editor(who): Editor,
    JsonPath((name, run_id)): JsonPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    found(&state, &who, &name)?;
    let run = committed_run(&state, &who.tenant, &name, &run_id)
        .ok_or_else(|| ApiError::not_found("run"))?;
    if is_final(&run) {
        return Err(ApiError::conflict(
            "runId",
            format!("the run is {} already", status_name(run.status())),
        ));
    }
    let record = ExtractRecord {
        record: Some(Record::Cancel(RunCancel {
            run_id: run_id.clone(),
            requested_at_ms: now_ms(),
        })),
    };
    write(&state, &cancel_key(&who.tenant, &name, &run_id), &record)
        .await
        .map_err(ApiError::unavailable)?;
    Ok((StatusCode::ACCEPTED, Json(RunOut::of(&run))))
}
