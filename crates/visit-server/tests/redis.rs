//! The service on a real Redis that misbehaves or is locked down: it stops answering (requests
//! are refused 503 within the time limit, `/healthz` says so), it asks for a password or an
//! ACL user, it speaks only TLS, and the bus subscription is killed (rosters resync).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::*;
use hearth_testkit::smart::SmartEhr;
use hearth_testkit::visit::Redis;
use hearth_visit_protocol::{ClientMsg, ErrorCode, Role, ServerMsg};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `kill -<signal> <pid>` for the Redis server this test started.
fn signal(redis: &Redis, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(redis.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// A request with its own bound (far beyond the service's), its status and body.
async fn get(url: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: no answer: {e}"));
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn check_link(base: &str, token: &hearth_visit_protocol::Secret) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/links/check"))
        .timeout(Duration::from_secs(15))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "token": token }).to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("link check: no answer: {e}"));
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A Redis that stops answering (SIGSTOP): a link check, a join and `/healthz` are answered
/// 503 `unavailable` within about the 500 ms limit, not left hanging; when it answers again,
/// so does the service.
#[test]
fn a_redis_that_stops_answering_is_a_503_not_a_hang() {
    let idp = ehr_with(&["appt-stop"]);
    let redis = Redis::start();
    runtime().block_on(async {
        let svc = serve(&idp, |s| {
            s.redis_url = Some(redis.url.clone());
            s.redis.timeout = Duration::from_millis(500);
        })
        .await;
        let base = format!("http://{}", svc.addr);
        let access = clinician_token(&idp);
        let l = link(&base, &access, "appt-stop", Role::Patient).await;
        assert_eq!(check_link(&base, &token_of(&l)).await.0, 200);
        assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok".into()));

        signal(&redis, "STOP");
        let started = Instant::now();
        let (status, body) = check_link(&base, &token_of(&l)).await;
        assert_eq!(
            (status, code_of(&body)),
            (503, ErrorCode::Unavailable),
            "{body}"
        );
        let (status, body) = get(&format!("{base}/healthz")).await;
        assert_eq!(
            (status, code_of(&body)),
            (503, ErrorCode::Unavailable),
            "{body}"
        );
        let mut pat = Ws::connect(&base).await;
        pat.send(&ClientMsg::Join {
            token: token_of(&l),
            name: "Ana".into(),
            visit: None,
        })
        .await;
        let first = pat.next().await;
        assert!(
            matches!(&first, Some(ServerMsg::Error(e)) if e.code == ErrorCode::Unavailable),
            "{first:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "three answers took {:?}",
            started.elapsed()
        );

        signal(&redis, "CONT");
        wait_for(Duration::from_secs(15), "healthy again", || async {
            (get(&format!("{base}/healthz")).await.0 == 200).then_some(())
        })
        .await;
        assert_eq!(check_link(&base, &token_of(&l)).await.0, 200);
    });
}

/// Redis down altogether (killed): `/healthz` is 503.
#[test]
fn healthz_includes_redis() {
    let idp = SmartEhr::identity_only();
    let redis = Redis::start();
    runtime().block_on(async {
        let svc = serve(&idp, |s| {
            s.redis_url = Some(redis.url.clone());
            s.redis.timeout = Duration::from_millis(500);
        })
        .await;
        let base = format!("http://{}", svc.addr);
        assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
        signal(&redis, "KILL");
        wait_for(Duration::from_secs(15), "healthz 503", || async {
            let (status, body) = get(&format!("{base}/healthz")).await;
            (status == 503).then(|| code_of(&body))
        })
        .await;
    });
}

/// A clinician hosts on `base`, a patient joins on `other` and appears in the roster.
async fn a_visit_works(idp: &SmartEhr, base: &str, other: &str, visit: &str) {
    let access = clinician_token(idp);
    let mut doc = Ws::host(base, &access, visit, false).await;
    let l = link(base, &access, visit, Role::Patient).await;
    let pat = Ws::join(other, &token_of(&l), "Ana").await;
    doc.until("the patient in the roster", |m| {
        roster_entry(m, &pat.participant).is_some()
    })
    .await;
}

const PASSWORD: &str = "redis-password-0123456789abcdef";

/// Redis with a password for the default user and an ACL user `hearth` limited to the
/// service's keys and channel: without the password the service does not start; with it in
/// the URL, or from `redis_password_file` with `redis_username`, visits work.
#[test]
fn redis_auth_by_password_and_acl_user() {
    let idp = ehr_with(&["appt-auth", "appt-acl"]);
    let password = format!(">{PASSWORD}");
    let redis = Redis::start_with(&[
        "--requirepass",
        PASSWORD,
        "--user",
        "hearth",
        "on",
        &password,
        "~hv:*",
        "&hv:bus",
        "+@all",
    ]);
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut s = settings(&idp, listener.local_addr().unwrap().port());
        s.redis_url = Some(redis.url.clone());
        let refused = hearth_visit_server::start(s, listener).await.err();
        assert!(
            refused.as_ref().is_some_and(
                |e| e.to_string().contains("NOAUTH") || e.to_string().contains("uthentication")
            ),
            "started without the password: {refused:?}"
        );
        let with_url = format!("{}?pass={PASSWORD}", redis.url);
        let svc = serve(&idp, |s| s.redis_url = Some(with_url.clone())).await;
        let base = format!("http://{}", svc.addr);
        a_visit_works(&idp, &base, &base, "appt-auth").await;
    });
    // The ACL user, its password read from a file by a hearth-visit process.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let extra = format!(
        "redis_username = \"hearth\"\nredis_password_file = \"{}\"\n",
        file.display()
    );
    let a = Instance::spawn(&idp, Some(&redis.url), &extra);
    let b = Instance::spawn(&idp, Some(&redis.url), &extra);
    runtime().block_on(a_visit_works(&idp, &a.base, &b.base, "appt-acl"));
}

/// Redis speaking only TLS (`rediss://`) with a certificate from a private CA: the service
/// refuses it against the system's roots, and works with `redis_ca_file`'s.
#[test]
fn redis_over_tls() {
    let idp = ehr_with(&["appt-tls"]);
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("redis.pem"), dir.path().join("redis.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let port = hearth_testkit::free_port().to_string();
    let (cert_arg, key_arg) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let redis = Redis::start_with(&[
        "--tls-port",
        &port,
        "--tls-cert-file",
        &cert_arg,
        "--tls-key-file",
        &key_arg,
        "--tls-ca-cert-file",
        &cert_arg,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{port}/");
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut s = settings(&idp, listener.local_addr().unwrap().port());
        s.redis_url = Some(url.clone());
        s.redis.timeout = Duration::from_secs(2);
        assert!(
            hearth_visit_server::start(s, listener).await.is_err(),
            "a certificate from an unknown CA was accepted"
        );
        let svc = serve(&idp, |s| {
            s.redis_url = Some(url.clone());
            s.redis.ca_pem = Some(cert.pem().into_bytes());
        })
        .await;
        let base = format!("http://{}", svc.addr);
        a_visit_works(&idp, &base, &base, "appt-tls").await;
        assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok".into()));
    });
    drop(redis);
}

/// A TCP proxy on loopback to Redis's Unix socket whose new connections can be refused (the
/// ones it already carries go on).
struct Proxy {
    url: String,
    accepting: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(socket: std::path::PathBuf) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}/", listener.local_addr().unwrap());
    let accepting = Arc::new(AtomicBool::new(true));
    let open = accepting.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            if !open.load(Ordering::Acquire) {
                continue;
            }
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect(socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    Proxy {
        url,
        accepting,
        task,
    }
}

/// Instance A's bus subscription is killed (CLIENT KILL TYPE pubsub) and cannot come back for
/// a while; meanwhile a patient joins on instance B. When A subscribes again, its clinician
/// gets the roster with the patient (the change published during the gap was not lost).
#[test]
fn rosters_resync_after_the_subscription_drops() {
    let idp = ehr_with(&["appt-sync"]);
    let redis = Redis::start();
    runtime().block_on(async {
        let proxy = proxy(redis.socket()).await;
        let a = serve(&idp, |s| s.redis_url = Some(proxy.url.clone())).await;
        let b = serve(&idp, |s| s.redis_url = Some(redis.url.clone())).await;
        let (a, b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
        let access = clinician_token(&idp);
        let mut doc = Ws::host(&a, &access, "appt-sync", false).await;
        let l = link(&a, &access, "appt-sync", Role::Patient).await;

        proxy.accepting.store(false, Ordering::Release);
        let client = redis::Client::open(redis.url.as_str()).unwrap();
        let mut admin = client.get_multiplexed_async_connection().await.unwrap();
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!(killed >= 2, "{killed} subscriptions killed");
        wait_for(Duration::from_secs(10), "A unsubscribed", || async {
            (get(&format!("{a}/healthz")).await.0 == 503).then_some(())
        })
        .await;
        wait_for(Duration::from_secs(10), "B subscribed again", || async {
            (get(&format!("{b}/healthz")).await.0 == 200).then_some(())
        })
        .await;
        let pat = Ws::join(&b, &token_of(&l), "Ana").await;

        proxy.accepting.store(true, Ordering::Release);
        doc.until("the roster with the patient", |m| {
            roster_entry(m, &pat.participant).is_some()
        })
        .await;
    });
}
