//! Writes state records to Kafka and reads them back from this process's views.

use std::time::Duration;

use hookline_config::Config;
use hookline_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use hookline_proto::v1::{Secret, Subscription};
use hookline_runtime::ApiError;
use hookline_state::{SecretBox, SecretView, SubscriptionView};

#[derive(Clone)]
pub struct Store {
    producer: FutureProducer,
    pub subscriptions: SubscriptionView,
    pub secrets: SecretView,
    pub secret_box: SecretBox,
}

const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

impl Store {
    pub fn start(config: &Config) -> Result<Self, crate::Error> {
        Ok(Self {
            producer: hookline_kafka::producer(config)?,
            subscriptions: hookline_state::subscriptions(config)?,
            secrets: hookline_state::secrets(config)?,
            secret_box: SecretBox::from_config(config)?,
        })
    }

    /// Waits until both views hold everything acknowledged before now.
    pub async fn sync(&self) {
        tokio::join!(self.subscriptions.sync(), self.secrets.sync());
    }

    pub fn stop(&self) {
        self.subscriptions.stop();
        self.secrets.stop();
    }

    pub async fn put_secret(&self, secret: &Secret) -> Result<(), ApiError> {
        let key = hookline_state::secret_key(&secret.tenant, &secret.name);
        let (partition, offset) = self
            .write(self.secrets.topic(), &key, &hookline_state::encode(secret))
            .await?;
        self.secrets.wait_for_offset(partition, offset).await;
        Ok(())
    }

    pub async fn put_subscription(&self, sub: &Subscription) -> Result<(), ApiError> {
        let (partition, offset) = self
            .write(
                self.subscriptions.topic(),
                &sub.id,
                &hookline_state::encode(sub),
            )
            .await?;
        self.subscriptions.wait_for_offset(partition, offset).await;
        Ok(())
    }

    async fn write(&self, topic: &str, key: &str, value: &[u8]) -> Result<(i32, i64), ApiError> {
        let record = FutureRecord::to(topic).key(key).payload(value);
        match self.producer.send(record, WRITE_TIMEOUT).await {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err((e, _)) => {
                tracing::error!(topic, error = %e, "state write failed");
                Err(ApiError::unavailable(
                    "could not store the change; nothing was changed",
                ))
            }
        }
    }
}
