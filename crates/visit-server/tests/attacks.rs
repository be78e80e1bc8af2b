//! The attacks a security review made on the visit service, replayed against the real service
//! (in memory, and as two processes sharing a real Redis): each must fail.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::*;
use hearth_testkit::smart::SmartEhr;
use hearth_testkit::visit::Redis;
use hearth_visit_protocol::{ClientMsg, ErrorBody, ErrorCode, Role, Secret, ServerMsg};
use hearth_visit_server::settings::Settings;

fn is_error(code: ErrorCode) -> impl Fn(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Error(ErrorBody { code: c, .. }) if *c == code)
}

fn code_of(body: &str) -> ErrorCode {
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("{body}: {e}"))
        .code
}

/// Two bases of one deployment: the same in memory, two instances behind a balancer on Redis.
struct Deployment {
    a: String,
    b: String,
    _keep: Box<dyn std::any::Any>,
}

async fn in_memory(idp: &SmartEhr, tweak: impl FnOnce(&mut Settings)) -> Deployment {
    let svc = serve(idp, tweak).await;
    let base = format!("http://{}", svc.addr);
    Deployment {
        a: base.clone(),
        b: base,
        _keep: Box::new(svc),
    }
}

fn on_redis(idp: &SmartEhr, extra: &str) -> Deployment {
    let redis = Redis::start();
    let a = Instance::spawn(idp, Some(&redis.url), extra);
    let b = Instance::spawn(idp, Some(&redis.url), extra);
    Deployment {
        a: a.base.clone(),
        b: b.base.clone(),
        _keep: Box::new((a, b, redis)),
    }
}

async fn post_link(base: &str, token: &str) -> (u16, String) {
    let body = serde_json::json!({
        "appointment": "appt-x", "role": "patient",
        "start_ms": now_ms(), "end_ms": now_ms() + 1_800_000,
    });
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/links"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A patient-app token (another client, `fhirUser` a Patient, patient scopes, same FHIR base),
/// the clinician's own sign-in at another app, and access tokens with a wrong `typ`, a future
/// `nbf` or a future `iat`: none makes links, reads a roster or hosts.
async fn tokens_that_are_not_hearths_clinician_are_refused(idp: &SmartEhr, d: &Deployment) {
    let access = idp.clinician_access_token();
    let mut doc = Ws::host(&d.a, &access, "appt-x", true).await;
    let l = link(&d.a, &access, "appt-x", Role::Patient).await;
    let pat = Ws::join(&d.b, &token_of(&l), "Zed Quillfeather").await;
    doc.until("the patient waiting", |m| {
        roster_entry(m, &pat.participant).is_some()
    })
    .await;

    let patient_app = idp.patient_app_access_token();
    let other_app = idp.access_token_for("patient-app", true, "openid fhirUser profile user/*.rs");
    for (what, token) in [("patient app", &patient_app), ("another app", &other_app)] {
        for base in [&d.a, &d.b] {
            let (status, body) = post_link(base, token).await;
            assert_eq!(
                (status, code_of(&body)),
                (403, ErrorCode::NotClinician),
                "{what} makes a link: {body}"
            );
            let r = reqwest::Client::new()
                .get(format!("{base}/v1/visits/appt-x"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let (status, body) = (r.status().as_u16(), r.text().await.unwrap());
            assert!(!body.contains("Quillfeather"), "{what} read the roster");
            assert_eq!((status, code_of(&body)), (403, ErrorCode::NotClinician));
            let mut host = Ws::connect(base).await;
            host.send(&ClientMsg::Host {
                access_token: Secret::new(token.as_str()),
                visit: "appt-x".into(),
                media: true,
                name: None,
            })
            .await;
            let first = host.next().await;
            assert!(
                matches!(&first, Some(m) if is_error(ErrorCode::NotClinician)(m)),
                "{what} hosts: {first:?}"
            );
        }
    }

    for (how, why) in [
        ("typ", "not an access token"),
        ("not-yet", "not valid yet"),
        ("future-iat", "issued in the future"),
    ] {
        idp.spoil_next_access_token(how);
        let spoiled = idp.clinician_access_token();
        let (status, body) = post_link(&d.a, &spoiled).await;
        assert_eq!(
            (status, code_of(&body)),
            (401, ErrorCode::Unauthorized),
            "{how}: {body}"
        );
        assert!(body.contains(why), "{how}: {body}");
    }
    // The real clinician still can.
    assert_eq!(post_link(&d.b, &access).await.0, 200);
}

#[test]
fn a_patient_apps_token_is_not_a_clinicians_in_memory() {
    let idp = SmartEhr::identity_only();
    runtime().block_on(async {
        let d = in_memory(&idp, |_| {}).await;
        tokens_that_are_not_hearths_clinician_are_refused(&idp, &d).await;
    });
}

#[test]
fn a_patient_apps_token_is_not_a_clinicians_on_redis() {
    let idp = SmartEhr::identity_only();
    let d = on_redis(&idp, "");
    runtime().block_on(tokens_that_are_not_hearths_clinician_are_refused(&idp, &d));
}

/// Someone who knows a participant's id (not their resume secret) tries to resume as them on
/// each instance: refused, and the real participant stays connected and keeps getting their
/// messages.
async fn a_wrong_resume_secret_leaves_the_participant_alone(idp: &SmartEhr, d: &Deployment) {
    let access = idp.clinician_access_token();
    let mut doc = Ws::host(&d.a, &access, "appt-r", true).await;
    let l = link(&d.a, &access, "appt-r", Role::Patient).await;
    let mut pat = Ws::join(&d.a, &token_of(&l), "Ana").await;
    doc.send(&ClientMsg::Admit {
        participant: pat.participant.clone(),
    })
    .await;
    pat.until("admitted", |m| matches!(m, ServerMsg::Admitted { .. }))
        .await;
    for (i, base) in [&d.a, &d.b].into_iter().enumerate() {
        let mut thief = Ws::connect(base).await;
        thief
            .send(&ClientMsg::Resume {
                visit: "appt-r".into(),
                participant: pat.participant.clone(),
                resume: Secret::new("not-the-secret"),
            })
            .await;
        let first = thief.next().await;
        assert!(
            matches!(&first, Some(m) if is_error(ErrorCode::ResumeRefused)(m)),
            "the thief got {first:?}"
        );
        assert_eq!(thief.next().await, None, "the thief's socket closes");
        // The patient's socket is still theirs: it answers, and the clinician's messages come.
        let id = 70 + i as u64;
        pat.send(&ClientMsg::Ping { id }).await;
        pat.until("pong", |m| *m == ServerMsg::Pong { id }).await;
        let data = serde_json::json!({"candidate": {"candidate": format!("c{i}")}});
        doc.send(&ClientMsg::Signal {
            to: pat.participant.clone(),
            data: data.clone(),
        })
        .await;
        let got = pat
            .until("the clinician's signal", |m| {
                matches!(m, ServerMsg::Signal { .. })
            })
            .await;
        assert_eq!(
            got,
            ServerMsg::Signal {
                from: doc.participant.clone(),
                data
            }
        );
    }
}

#[test]
fn a_wrong_resume_secret_does_not_kick_the_participant_in_memory() {
    let idp = SmartEhr::identity_only();
    runtime().block_on(async {
        let d = in_memory(&idp, |_| {}).await;
        a_wrong_resume_secret_leaves_the_participant_alone(&idp, &d).await;
    });
}

#[test]
fn a_wrong_resume_secret_does_not_kick_the_participant_on_redis() {
    let idp = SmartEhr::identity_only();
    let d = on_redis(&idp, "");
    runtime().block_on(a_wrong_resume_secret_leaves_the_participant_alone(&idp, &d));
}

/// Unlimited senders (the flooding clinician), for the slow-reader attack.
const NO_RATE_LIMIT: &str = "messages_per_second = 1000000\nbytes_per_second = 1000000000\n";

/// A participant stops reading while messages for them keep coming: the service aborts their
/// connection (it does not leave it open and silent), and the visit sees them drop.
async fn a_slow_reader_is_cut_off(idp: &SmartEhr, d: &Deployment) {
    let access = idp.clinician_access_token();
    let mut doc = Ws::host(&d.a, &access, "appt-slow", true).await;
    let l = link(&d.a, &access, "appt-slow", Role::Patient).await;
    let mut pat = Ws::join(&d.b, &token_of(&l), "Ana").await;
    doc.send(&ClientMsg::Admit {
        participant: pat.participant.clone(),
    })
    .await;
    pat.until("admitted", |m| matches!(m, ServerMsg::Admitted { .. }))
        .await;
    doc.until("peer_joined", |m| matches!(m, ServerMsg::PeerJoined { .. }))
        .await;
    // The patient reads nothing more. More than its queue (256 messages) and the socket
    // buffers (a few MB on loopback) hold is sent to it.
    let big = serde_json::json!({"sdp": {"type": "offer", "sdp": "a".repeat(48 * 1024)}});
    const SENT: usize = 800;
    for _ in 0..SENT {
        doc.send(&ClientMsg::Signal {
            to: pat.participant.clone(),
            data: big.clone(),
        })
        .await;
    }
    doc.until(
        "the slow patient dropped",
        |m| matches!(m, ServerMsg::PeerLeft { peer } if *peer == pat.participant),
    )
    .await;
    // Their socket ends (after what was already on its way), rather than staying open.
    let mut read = 0;
    while pat.next().await.is_some() {
        read += 1;
        assert!(read <= SENT, "the slow patient's socket stays open");
    }
    assert!(
        read < SENT,
        "the patient got everything ({read}): not slow enough"
    );
}

#[test]
fn a_slow_reader_is_disconnected_in_memory() {
    let idp = SmartEhr::identity_only();
    runtime().block_on(async {
        let d = in_memory(&idp, |s| {
            s.messages_per_second = 1_000_000;
            s.bytes_per_second = 1_000_000_000;
        })
        .await;
        a_slow_reader_is_cut_off(&idp, &d).await;
    });
}

#[test]
fn a_slow_reader_is_disconnected_on_redis() {
    let idp = SmartEhr::identity_only();
    let d = on_redis(&idp, NO_RATE_LIMIT);
    runtime().block_on(a_slow_reader_is_cut_off(&idp, &d));
}

/// A connection that sends too many messages, or too many bytes, is told and closed.
async fn a_flooding_connection_is_closed(d: &Deployment) {
    for (burst, size) in [(200, 10), (3, 40 * 1024)] {
        let mut ws = Ws::connect(&d.a).await;
        let padding = "x".repeat(size);
        for id in 0..burst {
            ws.send_raw(&format!(r#"{{"type":"ping","id":{id},"pad":"{padding}"}}"#))
                .await;
        }
        let mut answered = 0;
        loop {
            match ws.next().await {
                Some(ServerMsg::Error(e)) if e.code == ErrorCode::RateLimited => break,
                Some(_) => answered += 1,
                None => panic!("closed without saying why"),
            }
        }
        assert!(answered < burst, "{answered} of {burst} answered");
        assert_eq!(ws.next().await, None, "the flooding socket closes");
    }
}

#[test]
fn a_flooding_connection_is_closed_in_memory() {
    let idp = SmartEhr::identity_only();
    runtime().block_on(async {
        let d = in_memory(&idp, |s| {
            s.messages_per_second = 10;
            s.bytes_per_second = 1000;
        })
        .await;
        a_flooding_connection_is_closed(&d).await;
    });
}

#[test]
fn a_flooding_connection_is_closed_on_redis() {
    let idp = SmartEhr::identity_only();
    let d = on_redis(&idp, "messages_per_second = 10\nbytes_per_second = 1000\n");
    runtime().block_on(a_flooding_connection_is_closed(&d));
}
