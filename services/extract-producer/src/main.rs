//! `hookline-extract-producer`: serves extract configurations and runs them.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hookline_runtime::service_main(
        "extract-producer",
        |c| c.extracts_listen,
        hookline_extract_producer::run,
    )
}
