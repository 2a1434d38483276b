//! Payload filters end to end: a filtered subscription receives exactly the matching events
//! (by id) while an unfiltered one on the same types receives all; a PATCH of the filter
//! applies to events routed after it; `filter-test` in both dialects; bad filters refused
//! with a 400 naming the field, changing nothing.

use std::collections::HashSet;

use hookline_proto::Message as _;
use hookline_proto::v1::DeliveryJob;
use reqwest::Method as M;
use serde_json::{Value, json};

use crate::api_support::{Api, api_config, assert_refused};
use crate::support::receiver::{Received, Receiver};
use crate::support::{Stack, TENANT_A, TOKEN_A};

const SUBS: &str = "/api/v1/event-deliveries/subscriptions";
const HOOKS: &str = "/v2/webhooks";

/// One event of the mix: amount (any JSON, or none) and region (or none).
fn event(i: usize, amount: Option<Value>, region: Option<&str>) -> (String, Value) {
    let id = uuid::Uuid::new_v4().to_string();
    let mut data = json!({"seq": i});
    if let Some(a) = amount {
        data["amount"] = a;
    }
    let metadata = match region {
        Some(r) => json!({"region": r}),
        None => json!({}),
    };
    let e = json!({"id": id, "type": "ACCOUNT.CREATED", "tenant": TENANT_A,
        "metadata": metadata, "data": data});
    (id, e)
}

fn mix() -> Vec<(String, Value)> {
    [
        (Some(json!(150)), Some("eu")),
        (Some(json!(100)), Some("us")),
        (Some(json!(99.5)), Some("eu")),
        (Some(json!(500)), Some("apac")),
        (Some(json!("200")), Some("eu")),
        (None, Some("eu")),
        (Some(json!(1000)), None),
        (Some(json!(100.0)), Some("eu")),
        (Some(json!(7)), Some("us")),
        (Some(json!(250)), Some("us")),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (a, r))| event(i, a, r))
    .collect()
}

/// What the README's rules say of `{"data.amount": {"$gte": 100}, "metadata.region":
/// {"$in": ["eu", "us"]}}`, computed here without Hookline's code.
fn big_in_eu_or_us(e: &Value) -> bool {
    e["data"]["amount"].as_f64().is_some_and(|a| a >= 100.0)
        && matches!(e["metadata"]["region"].as_str(), Some("eu" | "us"))
}

fn ids(got: &[Received], field: &str) -> Vec<String> {
    got.iter()
        .map(|r| r.json()[field].as_str().unwrap().to_owned())
        .collect()
}

/// The jobs on `deliveries`, once the unfiltered subscription (`all`) has `n_all`: the router
/// makes every job of an event in the event's one transaction, so then every job of those
/// events is committed, and reading every partition to its end finds them all.
async fn jobs_by_subscription(stack: &Stack, all: &str, n_all: usize) -> Vec<DeliveryJob> {
    let topic = stack.config.topic_deliveries.clone();
    let jobs = |v: &[Vec<u8>]| -> Vec<DeliveryJob> {
        v.iter()
            .filter_map(|b| DeliveryJob::decode(b.as_slice()).ok())
            .collect()
    };
    stack
        .read_topic(&topic, |v| {
            jobs(v).iter().filter(|j| j.subscription_id == all).count() >= n_all
        })
        .await;
    jobs(&stack.read_to_end(&topic))
}

fn event_ids_of(jobs: &[DeliveryJob], sub: &str) -> HashSet<String> {
    jobs.iter()
        .filter(|j| j.subscription_id == sub)
        .map(|j| j.event.as_ref().unwrap().id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filtered_subscriptions_receive_exactly_the_matching_events() {
    let stack = Stack::start(|_| {}).await;
    let (filtered_rx, all_rx, hook_rx) = (
        Receiver::start(&[], 200).await,
        Receiver::start(&[], 200).await,
        Receiver::start(&[], 200).await,
    );
    let filter = json!({"data.amount": {"$gte": 100}, "metadata.region": {"$in": ["eu", "us"]}});
    let (status, filtered) = stack
        .call(
            M::POST,
            &format!("{}{SUBS}", stack.api),
            TOKEN_A,
            Some(json!({"name": "big-eu-us", "endpointUrl": filtered_rx.url,
                "eventTypes": ["ACCOUNT.*"], "filter": filter})),
        )
        .await;
    assert_eq!(status, 201, "{filtered}");
    assert_eq!(
        filtered["filter"], filter,
        "returned as given (keys sorted)"
    );
    let filtered_id = filtered["id"].as_str().unwrap().to_owned();
    let (all_id, _) = stack
        .fynapse_subscription("everything", &all_rx.url, json!(["ACCOUNT.*"]))
        .await;
    // The Synctera dialect: the same filter on a webhook.
    let (status, hook) = stack
        .call(
            M::POST,
            &format!("{}{HOOKS}", stack.api),
            TOKEN_A,
            Some(
                json!({"enabled_events": ["ACCOUNT.CREATED"], "is_enabled": true,
                "url": hook_rx.url, "filter": filter}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let (status, got) = stack
        .call(
            M::GET,
            &format!("{}{HOOKS}/{hook_id}", stack.api),
            TOKEN_A,
            None,
        )
        .await;
    assert_eq!((status, &got["filter"]), (200, &filter), "{got}");

    // Batch 1: one ordering key, so each receiver sees its events in publishing order.
    let events = stack.config.topic_events.clone();
    let batch = mix();
    for (_, e) in &batch {
        stack.publish_json(&events, "acc-1", e).await;
    }
    let all_ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
    let want: Vec<String> = batch
        .iter()
        .filter(|(_, e)| big_in_eu_or_us(e))
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(want.len(), 4, "the mix has four matching events");
    let jobs = jobs_by_subscription(&stack, &all_id, all_ids.len()).await;
    let set = |v: &[String]| v.iter().cloned().collect::<HashSet<String>>();
    assert_eq!(event_ids_of(&jobs, &all_id), set(&all_ids));
    assert_eq!(
        event_ids_of(&jobs, &filtered_id),
        set(&want),
        "no job for a filtered-out event"
    );
    assert_eq!(event_ids_of(&jobs, &hook_id), set(&want));
    let got = all_rx.wait_for_delivered(all_ids.len(), 60).await;
    assert_eq!(ids(&got, "event_id"), all_ids);
    let got = filtered_rx.wait_for_delivered(want.len(), 60).await;
    assert_eq!(
        ids(&got, "event_id"),
        want,
        "exactly the matching events, in order"
    );
    let got = hook_rx.wait_for_delivered(want.len(), 60).await;
    assert_eq!(ids(&got, "id"), want);

    // filter-test in both dialects: the stored filter, and one given in the body.
    let sample =
        json!({"type": "ACCOUNT.CREATED", "metadata": {"region": "eu"}, "data": {"amount": 50}});
    for path in [
        format!("{SUBS}/{filtered_id}"),
        format!("{HOOKS}/{hook_id}"),
    ] {
        let url = format!("{}{path}/filter-test", stack.api);
        let (status, answer) = stack
            .call(M::POST, &url, TOKEN_A, Some(json!({"event": sample})))
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["matches"], false);
        assert_eq!(answer["mismatch"]["path"], "data.amount.$gte");
        assert_eq!(
            answer["mismatch"]["reason"],
            "data.amount is 50, not >= 100"
        );
        let body = json!({"event": sample, "filter": {"data.amount": {"$lt": 100}}});
        let (status, answer) = stack.call(M::POST, &url, TOKEN_A, Some(body)).await;
        assert_eq!((status, &answer), (200, &json!({"matches": true})));
        let body = json!({"event": sample, "filter": {"data.amount": {"$lt": []}}});
        let got = stack.call(M::POST, &url, TOKEN_A, Some(body)).await;
        assert_refused(&got, 400, "filter.data.amount.$lt", "a bad filter to test");
    }

    // A PATCH changes the filter for events routed after it; `null` removes one.
    let small = json!({"data.amount": {"$lt": 100}});
    let (status, patched) = stack
        .call(
            M::PATCH,
            &format!("{}{SUBS}/{filtered_id}", stack.api),
            TOKEN_A,
            Some(json!({"filter": small})),
        )
        .await;
    assert_eq!((status, &patched["filter"]), (200, &small), "{patched}");
    let (status, patched) = stack
        .call(
            M::PATCH,
            &format!("{}{HOOKS}/{hook_id}", stack.api),
            TOKEN_A,
            Some(json!({"filter": null})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert!(patched.get("filter").is_none(), "{patched}");
    let batch2 = mix();
    for (_, e) in &batch2 {
        stack.publish_json(&events, "acc-1", e).await;
    }
    let all2: Vec<String> = batch2.iter().map(|(id, _)| id.clone()).collect();
    let want2: Vec<String> = batch2
        .iter()
        .filter(|(_, e)| e["data"]["amount"].as_f64().is_some_and(|a| a < 100.0))
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(want2.len(), 2);
    let jobs = jobs_by_subscription(&stack, &all_id, all_ids.len() + all2.len()).await;
    let mut want_all = set(&want);
    want_all.extend(want2.iter().cloned());
    assert_eq!(event_ids_of(&jobs, &filtered_id), want_all);
    let mut hook_all = set(&want);
    hook_all.extend(all2.iter().cloned());
    assert_eq!(
        event_ids_of(&jobs, &hook_id),
        hook_all,
        "no filter: every event"
    );
    let got = filtered_rx
        .wait_for_delivered(want.len() + want2.len(), 60)
        .await;
    assert_eq!(ids(&got, "event_id")[want.len()..], want2[..]);

    // Counted: 6 + 6 filtered out of batch 1, 8 out of batch 2.
    let metrics = crate::support::client()
        .get(format!("{}/metrics", stack.router))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let filtered_total: f64 = metrics
        .lines()
        .find(|l| l.starts_with("hookline_router_filtered_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("hookline_router_filtered_total in\n{metrics}"));
    assert!(filtered_total >= 20.0, "{filtered_total}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_filters_are_refused_naming_the_field_and_change_nothing() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let good = json!({"type": "ACCOUNT.CREATED"});
    let (status, sub) = api
        .call(
            M::POST,
            SUBS,
            TOKEN_A,
            Some(json!({"name": "kept", "endpointUrl": "https://e.com/1", "filter": good})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let one = format!("{SUBS}/{}", sub["id"].as_str().unwrap());
    let (status, hook) = api
        .call(
            M::POST,
            HOOKS,
            TOKEN_A,
            Some(
                json!({"enabled_events": [], "is_enabled": true, "url": "https://e.com/h",
                "filter": good}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let hook = format!("{HOOKS}/{}", hook["id"].as_str().unwrap());

    let mut deep = json!({"type": "x"});
    for _ in 0..10 {
        deep = json!({"$not": deep});
    }
    let large =
        json!({"data.x": {"$in": (0..100).map(|i| format!("{i:0>45}")).collect::<Vec<_>>()}});
    let cases = [
        (
            json!({"data.amount": {"$foo": 1}}),
            "filter.data.amount.$foo",
            "a bad operator",
        ),
        (json!({"amount": 1}), "filter.amount", "a bad field"),
        (
            deep,
            "filter.$not.$not.$not.$not.$not.$not.$not.$not.$not.$not",
            "too deep",
        ),
        (large, "filter", "too large"),
        (
            json!({"data.name": {"$regex": "(a"}}),
            "filter.data.name.$regex",
            "a bad regex",
        ),
        (
            json!({"data.name": {"$regex": "a(?=b)"}}),
            "filter.data.name.$regex",
            "look-ahead",
        ),
        (json!([1]), "filter", "not an object"),
    ];
    for (filter, field, what) in cases {
        // A regex the engine cannot compile is a conflict (it may be valid by the
        // document's ECMA-262 `format: regex`); every other refusal a 400.
        let status = if matches!(what, "a bad regex" | "look-ahead") {
            409
        } else {
            400
        };
        let create = json!({"name": "new", "endpointUrl": "https://e.com/2", "filter": filter});
        assert_refused(
            &api.call(M::POST, SUBS, TOKEN_A, Some(create)).await,
            status,
            field,
            what,
        );
        let create = json!({"enabled_events": [], "is_enabled": true, "url": "https://e.com/h",
            "filter": filter});
        assert_refused(
            &api.call(M::POST, HOOKS, TOKEN_A, Some(create)).await,
            status,
            field,
            what,
        );
        let patch = Some(json!({"filter": filter}));
        assert_refused(
            &api.call(M::PATCH, &one, TOKEN_A, patch.clone()).await,
            status,
            field,
            what,
        );
        assert_refused(
            &api.call(M::PATCH, &hook, TOKEN_A, patch).await,
            status,
            field,
            what,
        );
        let put = json!({"name": "kept", "endpointUrl": "https://e.com/1", "filter": filter});
        assert_refused(
            &api.call(M::PUT, &one, TOKEN_A, Some(put)).await,
            status,
            field,
            what,
        );
    }
    // Nothing changed: one subscription and one webhook, each with its first filter.
    let (_, list) = api.call(M::GET, SUBS, TOKEN_A, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["filter"], good);
    let (_, list) = api.call(M::GET, HOOKS, TOKEN_A, None).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["webhooks"][0]["filter"], good);
    // PUT without `filter` removes it (a PUT replaces the whole subscription).
    let put = json!({"name": "kept", "endpointUrl": "https://e.com/1"});
    let (status, replaced) = api.call(M::PUT, &one, TOKEN_A, Some(put)).await;
    assert_eq!(status, 200, "{replaced}");
    assert!(replaced.get("filter").is_none(), "{replaced}");
    api.stop().await;
}
