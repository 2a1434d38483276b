//! Hookline configuration, shared by every service so that all of them can run in one process.
//!
//! Sources, later wins: built-in defaults, the TOML file named by `HOOKLINE_CONFIG`, then
//! `HOOKLINE_`-prefixed environment variables (`HOOKLINE_KAFKA_BOOTSTRAP` sets `kafka_bootstrap`).
//! [`Config::load`] validates everything a service needs and fails with one clear line.
#![forbid(unsafe_code)]

pub mod kafka_security;
pub mod service_credentials;

use std::net::SocketAddr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use kafka_security::{KafkaSecurity, SaslCredentials, SaslMechanism, Secret, SecurityProtocol};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Every setting of every service. Field `foo_bar` is set by `HOOKLINE_FOO_BAR`.
#[derive(Clone, Serialize, Deserialize)]
// Unknown keys are ignored: the same environment also carries client-side keys of
// `.hookline/stack.env` (`HOOKLINE_API_URL`, ...).
#[serde(default)]
pub struct Config {
    pub kafka_bootstrap: String,
    /// Extra librdkafka properties, `key=value` separated by `;` (not those the typed
    /// `kafka_security_*`, `kafka_sasl_*`, `kafka_ssl_*` and `kafka_oauth_*` keys set).
    pub kafka_properties: String,
    /// `PLAINTEXT` (the default), `SSL` (TLS, mutual with a client certificate) or
    /// `SASL_SSL`. See [`kafka_security`] for how the keys below go together.
    pub kafka_security_protocol: String,
    /// With `SASL_SSL`: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
    pub kafka_sasl_mechanism: String,
    /// PLAIN and SCRAM: the principal's name.
    pub kafka_sasl_username: String,
    /// PLAIN and SCRAM: a file holding the password (a mounted Secret), or
    pub kafka_sasl_password_file: String,
    /// the name of an environment variable holding it.
    pub kafka_sasl_password_env: String,
    /// PEM CA bundle that signs the brokers' certificates (empty: the system's roots).
    pub kafka_ssl_ca_file: String,
    /// Mutual TLS: the client's PEM certificate and key, both or neither.
    pub kafka_ssl_certificate_file: String,
    pub kafka_ssl_key_file: String,
    /// A file holding the key's password, if the key is encrypted.
    pub kafka_ssl_key_password_file: String,
    /// OAUTHBEARER (OIDC client credentials): the token endpoint URL,
    pub kafka_oauth_token_endpoint: String,
    /// the client id,
    pub kafka_oauth_client_id: String,
    /// the client secret from a file or
    pub kafka_oauth_client_secret_file: String,
    /// from the environment variable named here,
    pub kafka_oauth_client_secret_env: String,
    /// and the scope asked for (optional).
    pub kafka_oauth_scope: String,
    pub topic_subscriptions: String,
    pub topic_secrets: String,
    pub topic_events: String,
    pub topic_balances: String,
    pub topic_extracts: String,
    pub topic_deliveries: String,
    pub topic_attempts: String,
    pub topic_dead_letters: String,
    /// Router: events it could not decode, with the reason and the original bytes (delete policy).
    pub topic_quarantine: String,
    /// Prefix of every consumer group id and transactional id.
    pub group_prefix: String,
    /// Router: this instance's stable name, part of its transactional id and static group
    /// membership (`{group_prefix}.router.{router_instance}`). Empty: the host name, else
    /// the process id. Replicas must have distinct names; a restarted replica should keep its
    /// name so it takes over its predecessor's partitions and aborts its open transaction.
    pub router_instance: String,
    /// Create missing topics at start (development); production provisions them.
    pub create_topics: bool,
    /// Partitions of each topic created by `hookline topics` or `create_topics`.
    pub topic_partitions: i32,
    /// Replication factor of each topic created: 1 for the local single broker (the
    /// default); production uses 3, so a topic survives the loss of a broker.
    pub topic_replication: i32,
    /// `min.insync.replicas` of each topic created: how many replicas must hold a record
    /// before the broker acknowledges it (our producers use `acks=all`). 1 for the local
    /// single broker (the default); production uses 2 with `topic_replication` 3, so one
    /// broker may be down while writes go on and no acknowledged record lives on one broker
    /// only. At least 1, at most `topic_replication`.
    pub topic_min_insync_replicas: i32,

    pub api_listen: SocketAddr,
    pub extracts_listen: SocketAddr,
    pub dead_letters_listen: SocketAddr,
    pub router_listen: SocketAddr,
    pub worker_listen: SocketAddr,

    /// Bearer tokens: `token=tenant:role` entries separated by `;` or newlines.
    pub tokens: String,
    /// A file holding more token entries in the same form (e.g. a mounted Kubernetes secret).
    pub tokens_file: String,
    /// Base64 of the 32-byte master key that seals secret values at rest.
    pub master_key: String,
    pub master_key_id: String,
    /// Subscription API: name claims that decide name uniqueness by log order (compacted).
    pub topic_claims: String,
    /// Subscription API: event types registered by admins or through the Svix face
    /// (compacted).
    pub topic_event_types: String,
    /// Subscription API: Svix applications (compacted).
    pub topic_applications: String,
    /// Subscription API: Svix messages accepted by `POST …/msg`, for the message list and
    /// get and the `eventId` check (compacted, records removed after
    /// `svix_message_retention`).
    pub topic_messages: String,
    /// How long the messages topic keeps a message (`retention.ms` when created).
    pub svix_message_retention: String,
    /// Changes other services ask of the subscription API (a 410 disabling a subscription),
    /// applied through its write path (delete policy).
    pub topic_subscription_commands: String,
    /// Subscription API: the operations API's base URL, which the Svix face asks for attempts,
    /// delivery states, recovers and resends (with the caller's own token). Empty (the
    /// default): `http://` and `dead_letters_listen`, for `hookline all` and one host.
    pub operations_url: String,
    /// Subscription API: largest accepted request body in bytes; larger ones get 413.
    pub api_body_limit: usize,
    /// Subscription API: how long the previous secret version keeps signing after a rotation.
    pub secret_rotation_overlap: String,

    /// When each attempt is made, as delays after the previous one, comma-separated: the
    /// first entry is the first attempt (normally `0s`, immediate), so the default makes 8
    /// attempts; after the last, the job goes to dead-letters.
    pub retry_schedule: String,
    /// Random extra delay, as a fraction of each retry delay (0.0-1.0).
    pub retry_jitter: f64,
    pub http_timeout: String,
    /// Subscription API: how long "send an example" waits for the example's first attempt
    /// before answering 202 without it (default 5s).
    pub example_wait: String,
    pub http_connect_timeout: String,
    pub response_body_limit: usize,
    /// The delivery workers' consumer group protocol: `consumer` (KIP-848, Kafka 4.0 and
    /// later: a worker hands a partition on only after committing it, whatever else the group
    /// is doing) or `classic` (older clusters). With `consumer`, the session timeout and
    /// heartbeat interval are the brokers' `group.consumer.*` settings.
    pub worker_group_protocol: String,
    /// Deliveries in flight per worker process.
    pub worker_concurrency: usize,
    /// Deliveries in flight per subscription (across its ordering keys).
    pub subscription_in_flight: usize,
    /// Jobs of one subscription held in a worker's memory; past this the subscription is
    /// parked (its jobs wait in the retry lane) so it cannot hold up anyone else.
    pub subscription_buffer: usize,
    /// Jobs held in a worker's memory in all; reading pauses while past it.
    pub worker_buffer: usize,
    /// Retries due within this wait in memory (the key stays blocked); longer ones park the
    /// subscription in the retry lane.
    pub retry_in_memory_max: String,
    /// A subscription whose every attempt failed for this long is disabled (and
    /// `hookline.subscription.disabled` published); `0s` never disables.
    pub auto_disable_after: String,
    /// Retry lane: jobs of parked subscriptions, keyed by subscription id (delete policy).
    pub topic_retry_lane: String,
    /// Parked-state records of parked subscriptions (compacted).
    pub topic_parked: String,
    /// Operations service: replay runs with their progress (compacted, keyed by replay id).
    pub topic_replays: String,
    /// Operations service: folder of its on-disk index of deliveries, attempts and dead
    /// letters (a derived view: deleting it rebuilds it from the topics).
    pub ops_index_dir: String,
    /// Operations service: page cache of the on-disk index, in MiB (its memory bound).
    pub ops_index_cache_mb: usize,
    pub user_agent: String,
    /// Delivery worker: CIDRs (or single addresses), comma-separated, that deliveries may
    /// reach although the egress guard refuses their class (private, loopback, ...).
    /// Empty by default; tests and `make run` set `127.0.0.1/32`.
    pub egress_allow: String,
    /// Delivery worker: whether endpoint host names are looked up in DNS (default true).
    /// False: only address-literal URLs are dialled, a name fails the attempt without a
    /// query (`make conformance` runs so: its fuzzed URLs must not reach any resolver).
    pub egress_dns: bool,

    /// OpenTelemetry collector's OTLP/HTTP base URL (`http://collector:4318`, or `https://`
    /// verified against the system's roots and `OTEL_EXPORTER_OTLP_CERTIFICATE`;
    /// `/v1/traces` and `/v1/metrics` are appended). Empty (the default): no spans are made and nothing
    /// is pushed; the W3C `traceparent` still travels from producer to receiver.
    pub otlp_endpoint: String,
    /// Share of new traces sampled (0.0-1.0); a span with a parent follows the parent's
    /// decision (a producer's `traceparent` flags).
    pub trace_sample_ratio: f64,
    /// `json` (default) or `pretty`.
    pub log_format: String,
    pub log_level: String,
    /// Metrics (`/metrics`, OTLP) and traces; `false` turns them off (every instrument a
    /// no-op, `/metrics` answers 404, no spans), e.g. to measure their cost.
    pub telemetry_enabled: bool,
    /// How long in-flight work may take to finish after SIGTERM.
    pub shutdown_grace: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("kafka_bootstrap", &self.kafka_bootstrap)
            .field("kafka_security_protocol", &self.kafka_security_protocol)
            .field("kafka_sasl_mechanism", &self.kafka_sasl_mechanism)
            .field("topic_events", &self.topic_events)
            .field("group_prefix", &self.group_prefix)
            .field("tokens", &"****")
            .field("master_key", &"****")
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            kafka_bootstrap: "127.0.0.1:9092".into(),
            kafka_properties: String::new(),
            kafka_security_protocol: "PLAINTEXT".into(),
            kafka_sasl_mechanism: String::new(),
            kafka_sasl_username: String::new(),
            kafka_sasl_password_file: String::new(),
            kafka_sasl_password_env: String::new(),
            kafka_ssl_ca_file: String::new(),
            kafka_ssl_certificate_file: String::new(),
            kafka_ssl_key_file: String::new(),
            kafka_ssl_key_password_file: String::new(),
            kafka_oauth_token_endpoint: String::new(),
            kafka_oauth_client_id: String::new(),
            kafka_oauth_client_secret_file: String::new(),
            kafka_oauth_client_secret_env: String::new(),
            kafka_oauth_scope: String::new(),
            topic_subscriptions: "hookline.subscriptions".into(),
            topic_secrets: "hookline.secrets".into(),
            topic_events: "hookline.events".into(),
            topic_balances: "hookline.balances".into(),
            topic_extracts: "hookline.extracts".into(),
            topic_deliveries: "hookline.deliveries".into(),
            topic_attempts: "hookline.attempts".into(),
            topic_dead_letters: "hookline.dead-letters".into(),
            topic_quarantine: "hookline.quarantine".into(),
            group_prefix: "hookline".into(),
            router_instance: String::new(),
            create_topics: false,
            topic_partitions: 4,
            topic_replication: 1,
            topic_min_insync_replicas: 1,
            api_listen: addr(8080),
            extracts_listen: addr(8081),
            dead_letters_listen: addr(8082),
            router_listen: addr(8083),
            worker_listen: addr(8084),
            tokens: String::new(),
            tokens_file: String::new(),
            master_key: String::new(),
            master_key_id: "k1".into(),
            topic_claims: "hookline.claims".into(),
            topic_event_types: "hookline.event-types".into(),
            topic_applications: "hookline.applications".into(),
            topic_messages: "hookline.messages".into(),
            svix_message_retention: "7d".into(),
            topic_subscription_commands: "hookline.subscription-commands".into(),
            api_body_limit: 64 * 1024,
            secret_rotation_overlap: "24h".into(),
            retry_schedule: "0s,5s,5m,30m,2h,5h,10h,10h".into(),
            retry_jitter: 0.1,
            http_timeout: "15s".into(),
            example_wait: "5s".into(),
            operations_url: String::new(),
            http_connect_timeout: "5s".into(),
            response_body_limit: 64 * 1024,
            worker_concurrency: 256,
            subscription_in_flight: 32,
            subscription_buffer: 1000,
            worker_buffer: 20_000,
            retry_in_memory_max: "10s".into(),
            auto_disable_after: "5days".into(),
            worker_group_protocol: "consumer".into(),
            topic_retry_lane: "hookline.retry-lane".into(),
            topic_parked: "hookline.parked".into(),
            topic_replays: "hookline.replays".into(),
            ops_index_dir: ".hookline/ops-index".into(),
            ops_index_cache_mb: 32,
            egress_allow: String::new(),
            egress_dns: true,
            user_agent: concat!("Hookline/", env!("CARGO_PKG_VERSION")).into(),
            otlp_endpoint: String::new(),
            trace_sample_ratio: 1.0,
            log_format: "json".into(),
            log_level: "info".into(),
            telemetry_enabled: true,
            shutdown_grace: "20s".into(),
        }
    }
}

fn duration(field: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| invalid(field, format!("{text:?}: {e}")))
}

impl Config {
    /// Defaults, then the file named by `HOOKLINE_CONFIG` (if any), then the environment.
    pub fn load() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Ok(path) = std::env::var("HOOKLINE_CONFIG") {
            if !std::path::Path::new(&path).is_file() {
                return Err(invalid("config", format!("file {path:?} does not exist")));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(Env::prefixed("HOOKLINE_").ignore(&["config"]))
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka_bootstrap.trim().is_empty() {
            return Err(invalid("kafka_bootstrap", "must not be empty"));
        }
        self.kafka_extra_properties()?;
        self.validate_kafka_security()?;
        if self.retry_delays()?.is_empty() {
            return Err(invalid(
                "retry_schedule",
                "needs at least one entry (the first attempt)",
            ));
        }
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            return Err(invalid("retry_jitter", "must be between 0 and 1"));
        }
        self.http_timeout()?;
        self.example_wait()?;
        self.operations_url()?;
        self.svix_message_retention()?;
        self.http_connect_timeout()?;
        self.egress_allow()?;
        self.shutdown_grace()?;
        for (field, value) in [
            ("worker_concurrency", self.worker_concurrency),
            ("subscription_in_flight", self.subscription_in_flight),
            ("subscription_buffer", self.subscription_buffer),
            ("worker_buffer", self.worker_buffer),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        self.retry_in_memory_max()?;
        self.auto_disable_after()?;
        if !matches!(self.worker_group_protocol.as_str(), "consumer" | "classic") {
            return Err(invalid(
                "worker_group_protocol",
                format!(
                    "{:?}: expected consumer or classic",
                    self.worker_group_protocol
                ),
            ));
        }
        self.secret_rotation_overlap()?;
        if self.ops_index_dir.trim().is_empty() {
            return Err(invalid("ops_index_dir", "must not be empty"));
        }
        if !(4..=4096).contains(&self.ops_index_cache_mb) {
            return Err(invalid("ops_index_cache_mb", "must be 4-4096 (MiB)"));
        }
        if self.api_body_limit < 1024 {
            return Err(invalid("api_body_limit", "must be at least 1024 bytes"));
        }
        if !self
            .router_instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                "router_instance",
                "letters, digits, `.`, `_` and `-` only",
            ));
        }
        let otlp = self.otlp_endpoint.trim();
        if !otlp.is_empty() && !otlp.starts_with("http://") && !otlp.starts_with("https://") {
            return Err(invalid(
                "otlp_endpoint",
                format!("{otlp:?}: expected an http:// or https:// URL (OTLP over HTTP, protobuf)"),
            ));
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return Err(invalid("trace_sample_ratio", "must be between 0 and 1"));
        }
        if !matches!(self.log_format.as_str(), "json" | "pretty") {
            return Err(invalid("log_format", "must be `json` or `pretty`"));
        }
        if self.topic_partitions < 1 || self.topic_replication < 1 {
            return Err(invalid(
                "topic_partitions",
                "partitions and replication must be >= 1",
            ));
        }
        if self.topic_min_insync_replicas < 1 {
            return Err(invalid("topic_min_insync_replicas", "must be at least 1"));
        }
        if self.topic_min_insync_replicas > self.topic_replication {
            return Err(invalid(
                "topic_min_insync_replicas",
                format!(
                    "{} is more than topic_replication ({}): no write could ever be acknowledged",
                    self.topic_min_insync_replicas, self.topic_replication
                ),
            ));
        }
        Ok(())
    }

    pub fn kafka_extra_properties(&self) -> Result<Vec<(String, String)>, ConfigError> {
        self.kafka_properties
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    // Not the text itself: it may be a mistyped secret.
                    invalid("kafka_properties", "an entry is not key=value")
                })?;
                let k = k.trim();
                if kafka_security::OWNED_PROPERTIES.contains(&k) {
                    return Err(invalid(
                        "kafka_properties",
                        format!(
                            "{k} is set by the kafka_security_protocol, kafka_sasl_*, \
                             kafka_ssl_* and kafka_oauth_* keys, not here"
                        ),
                    ));
                }
                Ok((k.to_owned(), v.trim().to_owned()))
            })
            .collect()
    }

    pub fn retry_delays(&self) -> Result<Vec<Duration>, ConfigError> {
        self.retry_schedule
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| duration("retry_schedule", s))
            .collect()
    }

    pub fn svix_message_retention(&self) -> Result<Duration, ConfigError> {
        duration("svix_message_retention", &self.svix_message_retention)
    }

    /// The operations API's base URL (`operations_url`), without a trailing `/`.
    pub fn operations_url(&self) -> Result<String, ConfigError> {
        if self.operations_url.is_empty() {
            let mut addr = self.dead_letters_listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            return Ok(format!("http://{addr}"));
        }
        let url = url::Url::parse(&self.operations_url)
            .map_err(|e| invalid("operations_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(
                "operations_url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        Ok(self.operations_url.trim_end_matches('/').to_owned())
    }

    pub fn example_wait(&self) -> Result<Duration, ConfigError> {
        duration("example_wait", &self.example_wait)
    }

    pub fn http_timeout(&self) -> Result<Duration, ConfigError> {
        duration("http_timeout", &self.http_timeout)
    }

    pub fn http_connect_timeout(&self) -> Result<Duration, ConfigError> {
        duration("http_connect_timeout", &self.http_connect_timeout)
    }

    pub fn retry_in_memory_max(&self) -> Result<Duration, ConfigError> {
        duration("retry_in_memory_max", &self.retry_in_memory_max)
    }

    /// `None`: never.
    pub fn auto_disable_after(&self) -> Result<Option<Duration>, ConfigError> {
        duration("auto_disable_after", &self.auto_disable_after)
            .map(|d| (!d.is_zero()).then_some(d))
    }

    pub fn secret_rotation_overlap(&self) -> Result<Duration, ConfigError> {
        duration("secret_rotation_overlap", &self.secret_rotation_overlap)
    }

    /// The egress allow-list; a bare address is a single-host network.
    pub fn egress_allow(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.egress_allow
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| invalid("egress_allow", format!("{s:?} is not a CIDR or address")))
            })
            .collect()
    }

    pub fn shutdown_grace(&self) -> Result<Duration, ConfigError> {
        duration("shutdown_grace", &self.shutdown_grace)
    }

    /// Every topic with whether it is compacted.
    pub fn topics(&self) -> Vec<(&str, bool)> {
        vec![
            (&self.topic_subscriptions, true),
            (&self.topic_secrets, true),
            (&self.topic_balances, true),
            (&self.topic_extracts, true),
            (&self.topic_events, false),
            (&self.topic_deliveries, false),
            (&self.topic_attempts, false),
            (&self.topic_dead_letters, false),
            (&self.topic_quarantine, false),
            (&self.topic_retry_lane, false),
            (&self.topic_parked, true),
            (&self.topic_claims, true),
            (&self.topic_event_types, true),
            (&self.topic_applications, true),
            (&self.topic_messages, true),
            (&self.topic_subscription_commands, false),
            (&self.topic_replays, true),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKLINE_KAFKA_BOOTSTRAP", "127.0.0.1:1234");
            jail.set_env("HOOKLINE_RETRY_SCHEDULE", "0s, 1s,2m");
            let c = Config::load().unwrap();
            assert_eq!(c.kafka_bootstrap, "127.0.0.1:1234");
            assert_eq!(
                c.retry_delays().unwrap(),
                vec![
                    Duration::ZERO,
                    Duration::from_secs(1),
                    Duration::from_secs(120)
                ]
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_field() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKLINE_RETRY_SCHEDULE", "0s,soon");
            let e = Config::load().unwrap_err().to_string();
            assert!(e.contains("retry_schedule"), "{e}");
            jail.set_env("HOOKLINE_RETRY_SCHEDULE", "1s");
            jail.set_env("HOOKLINE_WORKER_CONCURRENCY", "lots");
            let e = Config::load().unwrap_err().to_string();
            assert!(e.to_lowercase().contains("worker_concurrency"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn operations_url_defaults_to_the_local_operations_listener() {
        let c = Config {
            dead_letters_listen: "0.0.0.0:9082".parse().unwrap(),
            ..Config::default()
        };
        assert_eq!(c.operations_url().unwrap(), "http://127.0.0.1:9082");
        let c = Config {
            operations_url: "http://hookline-dead-letter/".into(),
            ..Config::default()
        };
        assert_eq!(c.operations_url().unwrap(), "http://hookline-dead-letter");
        for bad in ["hookline-dead-letter", "ftp://x", "http://"] {
            let c = Config {
                operations_url: bad.into(),
                ..Config::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("operations_url"), "{bad}: {e}");
        }
    }

    #[test]
    fn egress_allow_takes_cidrs_and_addresses() {
        let c = Config {
            egress_allow: " 127.0.0.1/32, ::1 ,".into(),
            ..Config::default()
        };
        let nets: Vec<String> = c
            .egress_allow()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["127.0.0.1/32", "::1/128"]);
        assert!(Config::default().egress_allow().unwrap().is_empty());
        let bad = Config {
            egress_allow: "127.0.0.1/33".into(),
            ..Config::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("egress_allow"), "{e}");
    }

    #[test]
    fn min_insync_replicas_is_between_one_and_the_replication() {
        let with = |replication, min_insync| Config {
            topic_replication: replication,
            topic_min_insync_replicas: min_insync,
            ..Config::default()
        };
        assert_eq!(Config::default().topic_min_insync_replicas, 1);
        assert!(Config::default().validate().is_ok());
        // Production: three replicas, two of them in sync for a write.
        assert!(with(3, 2).validate().is_ok());
        assert!(with(3, 3).validate().is_ok());
        for (replication, min_insync) in [(3, 0), (1, -1), (1, 2), (3, 4)] {
            let e = with(replication, min_insync)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("topic_min_insync_replicas"),
                "({replication}, {min_insync}): {e}"
            );
        }
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKLINE_TOPIC_REPLICATION", "3");
            jail.set_env("HOOKLINE_TOPIC_MIN_INSYNC_REPLICAS", "2");
            let c = Config::load().unwrap();
            assert_eq!((c.topic_replication, c.topic_min_insync_replicas), (3, 2));
            jail.set_env("HOOKLINE_TOPIC_REPLICATION", "1");
            let e = Config::load().unwrap_err().to_string();
            assert!(e.contains("topic_min_insync_replicas"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn tracing_is_off_unless_an_http_endpoint_is_given() {
        assert_eq!(Config::default().otlp_endpoint, "");
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKLINE_OTLP_ENDPOINT", "http://127.0.0.1:4318");
            jail.set_env("HOOKLINE_TRACE_SAMPLE_RATIO", "0.25");
            let c = Config::load().unwrap();
            assert_eq!(c.otlp_endpoint, "http://127.0.0.1:4318");
            assert_eq!(c.trace_sample_ratio, 0.25);
            jail.set_env("HOOKLINE_OTLP_ENDPOINT", "https://collector.example:4318");
            assert!(Config::load().is_ok(), "https:// is accepted");
            jail.set_env("HOOKLINE_TRACE_SAMPLE_RATIO", "2");
            let e = Config::load().unwrap_err().to_string();
            assert!(e.contains("trace_sample_ratio"), "{e}");
            jail.set_env("HOOKLINE_TRACE_SAMPLE_RATIO", "1");
            jail.set_env("HOOKLINE_OTLP_ENDPOINT", "collector:4317");
            let e = Config::load().unwrap_err().to_string();
            assert!(e.contains("otlp_endpoint"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn file_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "h.toml",
                "topic_events = \"from-file\"\nlog_level = \"debug\"",
            )?;
            jail.set_env("HOOKLINE_CONFIG", "h.toml");
            jail.set_env("HOOKLINE_LOG_LEVEL", "warn");
            let c = Config::load().unwrap();
            assert_eq!(c.topic_events, "from-file");
            assert_eq!(c.log_level, "warn");
            Ok(())
        });
    }
}
