//! `hookline-subscription-api`: serves the subscription and secret APIs.
#![forbid(unsafe_code)]

/// mimalloc rather than glibc's malloc: a request allocates and frees many small buffers on
/// whichever worker thread runs it (JSON, protobuf, Kafka records), and under load glibc's
/// arenas spent about a sixth of the process's CPU in malloc and free (perf, issue 25).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hookline_runtime::service_main(
        "subscription-api",
        |c| c.api_listen,
        hookline_subscription_api::run,
    )
}
