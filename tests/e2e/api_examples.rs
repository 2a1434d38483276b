//! "Send an example": a signed example delivered through the pipeline to one subscription,
//! answered with its first attempt (status, outcome, the response's first bytes), in both
//! dialects; the delivery is a real one, with its attempt in the operations index.

use reqwest::Method as M;
use serde_json::json;

use crate::support::receiver::Receiver;
use crate::support::{Stack, TOKEN_A, call, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_example_goes_through_the_pipeline_and_answers_with_its_attempt() {
    // The answer is to carry the attempt however slow this machine is.
    let stack = Stack::start(|c| c.example_wait = "60s".into()).await;
    let api = stack.api.clone();
    let ok = Receiver::start(&[], 200).await;
    let (status, sub) = stack
        .call(
            M::POST,
            &format!("{api}/api/v1/event-deliveries/subscriptions"),
            TOKEN_A,
            Some(json!({"name": "examples", "endpointUrl": ok.url, "eventTypes": ["ACCOUNT.*"]})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let secret = sub["secret"]["value"].as_str().unwrap().to_owned();
    let test = format!(
        "{api}/api/v1/event-deliveries/subscriptions/{}/test",
        sub["id"].as_str().unwrap()
    );
    let (status, sent) = stack
        .call(
            M::POST,
            &test,
            TOKEN_A,
            Some(json!({"eventType": "ACCOUNT.UPDATED"})),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["eventType"], "ACCOUNT.UPDATED");
    assert_eq!(sent["attempt"]["status"], 200, "{sent}");
    assert_eq!(sent["attempt"]["outcome"], "succeeded");
    let got = ok.wait_for(1, 30).await;
    assert_eq!(
        got[0].header("webhook-id"),
        sent["deliveryId"].as_str().unwrap()
    );
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&got[0].body, &got[0].headers)
        .expect("the example is signed with the subscription's secret");
    assert_eq!(got[0].json()["event_type"], "ACCOUNT.UPDATED");
    // A real delivery: its attempt is in the operations index.
    let url = format!(
        "{}/api/v1/event-deliveries/deliveries/{}/attempts",
        stack.dead_letters,
        sent["deliveryId"].as_str().unwrap()
    );
    eventually(60, "the example's attempt to be indexed", || {
        let url = url.clone();
        async move {
            let (status, body) = call(M::GET, &url, TOKEN_A, None).await;
            (status == 200 && body["items"].as_array().is_some_and(|a| a.len() == 1)).then_some(())
        }
    })
    .await;
    // No body: the first type the subscription receives.
    let (status, sent) = stack.call(M::POST, &test, TOKEN_A, None).await;
    assert_eq!(status, 200, "{sent}");
    assert!(
        sent["eventType"].as_str().unwrap().starts_with("ACCOUNT."),
        "{sent}"
    );
    // Refused (409: valid by the document, not by the catalog), naming the field.
    for (event_type, why) in [
        ("CARD.CREATED", "does not receive"),
        ("NOPE.NOPE", "not a catalog"),
    ] {
        let (status, body) = stack
            .call(
                M::POST,
                &test,
                TOKEN_A,
                Some(json!({"eventType": event_type})),
            )
            .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (409, Some("eventType")),
            "{body}"
        );
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
    assert_eq!(
        ok.wait_for(2, 30).await.len(),
        2,
        "refused examples send nothing"
    );

    // Synctera, to an endpoint answering 500: the answer says so, with the body's first bytes.
    let failing = Receiver::start(&[], 500).await;
    let (status, hook) = stack
        .call(
            M::POST,
            &format!("{api}/v2/webhooks"),
            TOKEN_A,
            Some(
                json!({"enabled_events": ["CARD.CREATED"], "is_enabled": true, "url": failing.url}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let (status, sent) = stack
        .call(
            M::POST,
            &format!("{api}/v2/webhooks/{}/test", hook["id"].as_str().unwrap()),
            TOKEN_A,
            Some(json!({"event_type": "CARD.CREATED"})),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["attempt"]["status"], 500, "{sent}");
    assert_eq!(sent["attempt"]["outcome"], "retryable", "{sent}");
    assert!(sent["attempt"]["duration_ms"].is_u64());
    stack.stop().await;
}
