//! End-to-end test suites live under `e2e/`; this library is empty.
#![forbid(unsafe_code)]
