//! `hookline-dead-letter`: serves the dead letters.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hookline_runtime::service_main(
        "dead-letter",
        |c| c.dead_letters_listen,
        hookline_dead_letter::run,
    )
}
