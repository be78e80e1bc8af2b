//! Patients and guests in real browsers: headless Debian Chromium with fake camera and
//! microphone opens the join page, waits in the lobby, is admitted by the clinician (a protocol
//! client with the real identity provider's token), and exchanges real WebRTC media with the
//! other browser. Browser scenarios run one at a time (two cores; two browsers each).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::browser::Browser;
use common::*;
use hearth_testkit::smart::SmartEhr;
use hearth_testkit::visit::{ChromeDriver, Coturn, Redis};
use hearth_visit_protocol::{ClientMsg, IcePolicy, Role, ServerMsg, Standing};
use hearth_visit_server::settings::Turn;
use std::sync::Mutex;
use std::time::Duration;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The clinician admits whoever is waiting under `name`.
async fn admit(doc: &mut Ws, name: &str) {
    let roster = doc
        .until(&format!("{name} in the waiting room"), |m| match m {
            ServerMsg::Roster { participants, .. } => participants
                .iter()
                .any(|p| p.name == name && p.standing == Standing::Waiting),
            _ => false,
        })
        .await;
    let ServerMsg::Roster { participants, .. } = roster else {
        unreachable!()
    };
    let id = participants
        .iter()
        .find(|p| p.name == name)
        .unwrap()
        .id
        .clone();
    doc.send(&ClientMsg::Admit { participant: id }).await;
}

/// Patient and interpreter in two browsers, through the waiting room into a call on `base`s.
async fn call(
    driver: &ChromeDriver,
    access: &str,
    doc_base: &str,
    patient_base: &str,
    guest_base: &str,
    visit: &str,
) -> (Browser, Browser) {
    let mut doc = Ws::host(doc_base, access, visit, false).await;
    let patient_link = link(doc_base, access, visit, Role::Patient).await;
    let guest_link = link(doc_base, access, visit, Role::Guest).await;
    let on = |base: &str, l: &hearth_visit_protocol::LinkResponse| {
        l.url.expose().replacen(doc_base, base, 1)
    };
    let patient = Browser::open(driver, "patient", &on(patient_base, &patient_link)).await;
    patient.join_as("Ana Lopez").await;
    // In the waiting room: no connection made, nothing received, and signaling to it refused.
    doc.send(&ClientMsg::Signal {
        to: "anyone".into(),
        data: serde_json::json!({}),
    })
    .await;
    let guest = Browser::open(driver, "interpreter", &on(guest_base, &guest_link)).await;
    guest.join_as("Interpreter").await;
    assert!(
        patient.stats().await.is_empty(),
        "the waiting patient has no peer connection"
    );
    admit(&mut doc, "Ana Lopez").await;
    patient.wait_state("call").await;
    admit(&mut doc, "Interpreter").await;
    guest.wait_state("call").await;
    (patient, guest)
}

fn setup() -> (SmartEhr, String, ChromeDriver) {
    let idp = ehr_with(&[
        "appt-b1", "appt-b2", "appt-b3", "appt-b4", "appt-b5", "appt-b6", "appt-b7",
    ]);
    let access = clinician_token(&idp);
    (idp, access, ChromeDriver::start())
}

#[test]
fn two_browsers_go_from_the_waiting_room_to_a_call_and_decode_each_others_video() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (idp, access, driver) = setup();
    runtime().block_on(async {
        let svc = serve(&idp, |_| {}).await;
        let base = format!("http://{}", svc.addr);
        let (patient, guest) = call(&driver, &access, &base, &base, &base, "appt-b1").await;
        let p = patient.decoding().await;
        let g = guest.decoding().await;
        println!("patient: {p}\ninterpreter: {g}");
        patient.close().await;
        guest.close().await;
    });
}

#[test]
fn no_media_reaches_a_participant_in_the_waiting_room() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (idp, access, driver) = setup();
    runtime().block_on(async {
        let svc = serve(&idp, |_| {}).await;
        let base = format!("http://{}", svc.addr);
        // The interpreter is admitted and in the call; the patient waits.
        let mut doc = Ws::host(&base, &access, "appt-b2", false).await;
        let guest = Browser::open(&driver, "interpreter", link(&base, &access, "appt-b2", Role::Guest).await.url.expose()).await;
        guest.join_as("Interpreter").await;
        admit(&mut doc, "Interpreter").await;
        guest.wait_state("call").await;
        let patient = Browser::open(&driver, "patient", link(&base, &access, "appt-b2", Role::Patient).await.url.expose()).await;
        patient.join_as("Ana Lopez").await;
        // The clinician tries to start media with the waiting patient: refused by the service.
        let roster = doc.until("the patient waiting", |m| matches!(m, ServerMsg::Roster { participants, .. } if participants.iter().any(|p| p.standing == Standing::Waiting))).await;
        let ServerMsg::Roster { participants, .. } = roster else { unreachable!() };
        let waiting = participants.iter().find(|p| p.standing == Standing::Waiting).unwrap().id.clone();
        doc.send(&ClientMsg::Signal { to: waiting.clone(), data: serde_json::json!({"sdp": {"type": "offer", "sdp": "v=0"}}) }).await;
        doc.until("not_admitted", |m| matches!(m, ServerMsg::Error(e) if e.code == hearth_visit_protocol::ErrorCode::NotAdmitted)).await;
        // The waiting page made no peer connection, so no RTP can arrive; its state is waiting.
        doc.send(&ClientMsg::Ping { id: 5 }).await;
        doc.until("pong", |m| matches!(m, ServerMsg::Pong { id: 5 })).await;
        assert!(patient.stats().await.is_empty(), "no RTCPeerConnection while waiting");
        assert_eq!(patient.state().await, "waiting");
        // Admitted, media flows at once.
        doc.send(&ClientMsg::Admit { participant: waiting }).await;
        let stats = patient.decoding().await;
        assert!(stats["bytesReceived"].as_u64().unwrap() > 0);
        patient.close().await;
        guest.close().await;
    });
}

#[test]
fn relay_only_ice_through_coturn_with_the_services_credentials_connects() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (idp, access, driver) = setup();
    let turn = Coturn::start();
    runtime().block_on(async {
        let svc = serve(&idp, |s| {
            s.turn = Some(Turn {
                urls: vec![turn.url()],
                secret: turn.secret.as_bytes().to_vec(),
                ttl: Duration::from_secs(3600),
            });
            s.ice_transport_policy = IcePolicy::Relay;
        })
        .await;
        let base = format!("http://{}", svc.addr);
        let (patient, guest) = call(&driver, &access, &base, &base, &base, "appt-b3").await;
        for b in [&patient, &guest] {
            let s = b.decoding().await;
            assert_eq!(
                (s["local"].as_str(), s["remote"].as_str()),
                (Some("relay"), Some("relay")),
                "{}: {s}",
                b.name
            );
        }
        patient.close().await;
        guest.close().await;
    });
}

#[test]
fn a_patient_on_one_instance_and_the_clinicians_side_on_another_connect_through_redis() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (idp, access, driver) = setup();
    let redis = Redis::start();
    let a = Instance::spawn(&idp, Some(&redis.url), "");
    let b = Instance::spawn(&idp, Some(&redis.url), "");
    runtime().block_on(async {
        // The clinician (and the interpreter beside them) on B, the patient on A.
        let (patient, guest) = call(&driver, &access, &b.base, &a.base, &b.base, "appt-b4").await;
        patient.decoding().await;
        guest.decoding().await;
        patient.close().await;
        guest.close().await;
    });
}

#[test]
fn when_the_patients_instance_is_killed_the_page_reconnects_to_the_other_and_the_call_resumes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (idp, access, driver) = setup();
    let redis = Redis::start();
    // The patient reaches the service through a load balancer (a TCP proxy) in front of A.
    let balancer = hearth_testkit::Proxy::reserve();
    let origin = format!(
        "allowed_origins = [\"http://127.0.0.1:{}\"]\n",
        balancer.port
    );
    let mut a = Instance::spawn(&idp, Some(&redis.url), &origin);
    let b = Instance::spawn(&idp, Some(&redis.url), &origin);
    balancer.forward_to(a.base.rsplit(':').next().unwrap().parse().unwrap());
    let via_balancer = format!("http://127.0.0.1:{}", balancer.port);
    runtime().block_on(async {
        let (patient, guest) =
            call(&driver, &access, &b.base, &via_balancer, &b.base, "appt-b7").await;
        patient.decoding().await;
        guest.decoding().await;
        let made = patient.stats().await.len();
        // A dies; the balancer sends new connections to B.
        a.kill();
        balancer.set_cut(true);
        balancer.forward_to(b.base.rsplit(':').next().unwrap().parse().unwrap());
        balancer.set_cut(false);
        let again = patient.decoding_anew(made).await;
        assert_eq!(patient.state().await, "call");
        println!("patient after the kill: {again}");
        patient.close().await;
        guest.close().await;
    });
}

#[test]
fn the_join_page_has_no_serious_accessibility_violations_in_any_state() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let axe_path = hearth_testkit::peers_dir().join("axe/node_modules/axe-core/axe.min.js");
    let axe = std::fs::read_to_string(&axe_path)
        .unwrap_or_else(|e| panic!("{} (run scripts/setup): {e}", axe_path.display()));
    let (idp, access, driver) = setup();
    runtime().block_on(async {
        let svc = serve(&idp, |_| {}).await;
        let base = format!("http://{}", svc.addr);
        let mut found = Vec::new();
        let mut doc = Ws::host(&base, &access, "appt-b5", false).await;
        let patient = Browser::open(
            &driver,
            "patient",
            link(&base, &access, "appt-b5", Role::Patient)
                .await
                .url
                .expose(),
        )
        .await;
        patient.wait_state("lobby").await;
        found.extend(
            patient
                .axe(&axe)
                .await
                .into_iter()
                .map(|v| format!("lobby: {v}")),
        );
        patient.join_as("Ana Lopez").await;
        found.extend(
            patient
                .axe(&axe)
                .await
                .into_iter()
                .map(|v| format!("waiting: {v}")),
        );
        admit(&mut doc, "Ana Lopez").await;
        patient.wait_state("call").await;
        found.extend(
            patient
                .axe(&axe)
                .await
                .into_iter()
                .map(|v| format!("call: {v}")),
        );
        doc.send(&ClientMsg::End).await;
        patient.wait_state("ended").await;
        found.extend(
            patient
                .axe(&axe)
                .await
                .into_iter()
                .map(|v| format!("ended: {v}")),
        );
        // A link that has expired.
        let expired = hearth_visit_server::tokens::LinkSigner::new(LINK_SECRET.as_bytes()).sign(
            &hearth_visit_server::tokens::LinkClaims {
                v: 1,
                visit: "appt-b6".into(),
                role: Role::Patient,
                nbf: now_ms() - 7_200_000,
                exp: now_ms() - 1_000,
                jti: "e".into(),
            },
        );
        patient
            .client
            .goto(&format!("{base}/join#{}", expired.expose()))
            .await
            .unwrap();
        patient.wait_state("error").await;
        let message = patient
            .js("return document.getElementById('message').textContent")
            .await;
        assert!(message.as_str().unwrap().contains("expired"), "{message}");
        found.extend(
            patient
                .axe(&axe)
                .await
                .into_iter()
                .map(|v| format!("expired link: {v}")),
        );
        patient.close().await;
        assert!(
            found.is_empty(),
            "serious or critical accessibility violations:\n{}",
            found.join("\n")
        );
    });
}
