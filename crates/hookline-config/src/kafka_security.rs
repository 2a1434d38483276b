//! How every Kafka client connects: the typed `kafka_*` security keys of [`Config`], checked
//! together, and the secrets they name read from files (a mounted Kubernetes Secret) or from
//! the environment.
//!
//! [`KafkaSecurity`] is what [`Config::kafka_security`] makes of the keys: the protocol
//! (`PLAINTEXT`, `SSL` with or without a client certificate, `SASL_SSL`), the SASL mechanism
//! with its credentials, and the TLS files. Secrets are held in [`Secret`], whose `Debug` and
//! `Display` print `****`; the one way to the value is [`Secret::expose`], called only where
//! the librdkafka property is set.

use std::fmt;

use crate::{Config, ConfigError, invalid};

/// A credential: never printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that hands it to the Kafka client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// `kafka_security_protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    /// TLS; with a client certificate and key, mutual TLS.
    Ssl,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    fn uses_tls(self) -> bool {
        !matches!(self, Self::Plaintext)
    }
}

/// `kafka_sasl_mechanism`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
    /// OIDC client credentials: librdkafka fetches and refreshes the token itself.
    OAuthBearer,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// The SASL credentials of a `SASL_SSL` connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaslCredentials {
    /// PLAIN or SCRAM.
    Password {
        mechanism: SaslMechanism,
        username: String,
        password: Secret,
    },
    /// OAUTHBEARER with OIDC client credentials.
    OAuthBearer {
        token_endpoint: String,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
    },
}

/// The TLS settings of an `SSL` or `SASL_SSL` connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA bundle the broker's certificate is verified against; `None`: the system's roots.
    pub ca_file: Option<String>,
    /// PEM client certificate and key (mutual TLS); both or neither.
    pub certificate_file: Option<String>,
    pub key_file: Option<String>,
    pub key_password: Option<Secret>,
}

/// How every Kafka client of the process connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    pub sasl: Option<SaslCredentials>,
    pub tls: TlsFiles,
}

/// librdkafka properties the typed keys own; `kafka_properties` may not set them.
pub const OWNED_PROPERTIES: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.ca.pem",
    "ssl.certificate.location",
    "ssl.certificate.pem",
    "ssl.key.location",
    "ssl.key.pem",
    "ssl.key.password",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.token.endpoint.url",
    "sasl.oauthbearer.scope",
];

impl KafkaSecurity {
    /// The librdkafka properties of these settings, secrets included: for a `ClientConfig`
    /// only, never for a log.
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![("security.protocol", self.protocol.as_str().to_owned())];
        if self.protocol.uses_tls() {
            let tls = &self.tls;
            if let Some(ca) = &tls.ca_file {
                p.push(("ssl.ca.location", ca.clone()));
            }
            if let Some(cert) = &tls.certificate_file {
                p.push(("ssl.certificate.location", cert.clone()));
            }
            if let Some(key) = &tls.key_file {
                p.push(("ssl.key.location", key.clone()));
            }
            if let Some(pw) = &tls.key_password {
                p.push(("ssl.key.password", pw.expose().to_owned()));
            }
        }
        match &self.sasl {
            None => {}
            Some(SaslCredentials::Password {
                mechanism,
                username,
                password,
            }) => {
                p.push(("sasl.mechanism", mechanism.as_str().to_owned()));
                p.push(("sasl.username", username.clone()));
                p.push(("sasl.password", password.expose().to_owned()));
            }
            Some(SaslCredentials::OAuthBearer {
                token_endpoint,
                client_id,
                client_secret,
                scope,
            }) => {
                p.push(("sasl.mechanism", "OAUTHBEARER".to_owned()));
                p.push(("sasl.oauthbearer.method", "oidc".to_owned()));
                p.push((
                    "sasl.oauthbearer.token.endpoint.url",
                    token_endpoint.clone(),
                ));
                p.push(("sasl.oauthbearer.client.id", client_id.clone()));
                p.push((
                    "sasl.oauthbearer.client.secret",
                    client_secret.expose().to_owned(),
                ));
                if let Some(scope) = scope {
                    p.push(("sasl.oauthbearer.scope", scope.clone()));
                }
            }
        }
        p
    }
}

fn set(value: &str) -> Option<&str> {
    Some(value.trim()).filter(|v| !v.is_empty())
}

/// A readable file named by `field`.
fn existing_file(field: &'static str, path: &str, read: bool) -> Result<String, ConfigError> {
    if !read {
        return Ok(path.to_owned());
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(path.to_owned()),
        Ok(_) => Err(invalid(field, format!("{path:?} is not a file"))),
        Err(e) => Err(invalid(field, format!("{path:?}: {e}"))),
    }
}

/// A secret from the file named by `file_field` or the environment variable named by
/// `env_field` (one of them; a trailing newline is not part of it). Errors name the key and
/// the file or variable, never the value.
fn secret(
    (file_field, file): (&'static str, &str),
    (env_field, env): (&'static str, &str),
    required: bool,
    read: bool,
) -> Result<Option<Secret>, ConfigError> {
    let value = match (set(file), set(env)) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                file_field,
                format!("set {file_field} or {env_field}, not both"),
            ));
        }
        (Some(_), None) | (None, Some(_)) if !read => return Ok(Some(Secret::new("unread"))),
        (Some(path), None) => std::fs::read_to_string(path)
            .map_err(|e| invalid(file_field, format!("reading {path:?}: {e}")))?,
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            invalid(
                env_field,
                format!("environment variable {var:?} is not set (or not UTF-8)"),
            )
        })?,
        (None, None) if required => {
            return Err(invalid(
                file_field,
                format!("required: set {file_field} (a file) or {env_field} (a variable's name)"),
            ));
        }
        (None, None) => return Ok(None),
    };
    let value = value.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        let field = if set(file).is_some() {
            file_field
        } else {
            env_field
        };
        return Err(invalid(field, "the secret it names is empty"));
    }
    Ok(Some(Secret::new(value)))
}

impl Config {
    /// The typed security keys, checked together, with their secrets read.
    pub fn kafka_security(&self) -> Result<KafkaSecurity, ConfigError> {
        self.kafka_security_reading(true)
    }

    /// The typed security keys checked together; with `read` false, the files and variables
    /// they name are neither checked nor read (a `{service}` template names a different file
    /// per service: each is read when that service's clients are made).
    pub(crate) fn kafka_security_reading(&self, read: bool) -> Result<KafkaSecurity, ConfigError> {
        let protocol = match self
            .kafka_security_protocol
            .trim()
            .to_ascii_uppercase()
            .as_str()
        {
            "" | "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            "SASL_PLAINTEXT" => {
                return Err(invalid(
                    "kafka_security_protocol",
                    "SASL_PLAINTEXT sends credentials unencrypted: use SASL_SSL",
                ));
            }
            other => {
                return Err(invalid(
                    "kafka_security_protocol",
                    format!("{other:?}: expected PLAINTEXT, SSL or SASL_SSL"),
                ));
            }
        };
        let mechanism = match set(&self.kafka_sasl_mechanism).map(str::to_ascii_uppercase) {
            None => None,
            Some(m) => Some(match m.as_str() {
                "PLAIN" => SaslMechanism::Plain,
                "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
                "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
                "OAUTHBEARER" => SaslMechanism::OAuthBearer,
                _ => {
                    return Err(invalid(
                        "kafka_sasl_mechanism",
                        format!(
                            "{m:?}: expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
                        ),
                    ));
                }
            }),
        };
        // Keys that mean nothing for the protocol are mistakes, not silently ignored.
        let sasl_keys = [
            ("kafka_sasl_mechanism", &self.kafka_sasl_mechanism),
            ("kafka_sasl_username", &self.kafka_sasl_username),
            ("kafka_sasl_password_file", &self.kafka_sasl_password_file),
            ("kafka_sasl_password_env", &self.kafka_sasl_password_env),
            (
                "kafka_oauth_token_endpoint",
                &self.kafka_oauth_token_endpoint,
            ),
            ("kafka_oauth_client_id", &self.kafka_oauth_client_id),
            (
                "kafka_oauth_client_secret_file",
                &self.kafka_oauth_client_secret_file,
            ),
            (
                "kafka_oauth_client_secret_env",
                &self.kafka_oauth_client_secret_env,
            ),
            ("kafka_oauth_scope", &self.kafka_oauth_scope),
        ];
        let tls_keys = [
            ("kafka_ssl_ca_file", &self.kafka_ssl_ca_file),
            (
                "kafka_ssl_certificate_file",
                &self.kafka_ssl_certificate_file,
            ),
            ("kafka_ssl_key_file", &self.kafka_ssl_key_file),
            (
                "kafka_ssl_key_password_file",
                &self.kafka_ssl_key_password_file,
            ),
        ];
        if protocol != SecurityProtocol::SaslSsl
            && let Some((field, _)) = sasl_keys.iter().find(|(_, v)| set(v).is_some())
        {
            return Err(invalid(
                field,
                format!(
                    "only with kafka_security_protocol SASL_SSL (it is {})",
                    protocol.as_str()
                ),
            ));
        }
        if !protocol.uses_tls()
            && let Some((field, _)) = tls_keys.iter().find(|(_, v)| set(v).is_some())
        {
            return Err(invalid(
                field,
                "only with kafka_security_protocol SSL or SASL_SSL (it is PLAINTEXT)",
            ));
        }

        let tls = if protocol.uses_tls() {
            let ca_file = set(&self.kafka_ssl_ca_file)
                .map(|p| existing_file("kafka_ssl_ca_file", p, read))
                .transpose()?;
            let certificate_file = set(&self.kafka_ssl_certificate_file)
                .map(|p| existing_file("kafka_ssl_certificate_file", p, read))
                .transpose()?;
            let key_file = set(&self.kafka_ssl_key_file)
                .map(|p| existing_file("kafka_ssl_key_file", p, read))
                .transpose()?;
            match (&certificate_file, &key_file) {
                (Some(_), None) => {
                    return Err(invalid(
                        "kafka_ssl_key_file",
                        "required with kafka_ssl_certificate_file (mutual TLS needs both)",
                    ));
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "kafka_ssl_certificate_file",
                        "required with kafka_ssl_key_file (mutual TLS needs both)",
                    ));
                }
                _ => {}
            }
            let key_password = match set(&self.kafka_ssl_key_password_file) {
                None => None,
                Some(_) if key_file.is_none() => {
                    return Err(invalid(
                        "kafka_ssl_key_password_file",
                        "only with kafka_ssl_key_file",
                    ));
                }
                Some(_) => secret(
                    (
                        "kafka_ssl_key_password_file",
                        &self.kafka_ssl_key_password_file,
                    ),
                    ("kafka_ssl_key_password_file", ""),
                    true,
                    read,
                )?,
            };
            TlsFiles {
                ca_file,
                certificate_file,
                key_file,
                key_password,
            }
        } else {
            TlsFiles::default()
        };

        let sasl = match (protocol, mechanism) {
            (SecurityProtocol::SaslSsl, None) => {
                return Err(invalid(
                    "kafka_sasl_mechanism",
                    "required with SASL_SSL: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER",
                ));
            }
            (_, None) => None,
            (_, Some(SaslMechanism::OAuthBearer)) => Some(self.oauth_credentials(read)?),
            (_, Some(mechanism)) => Some(self.password_credentials(mechanism, read)?),
        };
        Ok(KafkaSecurity {
            protocol,
            sasl,
            tls,
        })
    }

    fn password_credentials(
        &self,
        mechanism: SaslMechanism,
        read: bool,
    ) -> Result<SaslCredentials, ConfigError> {
        if let Some((field, _)) = [
            (
                "kafka_oauth_token_endpoint",
                &self.kafka_oauth_token_endpoint,
            ),
            ("kafka_oauth_client_id", &self.kafka_oauth_client_id),
            (
                "kafka_oauth_client_secret_file",
                &self.kafka_oauth_client_secret_file,
            ),
            (
                "kafka_oauth_client_secret_env",
                &self.kafka_oauth_client_secret_env,
            ),
            ("kafka_oauth_scope", &self.kafka_oauth_scope),
        ]
        .iter()
        .find(|(_, v)| set(v).is_some())
        {
            return Err(invalid(field, "only with kafka_sasl_mechanism OAUTHBEARER"));
        }
        let username = set(&self.kafka_sasl_username)
            .ok_or_else(|| {
                invalid(
                    "kafka_sasl_username",
                    format!("required with kafka_sasl_mechanism {}", mechanism.as_str()),
                )
            })?
            .to_owned();
        let password = secret(
            ("kafka_sasl_password_file", &self.kafka_sasl_password_file),
            ("kafka_sasl_password_env", &self.kafka_sasl_password_env),
            true,
            read,
        )?
        .expect("a required secret");
        Ok(SaslCredentials::Password {
            mechanism,
            username,
            password,
        })
    }

    fn oauth_credentials(&self, read: bool) -> Result<SaslCredentials, ConfigError> {
        if let Some((field, _)) = [
            ("kafka_sasl_username", &self.kafka_sasl_username),
            ("kafka_sasl_password_file", &self.kafka_sasl_password_file),
            ("kafka_sasl_password_env", &self.kafka_sasl_password_env),
        ]
        .iter()
        .find(|(_, v)| set(v).is_some())
        {
            return Err(invalid(
                field,
                "not with OAUTHBEARER (it uses kafka_oauth_client_id and its secret)",
            ));
        }
        let token_endpoint = set(&self.kafka_oauth_token_endpoint).ok_or_else(|| {
            invalid(
                "kafka_oauth_token_endpoint",
                "required with OAUTHBEARER: the OIDC token endpoint URL",
            )
        })?;
        if !token_endpoint.starts_with("https://") && !token_endpoint.starts_with("http://") {
            return Err(invalid(
                "kafka_oauth_token_endpoint",
                format!("{token_endpoint:?}: expected an https:// URL"),
            ));
        }
        let client_id = set(&self.kafka_oauth_client_id)
            .ok_or_else(|| invalid("kafka_oauth_client_id", "required with OAUTHBEARER"))?;
        let client_secret = secret(
            (
                "kafka_oauth_client_secret_file",
                &self.kafka_oauth_client_secret_file,
            ),
            (
                "kafka_oauth_client_secret_env",
                &self.kafka_oauth_client_secret_env,
            ),
            true,
            read,
        )?
        .expect("a required secret");
        Ok(SaslCredentials::OAuthBearer {
            token_endpoint: token_endpoint.to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            scope: set(&self.kafka_oauth_scope).map(str::to_owned),
        })
    }
}

#[cfg(test)]
#[path = "kafka_security_tests.rs"]
mod tests;
