//! The guided demo: a secret, a Fynapse-style subscription, a few balance rows, a balance
//! extract, and a receiver that verifies and prints every `balance.extracted` delivery.
//! It finds the stack only through `.hookline/stack.env`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use hookline_signing::WebhookSecret;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(clap::Args)]
pub struct Args {
    /// The stack description written by `make up`.
    #[arg(long, default_value = ".hookline/stack.env")]
    env: String,
    /// Exit once every delivery has arrived instead of waiting for Ctrl-C.
    #[arg(long)]
    exit: bool,
}

const ROWS: [(&str, &str, &str, &str); 5] = [
    ("222", "", "GBP", "1.0"),
    ("223", "Savings", "GBP", "1520.75"),
    ("224", "Current", "EUR", "-42.10"),
    ("225", "Current", "USD", "0.00"),
    ("226", "Loan", "GBP", "98765432109876543210.123456789"),
];

pub(crate) fn read_env(path: &str) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {path}: is the stack up (`make up`)?"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.trim().trim_matches('\'').trim_matches('"').to_owned(),
            )
        })
        .collect())
}

struct Receiver {
    secret: std::sync::OnceLock<WebhookSecret>,
    seen: mpsc::UnboundedSender<String>,
}

async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let Some(secret) = rx.secret.get() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let verified = ts
        .parse::<i64>()
        .ok()
        .is_some_and(|t| hookline_signing::verify(secret, &id, t, &body, &sig, now, 300).is_ok());
    if !verified {
        println!("  ✗ delivery {id}: signature did NOT verify — answering 401");
        return StatusCode::UNAUTHORIZED;
    }
    // Raw values: the balance is printed exactly as it was sent, never as a float.
    let v: HashMap<String, Box<RawValue>> = serde_json::from_slice(&body).unwrap_or_default();
    let data: HashMap<String, Box<RawValue>> = v
        .get("data")
        .and_then(|d| serde_json::from_str(d.get()).ok())
        .unwrap_or_default();
    let field = |m: &HashMap<String, Box<RawValue>>, k: &str| {
        m.get(k)
            .map_or("?".to_owned(), |r| r.get().trim_matches('"').to_owned())
    };
    println!(
        "  ✓ verified {} (Idempotency-Key {}): node {} account {} product {:?} balance {} {}",
        field(&v, "event_type"),
        h("idempotency-key"),
        field(&data, "node"),
        field(&data, "account"),
        field(&data, "productName"),
        field(&data, "balance"),
        field(&data, "transactionCurrency"),
    );
    let _ = rx.seen.send(id);
    StatusCode::NO_CONTENT
}

async fn call(
    client: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: String,
    body: Value,
) -> anyhow::Result<Value> {
    let response = client
        .request(method, &url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url} answered {status}: {value}");
    }
    Ok(value)
}

/// The stack's Kafka settings from `stack.env`: its `HOOKLINE_KAFKA_*` keys (the bootstrap
/// address and, on a secured broker, how to connect) over the defaults.
fn kafka_config(env: &HashMap<String, String>) -> anyhow::Result<hookline_config::Config> {
    let mut value = serde_json::to_value(hookline_config::Config::default())?;
    for (key, v) in env {
        if let Some(rest) = key.strip_prefix("HOOKLINE_KAFKA_") {
            value[format!("kafka_{}", rest.to_lowercase())] = Value::String(v.clone());
        }
    }
    let config: hookline_config::Config = serde_json::from_value(value)?;
    config.validate()?;
    Ok(config)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let env = read_env(&args.env)?;
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .with_context(|| format!("{} lacks {k}", args.env))
    };
    let (api, extracts, token) = (
        get("HOOKLINE_API_URL")?,
        get("HOOKLINE_EXTRACTS_URL")?,
        get("HOOKLINE_TENANT_A_TOKEN")?,
    );
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;

    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let receiver = Arc::new(Receiver {
        secret: std::sync::OnceLock::new(),
        seen: seen_tx,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}/webhooks/balances", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/webhooks/balances", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("▶ demo receiver listening on {endpoint}");

    let secret_name = format!("webhook-signing-secret-{stamp}");
    println!("▶ POST {api}/api/v1/event-deliveries/secrets  {{\"name\": \"{secret_name}\"}}");
    let secret = call(
        &client,
        &token,
        reqwest::Method::POST,
        format!("{api}/api/v1/event-deliveries/secrets"),
        json!({"name": secret_name}),
    )
    .await?;
    let value = secret["value"]
        .as_str()
        .context("secret response lacks `value`")?;
    let _ = receiver.secret.set(WebhookSecret::parse(value)?);
    println!(
        "  secret created; its value (shown only once) is kept by the receiver to verify signatures"
    );

    let sub_name = format!("Balance Webhook {stamp}");
    println!(
        "▶ POST {api}/api/v1/event-deliveries/subscriptions  {{\"name\": \"{sub_name}\", \"endpointUrl\": \"{endpoint}\", ...}}"
    );
    let sub = call(
        &client,
        &token,
        reqwest::Method::POST,
        format!("{api}/api/v1/event-deliveries/subscriptions"),
        json!({"name": sub_name, "endpointUrl": endpoint, "secretRef": secret_name, "eventTypes": ["balance.extracted"]}),
    )
    .await?;
    println!(
        "  subscription {} created",
        sub["id"].as_str().unwrap_or("?")
    );

    let node = format!("Node-{stamp}");
    println!(
        "▶ publishing {} balance rows for node {node} to {}",
        ROWS.len(),
        get("HOOKLINE_TOPIC_BALANCES")?
    );
    get("HOOKLINE_KAFKA_BOOTSTRAP")?;
    // An outside producer: its own principal (`{service}` = producer).
    let config =
        kafka_config(&env)?.for_service(hookline_kafka::acl::Principal::Producer.name())?;
    let producer: FutureProducer = hookline_kafka::client_config(&config)?
        .set("acks", "all")
        .create()?;
    for (account, product, currency, balance) in ROWS {
        let row = format!(
            r#"{{"node":"{node}","account":"{account}","productName":"{product}","transactionCurrency":"{currency}","balance":{balance}}}"#
        );
        let key = format!("{node}/{account}/{product}/{currency}");
        producer
            .send(
                FutureRecord::to(&get("HOOKLINE_TOPIC_BALANCES")?)
                    .key(&key)
                    .payload(&row),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
        println!("  {row}");
    }

    let extract_name = format!("demo-extract-{stamp}");
    println!(
        "▶ POST {extracts}/api/v1/extracts  {{\"name\": \"{extract_name}\", \"target\": \"Webhook\", \"dataSource\": \"Balances\", \"query\": {{\"nodes\": [\"{node}\"]}}}}"
    );
    call(
        &client,
        &token,
        reqwest::Method::POST,
        format!("{extracts}/api/v1/extracts"),
        json!({"name": extract_name, "target": "Webhook", "dataSource": "Balances", "query": {"nodes": [node]}}),
    )
    .await?;
    println!("▶ running the extract now");
    let run = call(
        &client,
        &token,
        reqwest::Method::POST,
        format!("{extracts}/api/v1/extracts/{extract_name}/runs?wait=true"),
        Value::Null,
    )
    .await?;
    println!(
        "  run {} {}: {} balance.extracted events emitted",
        run["runId"].as_str().unwrap_or("?"),
        run["status"].as_str().unwrap_or("?"),
        run["rowsEmitted"]
    );
    println!("▶ waiting for the deliveries (router → delivery worker → this receiver)...");

    let mut ids = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ids.len() < ROWS.len() {
        match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
            Ok(Some(id)) => {
                ids.insert(id);
            }
            _ => bail!(
                "only {} of {} deliveries arrived within 60 s",
                ids.len(),
                ROWS.len()
            ),
        }
    }
    println!("✔ all {} deliveries received and verified.", ROWS.len());
    if args.exit {
        return Ok(());
    }
    println!(
        "  The stack keeps running: its addresses and tokens are in {}. Press Ctrl-C to stop everything.",
        args.env
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
