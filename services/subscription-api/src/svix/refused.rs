//! Operations of Svix's document that Hookline answers with a reasoned refusal instead of
//! pretending to do them: a 409 in Svix's error shape whose `code` and `detail` say why.
//!
//! - `POST /api/v1/auth/logout`: Hookline's bearer tokens are configured by the operator,
//!   not sessions; there is nothing to log out, and answering 204 would leave a caller
//!   believing a token dead that still works (`token_not_revocable`).
//! - `DELETE …/msg/{msg_id}/content` and `…/msg/{msg_id}/attempt/{attempt_id}/content`: a
//!   message's payload is in Kafka's append-only log (the `messages` and events topics), an
//!   attempt's response body on the `attempts` topic; a record cannot be erased before the
//!   topic's retention removes it (`content_immutable`). The application and the message
//!   are looked up first, so an unknown one is still a 404 and a viewer still a 403.

use axum::extract::State;
use axum::http::StatusCode;
use hookline_auth::{Principal, Role};
use hookline_runtime::{ApiError, JsonPath};

use super::apps;
use crate::AppState;

/// The `code` of a refused logout.
pub const TOKEN_NOT_REVOCABLE: &str = "token_not_revocable";
/// The `code` of a refused content deletion.
pub const CONTENT_IMMUTABLE: &str = "content_immutable";

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "svix-authentication",
    responses((status = 409, body = super::HttpErrorOut, description = "Always: Hookline's \
        tokens are configured, not sessions, so none can be logged out (`token_not_revocable`; \
        Svix logs out app-portal tokens only)"),
        (status = 401, body = super::HttpErrorOut)))]
pub async fn logout(_who: Principal) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        TOKEN_NOT_REVOCABLE,
        "Hookline's bearer tokens are configured by the operator, not sessions: this token \
         stays valid until it is removed from the configuration",
    )
}

/// The message `msg_id` (id or `eventId`) of application `app_id`, for an editor; else
/// the refusal a deletion of it gets first (403, 404).
async fn message_of(
    state: &AppState,
    who: &Principal,
    app_id: &str,
    msg_id: &str,
) -> Result<(), ApiError> {
    who.require(Role::Editor)?;
    let app = apps::find(state, who, app_id)?;
    state.messages.view().sync().await;
    state
        .messages
        .find(&app.tenant, &app.id, msg_id)
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("message"))
}

fn immutable(what: &str, topics: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        CONTENT_IMMUTABLE,
        format!(
            "{what} is kept in Kafka's append-only log ({topics}) and cannot be deleted before \
             the topic's retention removes it (`svix_message_retention` for messages)"
        ),
    )
}

#[utoipa::path(delete, path = "/api/v1/app/{app_id}/msg/{msg_id}/content", tag = "svix-message",
    params(("app_id" = String, Path), ("msg_id" = String, Path, description = "Id or eventId")),
    responses((status = 409, body = super::HttpErrorOut, description = "The message exists, \
        but its payload is in Kafka's append-only log and cannot be deleted before the \
        retention removes it (`content_immutable`)"),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut)))]
pub async fn expunge_content(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, msg_id)): JsonPath<(String, String)>,
) -> ApiError {
    match message_of(&state, &who, &app_id, &msg_id).await {
        Err(e) => e,
        Ok(()) => immutable("a message's payload", "the `messages` and events topics"),
    }
}

#[utoipa::path(delete, path = "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content",
    tag = "svix-message",
    params(("app_id" = String, Path), ("msg_id" = String, Path, description = "Id or eventId"),
        ("attempt_id" = String, Path)),
    responses((status = 409, body = super::HttpErrorOut, description = "The message exists, \
        but an attempt's response body is in Kafka's append-only log and cannot be deleted \
        before the retention removes it (`content_immutable`)"),
        (status = 401, body = super::HttpErrorOut), (status = 403, body = super::HttpErrorOut),
        (status = 404, body = super::HttpErrorOut)))]
pub async fn expunge_attempt_content(
    State(state): State<AppState>,
    who: Principal,
    JsonPath((app_id, msg_id, _attempt_id)): JsonPath<(String, String, String)>,
) -> ApiError {
    match message_of(&state, &who, &app_id, &msg_id).await {
        Err(e) => e,
        Ok(()) => immutable("an attempt's response body", "the `attempts` topic"),
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    #[tokio::test]
    async fn refusals_say_why_in_svix_shape() {
        let who = Principal {
            tenant: "t".into(),
            role: Role::Editor,
        };
        for (e, code) in [
            (logout(who).await, TOKEN_NOT_REVOCABLE),
            (immutable("x", "y"), CONTENT_IMMUTABLE),
        ] {
            let r = super::super::svix_errors(e.into_response()).await;
            assert_eq!(r.status(), StatusCode::CONFLICT);
            let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["code"], code, "{v}");
            assert!(v["detail"].as_str().unwrap().contains("Kafka") || code == TOKEN_NOT_REVOCABLE);
        }
    }
}
