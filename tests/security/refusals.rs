//! Refused connections: an untrusted broker certificate and a wrong password. Neither is
//! fatal: every service stays up, `/readyz` says why in one line, the log has one ERROR line
//! about it, no secret is shown anywhere; once the broker's side is fixed the services
//! become ready and deliver, without a restart.

use std::path::Path;
use std::process::Command;

use hookline_config::Config;
use hookline_kafka::acl::Principal;
use serde_json::Value;

use crate::support::{Hookline, Receiver, SecuredKafka, client, get, health_addrs, wait_for};
use crate::{error_lines, event, publish, subscribe, verify, wait_delivered, wait_ready};

const UNTRUSTED: &str = "kafka: TLS handshake failed (broker certificate not trusted)";
const REFUSED: &str = "kafka: authentication failed (SASL)";

/// The services trust another CA than the one that signed the broker's certificate; the
/// fix: the broker gets a certificate of the CA the services trust (and is restarted; the
/// services are not).
pub async fn untrusted_ca_then_fixed(kafka: &SecuredKafka, config: &Config) {
    let dir = kafka.dir().join("other-ca");
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=Another CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        &dir,
    );
    let config = Config {
        kafka_ssl_ca_file: dir.join("ca.pem").to_string_lossy().into_owned(),
        ..config.clone()
    };
    let hookline = Hookline::start(&config, kafka.dir().join("untrusted-ca.log"));
    refused_everywhere(&config, &hookline, UNTRUSTED).await;

    // The broker's side: a certificate signed by the CA the services trust.
    let tls = kafka.dir().join("tls");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &tls.join("broker.csr").to_string_lossy(),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &tls.join("broker.ext").to_string_lossy(),
            "-out",
            "broker.pem",
        ],
        &dir,
    );
    let key = std::fs::read_to_string(tls.join("broker.key")).unwrap();
    let cert = std::fs::read_to_string(dir.join("broker.pem")).unwrap();
    std::fs::write(tls.join("broker-keystore.pem"), format!("{key}{cert}")).unwrap();
    // The broker talks to itself over the same listener: it trusts the new CA too.
    let old_ca = std::fs::read_to_string(tls.join("ca.pem")).unwrap();
    let new_ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    std::fs::write(tls.join("ca.pem"), format!("{old_ca}{new_ca}")).unwrap();
    kafka.restart().await;
    wait_ready(&config, &hookline, kafka).await;
    deliver_one(&config, &hookline, kafka, "acc-ca").await;
    assert_one_error(&hookline, UNTRUSTED, &[]);
}

/// Every service's password is wrong; the fix: the broker takes those passwords.
pub async fn wrong_password_then_fixed(kafka: &SecuredKafka, config: &Config) {
    let wrong_dir = kafka.dir().join("wrong");
    std::fs::create_dir_all(&wrong_dir).unwrap();
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let services = [
        Principal::SubscriptionApi,
        Principal::Router,
        Principal::DeliveryWorker,
        Principal::DeadLetter,
        Principal::ExtractProducer,
    ];
    for p in services {
        std::fs::write(
            wrong_dir.join(format!("{}.password", p.user())),
            format!("{wrong}\n"),
        )
        .unwrap();
    }
    // The broker's CA may have changed in the step before: the services trust the one now in
    // force.
    let config = Config {
        kafka_ssl_ca_file: current_ca(kafka),
        ..config.clone()
    };
    let refusals_before = refusals_in_broker_log(kafka);
    let hookline = Hookline::start(&config, kafka.dir().join("wrong-password.log"));
    refused_everywhere(&config, &hookline, REFUSED).await;
    // The clients keep retrying (the broker logs each refusal) while the log holds one
    // ERROR line about it.
    wait_for(
        60,
        "the broker refusing the clients' retries",
        || async { (refusals_in_broker_log(kafka) >= refusals_before + 8).then_some(()) },
        || kafka.log_tail(30),
    )
    .await;
    hookline.assert_running();
    let mut secrets = vec![wrong.clone(), kafka.password("admin")];
    secrets.extend(services.iter().map(|p| kafka.password(&p.user())));
    assert_one_error(&hookline, REFUSED, &secrets);
    let http = client();
    for (name, addr) in health_addrs(&config) {
        for path in ["readyz", "metrics"] {
            let (_, body) = get(&http, &format!("http://{addr}/{path}")).await;
            for secret in &secrets {
                assert!(
                    !body.contains(secret.as_str()),
                    "a password in {name} /{path}"
                );
            }
        }
    }

    // The broker's side is fixed: the passwords the services have become theirs.
    for p in services {
        kafka
            .scram_user(&p.user(), &wrong_dir.join(format!("{}.password", p.user())))
            .await;
    }
    wait_ready(&config, &hookline, kafka).await;
    deliver_one(&config, &hookline, kafka, "acc-pw").await;
    assert_one_error(&hookline, REFUSED, &secrets);
    assert!(
        hookline
            .log_text()
            .contains("accept this client's connection again"),
        "the recovery is logged"
    );
}

/// Every service answers `/readyz` 503 with exactly `not ready: {reason}`, in one line.
async fn refused_everywhere(config: &Config, hookline: &Hookline, reason: &str) {
    let http = client();
    for (name, addr) in health_addrs(config) {
        let url = format!("http://{addr}/readyz");
        let body: Value = wait_for(
            60,
            &format!("{name} /readyz 503 saying {reason:?}"),
            || {
                hookline.assert_running();
                let (http, url) = (&http, &url);
                async move {
                    let (status, body) = get(http, url).await;
                    (status == 503 && body.contains(reason))
                        .then(|| serde_json::from_str(&body).expect("JSON body"))
                }
            },
            || hookline.log_text(),
        )
        .await;
        let message = body["message"].as_str().expect("message");
        assert!(!message.contains('\n'), "{name}: {message:?}");
        assert_eq!(message, format!("not ready: {reason}"), "{name}");
    }
}

/// The log holds exactly one ERROR line, about `reason`, and none of `secrets`.
fn assert_one_error(hookline: &Hookline, reason: &str, secrets: &[String]) {
    let log = hookline.log_text();
    let errors = error_lines(&log);
    assert_eq!(errors.len(), 1, "one ERROR line: {errors:#?}");
    assert!(errors[0].contains(reason), "{}", errors[0]);
    for secret in secrets {
        assert!(!log.contains(secret.as_str()), "a password in the log");
    }
}

async fn deliver_one(config: &Config, hookline: &Hookline, kafka: &SecuredKafka, account: &str) {
    let receiver = Receiver::start().await;
    let (_, secret) = subscribe(config, &receiver, account).await;
    // The outside producer's own password (not one of the services' files of this step).
    let producer = Config {
        kafka_sasl_password_file: kafka
            .password_file(&Principal::Producer.user())
            .to_string_lossy()
            .into_owned(),
        ..config.clone()
    }
    .for_service(Principal::Producer.name())
    .unwrap();
    publish(&producer, &config.topic_events, account, &event(account)).await;
    let got = wait_delivered(&receiver, hookline, kafka, 1).await;
    verify(&secret, &got[0], account);
}

/// The CA file that signs the broker's certificate now.
fn current_ca(kafka: &SecuredKafka) -> String {
    let other = kafka.dir().join("other-ca/ca.pem");
    if other.is_file() {
        other
    } else {
        kafka.dir().join("tls/ca.pem")
    }
    .to_string_lossy()
    .into_owned()
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How many refused authentications the broker has logged.
fn refusals_in_broker_log(kafka: &SecuredKafka) -> usize {
    let log = std::fs::read_to_string(kafka.dir().join("kafka.log")).unwrap_or_default();
    log.matches("Failed authentication with").count()
}
