//! `/api/v1/extracts`: configure balance extracts, run them, list their runs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hookline_auth::{Principal, Role};
use hookline_events::time_fmt::{now_ms, rfc3339_millis};
use hookline_proto::v1::extract_record::Record;
use hookline_proto::v1::{BalanceQuery, ExtractConfig, ExtractRecord, ExtractRun};
use hookline_runtime::{ApiError, JsonBody, JsonPath, JsonQuery};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::AppState;
use crate::extract::{config_key, execute, new_run};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/extracts", get(list).post(create))
        .route("/api/v1/extracts/{name}", get(get_one))
        .route("/api/v1/extracts/{name}/runs", post(run_now).get(list_runs))
}

/// What an extract's name may be: no `/`.
const NAME_PATTERN: &str = "^[^/]*$";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hookline extract producer",
        description = "Balance extracts (`/api/v1/extracts`): configurations and runs. A run \
            emits one `balance.extracted` event per matching balance row. Every call but health \
            and this document carries `Authorization: Bearer <token>`; `extractions-editor`, \
            editor or admin configure and run, viewers read. Errors are JSON `{code, message, \
            field}`."
    ),
    paths(create, list, get_one, run_now, list_runs),
    components(schemas(ErrorOut))
)]
struct ExtractDoc;

/// The served document: the routes above, the health routes, the bearer scheme.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ExtractDoc::openapi();
    hookline_runtime::add_common_components(&mut doc);
    let mut v = serde_json::to_value(&doc).expect("the document serialises");
    let name = &mut v["components"]["schemas"]["CreateExtract"]["properties"]["name"];
    name["pattern"] = NAME_PATTERN.into();
    for item in v["paths"].as_object_mut().expect("paths").values_mut() {
        for op in item.as_object_mut().expect("item").values_mut() {
            for p in op["parameters"].as_array_mut().into_iter().flatten() {
                if p["name"] == "name" {
                    p["schema"] = serde_json::json!({"type": "string", "minLength": 1,
                        "maxLength": 255, "pattern": NAME_PATTERN});
                }
            }
        }
    }
    serde_json::from_value(v).expect("the document deserialises")
}

/// The error body (see `hookline_runtime::ApiError`).
#[derive(Serialize, ToSchema)]
#[schema(as = ErrorBody)]
struct ErrorOut {
    code: String,
    message: String,
    field: Option<String>,
}

/// The Balance Query: which rows an extract emits (empty lists: every row).
#[derive(Deserialize, Serialize, Default, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct QueryIn {
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    accounts: Vec<String>,
    #[serde(default)]
    product_names: Vec<String>,
    #[serde(default)]
    transaction_currencies: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateExtract {
    /// Unique per tenant; no `/`.
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    #[schema(value_type = String, pattern = "^Webhook$")]
    target: String,
    #[schema(value_type = String, pattern = "^Balances$")]
    data_source: String,
    #[serde(default)]
    query: QueryIn,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ExtractOut {
    name: String,
    target: String,
    data_source: String,
    query: QueryIn,
    created_at: String,
}

impl ExtractOut {
    fn of(c: &ExtractConfig) -> Self {
        let q = c.query.clone().unwrap_or_default();
        Self {
            name: c.name.clone(),
            target: c.target.clone(),
            data_source: c.data_source.clone(),
            query: QueryIn {
                nodes: q.nodes,
                accounts: q.accounts,
                product_names: q.product_names,
                transaction_currencies: q.transaction_currencies,
            },
            created_at: rfc3339_millis(c.created_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RunOut {
    run_id: String,
    extract_name: String,
    started_on: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    finished_on: String,
    rows_emitted: u64,
    #[schema(value_type = String)]
    status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

impl RunOut {
    fn of(r: &ExtractRun) -> Self {
        use hookline_proto::v1::RunStatus;
        Self {
            run_id: r.run_id.clone(),
            extract_name: r.extract_name.clone(),
            started_on: r.started_on.clone(),
            finished_on: r.finished_on.clone(),
            rows_emitted: r.rows_emitted,
            status: match r.status() {
                RunStatus::Running | RunStatus::Unspecified => "RUNNING",
                RunStatus::Succeeded => "SUCCEEDED",
                RunStatus::Failed => "FAILED",
            },
            error: r.error.clone(),
        }
    }
}

fn config_of(state: &AppState, tenant: &str, name: &str) -> Option<ExtractConfig> {
    match state.extracts.get(&config_key(tenant, name))?.record? {
        Record::Config(c) => Some(c),
        Record::Run(_) => None,
    }
}

#[utoipa::path(post, path = "/api/v1/extracts", tag = "extracts", request_body = CreateExtract,
    responses((status = 201, body = ExtractOut), (status = 400, body = ErrorOut),
        (status = 401, body = ErrorOut), (status = 403, body = ErrorOut),
        (status = 409, body = ErrorOut), (status = 413, body = ErrorOut)))]
async fn create(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(body): JsonBody<CreateExtract>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    let n = body.name.chars().count();
    if !(1..=255).contains(&n) || body.name.contains('/') {
        return Err(ApiError::invalid(
            "name",
            "`name` must be 1-255 characters without `/`",
        ));
    }
    if body.target != "Webhook" {
        return Err(ApiError::invalid("target", "`target` must be \"Webhook\""));
    }
    if body.data_source != "Balances" {
        return Err(ApiError::invalid(
            "dataSource",
            "`dataSource` must be \"Balances\"",
        ));
    }
    state.extracts.sync().await;
    if config_of(&state, &who.tenant, &body.name).is_some() {
        return Err(ApiError::conflict(
            "name",
            format!("an extract named {:?} already exists", body.name),
        ));
    }
    let now = now_ms();
    let config = ExtractConfig {
        name: body.name,
        tenant: who.tenant.clone(),
        target: body.target,
        data_source: body.data_source,
        query: Some(BalanceQuery {
            nodes: body.query.nodes,
            accounts: body.query.accounts,
            product_names: body.query.product_names,
            transaction_currencies: body.query.transaction_currencies,
        }),
        schedule: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let record = ExtractRecord {
        record: Some(Record::Config(config.clone())),
    };
    crate::extract::write(&state, &config_key(&config.tenant, &config.name), &record)
        .await
        .map_err(ApiError::unavailable)?;
    Ok((StatusCode::CREATED, Json(ExtractOut::of(&config))))
}

#[utoipa::path(get, path = "/api/v1/extracts", tag = "extracts",
    responses((status = 200, description = "By name", body = Vec<ExtractOut>),
        (status = 401, body = ErrorOut)))]
async fn list(State(state): State<AppState>, who: Principal) -> Json<Vec<ExtractOut>> {
    let prefix = config_key(&who.tenant, "");
    let mut out: Vec<ExtractOut> = state.extracts.read(|t| {
        t.iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, r)| match &r.record {
                Some(Record::Config(c)) => Some(ExtractOut::of(c)),
                _ => None,
            })
            .collect()
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Json(out)
}

#[utoipa::path(get, path = "/api/v1/extracts/{name}", tag = "extracts",
    params(("name" = String, Path)),
    responses((status = 200, body = ExtractOut), (status = 400, body = ErrorOut),
        (status = 401, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn get_one(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(name): JsonPath<String>,
) -> Result<Json<ExtractOut>, ApiError> {
    config_of(&state, &who.tenant, &name)
        .map(|c| Json(ExtractOut::of(&c)))
        .ok_or_else(|| ApiError::not_found("extract"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunParams {
    /// Answer only when the run has finished.
    #[serde(default)]
    wait: bool,
}

#[utoipa::path(post, path = "/api/v1/extracts/{name}/runs", tag = "extracts",
    params(("name" = String, Path),
        ("wait" = Option<bool>, Query, description = "Answer when the run has finished (201)")),
    responses((status = 201, description = "Run finished", body = RunOut),
        (status = 202, description = "Run started", body = RunOut),
        (status = 400, body = ErrorOut), (status = 401, body = ErrorOut),
        (status = 403, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn run_now(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(name): JsonPath<String>,
    JsonQuery(params): JsonQuery<RunParams>,
) -> Result<impl IntoResponse, ApiError> {
    who.require(Role::Editor)?;
    let config =
        config_of(&state, &who.tenant, &name).ok_or_else(|| ApiError::not_found("extract"))?;
    let run = new_run(&config);
    if params.wait {
        let run = execute(&state, &config, run).await;
        return Ok((StatusCode::CREATED, Json(RunOut::of(&run))));
    }
    let accepted = RunOut::of(&run);
    tokio::spawn(async move { execute(&state, &config, run).await });
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[utoipa::path(get, path = "/api/v1/extracts/{name}/runs", tag = "extracts",
    params(("name" = String, Path)),
    responses((status = 200, description = "Newest first", body = Vec<RunOut>),
        (status = 400, body = ErrorOut), (status = 401, body = ErrorOut),
        (status = 404, body = ErrorOut)))]
async fn list_runs(
    State(state): State<AppState>,
    who: Principal,
    JsonPath(name): JsonPath<String>,
) -> Result<Json<Vec<RunOut>>, ApiError> {
    config_of(&state, &who.tenant, &name).ok_or_else(|| ApiError::not_found("extract"))?;
    let prefix = crate::extract::run_key(&who.tenant, &name, "");
    let mut runs: Vec<ExtractRun> = state.extracts.read(|t| {
        t.iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, r)| match &r.record {
                Some(Record::Run(run)) => Some(run.clone()),
                _ => None,
            })
            .collect()
    });
    runs.sort_by(|a, b| b.started_on.cmp(&a.started_on));
    Ok(Json(runs.iter().map(RunOut::of).collect()))
}
