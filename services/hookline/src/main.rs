//! `hookline`: every service in one process (`hookline all`), topic provisioning
//! (`hookline topics`), the ACL table's renderings (`hookline acls`), the guided demo (`hookline demo`), and the operator's commands
//! (`hookline deliveries|recover|replays`).
#![forbid(unsafe_code)]

mod acls;
mod demo;
mod ops;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hookline_config::Config;
use hookline_runtime::CancellationToken;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(version, about = "Hookline: webhook delivery on Apache Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all five services in this process (development).
    All,
    /// Create every missing topic with its cleanup policy, then exit (as principal `cli`).
    Topics,
    /// The Kafka principals and their ACLs: the local broker's file, Strimzi KafkaUsers, the
    /// README table.
    Acls(acls::Args),
    /// The guided demo against a running stack described by `.hookline/stack.env`.
    Demo(demo::Args),
    /// What happened to a delivery, and sending it again.
    Deliveries {
        #[command(flatten)]
        target: ops::Target,
        #[command(subcommand)]
        command: ops::Deliveries,
    },
    /// Send again everything of a subscription that failed since a time, following the run.
    Recover {
        #[command(flatten)]
        target: ops::Target,
        #[command(flatten)]
        args: ops::RecoverArgs,
    },
    /// Replay runs.
    Replays {
        #[command(flatten)]
        target: ops::Target,
        #[command(subcommand)]
        command: ops::Replays,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `all` and `topics` read the configuration and start telemetry before the runtime; the
    // spans still buffered are exported after it stopped. In one process every service
    // reports as `service.name` hookline; each span names its part (`hookline.service`).
    let config = match cli.command {
        Command::All | Command::Topics => match Config::load() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("hookline: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let _telemetry = config
        .as_ref()
        .map(|c| hookline_runtime::init_telemetry(c, "hookline"));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hookline: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Deliveries { target, command } => ops::deliveries(target, command).await,
            Command::Recover { target, args } => ops::recover(target, args).await,
            Command::Replays { target, command } => ops::replays(target, command).await,
            Command::Acls(args) => acls::run(args),
            Command::Topics => {
                let config = config
                    .context("configuration")?
                    .for_service(hookline_kafka::acl::Principal::Cli.name())?;
                hookline_kafka::ensure_topics(&config)
                    .await
                    .context("creating topics")?;
                println!("topics ready on {}", config.kafka_bootstrap);
                Ok(())
            }
            Command::All => run_all(config.context("configuration")?).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Every service on its own listener, one shutdown for all; the first to fail stops the rest.
async fn run_all(config: Config) -> anyhow::Result<()> {
    if config.create_topics {
        let cli = config.for_service(hookline_kafka::acl::Principal::Cli.name())?;
        hookline_kafka::ensure_topics(&cli)
            .await
            .context("creating topics")?;
    }
    let shutdown = hookline_runtime::shutdown_on_signals();
    let mut set = tokio::task::JoinSet::new();
    let c = || config.clone();
    let s = || shutdown.clone();
    let api = bind(config.api_listen).await?;
    let extracts = bind(config.extracts_listen).await?;
    let dead = bind(config.dead_letters_listen).await?;
    let router = bind(config.router_listen).await?;
    let worker = bind(config.worker_listen).await?;
    set.spawn(named(
        "subscription-api",
        hookline_subscription_api::run(c(), api, s()),
    ));
    set.spawn(named(
        "extract-producer",
        hookline_extract_producer::run(c(), extracts, s()),
    ));
    set.spawn(named(
        "dead-letter",
        hookline_dead_letter::run(c(), dead, s()),
    ));
    set.spawn(named("router", hookline_router::run(c(), router, s())));
    set.spawn(named(
        "delivery-worker",
        hookline_delivery_worker::run(c(), worker, s()),
    ));
    tracing::info!("all services started");
    let mut first_error = None;
    while let Some(done) = set.join_next().await {
        let outcome = done.context("service task panicked").and_then(|r| r);
        if let Err(e) = outcome {
            tracing::error!(error = %format!("{e:#}"), "service failed; stopping all");
            first_error.get_or_insert(e);
        }
        stop_all(&shutdown);
    }
    first_error.map_or(Ok(()), Err)
}

fn stop_all(shutdown: &CancellationToken) {
    shutdown.cancel();
}

async fn named<E: std::fmt::Display>(
    name: &'static str,
    f: impl std::future::Future<Output = Result<(), E>>,
) -> anyhow::Result<()> {
    f.await.map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
        for args in [
            &[
                "hookline",
                "recover",
                "sub-1",
                "--since",
                "2026-12-01T00:00:00Z",
            ][..],
            &[
                "hookline",
                "deliveries",
                "attempts",
                "d-1",
                "--env",
                "x.env",
            ],
            &["hookline", "replays", "show", "r-1", "--wait"],
        ] {
            if let Err(e) = <super::Cli as clap::Parser>::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
    }
}
