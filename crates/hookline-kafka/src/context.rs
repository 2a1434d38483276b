//! The client context every Hookline Kafka client runs with.
//!
//! A broker outage is weather, not an operator's emergency: librdkafka reconnects by itself,
//! so connection failures are logged at DEBUG, and "all brokers down" at WARN at most once
//! per [`OUTAGE_LOG_EVERY_MS`] for the whole process. [`brokers_reachable`] tells readiness
//! probes whether the brokers are away: from the first "all brokers down" report of any
//! client of the process until a statistics report (see [`STATS_INTERVAL_MS`]) emitted after
//! it shows a client connected to a broker again.
//!
//! A broker that refuses the process's credentials or whose certificate is not trusted is
//! not weather: someone must fix a Secret or a CA bundle. The first such refusal is logged
//! once at ERROR (librdkafka retries, and other clients of the process report it too: those
//! stay at DEBUG), and [`connection_refused`] gives readiness a one-line reason until a
//! statistics report emitted after it shows a client connected again (logged at INFO).
//!
//! A broker that accepts the principal but whose ACLs do not let it do something it must
//! (read a topic it keeps a view of) is not weather either: the first denial of each thing is
//! logged at ERROR and [`not_authorized`] gives readiness the line (`kafka: not authorized to
//! read topic T (as user U)`) until the thing is allowed ([`note_allowed`], logged at INFO).

use std::sync::atomic::{AtomicI64, Ordering};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// How often an ongoing outage is logged.
pub const OUTAGE_LOG_EVERY_MS: i64 = 30_000;
/// How often the process's producer and its group consumers report statistics (which
/// carry consumer lag and each broker's connection state).
pub const STATS_INTERVAL_MS: u32 = 5_000;

static LAST_ALL_DOWN_MS: AtomicI64 = AtomicI64::new(0);
/// Emission time (ms) of the latest statistics report that showed a broker connected.
static LAST_CONNECTED_MS: AtomicI64 = AtomicI64::new(0);
static LAST_LOGGED_MS: AtomicI64 = AtomicI64::new(0);
/// Since when (ms) the brokers refuse this process's connections, and why (one line).
static REFUSED: std::sync::Mutex<Option<(i64, &'static str)>> = std::sync::Mutex::new(None);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// False from the moment some client of this process found every broker down until a
/// statistics report emitted after that moment shows a connected broker. (librdkafka reports
/// "all brokers down" once per outage, not again while it keeps reconnecting, so the outage
/// lasts until a client is seen connected again.)
pub fn brokers_reachable() -> bool {
    let down = LAST_ALL_DOWN_MS.load(Ordering::Relaxed);
    down == 0 || LAST_CONNECTED_MS.load(Ordering::Relaxed) > down
}

/// Notes the connection state in one client's statistics: a report emitted (its wall-clock
/// `time`, whole seconds) after the last "all brokers down" with a broker `UP` ends the
/// outage. A report of the second the outage began proves nothing and is ignored.
pub fn note_statistics(stats: &rdkafka::Statistics) {
    if stats.brokers.values().any(|b| b.state == "UP") {
        let at = stats.time * 1000;
        LAST_CONNECTED_MS.fetch_max(at, Ordering::Relaxed);
        let mut refused = REFUSED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, reason)) = *refused
            && at > since
        {
            *refused = None;
            tracing::info!(
                was = reason,
                "kafka: the brokers accept this client's connection again"
            );
        }
    }
}

/// Why the brokers refuse this process's connections (one line, no secret: e.g. `kafka:
/// authentication failed (SASL)`), from the first refusal until a client is seen connected
/// after it.
pub fn connection_refused() -> Option<&'static str> {
    REFUSED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .map(|(_, reason)| reason)
}

/// The one-line reason of an error that means the broker refused the connection: bad
/// credentials or a failed TLS handshake. `None` for any other error. `detail` is
/// librdkafka's text with the error (a TLS failure's cause is only there: the error itself
/// reads `SSL (Local: SSL error)`).
pub fn refusal_reason(error: &KafkaError, detail: &str) -> Option<&'static str> {
    let text = format!("{error} {detail}");
    match error.rdkafka_error_code()? {
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => Some(
            if text.contains("SSL handshake") || text.contains("certificate") {
                tls_reason(&text)
            } else {
                "kafka: authentication failed (SASL)"
            },
        ),
        RDKafkaErrorCode::SSL => Some(tls_reason(&text)),
        _ => None,
    }
}

fn tls_reason(text: &str) -> &'static str {
    if text.contains("certificate verify failed") || text.contains("could not be verified") {
        "kafka: TLS handshake failed (broker certificate not trusted)"
    } else {
        "kafka: TLS handshake failed"
    }
}

/// Records that the brokers refused a connection for `reason`; the first refusal of an
/// episode is logged at ERROR with librdkafka's detail, the others of the episode at DEBUG.
/// A refusal reported while a client was seen connected within the last two statistics
/// intervals is taken for a late report of one made before (clients hand on their errors
/// when next polled, which may be after the fix took effect) and only logged at DEBUG; a
/// refusal that lasts is reported again by librdkafka and counts then.
pub fn note_refused(reason: &'static str, error: &KafkaError, detail: &str) {
    let connected_lately =
        now_ms() - LAST_CONNECTED_MS.load(Ordering::Relaxed) <= 2 * i64::from(STATS_INTERVAL_MS);
    let mut refused = REFUSED.lock().unwrap_or_else(|p| p.into_inner());
    match *refused {
        Some(_) => tracing::debug!(%error, detail, "{reason}"),
        None if connected_lately => {
            tracing::debug!(%error, detail, "{reason} (while connected: an earlier refusal)")
        }
        None => {
            *refused = Some((now_ms(), reason));
            tracing::error!(
                %error,
                detail,
                "{reason}; not ready until the brokers accept this client (clients keep retrying)"
            );
        }
    }
}

/// What the brokers' ACLs deny this process, one line each, oldest first.
static DENIED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records that the brokers' ACLs deny `what` (one line, no secret); logged at ERROR the
/// first time, until it is allowed again.
pub fn note_denied(what: String) {
    let mut denied = DENIED.lock().unwrap_or_else(|p| p.into_inner());
    if !denied.contains(&what) {
        tracing::error!("{what}; not ready until an ACL allows it");
        denied.push(what);
    }
}

/// Records that `what`, denied before, is allowed now.
pub fn note_allowed(what: &str) {
    let mut denied = DENIED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = denied.iter().position(|d| d == what) {
        denied.remove(i);
        tracing::info!(was = what, "kafka: allowed now");
    }
}

/// The first thing the brokers' ACLs deny this process, if any.
pub fn not_authorized() -> Option<String> {
    DENIED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .first()
        .cloned()
}

/// Whether `code` is a refusal by the brokers' ACLs.
pub fn is_denial(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
    )
}

/// `(as user U)` for a SASL principal with a user name, else nothing.
pub fn as_user(config: &hookline_config::Config) -> String {
    let user = config.kafka_sasl_username.trim();
    if user.is_empty() {
        String::new()
    } else {
        format!(" (as user {user})")
    }
}

/// Whether some client of this process found every broker down within the last `ms`.
pub fn outage_within(ms: i64) -> bool {
    let last = LAST_ALL_DOWN_MS.load(Ordering::Relaxed);
    last > 0 && now_ms() - last <= ms
}

/// Records an "all brokers down" report; logs it if the outage was not logged lately.
pub fn note_all_brokers_down(reason: &str) {
    let now = now_ms();
    LAST_ALL_DOWN_MS.store(now, Ordering::Relaxed);
    let last = LAST_LOGGED_MS.load(Ordering::Relaxed);
    // Brokers that refuse the credentials are "down" too; the refusal was logged already.
    if connection_refused().is_some() {
        tracing::debug!(reason, "Kafka brokers refuse this client's connections");
        return;
    }
    if now - last >= OUTAGE_LOG_EVERY_MS
        && LAST_LOGGED_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            reason,
            "Kafka brokers unreachable; clients keep reconnecting"
        );
    }
}

/// Classifies a client error the way [`KafkaContext`] logs it.
pub fn log_client_error(error: &KafkaError, reason: &str) {
    if let Some(refusal) = refusal_reason(error, reason) {
        note_refused(refusal, error, reason);
        return;
    }
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::AllBrokersDown) => note_all_brokers_down(reason),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::PartitionEOF,
        ) => tracing::debug!(%error, reason, "kafka client"),
        _ => tracing::warn!(%error, reason, "kafka client"),
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaContext;

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // Connection failures (facility FAIL) come and go with the brokers.
        let quiet = matches!(fac, "FAIL" | "CONNECT" | "DISCONNECT");
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning
                if !quiet =>
            {
                tracing::warn!(target: "librdkafka", fac, "{log_message}")
            }
            _ => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        note_statistics(&statistics);
        crate::lag::record(&statistics);
    }
}

impl ConsumerContext for KafkaContext {}

/// Groups in which a consumer of this process has had its first assignment (the consumer
/// contexts note it in their rebalance callback); readiness waits for it.
static ASSIGNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Notes that a consumer of `group` in this process received an assignment.
pub fn note_assigned(group: &str) {
    let mut groups = ASSIGNED.lock().unwrap_or_else(|p| p.into_inner());
    if !groups.iter().any(|g| g == group) {
        groups.push(group.to_owned());
    }
}

/// Whether a consumer of `group` in this process has received an assignment (maybe an empty
/// one: a member beyond the partition count is still a member).
pub fn assigned(group: &str) -> bool {
    let groups = ASSIGNED.lock().unwrap_or_else(|p| p.into_inner());
    groups.iter().any(|g| g == group)
}

/// The group id of `{group_prefix}.{name}` consumers.
pub fn group_id(config: &hookline_config::Config, name: &str) -> String {
    crate::acl::group(config, name)
}
