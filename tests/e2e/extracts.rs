//! Balance extracts: configurations (CRUD, strict input, roles), the Balance Query's field
//! selection with exact decimals delivered end to end, schedules under an injected clock
//! (fires; inactive does not; two replicas give one run per tick), and cancelling a run.

use std::sync::Arc;
use std::time::Duration;

use hookline_extract_producer::ManualClock;
use hookline_proto::Message as _;
use hookline_proto::v1::Event;
use hookline_runtime::CancellationToken;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::receiver::Receiver;
use crate::support::{Stack, TOKEN_A, TOKEN_B, call, eventually};

const EXTRACTS_EDITOR: &str = "test-token-extracts-editor-0123456789";
const VIEWER: &str = "test-token-viewer-a-0123456789";

fn with_roles(c: &mut hookline_config::Config) {
    c.tokens.push_str(&format!(
        ";{EXTRACTS_EDITOR}=tenant_a:extractions-editor;{VIEWER}=tenant_a:viewer"
    ));
}

async fn publish_rows(stack: &Stack, rows: &[Value]) {
    let balances = stack.config.topic_balances.clone();
    for (i, row) in rows.iter().enumerate() {
        stack.publish_json(&balances, &format!("row{i}"), row).await;
    }
}

/// Starts one more extract producer on the stack's topics, reading schedules off `clock`,
/// until `shutdown`.
async fn replica(stack: &Stack, clock: Arc<ManualClock>, shutdown: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (config, shutdown) = (stack.config.clone(), shutdown.clone());
    tokio::spawn(async move {
        hookline_extract_producer::run_with_clock(config, listener, shutdown, clock)
            .await
            .expect("extract producer replica");
    });
    eventually(60, "the replica is ready", || {
        let url = url.clone();
        async move {
            let r = crate::support::client()
                .get(format!("{url}/readyz"))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    url
}

fn ms(text: &str) -> i64 {
    hookline_events::time_fmt::parse_rfc3339(text)
        .expect("time")
        .unix_timestamp()
        * 1000
}

async fn runs(url: &str, name: &str) -> Vec<Value> {
    let (status, body) = call(
        Method::GET,
        &format!("{url}/api/v1/extracts/{name}/runs"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().expect("runs").clone()
}

/// The `balance.extracted` events of the stack's events topic, decoded.
async fn events(stack: &Stack, at_least: usize) -> Vec<Event> {
    let values = stack
        .read_topic(&stack.config.topic_events, |v| v.len() >= at_least)
        .await;
    values
        .iter()
        .filter_map(|v| Event::decode(v.as_slice()).ok())
        .filter(|e| e.r#type == "balance.extracted")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extracts_are_configured_strictly_and_by_role() {
    let stack = Stack::start(with_roles).await;
    let base = format!("{}/api/v1/extracts", stack.extracts);
    let body = json!({"name": "daily", "target": "Webhook", "dataSource": "Balances",
        "description": "GBP balances", "query": {"transactionCurrencies": ["GBP"],
        "balanceMin": "-100.5", "fields": ["account", "balance"]},
        "schedule": {"cron": "0 2 * * *", "timeZone": "Europe/London"}, "active": true});
    let (status, err) = call(Method::POST, &base, VIEWER, Some(body.clone())).await;
    assert_eq!(status, 403, "a viewer does not configure: {err}");
    let (status, created) = call(Method::POST, &base, EXTRACTS_EDITOR, Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["query"]["fields"], json!(["account", "balance"]));
    assert_eq!(created["schedule"]["timeZone"], "Europe/London");
    assert!(created["nextRunAt"].as_str().is_some(), "{created}");
    let (status, _) = call(Method::POST, &base, TOKEN_A, Some(body.clone())).await;
    assert_eq!(status, 409, "one name per tenant");

    // Strict input: the error names the field.
    for (bad, field) in [
        (
            json!({"name": "x", "target": "Webhook", "dataSource": "Balances", "colour": 1}),
            "colour",
        ),
        (
            json!({"name": "x", "target": "Webhook", "dataSource": "Balances", "query": {"nodez": []}}),
            "query.nodez",
        ),
        (
            json!({"name": "x", "target": "Email", "dataSource": "Balances"}),
            "target",
        ),
        (
            json!({"name": "x", "target": "Webhook", "dataSource": "Balances", "query": {"balanceMax": "1e5"}}),
            "query.balanceMax",
        ),
        (
            json!({"name": "x", "target": "Webhook", "dataSource": "Balances", "schedule": {"cron": "every day"}}),
            "schedule.cron",
        ),
        (
            json!({"name": "x", "target": "Webhook", "dataSource": "Balances", "query": {"fields": ["colour"]}}),
            "query.fields",
        ),
    ] {
        let (status, err) = call(Method::POST, &base, TOKEN_A, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {err}");
        assert!(
            err["field"].as_str().is_some_and(|f| f.starts_with(field)),
            "{bad}: {err}"
        );
    }

    // Viewers read; another tenant sees nothing.
    let one = format!("{base}/daily");
    let (status, got) = call(Method::GET, &one, VIEWER, None).await;
    assert_eq!((status, &got["description"]), (200, &json!("GBP balances")));
    let (status, _) = call(Method::GET, &one, TOKEN_B, None).await;
    assert_eq!(status, 404);

    // PATCH changes what it names; null clears.
    let (status, patched) = call(
        Method::PATCH,
        &one,
        EXTRACTS_EDITOR,
        Some(json!({"active": false, "description": null})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["active"], false);
    assert!(patched["nextRunAt"].is_null() && patched["description"].is_null());
    assert_eq!(patched["query"]["balanceMin"], "-100.5");

    // PUT replaces the whole configuration.
    let (status, put) = call(
        Method::PUT,
        &one,
        TOKEN_A,
        Some(json!({"target": "Webhook", "dataSource": "Balances"})),
    )
    .await;
    assert_eq!(status, 200, "{put}");
    assert!(put["schedule"].is_null(), "{put}");
    assert_eq!(put["query"]["fields"].as_array().map(Vec::len), Some(5));
    let (status, _) = call(
        Method::PUT,
        &one,
        TOKEN_A,
        Some(json!({"name": "other", "target": "Webhook", "dataSource": "Balances"})),
    )
    .await;
    assert_eq!(status, 400, "no renaming");
    let (status, err) = call(Method::PATCH, &one, TOKEN_A, Some(json!([null, null]))).await;
    assert_eq!(status, 400, "a body is an object: {err}");

    let (status, list) = call(Method::GET, &base, VIEWER, None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));
    let (status, _) = call(Method::DELETE, &one, VIEWER, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(Method::DELETE, &one, EXTRACTS_EDITOR, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(Method::GET, &one, TOKEN_A, None).await;
    assert_eq!(status, 404);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_field_selection_gives_exactly_those_fields_and_exact_decimals() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 200).await;
    stack
        .fynapse_subscription("Balances", &receiver.url, json!(["balance.extracted"]))
        .await;
    let exact = "98765432109876543210.123456789012345678";
    publish_rows(
        &stack,
        &[
            json!({"node": "N1", "account": "1", "productName": "Loan", "transactionCurrency": "EUR", "balance": exact}),
            json!({"node": "N1", "account": "2", "productName": "", "transactionCurrency": "EUR", "balance": "-0.10"}),
            json!({"node": "N1", "account": "3", "productName": "", "transactionCurrency": "EUR", "balance": "98765432109876543210.123456789012345679"}),
            json!({"node": "N1", "account": "4", "productName": "", "transactionCurrency": "GBP", "balance": "7"}),
            json!({"node": "N1", "account": "5", "productName": "", "transactionCurrency": "EUR", "balance": "-0.100000000000000000001"}),
        ],
    )
    .await;
    let base = format!("{}/api/v1/extracts", stack.extracts);
    let (status, body) = call(
        Method::POST,
        &base,
        TOKEN_A,
        Some(
            json!({"name": "eur", "target": "Webhook", "dataSource": "Balances",
            "query": {"transactionCurrencies": ["EUR"], "balanceMin": "-0.10",
                "balanceMax": "98765432109876543210.123456789012345678",
                "fields": ["balance", "account"]}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, run) = call(
        Method::POST,
        &format!("{base}/eur/runs?wait=true"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(
        run["rowsEmitted"], 2,
        "accounts 1 and 2 are in range, 3 and 5 just outside it: {run}"
    );

    let got = receiver.wait_for(2, 60).await;
    let mut accounts = Vec::new();
    for r in &got {
        let v = r.json();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "data",
                "event_id",
                "event_timestamp",
                "event_type",
                "metadata"
            ],
            "the seed's envelope: {v}"
        );
        assert_eq!(
            v["metadata"],
            json!({"eventType": "balance.extracted", "startedOn": run["startedOn"],
                "extractConfigurationName": "eur"})
        );
        let raw = std::str::from_utf8(&r.body).unwrap();
        // Exactly the chosen fields, in the seed's order, the balance as its exact text.
        match v["data"]["account"].as_str().unwrap() {
            "1" => assert!(
                raw.contains(&format!(
                    "\"data\":{{\"account\":\"1\",\"balance\":{exact}}}"
                )),
                "{raw}"
            ),
            "2" => assert!(
                raw.contains("\"data\":{\"account\":\"2\",\"balance\":-0.10}"),
                "{raw}"
            ),
            other => panic!("account {other} is out of range"),
        }
        accounts.push(v["data"]["account"].as_str().unwrap().to_owned());
    }
    accounts.sort();
    assert_eq!(accounts, ["1", "2"]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_fires_under_an_injected_clock_and_inactive_extracts_do_not_run() {
    let stack = Stack::start(|_| {}).await;
    publish_rows(
        &stack,
        &[json!({"node": "S", "account": "1", "productName": "", "transactionCurrency": "GBP", "balance": "1.5"})],
    )
    .await;
    // Far in the future, so the stack's own producer (system clock) sees no tick due.
    let clock = Arc::new(ManualClock::new(ms("2031-01-01T00:00:30Z")));
    let replicas = CancellationToken::new();
    let url = replica(&stack, clock.clone(), &replicas).await;
    for (name, active) in [("hourly", true), ("idle", false)] {
        let (status, body) = call(
            Method::POST,
            &format!("{url}/api/v1/extracts"),
            TOKEN_A,
            Some(
                json!({"name": name, "target": "Webhook", "dataSource": "Balances",
                "schedule": {"cron": "0 * * * *", "timeZone": "Europe/Paris"}, "active": active}),
            ),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        if active {
            assert_eq!(body["nextRunAt"], "2031-01-01T01:00:00.000Z", "{body}");
        } else {
            assert!(body["nextRunAt"].is_null());
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(runs(&url, "hourly").await.is_empty(), "no tick is due yet");

    clock.set(ms("2031-01-01T01:00:05Z"));
    let run = eventually(60, "the scheduled run succeeds", || {
        let url = url.clone();
        async move {
            let r = runs(&url, "hourly").await;
            r.first().filter(|r| r["status"] == "SUCCEEDED").cloned()
        }
    })
    .await;
    assert_eq!(run["trigger"], "schedule");
    assert_eq!(run["scheduledFor"], "2031-01-01T01:00:00.000Z");
    assert_eq!(run["rowsEmitted"], 1);
    assert!(
        runs(&url, "idle").await.is_empty(),
        "an inactive extract does not run"
    );
    let ev = events(&stack, 1).await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].metadata["extractConfigurationName"], "hourly");
    replicas.cancel();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_give_one_run_per_tick() {
    let stack = Stack::start(|_| {}).await;
    let rows = 20;
    let list: Vec<Value> = (0..rows)
        .map(|i| json!({"node": "R", "account": format!("a{i}"), "productName": "", "transactionCurrency": "GBP", "balance": format!("{i}.25")}))
        .collect();
    publish_rows(&stack, &list).await;
    let clock = Arc::new(ManualClock::new(ms("2032-03-01T00:00:00Z")));
    let replicas = CancellationToken::new();
    let a = replica(&stack, clock.clone(), &replicas).await;
    let b = replica(&stack, clock.clone(), &replicas).await;
    let (status, body) = call(
        Method::POST,
        &format!("{a}/api/v1/extracts"),
        TOKEN_A,
        Some(
            json!({"name": "minutely", "target": "Webhook", "dataSource": "Balances",
            "schedule": {"cron": "* * * * *"}, "active": true}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let ticks = 3;
    for minute in 1..=ticks {
        clock.set(ms("2032-03-01T00:00:00Z") + minute * 60_000 + 10);
        eventually(60, "the tick's run succeeds", || {
            let a = a.clone();
            async move {
                let r = runs(&a, "minutely").await;
                (r.len() as i64 == minute && r.iter().all(|r| r["status"] == "SUCCEEDED"))
                    .then_some(())
            }
        })
        .await;
    }
    // Both replicas claimed every tick; each tick still has one run, and one set of events.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = runs(&b, "minutely").await;
    assert_eq!(got.len(), ticks as usize, "{got:?}");
    let expected = rows * ticks as usize;
    let ev = events(&stack, expected + 1).await;
    assert_eq!(ev.len(), expected, "one event per row per tick");
    let ids: std::collections::HashSet<&str> = ev.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), expected);
    replicas.cancel();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_are_listed_fetched_and_finished_runs_not_cancelled() {
    let stack = Stack::start(|_| {}).await;
    let base = format!("{}/api/v1/extracts", stack.extracts);
    let (status, _) = call(
        Method::POST,
        &base,
        TOKEN_A,
        Some(json!({"name": "x", "target": "Webhook", "dataSource": "Balances"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, run) = call(
        Method::POST,
        &format!("{base}/x/runs?wait=true"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(
        (status, &run["status"]),
        (201, &json!("SUCCEEDED")),
        "{run}"
    );
    let id = run["runId"].as_str().unwrap();
    let (status, one) = call(Method::GET, &format!("{base}/x/runs/{id}"), TOKEN_A, None).await;
    assert_eq!(status, 200);
    assert_eq!(one["finishedOn"], run["finishedOn"]);
    assert_eq!(one["trigger"], "manual");
    let (status, err) = call(
        Method::POST,
        &format!("{base}/x/runs/{id}/cancel"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(status, 409, "{err}");
    let (status, _) = call(Method::GET, &format!("{base}/x/runs/nope"), TOKEN_A, None).await;
    assert_eq!(status, 404);

    // The list, a page at a time, newest first.
    let (status, second) = call(
        Method::POST,
        &format!("{base}/x/runs?wait=true"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let (status, page) = call(
        Method::GET,
        &format!("{base}/x/runs?limit=1"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["runId"], second["runId"], "{page}");
    let cursor = page["nextCursor"].as_str().expect("a next page");
    let (status, page) = call(
        Method::GET,
        &format!("{base}/x/runs?limit=1&cursor={cursor}"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["runId"], run["runId"], "{page}");
    assert!(page.get("nextCursor").is_none(), "{page}");
    for (query, field) in [("limit=0", "limit"), ("cursor=xyz", "cursor"), ("x=1", "x")] {
        let (status, err) = call(
            Method::GET,
            &format!("{base}/x/runs?{query}"),
            TOKEN_A,
            None,
        )
        .await;
        assert_eq!(
            (status, &err["field"]),
            (400, &json!(field)),
            "{query}: {err}"
        );
    }
    stack.stop().await;
}
