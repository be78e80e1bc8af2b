//! SMART discovery refuses endpoints it must not use: plain http off this computer, and
//! endpoints that are not the identity provider's own. The identity provider is the real
//! peer (npm `oidc-provider`); the EHR's `.well-known/smart-configuration` is the peer's own
//! document, fetched from its gateway and served with one field changed by a small loopback
//! server standing in for a FHIR server that serves a bad (or tampered) one.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use hearth_auth::{AuthError, AuthSettings, Provider, DEFAULT_SCOPES};
use hearth_testkit::smart::SmartEhr;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `doc` as the answer to every request on a loopback port; the FHIR base URL there.
async fn fhir_serving(doc: Value) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = doc.to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}/fhir"), task)
}

/// The peer's own SMART configuration, as its FHIR gateway serves it.
async fn peer_document(ehr: &SmartEhr) -> Value {
    let url = format!("{}/.well-known/smart-configuration", ehr.fhir_base);
    let text = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn settings(fhir_base: &str, issuer: &str) -> AuthSettings {
    AuthSettings {
        fhir_base: fhir_base.to_string(),
        issuer: issuer.to_string(),
        client_id: "hearth".into(),
        scopes: DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
        resources: Vec::new(),
    }
}

async fn discover_with(doc: Value, issuer: &str) -> Result<(), AuthError> {
    let (base, server) = fhir_serving(doc).await;
    let found = tokio::time::timeout(
        Duration::from_secs(30),
        Provider::discover(settings(&base, issuer)),
    )
    .await
    .expect("discovery is bounded");
    server.abort();
    found.map(|_| ())
}

#[tokio::test]
async fn discovery_refuses_plain_http_endpoints_and_endpoints_that_are_not_the_providers() {
    let ehr = SmartEhr::identity_only();
    let good = peer_document(&ehr).await;
    // The peer's document as it is: accepted (so what follows is refused for the change).
    discover_with(good.clone(), &ehr.issuer)
        .await
        .expect("the peer's own SMART configuration");

    let issuer_port = url::Url::parse(&ehr.issuer).unwrap().port().unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        // Plain http off this computer: the code and verifier would cross the network bare.
        (
            "token_endpoint",
            json!("http://idp.example.org/token"),
            "https",
        ),
        (
            "authorization_endpoint",
            json!("http://idp.example.org/auth"),
            "https",
        ),
        (
            "revocation_endpoint",
            json!("http://idp.example.org/token/revocation"),
            "https",
        ),
        // https, but not the identity provider's: the code would go to someone else.
        (
            "token_endpoint",
            json!("https://collector.example.org/token"),
            "not the identity provider's",
        ),
        // On this computer, but another server than the issuer.
        (
            "authorization_endpoint",
            json!(format!("http://127.0.0.1:{}/auth", issuer_port ^ 1)),
            "not the identity provider's",
        ),
        (
            "revocation_endpoint",
            json!("https://collector.example.org/revoke"),
            "not on the server of its token_endpoint",
        ),
        // Another issuer than the configured one (OIDC Discovery §4.3).
        (
            "issuer",
            json!("https://other-idp.example.org"),
            "configured for",
        ),
    ];
    for (field, value, says) in cases {
        let mut doc = good.clone();
        doc[field] = value.clone();
        let e = discover_with(doc, &ehr.issuer)
            .await
            .expect_err(&format!("{field} = {value} was accepted"));
        let text = e.to_string();
        assert!(
            matches!(e, AuthError::Discovery(_)),
            "{field} = {value}: {e:?}"
        );
        assert!(
            text.contains(field) || field == "issuer",
            "{field} = {value}: the error does not name the endpoint: {text}"
        );
        assert!(text.contains(says), "{field} = {value}: {text}");
    }
}

#[tokio::test]
async fn an_identity_provider_or_fhir_base_on_plain_http_off_this_computer_is_refused() {
    // Refused before anything is fetched: nothing listens at these addresses.
    let e = Provider::discover(settings(
        "https://ehr.example.org/fhir",
        "http://idp.example.org",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, AuthError::Discovery(t) if t.contains("[identity] issuer") && t.contains("https")),
        "{e:?}"
    );
    let e = Provider::discover(settings(
        "http://ehr.example.org/fhir",
        "https://idp.example.org",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, AuthError::Discovery(t) if t.contains("FHIR base URL") && t.contains("https")),
        "{e:?}"
    );
}
