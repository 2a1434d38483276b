//! `hookline-subscription-api`: serves the subscription and secret APIs.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hookline_runtime::service_main(
        "subscription-api",
        |c| c.api_listen,
        hookline_subscription_api::run,
    )
}
