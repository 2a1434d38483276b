#![allow(clippy::result_large_err)] // figment::Jail's closure signature

use std::path::Path;

use super::*;

fn file_with(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn scram(dir: &Path) -> Config {
    Config {
        kafka_security_protocol: "SASL_SSL".into(),
        kafka_sasl_mechanism: "SCRAM-SHA-512".into(),
        kafka_sasl_username: "hookline".into(),
        kafka_sasl_password_file: file_with(dir, "password", "s3cret-value\n"),
        kafka_ssl_ca_file: file_with(dir, "ca.pem", "-----BEGIN CERTIFICATE-----\n"),
        ..Config::default()
    }
}

fn error_of(c: &Config) -> String {
    c.kafka_security().unwrap_err().to_string()
}

#[test]
fn plaintext_is_the_default() {
    let s = Config::default().kafka_security().unwrap();
    assert_eq!(s.protocol, SecurityProtocol::Plaintext);
    assert_eq!(
        s.client_properties(),
        [("security.protocol", "PLAINTEXT".to_owned())]
    );
}

#[test]
fn scram_over_tls_reads_the_password_file() {
    let dir = tempdir();
    let s = scram(dir.path()).kafka_security().unwrap();
    let props = s.client_properties();
    let get = |k: &str| props.iter().find(|(p, _)| *p == k).map(|(_, v)| v.as_str());
    assert_eq!(get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(get("sasl.username"), Some("hookline"));
    // The trailing newline of the file is not part of the password.
    assert_eq!(get("sasl.password"), Some("s3cret-value"));
    assert!(get("ssl.ca.location").unwrap().ends_with("ca.pem"));
}

#[test]
fn secrets_never_print() {
    let dir = tempdir();
    let s = scram(dir.path()).kafka_security().unwrap();
    let shown = format!("{s:?} {:?}", scram(dir.path()));
    assert!(!shown.contains("s3cret-value"), "{shown}");
    assert_eq!(Secret::new("x").to_string(), "****");
    assert_eq!(format!("{:?}", Secret::new("x")), "Secret(****)");
}

#[test]
fn password_from_a_named_environment_variable() {
    let dir = tempdir();
    figment::Jail::expect_with(|jail| {
        jail.set_env("HOOKLINE_TEST_KAFKA_PW", "from-env");
        let c = Config {
            kafka_sasl_password_file: String::new(),
            kafka_sasl_password_env: "HOOKLINE_TEST_KAFKA_PW".into(),
            ..scram(dir.path())
        };
        match c.kafka_security().unwrap().sasl {
            Some(SaslCredentials::Password { password, .. }) => {
                assert_eq!(password.expose(), "from-env")
            }
            other => panic!("{other:?}"),
        }
        let missing = Config {
            kafka_sasl_password_env: "HOOKLINE_TEST_KAFKA_NOT_SET".into(),
            ..c.clone()
        };
        let e = error_of(&missing);
        assert!(e.contains("kafka_sasl_password_env"), "{e}");
        assert!(e.contains("HOOKLINE_TEST_KAFKA_NOT_SET"), "{e}");
        Ok(())
    });
}

#[test]
fn keys_that_do_not_go_together_name_the_key() {
    let dir = tempdir();
    let base = scram(dir.path());
    let cases: Vec<(Config, &str)> = vec![
        (
            Config {
                kafka_security_protocol: "TLS".into(),
                ..base.clone()
            },
            "kafka_security_protocol",
        ),
        (
            Config {
                kafka_security_protocol: "SASL_PLAINTEXT".into(),
                ..base.clone()
            },
            "kafka_security_protocol",
        ),
        (
            Config {
                kafka_sasl_mechanism: String::new(),
                ..base.clone()
            },
            "kafka_sasl_mechanism",
        ),
        (
            Config {
                kafka_sasl_mechanism: "GSSAPI".into(),
                ..base.clone()
            },
            "kafka_sasl_mechanism",
        ),
        (
            Config {
                kafka_sasl_username: String::new(),
                ..base.clone()
            },
            "kafka_sasl_username",
        ),
        (
            Config {
                kafka_sasl_password_file: String::new(),
                ..base.clone()
            },
            "kafka_sasl_password_file",
        ),
        (
            Config {
                kafka_sasl_password_env: "SOME_VAR".into(),
                ..base.clone()
            },
            "kafka_sasl_password_file",
        ),
        (
            Config {
                kafka_sasl_password_file: dir.path().join("nope").to_string_lossy().into(),
                ..base.clone()
            },
            "kafka_sasl_password_file",
        ),
        (
            Config {
                kafka_sasl_password_file: file_with(dir.path(), "empty", "\n"),
                ..base.clone()
            },
            "kafka_sasl_password_file",
        ),
        (
            Config {
                kafka_ssl_ca_file: "/no/such/ca.pem".into(),
                ..base.clone()
            },
            "kafka_ssl_ca_file",
        ),
        // Mutual TLS needs the certificate and the key.
        (
            Config {
                kafka_ssl_certificate_file: file_with(dir.path(), "c.pem", "c"),
                ..base.clone()
            },
            "kafka_ssl_key_file",
        ),
        (
            Config {
                kafka_ssl_key_file: file_with(dir.path(), "k.pem", "k"),
                ..base.clone()
            },
            "kafka_ssl_certificate_file",
        ),
        // SASL keys on a protocol without SASL.
        (
            Config {
                kafka_security_protocol: "SSL".into(),
                ..base.clone()
            },
            "kafka_sasl_mechanism",
        ),
        (
            Config {
                kafka_ssl_ca_file: file_with(dir.path(), "ca2.pem", "c"),
                ..Config::default()
            },
            "kafka_ssl_ca_file",
        ),
        (
            Config {
                kafka_oauth_client_id: "hookline".into(),
                ..base.clone()
            },
            "kafka_oauth_client_id",
        ),
        (
            Config {
                kafka_properties: "sasl.password=hunter2".into(),
                ..Config::default()
            },
            "kafka_properties",
        ),
    ];
    for (config, field) in cases {
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains(field), "want {field}: {e}");
        assert!(!e.contains("s3cret-value") && !e.contains("hunter2"), "{e}");
    }
}

#[test]
fn mutual_tls_and_oauthbearer() {
    let dir = tempdir();
    let mtls = Config {
        kafka_security_protocol: "SSL".into(),
        kafka_ssl_certificate_file: file_with(dir.path(), "c.pem", "c"),
        kafka_ssl_key_file: file_with(dir.path(), "k.pem", "k"),
        kafka_ssl_key_password_file: file_with(dir.path(), "kp", "key-pw"),
        ..Config::default()
    };
    let props = mtls.kafka_security().unwrap().client_properties();
    assert!(props.contains(&("ssl.key.password", "key-pw".to_owned())));
    assert!(props.iter().any(|(k, _)| *k == "ssl.certificate.location"));

    let oauth = Config {
        kafka_security_protocol: "SASL_SSL".into(),
        kafka_sasl_mechanism: "oauthbearer".into(),
        kafka_oauth_token_endpoint: "https://idp.example/oauth2/token".into(),
        kafka_oauth_client_id: "hookline".into(),
        kafka_oauth_client_secret_file: file_with(dir.path(), "cs", "client-secret"),
        kafka_oauth_scope: "kafka".into(),
        ..Config::default()
    };
    let props = oauth.kafka_security().unwrap().client_properties();
    assert!(props.contains(&("sasl.oauthbearer.method", "oidc".to_owned())));
    assert!(props.contains(&("sasl.oauthbearer.client.secret", "client-secret".to_owned())));
    let e = error_of(&Config {
        kafka_oauth_token_endpoint: String::new(),
        ..oauth.clone()
    });
    assert!(e.contains("kafka_oauth_token_endpoint"), "{e}");
    let e = error_of(&Config {
        kafka_sasl_username: "x".into(),
        ..oauth
    });
    assert!(e.contains("kafka_sasl_username"), "{e}");
}

#[test]
fn environment_sets_the_typed_keys() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("pw", "p")?;
        jail.set_env("HOOKLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL");
        jail.set_env("HOOKLINE_KAFKA_SASL_MECHANISM", "PLAIN");
        jail.set_env("HOOKLINE_KAFKA_SASL_USERNAME", "u");
        let e = Config::load().unwrap_err().to_string();
        assert!(e.contains("kafka_sasl_password_file"), "{e}");
        jail.set_env("HOOKLINE_KAFKA_SASL_PASSWORD_FILE", "pw");
        let c = Config::load().unwrap();
        assert_eq!(
            c.kafka_security().unwrap().protocol,
            SecurityProtocol::SaslSsl
        );
        Ok(())
    });
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hookline-config-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}
