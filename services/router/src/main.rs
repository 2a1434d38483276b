//! `hookline-router`: routes events to delivery jobs.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hookline_runtime::service_main("router", |c| c.router_listen, hookline_router::run)
}
