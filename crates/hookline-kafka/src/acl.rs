//! Who may do what on Kafka: one principal per service, and the one table of their ACLs.
//!
//! [`Principal`] names every identity that touches Kafka: the five services, the operator
//! CLI (`hookline topics`) and the outside producer (internal systems publishing events and
//! balance rows). [`grants`] is the table: per principal, the topics it reads, writes or
//! creates, the consumer groups it joins and the transactional ids it uses, computed from the
//! same configuration and the same names (the `GROUP_*` constants, [`view_group`],
//! [`txn_prefix`]) the services use, so the table cannot name a topic or group a service does
//! not use, nor miss one. `hookline acls` renders it as the local broker's ACL file
//! (`deploy/kafka/acls.txt`), Strimzi `KafkaUser` resources
//! (`deploy/strimzi/kafka-users.yaml`) and the README's table; a test keeps the checked-in
//! renderings equal to the table.
//!
//! Decisions: READ and WRITE imply DESCRIBE, so DESCRIBE is never listed apart. Groups are
//! literal names: every consumer, also those that only `assign` (views, readers), has a
//! `group.id` and asks for its coordinator, which needs the group's DESCRIBE (READ gives it).
//! Transactional ids are prefixes (`{group_prefix}.router.` for every router instance, one id
//! per extract or replay run). No principal has a cluster right: topics are created by the
//! CLI with CREATE on each topic (not on the cluster, which would allow any topic), and
//! idempotent producers need no IDEMPOTENT_WRITE since Kafka 2.8 (KIP-679; on an older broker
//! grant it on the cluster to every service that writes).

use std::fmt::Write as _;

use hookline_config::Config;

/// The consumer group of the router (`{group_prefix}.router`).
pub const GROUP_ROUTER: &str = "router";
/// The consumer group of the delivery workers.
pub const GROUP_DELIVERY_WORKER: &str = "delivery-worker";
/// The worker's reader of the retry lane.
pub const GROUP_LANE_READER: &str = "lane-reader";
/// The subscription API's consumer of commands from other services.
pub const GROUP_SUBSCRIPTION_COMMANDS: &str = "subscription-api.commands";
/// The subscription API's reader of attempts (send an example).
pub const GROUP_EXAMPLES: &str = "examples";
/// The operations index's reader.
pub const GROUP_OPS_INDEX: &str = "ops-index";
/// A replay run's reader of deliveries.
pub const GROUP_REPLAY_READER: &str = "replay-reader";
/// The reader of a quarantined record (republish).
pub const GROUP_QUARANTINE_READER: &str = "quarantine-reader";
/// Transactional ids: the router's (`.router.{instance}`), an extract run's, a replay run's.
pub const TXN_ROUTER: &str = "router";
pub const TXN_EXTRACT: &str = "extract";
pub const TXN_REPLAY: &str = "replay";

/// `{group_prefix}.{name}`: a group id.
pub fn group(config: &Config, name: &str) -> String {
    format!("{}.{name}", config.group_prefix)
}

/// The group id of a reader of `topic` that keeps a view of it (commits nothing).
pub fn view_group(config: &Config, topic: &str) -> String {
    format!("{}.view.{topic}", config.group_prefix)
}

/// `{group_prefix}.{kind}.`: the prefix of the transactional ids of `kind`.
pub fn txn_prefix(config: &Config, kind: &str) -> String {
    format!("{}.{kind}.", config.group_prefix)
}

/// Every identity that connects to Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    SubscriptionApi,
    Router,
    DeliveryWorker,
    DeadLetter,
    ExtractProducer,
    /// The operator's `hookline topics` (creating topics).
    Cli,
    /// Systems outside Hookline that publish events and balance rows.
    Producer,
}

impl Principal {
    pub const ALL: [Principal; 7] = [
        Self::SubscriptionApi,
        Self::Router,
        Self::DeliveryWorker,
        Self::DeadLetter,
        Self::ExtractProducer,
        Self::Cli,
        Self::Producer,
    ];

    /// The name `{service}` expands to in the credential keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::SubscriptionApi => "subscription-api",
            Self::Router => "router",
            Self::DeliveryWorker => "delivery-worker",
            Self::DeadLetter => "dead-letter",
            Self::ExtractProducer => "extract-producer",
            Self::Cli => "cli",
            Self::Producer => "producer",
        }
    }

    /// The user name of this principal with the default template `hookline-{service}`.
    pub fn user(self) -> String {
        format!("hookline-{}", self.name())
    }

    fn what(self) -> &'static str {
        match self {
            Self::SubscriptionApi => "subscriptions, secrets and their name claims; examples",
            Self::Router => "events → delivery jobs, in transactions",
            Self::DeliveryWorker => "jobs → attempts, retries, dead letters",
            Self::DeadLetter => "the operations index, replays, quarantine republish",
            Self::ExtractProducer => "balances → extract events, in transactions",
            Self::Cli => "`hookline topics`: creates the topics",
            Self::Producer => "outside systems: events and balance rows",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResourceType {
    Topic,
    Group,
    TransactionalId,
}

impl ResourceType {
    /// Kafka's name (`TOPIC`, `GROUP`, `TRANSACTIONAL_ID`).
    pub fn kafka(self) -> &'static str {
        match self {
            Self::Topic => "TOPIC",
            Self::Group => "GROUP",
            Self::TransactionalId => "TRANSACTIONAL_ID",
        }
    }

    fn strimzi(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Group => "group",
            Self::TransactionalId => "transactionalId",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Read,
    Write,
    Create,
}

impl Operation {
    pub fn kafka(self) -> &'static str {
        match self {
            Self::Read => "READ",
            Self::Write => "WRITE",
            Self::Create => "CREATE",
        }
    }

    fn strimzi(self) -> &'static str {
        match self {
            Self::Read => "Read",
            Self::Write => "Write",
            Self::Create => "Create",
        }
    }
}

/// One resource a principal may use, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub resource: ResourceType,
    pub name: String,
    /// A prefix (Kafka's `PREFIXED` pattern) rather than one name.
    pub prefixed: bool,
    pub operations: Vec<Operation>,
}

#[derive(Default)]
struct Grants(Vec<Grant>);

impl Grants {
    fn add(&mut self, resource: ResourceType, name: &str, prefixed: bool, op: Operation) {
        match self
            .0
            .iter_mut()
            .find(|g| g.resource == resource && g.name == name && g.prefixed == prefixed)
        {
            Some(g) if g.operations.contains(&op) => {}
            Some(g) => {
                g.operations.push(op);
                g.operations.sort();
            }
            None => self.0.push(Grant {
                resource,
                name: name.to_owned(),
                prefixed,
                operations: vec![op],
            }),
        }
    }
    fn read(&mut self, topic: &str) -> &mut Self {
        self.add(ResourceType::Topic, topic, false, Operation::Read);
        self
    }
    fn write(&mut self, topic: &str) -> &mut Self {
        self.add(ResourceType::Topic, topic, false, Operation::Write);
        self
    }
    /// A view of `topic`: READ on it and on its view group.
    fn view(&mut self, config: &Config, topic: &str) -> &mut Self {
        self.read(topic);
        self.group(&view_group(config, topic))
    }
    fn group(&mut self, id: &str) -> &mut Self {
        self.add(ResourceType::Group, id, false, Operation::Read);
        self
    }
    fn txn(&mut self, prefix: &str) -> &mut Self {
        self.add(
            ResourceType::TransactionalId,
            prefix,
            true,
            Operation::Write,
        );
        self
    }
    fn sorted(mut self) -> Vec<Grant> {
        self.0
            .sort_by(|a, b| (a.resource, &a.name).cmp(&(b.resource, &b.name)));
        self.0
    }
}

/// What `principal` may do with `config`'s topic names and group prefix: the table.
pub fn grants(config: &Config, principal: Principal) -> Vec<Grant> {
    let c = config;
    let mut g = Grants::default();
    match principal {
        Principal::SubscriptionApi => {
            for topic in [
                &c.topic_subscriptions,
                &c.topic_secrets,
                &c.topic_claims,
                &c.topic_event_types,
                &c.topic_applications, // the Svix face
                &c.topic_messages,     // the Svix face's eventIds and message list
            ] {
                g.view(c, topic).write(topic);
            }
            g.write(&c.topic_events) // operational events
                .write(&c.topic_deliveries) // send an example
                .read(&c.topic_attempts)
                .group(&group(c, GROUP_EXAMPLES))
                .read(&c.topic_subscription_commands)
                .group(&group(c, GROUP_SUBSCRIPTION_COMMANDS));
        }
        Principal::Router => {
            g.read(&c.topic_events)
                .group(&group(c, GROUP_ROUTER))
                .view(c, &c.topic_subscriptions)
                .write(&c.topic_deliveries)
                .write(&c.topic_quarantine)
                .txn(&txn_prefix(c, TXN_ROUTER));
        }
        Principal::DeliveryWorker => {
            g.read(&c.topic_deliveries)
                .group(&group(c, GROUP_DELIVERY_WORKER))
                .view(c, &c.topic_subscriptions)
                .view(c, &c.topic_secrets)
                .view(c, &c.topic_parked)
                .write(&c.topic_parked)
                .read(&c.topic_retry_lane)
                .write(&c.topic_retry_lane)
                .group(&group(c, GROUP_LANE_READER))
                .write(&c.topic_attempts)
                .write(&c.topic_dead_letters)
                .write(&c.topic_events) // operational events
                .write(&c.topic_subscription_commands);
        }
        Principal::DeadLetter => {
            g.view(c, &c.topic_subscriptions)
                .view(c, &c.topic_replays)
                .write(&c.topic_replays)
                .read(&c.topic_deliveries)
                .read(&c.topic_attempts)
                .read(&c.topic_dead_letters)
                .read(&c.topic_quarantine)
                .group(&group(c, GROUP_OPS_INDEX))
                .group(&group(c, GROUP_REPLAY_READER))
                .group(&group(c, GROUP_QUARANTINE_READER))
                .write(&c.topic_deliveries) // replays
                .write(&c.topic_events) // quarantined events republished
                .txn(&txn_prefix(c, TXN_REPLAY));
        }
        Principal::ExtractProducer => {
            g.view(c, &c.topic_balances)
                .view(c, &c.topic_extracts)
                .write(&c.topic_extracts)
                .write(&c.topic_events)
                .txn(&txn_prefix(c, TXN_EXTRACT));
        }
        Principal::Cli => {
            for (topic, _) in c.topics() {
                g.add(ResourceType::Topic, topic, false, Operation::Create);
            }
        }
        Principal::Producer => {
            g.write(&c.topic_events).write(&c.topic_balances);
        }
    }
    g.sorted()
}

/// The ACL file the local secured broker gets (`scripts/kafka/Acls.java` applies it): one
/// `User:NAME RESOURCE_TYPE PATTERN NAME OPERATION` a line, `#` comments.
pub fn render_acl_file(config: &Config) -> String {
    let mut out = String::from(
        "# Generated by `hookline acls` from hookline_kafka::acl (crates/hookline-kafka/src/acl.rs).\n\
         # Do not edit: a test compares it with the table. Applied to the local secured broker by\n\
         # scripts/kafka.sh (`make acls`): principal, resource type, pattern, name, operation.\n",
    );
    for p in Principal::ALL {
        let _ = writeln!(out, "# {}: {}", p.user(), p.what());
        for g in grants(config, p) {
            for op in &g.operations {
                let _ = writeln!(
                    out,
                    "User:{} {} {} {} {}",
                    p.user(),
                    g.resource.kafka(),
                    if g.prefixed { "PREFIXED" } else { "LITERAL" },
                    g.name,
                    op.kafka()
                );
            }
        }
    }
    out
}

/// Strimzi `KafkaUser` resources, one per principal: SCRAM-SHA-512 authentication (Strimzi
/// makes a Secret with the password) and simple authorization with the table's ACLs.
pub fn render_strimzi_users(config: &Config) -> String {
    let mut out = String::from(
        "# Strimzi KafkaUser resources, one per Hookline principal, generated by `hookline acls`\n\
         # from hookline_kafka::acl (do not edit: a test compares them with the table). Apply\n\
         # them in the namespace the User Operator watches, set `strimzi.io/cluster` to your\n\
         # Kafka resource's name; each user's Secret (same name) holds its `password`. For\n\
         # mutual TLS, set `authentication.type: tls` (the Secret then holds user.crt and\n\
         # user.key). See deploy/README.md.\n",
    );
    for p in Principal::ALL {
        let _ = write!(
            out,
            "---\n# {}\napiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaUser\nmetadata:\n  name: {}\n  labels:\n    strimzi.io/cluster: my-cluster\n    app.kubernetes.io/part-of: hookline\nspec:\n  authentication:\n    type: scram-sha-512\n  authorization:\n    type: simple\n    acls:\n",
            p.what(),
            p.user()
        );
        for g in grants(config, p) {
            let ops: Vec<&str> = g.operations.iter().map(|o| o.strimzi()).collect();
            let _ = write!(
                out,
                "      - resource:\n          type: {}\n          name: {}\n          patternType: {}\n        operations: [{}]\n        host: \"*\"\n",
                g.resource.strimzi(),
                g.name,
                if g.prefixed { "prefix" } else { "literal" },
                ops.join(", ")
            );
        }
    }
    out
}

/// The README's table: one row per principal.
pub fn render_markdown(config: &Config) -> String {
    let mut out = String::from(
        "| principal | what | topics | groups | transactional ids |\n| --- | --- | --- | --- | --- |\n",
    );
    for p in Principal::ALL {
        let grants = grants(config, p);
        let list = |kind: ResourceType| {
            let items: Vec<String> = grants
                .iter()
                .filter(|g| g.resource == kind)
                .map(|g| {
                    let ops: Vec<&str> = g.operations.iter().map(|o| o.kafka()).collect();
                    let star = if g.prefixed { "*" } else { "" };
                    if kind == ResourceType::Topic {
                        format!("`{}{star}` {}", g.name, ops.join("+"))
                    } else {
                        format!("`{}{star}`", g.name)
                    }
                })
                .collect();
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(", ")
            }
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            p.user(),
            p.what(),
            list(ResourceType::Topic),
            list(ResourceType::Group),
            list(ResourceType::TransactionalId)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outside_producer_writes_events_and_balances_only() {
        let c = Config::default();
        let g = grants(&c, Principal::Producer);
        assert_eq!(g.len(), 2);
        assert!(g.iter().all(|g| g.resource == ResourceType::Topic
            && g.operations == [Operation::Write]
            && (g.name == c.topic_events || g.name == c.topic_balances)));
    }

    #[test]
    fn only_the_cli_creates_and_nobody_has_cluster_rights() {
        let c = Config::default();
        for p in Principal::ALL {
            let creates = grants(&c, p)
                .iter()
                .any(|g| g.operations.contains(&Operation::Create));
            assert_eq!(creates, p == Principal::Cli, "{p:?}");
        }
        assert_eq!(grants(&c, Principal::Cli).len(), c.topics().len());
    }

    #[test]
    fn the_worker_may_not_write_subscriptions() {
        let c = Config::default();
        let g = grants(&c, Principal::DeliveryWorker);
        let subs = g.iter().find(|g| g.name == c.topic_subscriptions).unwrap();
        assert_eq!(subs.operations, [Operation::Read]);
    }

    #[test]
    fn renderings_name_every_principal() {
        let c = Config::default();
        let file = render_acl_file(&c);
        let yaml = render_strimzi_users(&c);
        let md = render_markdown(&c);
        for p in Principal::ALL {
            assert!(file.contains(&format!("User:{} ", p.user())));
            assert!(yaml.contains(&format!("name: {}\n", p.user())));
            assert!(md.contains(&format!("`{}`", p.user())));
        }
    }
}
