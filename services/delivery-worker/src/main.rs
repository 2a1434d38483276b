//! `hookline-delivery-worker`: delivers jobs to subscribers' endpoints.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hookline_runtime::service_main(
        "delivery-worker",
        |c| c.worker_listen,
        hookline_delivery_worker::run,
    )
}
