//! The served OpenAPI document against the live server: every documented operation is
//! routed (the unit tests of the API crate check that every routed operation is documented).

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::api_support::{Api, api_config};
use crate::support::{TOKEN_ADMIN, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_documented_operation_is_served() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let resp = client()
        .get(format!("{}/openapi.json", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{name}", "no-such-secret");
        for (method, _) in item.as_object().unwrap() {
            let method = M::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = matches!(method, M::POST | M::PUT | M::PATCH).then(|| json!({}));
            let (status, answer) = crate::api_support::call(
                method.clone(),
                &format!("{}{concrete}", api.url),
                TOKEN_ADMIN,
                body,
            )
            .await;
            assert_ne!(
                status, 405,
                "{method} {path} is documented but not routed: {answer}"
            );
            assert!(
                !(status == 404 && answer["code"] == "unknown_route"),
                "{method} {path} is documented but not routed: {answer}"
            );
            assert!(status < 500, "{method} {path}: {status} {answer}");
            operations += 1;
        }
    }
    assert_eq!(operations, hookline_subscription_api::table().len());
    // The check can fail: an operation the document lacks is answered as unknown.
    let (status, answer) = crate::api_support::call(
        M::DELETE,
        &format!("{}/v2/webhooks", api.url),
        TOKEN_ADMIN,
        None,
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    api.stop().await;
}
