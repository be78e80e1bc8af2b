//! The attacks a security review made on the visit service, replayed against the real service
//! (in memory, and as two processes sharing a real Redis): each must fail.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::*;
use hearth_testkit::smart::SmartEhr;
use hearth_testkit::visit::Redis;
use hearth_visit_protocol::{ClientMsg, ErrorCode, Role, Secret, ServerMsg};
use hearth_visit_server::settings::Settings;

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
    post_link_for(base, token, "appt-x").await
}

async fn post_link_for(base: &str, token: &str, appointment: &str) -> (u16, String) {
    let body = serde_json::json!({
        "appointment": appointment, "role": "patient",
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

/// What the clinician's first message on a socket hosting `visit` is answered with.
async fn host_answer(base: &str, token: &str, visit: &str) -> Option<ServerMsg> {
    let mut host = Ws::connect(base).await;
    host.send(&ClientMsg::Host {
        access_token: Secret::new(token),
        visit: visit.into(),
        media: true,
        name: None,
    })
    .await;
    host.next().await
}

/// The EHR's appointments for [`a_clinician_not_on_the_appointment_is_refused`]: `appt-own`
/// is the signed-in clinician's, `appt-other` another practitioner's.
fn ehr_with_someone_elses_appointment() -> SmartEhr {
    let idp = ehr_with(&["appt-own"]);
    idp.put_appointment("appt-other", &["Practitioner/someone-else"]);
    idp.put_appointment_with_status(
        "appt-cancelled",
        &[hearth_testkit::smart::USER_FHIR],
        "cancelled",
    );
    idp
}

/// A real clinician (Hearth's client, a Practitioner) who is not a participant of the visit's
/// Appointment in the EHR, or whose visit id names no Appointment, makes no link, reads no
/// roster and hosts nothing; on their own appointment they do.
async fn a_clinician_not_on_the_appointment_is_refused(idp: &SmartEhr, d: &Deployment) {
    let access = clinician_token(idp);
    for base in [&d.a, &d.b] {
        let mut refusals = std::collections::HashSet::new();
        for visit in ["appt-other", "appt-none", "appt-cancelled"] {
            let (status, body) = post_link_for(base, &access, visit).await;
            assert_eq!(
                (status, code_of(&body)),
                (403, ErrorCode::NotOnAppointment),
                "a link for {visit}: {body}"
            );
            // One answer whether the appointment exists or not: no oracle of its ids.
            refusals.insert(body);
            let r = reqwest::Client::new()
                .get(format!("{base}/v1/visits/{visit}"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap();
            let (status, body) = (r.status().as_u16(), r.text().await.unwrap());
            assert_eq!(
                (status, code_of(&body)),
                (403, ErrorCode::NotOnAppointment),
                "the roster of {visit}: {body}"
            );
            let first = host_answer(base, &access, visit).await;
            assert!(
                matches!(&first, Some(m) if is_error(ErrorCode::NotOnAppointment)(m)),
                "hosting {visit}: {first:?}"
            );
        }
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert_eq!(post_link_for(base, &access, "appt-own").await.0, 200);
        let first = host_answer(base, &access, "appt-own").await;
        assert!(
            matches!(&first, Some(ServerMsg::Welcome { .. })),
            "hosting their own: {first:?}"
        );
    }
}

#[test]
fn a_clinician_not_on_the_appointment_cannot_make_links_nor_host_in_memory() {
    let idp = ehr_with_someone_elses_appointment();
    runtime().block_on(async {
        let d = in_memory(&idp, |_| {}).await;
        a_clinician_not_on_the_appointment_is_refused(&idp, &d).await;
    });
}

#[test]
fn a_clinician_not_on_the_appointment_cannot_make_links_nor_host_on_redis() {
    let idp = ehr_with_someone_elses_appointment();
    let d = on_redis(&idp, "");
    runtime().block_on(a_clinician_not_on_the_appointment_is_refused(&idp, &d));
}

/// When the EHR cannot be asked (here: its FHIR server is not there, or the EHR is not there
/// at all), a clinician is refused with `ehr_unavailable`, and the message says so.
async fn an_unreachable_ehr_refuses(idp: &SmartEhr, d: &Deployment) {
    let access = clinician_token(idp);
    for base in [&d.a, &d.b] {
        let (status, body) = post_link(base, &access).await;
        assert_eq!(
            (status, code_of(&body)),
            (503, ErrorCode::EhrUnavailable),
            "{body}"
        );
        assert!(body.contains("cannot ask the EHR"), "{body}");
        let first = host_answer(base, &access, "appt-x").await;
        assert!(
            matches!(&first, Some(m) if is_error(ErrorCode::EhrUnavailable)(m)),
            "{first:?}"
        );
    }
}

#[test]
fn an_unreachable_ehr_refuses_the_clinician_in_memory() {
    // The identity provider and the EHR's gateway, but no FHIR server behind it.
    let idp = SmartEhr::identity_only();
    runtime().block_on(async {
        let d = in_memory(&idp, |_| {}).await;
        an_unreachable_ehr_refuses(&idp, &d).await;
        // No EHR at that address at all (its discovery cannot be read).
        let closed = hearth_testkit::free_port();
        let d = in_memory(&idp, |s| {
            if let Some(ehr) = s.ehr.as_mut() {
                ehr.fhir_base_url = format!("http://127.0.0.1:{closed}/fhir");
            }
        })
        .await;
        an_unreachable_ehr_refuses(&idp, &d).await;
    });
}

#[test]
fn an_unreachable_ehr_refuses_the_clinician_on_redis() {
    let idp = SmartEhr::identity_only();
    let d = on_redis(&idp, "");
    runtime().block_on(an_unreachable_ehr_refuses(&idp, &d));
}

/// A patient-app token (another client, `fhirUser` a Patient, patient scopes, same FHIR base),
/// the clinician's own sign-in at another app, and access tokens with a wrong `typ`, a future
/// `nbf` or a future `iat`: none makes links, reads a roster or hosts.
async fn tokens_that_are_not_hearths_clinician_are_refused(idp: &SmartEhr, d: &Deployment) {
    let access = clinician_token(idp);
    let mut doc = Ws::host(&d.a, &access, "appt-x", true).await;
    let l = link(&d.a, &access, "appt-x", Role::Patient).await;
    let pat = Ws::join(&d.b, &token_of(&l), "Zed Quillfeather").await;
    doc.until("the patient waiting", |m| {
        roster_entry(m, &pat.participant).is_some()
    })
    .await;

    // Both asked for the visit service's audience, as an attacker would.
    let patient_app = idp.patient_app_access_token_for(Some(AUDIENCE));
    let other_app = idp.access_token_for("patient-app", true, "openid fhirUser", Some(AUDIENCE));
    // Hearth's own client, but a patient signed in (fhirUser is a Patient): not a clinician.
    let patient_at_hearth =
        idp.access_token_for("hearth", false, "openid fhirUser", Some(AUDIENCE));
    for (what, token) in [
        ("patient app", &patient_app),
        ("another app", &other_app),
        ("a patient at Hearth's client", &patient_at_hearth),
    ] {
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
            let first = host_answer(base, token, "appt-x").await;
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
        let spoiled = clinician_token(idp);
        let (status, body) = post_link(&d.a, &spoiled).await;
        assert_eq!(
            (status, code_of(&body)),
            (401, ErrorCode::Unauthorized),
            "{how}: {body}"
        );
        assert!(body.contains(why), "{how}: {body}");
    }
    // The clinician's own EHR token (for the FHIR base, `user/*` scopes) is not a token for
    // the visit service: refused for its audience, on either instance, for links and hosting.
    let ehr_token = idp.clinician_access_token();
    for base in [&d.a, &d.b] {
        let (status, body) = post_link(base, &ehr_token).await;
        assert_eq!(
            (status, code_of(&body)),
            (401, ErrorCode::Unauthorized),
            "the EHR token makes a link: {body}"
        );
        assert!(body.contains("another audience"), "{body}");
        let first = host_answer(base, &ehr_token, "appt-x").await;
        assert!(
            matches!(&first, Some(m) if is_error(ErrorCode::Unauthorized)(m)),
            "the EHR token hosts: {first:?}"
        );
    }
    // The real clinician still can.
    assert_eq!(post_link(&d.b, &access).await.0, 200);
}

#[test]
fn a_patient_apps_token_is_not_a_clinicians_in_memory() {
    let idp = ehr_with(&["appt-x"]);
    runtime().block_on(async {
        let d = in_memory(&idp, |_| {}).await;
        tokens_that_are_not_hearths_clinician_are_refused(&idp, &d).await;
    });
}

#[test]
fn a_patient_apps_token_is_not_a_clinicians_on_redis() {
    let idp = ehr_with(&["appt-x"]);
    let d = on_redis(&idp, "");
    runtime().block_on(tokens_that_are_not_hearths_clinician_are_refused(&idp, &d));
}

/// Someone who knows a participant's id (not their resume secret) tries to resume as them on
/// each instance: refused, and the real participant stays connected and keeps getting their
/// messages.
async fn a_wrong_resume_secret_leaves_the_participant_alone(idp: &SmartEhr, d: &Deployment) {
    let access = clinician_token(idp);
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
    let idp = ehr_with(&["appt-r"]);
    runtime().block_on(async {
        let d = in_memory(&idp, |_| {}).await;
        a_wrong_resume_secret_leaves_the_participant_alone(&idp, &d).await;
    });
}

#[test]
fn a_wrong_resume_secret_does_not_kick_the_participant_on_redis() {
    let idp = ehr_with(&["appt-r"]);
    let d = on_redis(&idp, "");
    runtime().block_on(a_wrong_resume_secret_leaves_the_participant_alone(&idp, &d));
}

/// Unlimited senders (the flooding clinician), for the slow-reader attack.
const NO_RATE_LIMIT: &str = "messages_per_second = 1000000\nbytes_per_second = 1000000000\n";

/// A participant stops reading while messages for them keep coming: the service aborts their
/// connection (it does not leave it open and silent), and the visit sees them drop.
async fn a_slow_reader_is_cut_off(idp: &SmartEhr, d: &Deployment) {
    let access = clinician_token(idp);
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
    let idp = ehr_with(&["appt-slow"]);
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
    let idp = ehr_with(&["appt-slow"]);
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

/// Opens a WebSocket by hand and declares a 1 MiB text frame, sending only its first bytes:
/// the service must close the connection at the header, not wait to buffer the frame.
async fn a_huge_frame_is_refused_at_its_header(d: &Deployment) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = d.a.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tcp.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "the handshake answer ends early");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // FIN + text; masked, 64-bit length 1 MiB; the mask; 16 bytes of payload.
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[b'x'; 16]);
    tcp.write_all(&frame).await.unwrap();
    // The service ends the connection (a close frame, then EOF, or a reset) without waiting
    // for the rest; today's 60 s idle limit would be far beyond this bound.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 256];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the service kept a socket with a 1 MiB frame declared"
    );
}

#[test]
fn a_huge_frame_is_refused_in_memory() {
    let idp = SmartEhr::identity_only();
    runtime().block_on(async {
        let d = in_memory(&idp, |_| {}).await;
        a_huge_frame_is_refused_at_its_header(&d).await;
    });
}

#[test]
fn a_huge_frame_is_refused_on_redis() {
    let idp = SmartEhr::identity_only();
    let d = on_redis(&idp, "");
    runtime().block_on(a_huge_frame_is_refused_at_its_header(&d));
}

/// With `max_members_per_visit = 3` and `max_connections = 4`: a fourth member is refused
/// (`visit_full`), a fifth socket is answered 503, and a place comes back when one closes.
async fn visits_and_connections_are_capped(idp: &SmartEhr, d: &Deployment) {
    let access = clinician_token(idp);
    let _doc = Ws::host(&d.a, &access, "appt-cap", false).await;
    let l = link(&d.a, &access, "appt-cap", Role::Patient).await;
    let _p1 = Ws::join(&d.a, &token_of(&l), "One").await;
    let _p2 = Ws::join(&d.a, &token_of(&l), "Two").await;
    let mut p3 = Ws::connect(&d.a).await;
    p3.send(&ClientMsg::Join {
        token: token_of(&l),
        name: "Three".into(),
        visit: None,
    })
    .await;
    p3.until("visit_full", is_error(ErrorCode::VisitFull)).await;
    let url = format!("{}/v1/ws", d.a.replacen("http", "ws", 1));
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a fifth socket: {:?}", other.map(|_| ())),
    }
    p3.close().await;
    wait_for(std::time::Duration::from_secs(10), "a place again", || {
        let url = url.clone();
        async move { tokio_tungstenite::connect_async(url).await.ok().map(|_| ()) }
    })
    .await;
}

const CAPS: &str = "max_members_per_visit = 3\nmax_connections = 4\n";

#[test]
fn visits_and_connections_are_capped_in_memory() {
    let idp = ehr_with(&["appt-cap"]);
    runtime().block_on(async {
        let d = in_memory(&idp, |s| {
            s.max_members_per_visit = 3;
            s.max_connections = 4;
        })
        .await;
        visits_and_connections_are_capped(&idp, &d).await;
    });
}

#[test]
fn visits_and_connections_are_capped_on_redis() {
    let idp = ehr_with(&["appt-cap"]);
    let d = on_redis(&idp, CAPS);
    runtime().block_on(visits_and_connections_are_capped(&idp, &d));
}

/// With `max_connections_per_address = 2` and `join_within_seconds = 1`, behind a trusted
/// proxy: sockets that joined do not count (three patients of one clinic's NAT address are
/// all in), but of those that have not, one address gets two and a third is answered 503
/// naming the address limit, while another address still gets in; a socket that only pings
/// (and never says who it is) is told `not_joined` and closed however often it pings, and its
/// place comes back.
async fn one_address_cannot_hold_every_socket(idp: &SmartEhr, d: &Deployment) {
    let greedy = "203.0.113.7";
    let l = link(&d.a, &clinician_token(idp), "appt-nat", Role::Patient).await;
    let mut clinic = Vec::new();
    for name in ["Ana", "Bo", "Cy"] {
        let mut p = Ws::connect_from(&d.a, greedy)
            .await
            .unwrap_or_else(|e| panic!("{name}, joining from the clinic's address: {e:?}"));
        p.send(&ClientMsg::Join {
            token: token_of(&l),
            name: name.into(),
            visit: None,
        })
        .await;
        p.welcome().await;
        clinic.push(p);
    }
    let mut first = Ws::connect_from(&d.a, greedy).await.unwrap();
    let _second = Ws::connect_from(&d.a, greedy).await.unwrap();
    match Ws::connect_from(&d.a, greedy).await {
        Err((status, body)) => {
            assert_eq!(status, 503);
            assert!(body.contains("from this address"), "{body}");
        }
        Ok(_) => panic!("a third socket from one address"),
    }
    let _other = Ws::connect_from(&d.a, "203.0.113.8")
        .await
        .unwrap_or_else(|e| panic!("another address was refused: {e:?}"));
    // Pinging does not keep a socket that never joins: within 10 s (the limit is 1 s) it is
    // told so and closed.
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        // Five pings a second: well inside the connection's message allowance.
        let mut pace = tokio::time::interval(std::time::Duration::from_millis(200));
        let mut id = 0;
        loop {
            pace.tick().await;
            id += 1;
            first.send(&ClientMsg::Ping { id }).await;
            match first.next().await {
                Some(ServerMsg::Pong { .. }) => continue,
                Some(m) if is_error(ErrorCode::NotJoined)(&m) => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(first.next().await.is_none(), "still open after not_joined");
    })
    .await
    .expect("a socket that only pings was kept");
    wait_for(
        std::time::Duration::from_secs(10),
        "the address's place back",
        || async { Ws::connect_from(&d.a, greedy).await.ok().map(|_| ()) },
    )
    .await;
}

#[test]
fn one_address_cannot_hold_every_socket_in_memory() {
    let idp = ehr_with(&["appt-nat"]);
    runtime().block_on(async {
        let d = in_memory(&idp, |s| {
            s.max_connections_per_address = 2;
            s.join_within = std::time::Duration::from_secs(1);
            s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .await;
        one_address_cannot_hold_every_socket(&idp, &d).await;
    });
}

#[test]
fn one_address_cannot_hold_every_socket_on_redis() {
    let idp = ehr_with(&["appt-nat"]);
    let d = on_redis(
        &idp,
        "max_connections_per_address = 2\njoin_within_seconds = 1\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    runtime().block_on(one_address_cannot_hold_every_socket(&idp, &d));
}

/// The service is behind proxies at 127.0.0.1 and in 10/8. A client that writes its own
/// `X-Forwarded-For` hops, new ones each time, is still limited by its real address (the one
/// the proxy appended); another real client is not.
async fn a_forged_forwarded_for_does_not_escape_the_limit(d: &Deployment) {
    let http = reqwest::Client::new();
    let attempt = |forwarded: String| {
        let http = http.clone();
        let url = format!("{}/v1/links/check", d.a);
        async move {
            http.post(url)
                .header("x-forwarded-for", forwarded)
                .header("content-type", "application/json")
                .body(r#"{"token":"junk.junk"}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for i in 0..3 {
        assert_eq!(
            attempt(format!("1.2.3.{i}, 203.0.113.7, 10.0.0.5")).await,
            400
        );
    }
    assert_eq!(
        attempt("1.2.3.99, 203.0.113.7, 10.0.0.5".into()).await,
        429,
        "a forged leftmost hop escaped the limit"
    );
    assert_eq!(
        attempt("203.0.113.8, 10.0.0.5".into()).await,
        400,
        "another client has its own allowance"
    );
}

#[test]
fn a_forged_forwarded_for_is_not_trusted_in_memory() {
    let idp = SmartEhr::identity_only();
    runtime().block_on(async {
        let d = in_memory(&idp, |s| {
            s.joins_per_minute = 3;
            s.trusted_proxies = vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ];
        })
        .await;
        a_forged_forwarded_for_does_not_escape_the_limit(&d).await;
    });
}

#[test]
fn a_forged_forwarded_for_is_not_trusted_on_redis() {
    let idp = SmartEhr::identity_only();
    let d = on_redis(
        &idp,
        "joins_per_minute = 3\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n",
    );
    runtime().block_on(a_forged_forwarded_for_does_not_escape_the_limit(&d));
}

/// One link shared too widely: with `visit_joins_per_minute = 3`, the fourth check or join of
/// that visit's links (from one address whose own allowance is far from used) is refused, and
/// another visit's link still opens. With `total_joins_per_minute = 10`, clients at new
/// addresses (behind a trusted proxy) use up everyone's allowance: the next new address is
/// refused although it never tried before.
async fn visits_and_the_whole_service_have_their_own_limits(idp: &SmartEhr, d: &Deployment) {
    let access = clinician_token(idp);
    let busy = link(&d.a, &access, "appt-busy", Role::Patient).await;
    let calm = link(&d.a, &access, "appt-calm", Role::Patient).await;
    let http = reqwest::Client::new();
    let check = |token: Secret, forwarded: &'static str| {
        let http = http.clone();
        let url = format!("{}/v1/links/check", d.a);
        async move {
            let body = serde_json::json!({ "token": token });
            let r = http
                .post(url)
                .header("x-forwarded-for", forwarded)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    for _ in 0..2 {
        assert_eq!(check(token_of(&busy), "203.0.113.1").await.0, 200);
    }
    let _pat = Ws::join(&d.a, &token_of(&busy), "Ana").await;
    let (status, body) = check(token_of(&busy), "203.0.113.1").await;
    assert_eq!(
        (status, code_of(&body)),
        (429, ErrorCode::RateLimited),
        "a fourth attempt on one visit: {body}"
    );
    let mut late = Ws::connect(&d.a).await;
    late.send(&ClientMsg::Join {
        token: token_of(&busy),
        name: "Bo".into(),
        visit: None,
    })
    .await;
    late.until("rate_limited", is_error(ErrorCode::RateLimited))
        .await;
    assert_eq!(
        check(token_of(&calm), "203.0.113.1").await.0,
        200,
        "another visit has its own allowance"
    );
    // Six attempts so far (four checks, two joins; refused for their visit or not, each was
    // an attempt), four junk checks from new addresses use the ten up.
    let forwarded = [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
    ];
    for f in forwarded {
        let (status, body) = check(Secret::new("junk.junk"), f).await;
        assert_eq!(status, 400, "{f}: {body}");
    }
    let (status, body) = check(Secret::new("junk.junk"), "198.51.100.5").await;
    assert_eq!(
        (status, code_of(&body)),
        (429, ErrorCode::RateLimited),
        "the service's total: {body}"
    );
}

#[test]
fn visits_and_the_service_have_limits_in_memory() {
    let idp = ehr_with(&["appt-busy", "appt-calm"]);
    runtime().block_on(async {
        let d = in_memory(&idp, |s| {
            s.visit_joins_per_minute = 3;
            s.total_joins_per_minute = 10;
            s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .await;
        visits_and_the_whole_service_have_their_own_limits(&idp, &d).await;
    });
}

#[test]
fn visits_and_the_service_have_limits_on_redis() {
    let idp = ehr_with(&["appt-busy", "appt-calm"]);
    let d = on_redis(
        &idp,
        "visit_joins_per_minute = 3\ntotal_joins_per_minute = 10\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    runtime().block_on(visits_and_the_whole_service_have_their_own_limits(&idp, &d));
}

/// In memory, a visit nobody is connected to is forgotten `forget_visits_after` after its last
/// change: its roster (with the patient's name) is gone and the patient's resume secret no
/// longer works. A visit someone is still connected to is kept, however old its last change.
#[test]
fn visits_are_forgotten_in_memory() {
    let idp = ehr_with(&["appt-kept", "appt-gone"]);
    runtime().block_on(async {
        let d = in_memory(&idp, |s| {
            s.forget_visits_after = std::time::Duration::from_millis(300);
        })
        .await;
        let access = clinician_token(&idp);
        let kept = Ws::host(&d.a, &access, "appt-kept", false).await;
        let mut doc = Ws::host(&d.a, &access, "appt-gone", false).await;
        let l = link(&d.a, &access, "appt-gone", Role::Patient).await;
        let mut pat = Ws::join(&d.a, &token_of(&l), "Zed Quillfeather").await;
        doc.until("the patient waiting", |m| {
            roster_entry(m, &pat.participant).is_some()
        })
        .await;
        pat.close().await;
        doc.close().await;
        let snapshot = |visit: &'static str| {
            let (base, access) = (d.a.clone(), access.clone());
            async move {
                let r = reqwest::Client::new()
                    .get(format!("{base}/v1/visits/{visit}"))
                    .bearer_auth(access)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        let body = wait_for(
            std::time::Duration::from_secs(20),
            "the visit forgotten",
            || async {
                let (status, body) = snapshot("appt-gone").await;
                (status == 404).then_some(body)
            },
        )
        .await;
        assert_eq!(code_of(&body), ErrorCode::UnknownParticipant);
        let mut thief = Ws::connect(&d.a).await;
        thief
            .send(&ClientMsg::Resume {
                visit: "appt-gone".into(),
                participant: pat.participant.clone(),
                resume: pat.resume.clone().unwrap(),
            })
            .await;
        thief
            .until("resume refused", is_error(ErrorCode::ResumeRefused))
            .await;
        // Older than the other one's last change, but its clinician is still connected.
        let (status, body) = snapshot("appt-kept").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&kept.participant), "{body}");
    });
}

const TURN_SECRET: &str = "turn-secret-0123456789abcdef0123456789";
const TURN_URL: &str = "turn:127.0.0.1:3478?transport=udp";

/// The TURN REST API password for `username` (coturn's `use-auth-secret` scheme), computed
/// here from the shared secret.
fn turn_password(username: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(TURN_SECRET.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The TURN server in `ice` with credentials for `participant`, checked against the secret.
fn turn_for(ice: &hearth_visit_protocol::IceConfig, participant: &str) -> bool {
    ice.servers.iter().any(|s| {
        s.urls == [TURN_URL]
            && s.username
                .as_deref()
                .is_some_and(|u| u.ends_with(&format!(":{participant}")))
            && s.credential.as_ref().map(Secret::expose)
                == s.username.as_deref().map(turn_password).as_deref()
    })
}

/// A patient in the waiting room gets no TURN server or credentials (a relay for anyone who
/// has a link, before the clinician even saw them); the clinician's admission brings them.
async fn turn_credentials_come_with_admission(idp: &SmartEhr, d: &Deployment) {
    let access = clinician_token(idp);
    let mut doc = Ws::connect(&d.a).await;
    doc.send(&ClientMsg::Host {
        access_token: Secret::new(access.as_str()),
        visit: "appt-turn".into(),
        media: true,
        name: None,
    })
    .await;
    match doc.welcome().await {
        ServerMsg::Welcome { ice, .. } => {
            assert!(turn_for(&ice, &doc.participant), "the clinician: {ice:?}")
        }
        other => panic!("{other:?}"),
    }
    let l = link(&d.a, &access, "appt-turn", Role::Patient).await;
    let mut pat = Ws::connect(&d.b).await;
    pat.send(&ClientMsg::Join {
        token: token_of(&l),
        name: "Ana".into(),
        visit: None,
    })
    .await;
    match pat.welcome().await {
        ServerMsg::Welcome { ice, .. } => {
            let text = serde_json::to_string(&ice).unwrap();
            assert!(
                ice.servers
                    .iter()
                    .all(|s| s.username.is_none() && s.credential.is_none())
                    && !text.contains("turn:"),
                "the waiting room got TURN: {text}"
            );
        }
        other => panic!("{other:?}"),
    }
    doc.send(&ClientMsg::Admit {
        participant: pat.participant.clone(),
    })
    .await;
    match pat
        .until("admitted", |m| matches!(m, ServerMsg::Admitted { .. }))
        .await
    {
        ServerMsg::Admitted { ice: Some(ice), .. } => {
            assert!(turn_for(&ice, &pat.participant), "admitted: {ice:?}")
        }
        other => panic!("admitted without TURN: {other:?}"),
    }
}

#[test]
fn turn_credentials_only_after_admission_in_memory() {
    let idp = ehr_with(&["appt-turn"]);
    runtime().block_on(async {
        let d = in_memory(&idp, |s| {
            s.turn = Some(hearth_visit_server::settings::Turn {
                urls: vec![TURN_URL.into()],
                secret: TURN_SECRET.as_bytes().to_vec(),
                ttl: std::time::Duration::from_secs(3600),
            });
        })
        .await;
        turn_credentials_come_with_admission(&idp, &d).await;
    });
}

#[test]
fn turn_credentials_only_after_admission_on_redis() {
    let idp = ehr_with(&["appt-turn"]);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("turn-secret");
    std::fs::write(&secret, TURN_SECRET).unwrap();
    let d = on_redis(
        &idp,
        &format!(
            "[turn]\nurls = [\"{TURN_URL}\"]\nsecret_file = \"{}\"\n",
            secret.display()
        ),
    );
    runtime().block_on(turn_credentials_come_with_admission(&idp, &d));
}

/// A patient types a name with a right-to-left override and zero-width characters: the
/// clinician's roster shows the visible letters in the order typed.
#[test]
fn display_names_lose_invisible_and_direction_changing_characters() {
    let idp = ehr_with(&["appt-name"]);
    runtime().block_on(async {
        let d = in_memory(&idp, |_| {}).await;
        let access = clinician_token(&idp);
        let mut doc = Ws::host(&d.a, &access, "appt-name", false).await;
        let l = link(&d.a, &access, "appt-name", Role::Patient).await;
        let typed = "\u{2067}Dr \u{202E}liveE\u{202C}\u{200B}\u{FEFF} \u{2066}Ana\u{2069}";
        let pat = Ws::join(&d.a, &token_of(&l), typed).await;
        let roster = doc
            .until("the patient in the roster", |m| {
                roster_entry(m, &pat.participant).is_some()
            })
            .await;
        assert_eq!(
            roster_entry(&roster, &pat.participant).map(|p| p.name.as_str()),
            Some("Dr liveE Ana")
        );
    });
}
