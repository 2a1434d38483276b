//! The API as replicas over shared topics: name uniqueness decided by log order, and state
//! that survives a restart because the topics are the only store.

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::api_support::{Api, api_config};
use crate::support::{TOKEN_A, TOKEN_ADMIN, TOKEN_B};

const SECRETS: &str = "/api/v1/event-deliveries/secrets";
const SUBS: &str = "/api/v1/event-deliveries/subscriptions";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_racing_for_a_name_give_one_201_and_one_409() {
    let config = api_config().await;
    let (one, two) = tokio::join!(Api::start(&config), Api::start(&config));
    for round in 0..15 {
        let (path, body) = if round % 3 == 2 {
            (SECRETS, json!({"name": format!("secret-{round}")}))
        } else {
            (
                SUBS,
                json!({"name": format!("race-{round}"), "endpointUrl": "https://e.com"}),
            )
        };
        let (a, b) = tokio::join!(
            one.call(M::POST, path, TOKEN_A, Some(body.clone())),
            two.call(M::POST, path, TOKEN_A, Some(body.clone())),
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}: {} / {}", a.1, b.1);
        let loser = if a.0 == 409 { &a.1 } else { &b.1 };
        assert_eq!(loser["code"], "conflict", "{loser}");
    }
    // Every replica sees the same single winner per name (the other replica's writes reach
    // a view a moment later: a GET is read-your-writes only on the replica that wrote).
    for api in [&one, &two] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, subs) = api
                .call(M::GET, &format!("{SUBS}?limit=100"), TOKEN_A, None)
                .await;
            let names: Vec<&str> = subs["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap())
                .collect();
            let (_, secrets) = api
                .call(M::GET, &format!("{SECRETS}?limit=100"), TOKEN_A, None)
                .await;
            let secrets = secrets["items"].as_array().unwrap().len();
            // Ten auto-created secrets (one per subscription) and five created directly.
            if (names.len(), secrets) == (10, 15) {
                break;
            }
            assert!(
                names.len() <= 10 && secrets <= 15,
                "{subs} / {secrets} secrets"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "{} subscriptions and {secrets} secrets after 30 s: {subs}",
                names.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    tokio::join!(one.stop(), two.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everything_is_still_there_after_a_restart() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let (_, secret) = api
        .call(M::POST, SECRETS, TOKEN_A, Some(json!({"name": "kept"})))
        .await;
    let (_, rotated) = api
        .call(M::POST, &format!("{SECRETS}/kept/rotate"), TOKEN_A, None)
        .await;
    assert!(secret["value"].is_string() && rotated["value"].is_string());
    let body = json!({"name": "durable", "endpointUrl": "https://e.com", "secretRef": "kept",
        "eventTypes": ["ACCOUNT.*"], "description": "d"});
    let (status, sub) = api.call(M::POST, SUBS, TOKEN_A, Some(body)).await;
    assert_eq!(status, 201, "{sub}");
    let (_, gone) = api
        .call(
            M::POST,
            SUBS,
            TOKEN_A,
            Some(json!({"name": "gone", "endpointUrl": "https://e.com"})),
        )
        .await;
    let gone_url = format!("{SUBS}/{}", gone["id"].as_str().unwrap());
    assert_eq!(api.call(M::DELETE, &gone_url, TOKEN_A, None).await.0, 204);
    let reg = json!({"name": "LOAN.APPROVED"});
    assert_eq!(
        api.call(M::POST, "/admin/v1/event-types", TOKEN_ADMIN, Some(reg))
            .await
            .0,
        201
    );
    let hook = json!({"enabled_events": ["LOAN.*"], "is_enabled": false,
        "url": "https://e.com/h", "metadata": "m"});
    let (status, hook) = api.call(M::POST, "/v2/webhooks", TOKEN_B, Some(hook)).await;
    assert_eq!(status, 201, "{hook}");

    let reads = |sub_id: String, hook_id: String| {
        vec![
            format!("{SUBS}/{sub_id}"),
            format!("{SUBS}?limit=10"),
            format!("{SECRETS}/kept"),
            format!("{SECRETS}?limit=10"),
            format!("/v2/webhooks/{hook_id}"),
            "/admin/v1/event-types".to_owned(),
        ]
    };
    let paths = reads(
        sub["id"].as_str().unwrap().to_owned(),
        hook["id"].as_str().unwrap().to_owned(),
    );
    let snapshot = |api: &Api| {
        let paths = paths.clone();
        let url = api.url.clone();
        async move {
            let mut out: Vec<Value> = Vec::new();
            for p in &paths {
                let token = if p.starts_with("/v2") {
                    TOKEN_B
                } else {
                    TOKEN_A
                };
                let (status, body) =
                    crate::api_support::call(M::GET, &format!("{url}{p}"), token, None).await;
                assert_eq!(status, 200, "{p}: {body}");
                out.push(body);
            }
            out
        }
    };
    let before = snapshot(&api).await;
    api.stop().await;

    let again = Api::start(&config).await;
    let after = snapshot(&again).await;
    assert_eq!(
        before, after,
        "the restarted API rebuilt the same state from the topics"
    );
    assert_eq!(
        after[1]["items"].as_array().unwrap().len(),
        1,
        "the deleted one stays deleted"
    );
    assert_eq!(
        after[2]["versions"].as_array().unwrap().len(),
        2,
        "both secret versions"
    );
    // Names are still taken, and the deleted subscription's name is free.
    let dup = json!({"name": "durable", "endpointUrl": "https://e.com"});
    assert_eq!(again.call(M::POST, SUBS, TOKEN_A, Some(dup)).await.0, 409);
    let reuse = json!({"name": "gone", "endpointUrl": "https://e.com", "secretRef": "kept"});
    assert_eq!(again.call(M::POST, SUBS, TOKEN_A, Some(reuse)).await.0, 201);
    let hook_again =
        json!({"enabled_events": ["LOAN.APPROVED"], "is_enabled": true, "url": "https://e.com"});
    assert_eq!(
        again
            .call(M::POST, "/v2/webhooks", TOKEN_B, Some(hook_again))
            .await
            .0,
        201,
        "registered event types survive too"
    );
    again.stop().await;
}
