//! Consumer lag from librdkafka's statistics: every group consumer (see
//! [`group_consumer_config`](crate::group_consumer_config)) emits statistics every
//! [`STATS_INTERVAL_MS`](crate::context::STATS_INTERVAL_MS); its context hands them to [`record`], which sets
//! `hookline_consumer_lag{group, topic}` to the records between this member's position and
//! the end (the last stable offset: consumers read committed records only) of the
//! partitions assigned to it.

use hookline_telemetry::metrics::{kv, metrics};
use rdkafka::statistics::Statistics;

/// Separates the group id from the process id in a group consumer's `client.id`.
const CLIENT_ID_SEPARATOR: char = '@';

/// The `client.id` of a member of `group`: the statistics name the client, not its group.
pub(crate) fn client_id(group: &str) -> String {
    format!("{group}{CLIENT_ID_SEPARATOR}{}", std::process::id())
}

/// Records the lag of each topic in `stats` of a group consumer.
pub fn record(stats: &Statistics) {
    let Some((group, _)) = stats.client_id.rsplit_once(CLIENT_ID_SEPARATOR) else {
        return;
    };
    for (topic, t) in &stats.topics {
        let lag: i64 = t
            .partitions
            .values()
            .filter(|p| p.partition >= 0 && p.desired)
            .filter_map(|p| {
                let position = [p.app_offset, p.committed_offset]
                    .into_iter()
                    .find(|&o| o >= 0)?;
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                (end >= 0).then(|| (end - position).max(0))
            })
            .sum();
        metrics().consumer_lag.record(
            lag,
            &[kv("group", group.to_owned()), kv("topic", topic.clone())],
        );
    }
}
