//! A run survives SIGKILL: the extract producer, as its own process, is killed in the middle
//! of a run of 100,000 rows and started again; the run resumes from its checkpoint and a
//! `read_committed` reader of `events` finds every row's event exactly once, all of them
//! with the run's `startedOn` and extract name. The peak RSS of the process is printed. The
//! balances store folder the killed process left behind is removed by the next start.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use hookline_config::Config;
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use hookline_proto::Message as _;
use hookline_proto::v1::Event;
use reqwest::Method;
use serde_json::{Value, json};

use crate::router::read_to_end;
use crate::support::process::Service;
use crate::support::{TOKEN_A, bootstrap, call, eventually};

const ROWS: usize = 100_000;

fn config() -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let t = |name: &str| format!("t{id}.{name}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    Config {
        kafka_bootstrap: bootstrap(),
        topic_events: t("events"),
        topic_balances: t("balances"),
        topic_extracts: t("extracts"),
        group_prefix: format!("t{id}"),
        topic_partitions: 3,
        create_topics: false,
        tokens: format!("{TOKEN_A}=tenant_a:editor"),
        extracts_listen: format!("127.0.0.1:{port}").parse().expect("address"),
        log_format: "pretty".into(),
        log_level: "warn".into(),
        ..Config::default()
    }
}

async fn publish_rows(config: &Config) {
    let producer: FutureProducer = hookline_kafka::client_config(config)
        .expect("client settings")
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let mut acks = FuturesUnordered::new();
    for i in 0..ROWS {
        let key = format!("K/a{i:06}/Current/GBP");
        let row = format!(
            r#"{{"node":"K","account":"a{i:06}","productName":"Current","transactionCurrency":"GBP","balance":"{i}.{:02}"}}"#,
            i % 100
        );
        let p = producer.clone();
        acks.push(async move {
            p.send(
                FutureRecord::to(&config.topic_balances)
                    .key(&key)
                    .payload(&row),
                Duration::from_secs(60),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
        });
        if acks.len() >= 5_000 {
            acks.next().await.expect("ack").expect("publish a row");
        }
    }
    while let Some(r) = acks.next().await {
        r.expect("publish a row");
    }
}

async fn run_of(base: &str, id: &str) -> Option<Value> {
    let (status, run) = call(Method::GET, &format!("{base}/x/runs/{id}"), TOKEN_A, None).await;
    (status == 200).then_some(run)
}

async fn ready(config: &Config) {
    let url = format!("http://{}/readyz", config.extracts_listen);
    eventually(90, "the extract producer is ready", || {
        let url = url.clone();
        async move {
            let r = crate::support::client().get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_killed_midway_resumes_and_emits_every_row_exactly_once() {
    let config = config();
    hookline_kafka::ensure_topics(&config)
        .await
        .expect("create topics");
    publish_rows(&config).await;
    // The processes' temporary folder, to see the store folders in it.
    let tmp = std::env::temp_dir().join(format!("hookline-kill-{}", config.group_prefix));
    std::fs::create_dir_all(&tmp).expect("a temporary folder");
    let tmp_env = tmp.to_str().expect("a UTF-8 path").to_owned();
    let stores = || -> Vec<String> {
        std::fs::read_dir(&tmp)
            .expect("the temporary folder")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("hookline-balances-"))
            .collect()
    };
    let first = Service::start(
        "hookline-extract-producer",
        &config,
        &[("TMPDIR", &tmp_env)],
    );
    ready(&config).await;
    let base = format!("http://{}/api/v1/extracts", config.extracts_listen);
    let (status, body) = call(
        Method::POST,
        &base,
        TOKEN_A,
        Some(json!({"name": "x", "target": "Webhook", "dataSource": "Balances"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, run) = call(Method::POST, &format!("{base}/x/runs"), TOKEN_A, None).await;
    assert_eq!(status, 202, "{run}");
    let id = run["runId"].as_str().expect("runId").to_owned();

    // Killed once some rows are out, long before all of them are.
    let emitted = eventually(120, "the run emits its first batches", || {
        let (base, id) = (base.clone(), id.clone());
        async move {
            let r = run_of(&base, &id).await?;
            let n = r["rowsEmitted"].as_u64()?;
            (n > 0).then_some(n)
        }
    })
    .await;
    let rss = first.peak_rss();
    first.kill();
    assert!(emitted < ROWS as u64, "killed midway: {emitted} emitted");
    let left = stores();
    assert_eq!(
        left.len(),
        1,
        "the killed process's store is left: {left:?}"
    );

    let second = Service::start(
        "hookline-extract-producer",
        &config,
        &[("TMPDIR", &tmp_env)],
    );
    ready(&config).await;
    let now = stores();
    assert!(
        now.len() == 1 && now[0] != left[0],
        "only the new process's store remains: {now:?}"
    );
    let before = run_of(&base, &id).await.expect("the run");
    assert_eq!(before["status"], "RUNNING", "interrupted: {before}");
    let done = eventually(180, "the run resumes and succeeds", || {
        let (base, id) = (base.clone(), id.clone());
        async move {
            let r = run_of(&base, &id).await?;
            (r["status"] == "SUCCEEDED").then_some(r)
        }
    })
    .await;
    assert_eq!(done["rowsEmitted"], ROWS as u64, "{done}");
    eprintln!(
        "killed after {emitted} rows (peak RSS {} MB), resumed from {} rows",
        rss >> 20,
        before["rowsEmitted"]
    );

    let records = read_to_end(
        &config.kafka_bootstrap,
        &config.topic_events,
        "read_committed",
    );
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &records {
        let e = Event::decode(r.value.as_slice()).expect("an event");
        assert_eq!(e.metadata["startedOn"], run["startedOn"].as_str().unwrap());
        assert_eq!(e.metadata["extractConfigurationName"], "x");
        *per_id.entry(e.id).or_default() += 1;
    }
    assert_eq!(records.len(), ROWS, "one event per row, none twice");
    assert_eq!(per_id.len(), ROWS);
    drop(second);
    let _ = std::fs::remove_dir_all(&tmp);
}
