//! The HTTP client of the OTLP exporters (traces and metrics), for `http://` and `https://`
//! collectors alike. TLS is rustls with the ring provider; it trusts the system's roots and,
//! when the standard `OTEL_EXPORTER_OTLP_CERTIFICATE` names a PEM file, the certificates in
//! it (a private CA, or a collector's self-signed certificate).

use std::time::Duration;

/// The standard variable naming a PEM file of certificates to trust for the collector.
pub const CA_FILE_VAR: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";

/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporters' client, trusting the certificates of [`CA_FILE_VAR`] too.
pub(crate) fn client() -> Result<reqwest_otlp::blocking::Client, String> {
    let extra = match std::env::var(CA_FILE_VAR)
        .ok()
        .filter(|p| !p.trim().is_empty())
    {
        None => Vec::new(),
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| format!("{CA_FILE_VAR}={path}: {e}"))?;
            reqwest_otlp::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{CA_FILE_VAR}={path}: {e}"))?
        }
    };
    // reqwest takes the process's default provider; ring is the one this workspace builds.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The blocking client runs a runtime of its own: it is built outside any async context.
    std::thread::spawn(move || {
        let mut builder = reqwest_otlp::blocking::Client::builder().timeout(EXPORT_TIMEOUT);
        for cert in extra {
            builder = builder.add_root_certificate(cert);
        }
        builder
            .build()
            .map_err(|e| format!("OTLP HTTP client: {e}"))
    })
    .join()
    .map_err(|_| "OTLP HTTP client: building it panicked".to_owned())?
}
