//! The operator's commands: what happened to a delivery, its attempts, and putting it right
//! (replay one, recover a subscription, follow a replay run), against the operations API of
//! the stack that `.hookline/stack.env` describes (or `--url`).

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::demo::read_env;

#[derive(clap::Args)]
pub struct Target {
    /// The stack description written by `make up`.
    #[arg(long, global = true, default_value = ".hookline/stack.env")]
    env: String,
    /// The operations API's base URL (default: `HOOKLINE_DEAD_LETTERS_URL` of `--env`).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Bearer token (default: `$HOOKLINE_TOKEN`, else `HOOKLINE_TENANT_A_TOKEN` of `--env`).
    #[arg(long, global = true)]
    token: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum Deliveries {
    /// One delivery: its event, subscription, state, attempts so far and next attempt.
    Show { delivery_id: String },
    /// Its attempts, oldest first.
    Attempts { delivery_id: String },
    /// Send it again (dead-lettered or delivered), keeping its delivery id.
    Replay {
        delivery_id: String,
        /// Follow the run until it is done.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(clap::Args)]
pub struct RecoverArgs {
    /// The subscription whose failed deliveries are sent again.
    subscription_id: String,
    /// From this time on (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    since: String,
    /// Up to this time.
    #[arg(long)]
    until: Option<String>,
    /// Only these event types (comma-separated).
    #[arg(long, value_delimiter = ',')]
    event_types: Vec<String>,
    /// The same key starts nothing new when sent again (default: a new run every time).
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Start the run and return instead of following it.
    #[arg(long)]
    no_wait: bool,
}

#[derive(clap::Subcommand)]
pub enum Replays {
    /// A replay run: state, selected, enqueued and delivered so far.
    Show {
        replay_id: String,
        /// Follow the run until it is done, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(target: &Target) -> anyhow::Result<Self> {
        let stack = || read_env(&target.env);
        let base = match &target.url {
            Some(u) => u.clone(),
            None => stack()?
                .remove("HOOKLINE_DEAD_LETTERS_URL")
                .with_context(|| format!("{} has no HOOKLINE_DEAD_LETTERS_URL", target.env))?,
        };
        let token = match (&target.token, std::env::var("HOOKLINE_TOKEN")) {
            (Some(t), _) => t.clone(),
            (None, Ok(t)) if !t.is_empty() => t,
            _ => stack()?
                .remove("HOOKLINE_TENANT_A_TOKEN")
                .with_context(|| {
                    format!(
                        "no --token, no $HOOKLINE_TOKEN, and {} has no HOOKLINE_TENANT_A_TOKEN",
                        target.env
                    )
                })?,
        };
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = req.bearer_auth(&self.token).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["message"].as_str().unwrap_or("no message");
            bail!("{status}: {message}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url))
            .await
            .with_context(|| format!("GET {url}"))
    }

    async fn post(&self, path: &str, body: Value, key: Option<&str>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.post(&url).json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        self.send(req).await.with_context(|| format!("POST {url}"))
    }
}

const API: &str = "/api/v1/event-deliveries";

fn print(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

pub async fn deliveries(target: Target, command: Deliveries) -> anyhow::Result<()> {
    let client = Client::new(&target)?;
    match command {
        Deliveries::Show { delivery_id } => print(
            &client
                .get(&format!("{API}/deliveries/{delivery_id}"))
                .await?,
        ),
        Deliveries::Attempts { delivery_id } => {
            let mut path = format!("{API}/deliveries/{delivery_id}/attempts");
            loop {
                let page = client.get(&path).await?;
                for a in page["items"].as_array().into_iter().flatten() {
                    println!("{}", attempt_line(a));
                }
                match page["nextCursor"].as_str() {
                    Some(c) => path = format!("{API}/deliveries/{delivery_id}/attempts?cursor={c}"),
                    None => break,
                }
            }
        }
        Deliveries::Replay { delivery_id, wait } => {
            let started = client
                .post(
                    &format!("{API}/deliveries/{delivery_id}/replay"),
                    json!({}),
                    None,
                )
                .await?;
            let id = replay_id(&started)?;
            println!("replay {id} started");
            if wait {
                follow(&client, &id).await?;
            }
        }
    }
    Ok(())
}

pub async fn recover(target: Target, args: RecoverArgs) -> anyhow::Result<()> {
    let client = Client::new(&target)?;
    let mut body = json!({
        "subscriptionId": args.subscription_id,
        "since": args.since,
        "outcome": "failed",
    });
    if let Some(u) = args.until {
        body["until"] = json!(u);
    }
    if !args.event_types.is_empty() {
        body["eventTypes"] = json!(args.event_types);
    }
    let started = client
        .post(
            &format!("{API}/replays"),
            body,
            args.idempotency_key.as_deref(),
        )
        .await?;
    let id = replay_id(&started)?;
    println!("replay {id} started");
    if !args.no_wait {
        follow(&client, &id).await?;
    }
    Ok(())
}

pub async fn replays(target: Target, command: Replays) -> anyhow::Result<()> {
    let client = Client::new(&target)?;
    match command {
        Replays::Show { replay_id, wait } => {
            if wait {
                follow(&client, &replay_id).await?;
            } else {
                print(&client.get(&format!("{API}/replays/{replay_id}")).await?);
            }
        }
    }
    Ok(())
}

fn replay_id(started: &Value) -> anyhow::Result<String> {
    started["replayId"]
        .as_str()
        .map(str::to_owned)
        .context("the answer carries no replayId")
}

/// One attempt as a line: number, start, outcome, status or error class, duration.
fn attempt_line(a: &Value) -> String {
    let s = |k: &str| a[k].as_str().unwrap_or("").to_owned();
    let status = a["status"]
        .as_u64()
        .filter(|c| *c > 0)
        .map(|c| c.to_string())
        .unwrap_or_else(|| s("errorClass"));
    format!(
        "#{:<3} {}  {:<9} {:<14} {:>6} ms  {}",
        a["attempt"].as_u64().unwrap_or(0),
        s("startedAt"),
        s("outcome"),
        status,
        a["durationMs"].as_u64().unwrap_or(0),
        s("error"),
    )
}

/// Follows a replay run until it is completed, with a progress bar of deliveries enqueued
/// (and delivered so far) out of those selected; prints the final state.
async fn follow(client: &Client, id: &str) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:40}] {pos}/{len} enqueued, {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    loop {
        let run = client.get(&format!("{API}/replays/{id}")).await?;
        let n = |k: &str| run[k].as_u64().unwrap_or(0);
        bar.set_length(n("selected"));
        bar.set_position(n("enqueued"));
        bar.set_message(format!("{} delivered", n("delivered")));
        if run["state"] != "running" {
            bar.finish();
            print(&run);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
