//! Custom headers: sent with every delivery, in clear only on the wire to the receiver.
//! Responses and attempt records show `****`, the log segments of every topic the stack
//! wrote hold the value only sealed, and reserved or malformed headers are refused with the
//! field named and nothing changed, in both dialects.

use std::path::Path;

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::api_plaintext::{files_under, leaks};
use crate::support::receiver::Receiver;
use crate::support::{Stack, TENANT_A, TOKEN_A, call, eventually};

const SUBS: &str = "/api/v1/event-deliveries/subscriptions";

/// The request headers an attempt record shows for delivery `id`, once it is indexed.
async fn recorded_headers(stack: &Stack, id: &str) -> Vec<(String, String)> {
    let url = format!(
        "{}/api/v1/event-deliveries/deliveries/{id}/attempts",
        stack.dead_letters
    );
    let attempts: Value = eventually(60, "the attempt to be indexed", || {
        let url = url.clone();
        async move {
            let (status, body) = call(M::GET, &url, TOKEN_A, None).await;
            (status == 200 && body["items"].as_array().is_some_and(|a| !a.is_empty()))
                .then_some(body)
        }
    })
    .await;
    attempts["items"][0]["requestHeaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_owned(),
                h["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_headers_reach_the_receiver_and_nothing_else_in_clear() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 200).await;
    let key = format!("api-key-{}", uuid::Uuid::new_v4().simple());
    let (status, sub) = stack
        .call(
            M::POST,
            &format!("{}{SUBS}", stack.api),
            TOKEN_A,
            Some(json!({"name": "with-headers", "endpointUrl": receiver.url,
                "headers": {"X-Api-Key": key, "X-Team": "payments"}})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    assert_eq!(
        sub["headers"],
        json!({"x-api-key": "****", "x-team": "****"})
    );
    let url = format!("{}{SUBS}/{}", stack.api, sub["id"].as_str().unwrap());

    let events = stack.config.topic_events.clone();
    let event = |id: &str| {
        json!({"type": "ACCOUNT.CREATED", "time": "2026-04-14T09:54:45.040Z",
            "tenant": TENANT_A, "data": {"id": id}})
    };
    stack.publish_json(&events, "acc-1", &event("acc-1")).await;
    let got = receiver.wait_for(1, 60).await;
    assert_eq!(got[0].header("x-api-key"), key);
    assert_eq!(got[0].header("x-team"), "payments");
    // Hookline's own headers are still there and still sign the body.
    assert!(!got[0].header("webhook-signature").is_empty());

    // A body read back and written again keeps the values (`****` means "as it is").
    let (_, current) = stack.call(M::GET, &url, TOKEN_A, None).await;
    let mut body = current.clone();
    for field in ["id", "createdAt", "updatedAt"] {
        body.as_object_mut().unwrap().remove(field);
    }
    let (status, put) = stack.call(M::PUT, &url, TOKEN_A, Some(body)).await;
    assert_eq!(status, 200, "{put}");
    stack.publish_json(&events, "acc-2", &event("acc-2")).await;
    let got = receiver.wait_for(2, 60).await;
    assert_eq!(got[1].header("x-api-key"), key);

    // The attempt record masks the value.
    let recorded = recorded_headers(&stack, got[1].header("webhook-id")).await;
    assert!(
        recorded.contains(&("x-api-key".into(), "****".into())),
        "{recorded:?}"
    );

    // Refused, naming the header, and nothing changed.
    for (headers, field) in [
        (json!({"Webhook-Id": "x"}), "headers.Webhook-Id"),
        (
            json!({"content-type": "text/plain"}),
            "headers.content-type",
        ),
        (json!({"Svix-Signature": "x"}), "headers.Svix-Signature"),
        (json!({"bad header": "x"}), "headers.bad header"),
        (json!({"x-a": "line\r\nbreak"}), "headers.x-a"),
        (json!({"x-new": "****"}), "headers.x-new"),
        (json!({"x-a": "1", "X-A": "2"}), "headers.x-a"),
    ] {
        let (status, body) = stack
            .call(M::PATCH, &url, TOKEN_A, Some(json!({"headers": headers})))
            .await;
        assert_eq!(status, 400, "{headers}: {body}");
        assert_eq!(body["field"], field, "{body}");
        assert!(!body.to_string().contains(&key));
    }
    let (_, after) = stack.call(M::GET, &url, TOKEN_A, None).await;
    assert_eq!(after, put, "a refused change changed nothing");

    // Synctera takes the same headers; `null` removes them.
    let (status, hook) = stack
        .call(
            M::POST,
            &format!("{}/v2/webhooks", stack.api),
            TOKEN_A,
            Some(json!({"enabled_events": ["ACCOUNT.*"], "is_enabled": true,
                "url": receiver.url, "headers": {"Authorization": format!("Bearer {key}")}})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["headers"], json!({"authorization": "****"}));
    let hook_url = format!("{}/v2/webhooks/{}", stack.api, hook["id"].as_str().unwrap());
    let (status, body) = stack
        .call(
            M::PATCH,
            &hook_url,
            TOKEN_A,
            Some(json!({"headers": {"host": "x"}})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("headers.host"))
    );
    let (status, cleared) = stack
        .call(M::PATCH, &hook_url, TOKEN_A, Some(json!({"headers": null})))
        .await;
    assert_eq!(status, 200, "{cleared}");
    assert!(cleared.get("headers").is_none(), "{cleared}");

    // Every segment of this stack's topics: the value is there only sealed.
    let prefix = format!("{}.", stack.config.group_prefix);
    stack.stop().await;
    let kafka_dir = std::env::var("HOOKLINE_TEST_KAFKA_DIR")
        .expect("HOOKLINE_TEST_KAFKA_DIR is not set: run the suite with `make test`");
    let mut files = Vec::new();
    files_under(&Path::new(&kafka_dir).join("data"), &mut files);
    let mut scanned = 0;
    for file in files
        .iter()
        .filter(|p| p.to_string_lossy().contains(&prefix))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
    {
        let bytes = std::fs::read(file).unwrap();
        scanned += bytes.len();
        assert!(
            !leaks(&bytes, key.as_bytes(), 16),
            "a custom header value is in {file:?} in clear"
        );
    }
    assert!(scanned > 0, "no segment of this stack's topics was read");
}
