//! Changes other services ask of the subscription API (`topic_subscription_commands`): today
//! a delivery worker's "disable this subscription" after a 410 Gone or after every attempt
//! failed for `auto_disable_after`. A disable applied publishes
//! `hookline.subscription.disabled`.
//!
//! A command is applied through the API's own write path, one change at a time, on views
//! that hold everything acknowledged before it: the subscription as it is then gets
//! `enabled = false` and its next version. So a command never reverts an edit; and one whose
//! subscription changed since the version it saw (its URL fixed, say) is dropped. One API
//! replica applies each command (a consumer group); its offset is committed once applied.

use std::time::Duration;

use hookline_config::Config;
use hookline_events::time_fmt::now_ms;
use hookline_kafka::rdkafka::consumer::{CommitMode, Consumer};
use hookline_kafka::rdkafka::message::Message;
use hookline_proto::Message as _;
use hookline_proto::v1::SubscriptionCommand;
use hookline_runtime::CancellationToken;
use hookline_telemetry::trace::{self, Traced};
use tracing::Instrument as _;

use crate::Store;

/// Applies commands until `shutdown`.
pub async fn run(config: Config, store: Store, shutdown: CancellationToken) {
    let consumer = match hookline_kafka::group_consumer(
        &config,
        hookline_kafka::acl::GROUP_SUBSCRIPTION_COMMANDS,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "subscription commands: cannot create the consumer");
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[&config.topic_subscription_commands]) {
        tracing::error!(error = %e, "subscription commands: cannot subscribe");
        return;
    }
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = consumer.recv() => m,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "subscription commands");
                continue;
            }
        };
        match msg.payload().map(SubscriptionCommand::decode) {
            Some(Ok(command)) => {
                // In the trace of the delivery that asked for it.
                let span = Traced::start(&trace::from_kafka(msg.headers()), || {
                    tracing::info_span!(
                        "apply subscription command",
                        hookline.service = "subscription-api",
                        hookline.subscription.id = %command.subscription_id,
                    )
                });
                // Retried until applied: a command is not dropped on a broker outage.
                while let Err(e) = apply(&store, &command, span.context())
                    .instrument(span.span().clone())
                    .await
                {
                    tracing::warn!(subscription_id = %command.subscription_id, error = %e.message, "subscription command not applied yet; retrying");
                    if shutdown
                        .run_until_cancelled(tokio::time::sleep(Duration::from_secs(1)))
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
            _ => tracing::warn!(
                partition = msg.partition(),
                offset = msg.offset(),
                "undecodable subscription command skipped"
            ),
        }
        if let Err(e) = consumer.commit_message(&msg, CommitMode::Async) {
            tracing::debug!(error = %e, "subscription commands: commit");
        }
    }
}

async fn apply(
    store: &Store,
    command: &SubscriptionCommand,
    cx: &trace::Context,
) -> Result<(), hookline_runtime::ApiError> {
    if !command.disable {
        return Ok(());
    }
    let _change = store.lock_synced().await;
    let Some(mut sub) = store.subscriptions.get(&command.subscription_id) else {
        return Ok(());
    };
    if !sub.enabled || sub.version != command.seen_version {
        tracing::info!(
            subscription_id = %sub.id,
            seen = command.seen_version,
            now = sub.version,
            reason = %command.reason,
            "disable not applied: the subscription changed since"
        );
        return Ok(());
    }
    sub.enabled = false;
    sub.version += 1;
    sub.updated_at_ms = now_ms();
    // Published first: should the write fail, the command is applied again and publishes
    // the same event (same id) again; the other way round a crash could lose it.
    let event = hookline_events::operational::subscription_disabled(
        &sub.id,
        &sub.tenant,
        sub.version,
        &command.reason,
        sub.updated_at_ms,
    );
    store.publish_event(&sub.id, &event, cx).await?;
    store.put_subscription(&sub).await?;
    tracing::warn!(subscription_id = %sub.id, tenant = %sub.tenant, reason = %command.reason, "subscription disabled");
    Ok(())
}
