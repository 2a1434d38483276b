//! One Kafka principal per service: the credential keys may hold a `{service}` template,
//! expanded when a service's clients are made ([`Config::for_service`]).
//!
//! `HOOKLINE_KAFKA_SASL_USERNAME=hookline-{service}` with
//! `HOOKLINE_KAFKA_SASL_PASSWORD_FILE=/var/run/secrets/kafka/{service}.password` gives the
//! router `hookline-router` and the password in `router.password`, the worker
//! `hookline-delivery-worker` and its own file, also when `hookline all` runs every service in
//! one process. In the keys that name an environment variable (`*_env`) the template becomes
//! the name in capitals with `_` for `-` (`KAFKA_PASSWORD_{service}` →
//! `KAFKA_PASSWORD_DELIVERY_WORKER`). Keys without the template: one identity for every
//! service, as before.

use crate::{Config, ConfigError};

/// What a credential key writes where the service's name goes.
pub const SERVICE_TEMPLATE: &str = "{service}";

impl Config {
    /// The credential keys (`kafka_sasl_username`, `kafka_sasl_password_file`/`_env`,
    /// `kafka_ssl_certificate_file`, `kafka_ssl_key_file`, `kafka_ssl_key_password_file`,
    /// `kafka_oauth_client_id`, `kafka_oauth_client_secret_file`/`_env`), each with a mutable
    /// reference and whether it names an environment variable.
    fn credential_keys(&mut self) -> [(&mut String, bool); 9] {
        [
            (&mut self.kafka_sasl_username, false),
            (&mut self.kafka_sasl_password_file, false),
            (&mut self.kafka_sasl_password_env, true),
            (&mut self.kafka_ssl_certificate_file, false),
            (&mut self.kafka_ssl_key_file, false),
            (&mut self.kafka_ssl_key_password_file, false),
            (&mut self.kafka_oauth_client_id, false),
            (&mut self.kafka_oauth_client_secret_file, false),
            (&mut self.kafka_oauth_client_secret_env, true),
        ]
    }

    /// Whether some credential key holds `{service}`: then each service connects as its own
    /// principal.
    pub fn has_service_template(&self) -> bool {
        self.clone()
            .credential_keys()
            .iter()
            .any(|(v, _)| v.contains(SERVICE_TEMPLATE))
    }

    /// This configuration as service `service` (e.g. `router`) connects: `{service}` in the
    /// credential keys replaced by its name, and those keys checked with the secrets they
    /// name read, so a service whose own credentials are missing stops at start with one line
    /// naming the key and the file. Without a template: the same configuration.
    pub fn for_service(&self, service: &str) -> Result<Config, ConfigError> {
        if !self.has_service_template() {
            return Ok(self.clone());
        }
        let mut c = self.clone();
        let shouty = service.to_ascii_uppercase().replace('-', "_");
        for (value, names_variable) in c.credential_keys() {
            let name = if names_variable { &shouty } else { service };
            *value = value.replace(SERVICE_TEMPLATE, name);
        }
        c.kafka_security()?;
        Ok(c)
    }

    /// The security keys' check at start: complete when the keys name one identity; with a
    /// `{service}` template, their combination only (each service reads its own files in
    /// [`Config::for_service`]).
    pub(crate) fn validate_kafka_security(&self) -> Result<(), ConfigError> {
        self.kafka_security_reading(!self.has_service_template())
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use crate::kafka_security::SaslCredentials;

    fn templated(dir: &std::path::Path) -> Config {
        for (service, password) in [("router", "r-pass"), ("delivery-worker", "w-pass")] {
            std::fs::write(dir.join(format!("{service}.password")), password).unwrap();
        }
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        Config {
            kafka_security_protocol: "SASL_SSL".into(),
            kafka_sasl_mechanism: "SCRAM-SHA-512".into(),
            kafka_sasl_username: "hookline-{service}".into(),
            kafka_sasl_password_file: format!("{}/{{service}}.password", dir.display()),
            kafka_ssl_ca_file: ca.display().to_string(),
            ..Config::default()
        }
    }

    fn user_and_password(c: &Config) -> (String, String) {
        match c.kafka_security().unwrap().sasl {
            Some(SaslCredentials::Password {
                username, password, ..
            }) => (username, password.expose().to_owned()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_template_gives_each_service_its_own_principal() {
        let dir = std::env::temp_dir().join(format!("hookline-tpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = templated(&dir);
        assert!(c.has_service_template());
        // The templated files do not exist as such: validation checks only the keys.
        c.validate().unwrap();
        let router = c.for_service("router").unwrap();
        assert_eq!(
            user_and_password(&router),
            ("hookline-router".into(), "r-pass".into())
        );
        let worker = c.for_service("delivery-worker").unwrap();
        assert_eq!(
            user_and_password(&worker),
            ("hookline-delivery-worker".into(), "w-pass".into())
        );
        // A service whose file is missing stops with the key and the file named.
        let e = c.for_service("dead-letter").unwrap_err().to_string();
        assert!(
            e.contains("kafka_sasl_password_file") && e.contains("dead-letter.password"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn variable_names_take_the_name_in_capitals() {
        let c = Config {
            kafka_security_protocol: "SASL_SSL".into(),
            kafka_sasl_mechanism: "PLAIN".into(),
            kafka_sasl_username: "{service}".into(),
            kafka_sasl_password_env: "HOOKLINE_TEST_TPL_{service}".into(),
            ..Config::default()
        };
        let e = c.for_service("extract-producer").unwrap_err().to_string();
        assert!(e.contains("HOOKLINE_TEST_TPL_EXTRACT_PRODUCER"), "{e}");
    }

    #[test]
    fn without_a_template_every_service_is_the_same_identity() {
        let c = Config::default();
        assert!(!c.has_service_template());
        let r = c.for_service("router").unwrap();
        assert_eq!(r.kafka_sasl_username, c.kafka_sasl_username);
    }
}
