//! Writes state records to Kafka and reads them back from this process's views.
//!
//! Every write waits until this process's own view has applied it, so a GET right after a
//! successful write sees that write. Read-modify-write changes of one process run one at a
//! time (`write_lock`); name uniqueness across processes is decided by the claims topic.

use std::sync::Arc;
use std::time::Duration;

use hookline_auth::{Principal, Role};
use hookline_config::Config;
use hookline_events::Event;
use hookline_kafka::rdkafka::producer::FutureRecord;
use hookline_kafka::view::TopicView;
use hookline_proto::v1::{
    Application, Dialect, NameClaim, RegisteredEventType, Secret, Subscription,
};
use hookline_runtime::ApiError;
use hookline_state::{SecretBox, SecretView, SubscriptionView};

#[derive(Clone)]
pub struct Store {
    producer: Arc<hookline_kafka::Producer>,
    /// ` (as user U)`: who the brokers refused, for a refusal's message.
    as_user: String,
    pub subscriptions: SubscriptionView,
    pub secrets: SecretView,
    /// Current holder of each claimed name, keyed `kind/tenant/name`.
    pub claims: TopicView<NameClaim>,
    /// Event types registered by admins, keyed by type.
    pub event_types: TopicView<RegisteredEventType>,
    /// Svix applications, keyed by id.
    pub applications: TopicView<Application>,
    pub secret_box: SecretBox,
    /// How long the previous secret versions keep signing after a rotation.
    pub rotation_overlap: Duration,
    /// Serialises this process's read-modify-write changes (updates, deletes, rotations).
    pub write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Where Hookline's own `hookline.*` events are published.
    topic_events: String,
}

const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

impl Store {
    /// Starts a change by `who`: an editor's, one at a time in this process, on views that
    /// hold everything acknowledged before it. The change lasts as long as the guard.
    pub async fn change(
        &self,
        who: &Principal,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, ApiError> {
        who.require(Role::Editor)?;
        Ok(self.lock_synced().await)
    }

    /// One change at a time in this process, on views that hold everything acknowledged
    /// before it (a change another service asked for goes through here too).
    pub async fn lock_synced(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let guard = self.write_lock.lock().await;
        self.sync().await;
        guard
    }

    /// The subscription `id` of `dialect`, if `who` may see it; else a 404 naming `what`.
    pub fn subscription_of(
        &self,
        who: &Principal,
        id: &str,
        dialect: Dialect,
        what: &str,
    ) -> Result<Subscription, ApiError> {
        self.subscriptions
            .get(id)
            .filter(|s| who.can_see(&s.tenant) && s.dialect() == dialect)
            .ok_or_else(|| ApiError::not_found(what))
    }

    /// A store over the given claims and event-type views (their folds belong to the
    /// modules that decide them) and views of its own of subscriptions and secrets.
    pub fn start(
        config: &Config,
        producer: Arc<hookline_kafka::Producer>,
        claims: TopicView<NameClaim>,
        event_types: TopicView<RegisteredEventType>,
    ) -> Result<Self, hookline_runtime::Error> {
        Ok(Self {
            producer,
            subscriptions: hookline_state::subscriptions(config)?,
            secrets: hookline_state::secrets(config)?,
            claims,
            event_types,
            applications: hookline_kafka::keyed_protobuf_view(
                config,
                &config.topic_applications,
                |_| {},
            )?,
            secret_box: SecretBox::from_config(config)?,
            rotation_overlap: config.secret_rotation_overlap()?,
            write_lock: Arc::default(),
            topic_events: config.topic_events.clone(),
            as_user: hookline_kafka::context::as_user(config),
        })
    }

    /// The process's producer.
    pub fn producer(&self) -> &hookline_kafka::Producer {
        &self.producer
    }

    /// Waits until every view holds everything acknowledged before now.
    pub async fn sync(&self) {
        tokio::join!(
            self.subscriptions.sync(),
            self.secrets.sync(),
            self.claims.sync(),
            self.event_types.sync(),
            self.applications.sync()
        );
    }

    pub fn stop(&self) {
        self.subscriptions.stop();
        self.secrets.stop();
        self.claims.stop();
        self.event_types.stop();
        self.applications.stop();
    }

    pub async fn put_application(&self, app: &Application) -> Result<(), ApiError> {
        let bytes = hookline_state::encode(app);
        let (p, o) = self
            .write(self.applications.topic(), &app.id, Some(&bytes))
            .await?;
        self.applications.wait_for_offset(p, o).await;
        Ok(())
    }

    pub async fn delete_application(&self, id: &str) -> Result<(), ApiError> {
        let (p, o) = self.write(self.applications.topic(), id, None).await?;
        self.applications.wait_for_offset(p, o).await;
        Ok(())
    }

    pub async fn put_secret(&self, secret: &Secret) -> Result<(), ApiError> {
        let key = hookline_state::secret_key(&secret.tenant, &secret.name);
        let bytes = hookline_state::encode(secret);
        let (p, o) = self.write(self.secrets.topic(), &key, Some(&bytes)).await?;
        self.secrets.wait_for_offset(p, o).await;
        Ok(())
    }

    pub async fn delete_secret(&self, tenant: &str, name: &str) -> Result<(), ApiError> {
        let key = hookline_state::secret_key(tenant, name);
        let (p, o) = self.write(self.secrets.topic(), &key, None).await?;
        self.secrets.wait_for_offset(p, o).await;
        Ok(())
    }

    pub async fn put_subscription(&self, sub: &Subscription) -> Result<(), ApiError> {
        let bytes = hookline_state::encode(sub);
        let (p, o) = self
            .write(self.subscriptions.topic(), &sub.id, Some(&bytes))
            .await?;
        self.subscriptions.wait_for_offset(p, o).await;
        Ok(())
    }

    pub async fn delete_subscription(&self, id: &str) -> Result<(), ApiError> {
        let (p, o) = self.write(self.subscriptions.topic(), id, None).await?;
        self.subscriptions.wait_for_offset(p, o).await;
        Ok(())
    }

    /// Removes a registered event type (Svix `expunge`).
    pub async fn delete_event_type(&self, name: &str) -> Result<(), ApiError> {
        let (p, o) = self.write(self.event_types.topic(), name, None).await?;
        self.event_types.wait_for_offset(p, o).await;
        Ok(())
    }

    pub async fn put_event_type(&self, t: &RegisteredEventType) -> Result<(), ApiError> {
        let bytes = hookline_state::encode(t);
        let (p, o) = self
            .write(self.event_types.topic(), &t.name, Some(&bytes))
            .await?;
        self.event_types.wait_for_offset(p, o).await;
        Ok(())
    }

    /// Writes a claim (or, with `None`, a release) and waits until the claims view applied it.
    pub async fn write_claim(&self, key: &str, claim: Option<&NameClaim>) -> Result<(), ApiError> {
        let bytes = claim.map(hookline_state::encode);
        let (p, o) = self
            .write(self.claims.topic(), key, bytes.as_deref())
            .await?;
        self.claims.wait_for_offset(p, o).await;
        Ok(())
    }

    /// Publishes one of Hookline's own events (protobuf) to the events topic, keyed by `key`,
    /// with `cx` as its `traceparent` (the router's span for it continues that trace).
    pub async fn publish_event(
        &self,
        key: &str,
        event: &Event,
        cx: &hookline_telemetry::trace::Context,
    ) -> Result<(), ApiError> {
        let sent = hookline_kafka::publish_event(
            &self.producer,
            &self.topic_events,
            key,
            event,
            cx,
            WRITE_TIMEOUT,
        );
        match sent.await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, event_type = %event.r#type, "event not published");
                Err(ApiError::unavailable("could not publish the event"))
            }
        }
    }

    /// Produces one record (a tombstone when `value` is `None`); returns its position.
    pub(crate) async fn write(
        &self,
        topic: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(i32, i64), ApiError> {
        let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        match hookline_kafka::send_within(&self.producer, record, WRITE_TIMEOUT).await {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err(e) => {
                tracing::error!(topic, error = %e, "state write failed");
                let denied = e
                    .rdkafka_error_code()
                    .is_some_and(hookline_kafka::context::is_denial);
                Err(ApiError::unavailable(if denied {
                    format!(
                        "could not store the change: kafka: not authorized to write topic \
                         {topic}{}; nothing was changed",
                        self.as_user
                    )
                } else {
                    "could not store the change; nothing was changed".to_owned()
                }))
            }
        }
    }
}
