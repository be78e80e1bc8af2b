//! The media engine in real calls, on loopback: the real visit service, the real identity
//! provider's clinician token, patients and interpreters in headless Debian Chromium on the
//! join page (their fake camera plays the self-stamping pattern from a Y4M file, their fake
//! microphone a tone), coturn as the TURN relay, and a UDP impairment proxy in front of it.
//! Browser scenarios run one at a time (two cores; each browser is heavy).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../../visit-server/tests/common/mod.rs"]
mod common;
#[path = "support/fake_devices.rs"]
mod fake_devices;

use common::browser::{Browser, WAIT};
use common::*;
use fake_devices::FakeDevices;
use fantoccini::Locator;
use hearth_media::quality::Quality;
use hearth_media::{Call, CallEvent, CallOptions, Entry, PeerMedia};
use hearth_testkit::impair::Impairment;
use hearth_testkit::smart::SmartEhr;
use hearth_testkit::visit::{ChromeDriver, Coturn};
use hearth_visit_client::{ServiceTokens, TokenFuture, VisitClient};
use hearth_visit_protocol::{IcePolicy, Role, Secret, Standing};
use hearth_visit_server::settings::{Settings, Turn};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The clinician's token for the service, as Hearth's sign-in would give it.
struct Fixed(String);

impl ServiceTokens for Fixed {
    fn token<'a>(&'a self, _resource: &'a str) -> TokenFuture<'a> {
        let token = Secret::new(self.0.clone());
        Box::pin(async move { Ok(token) })
    }
}

struct Visit {
    idp: SmartEhr,
    access: String,
    driver: ChromeDriver,
    devices: FakeDevices,
}

fn setup(visits: &[&str]) -> Visit {
    let idp = ehr_with(visits);
    let access = clinician_token(&idp);
    Visit {
        idp,
        access,
        driver: ChromeDriver::start(),
        devices: FakeDevices::new(),
    }
}

fn loopback() -> CallOptions {
    CallOptions {
        bind: [127, 0, 0, 1].into(),
        ..CallOptions::default()
    }
}

/// Hearth's engine hosting `visit` on the service at `base`.
async fn host(v: &Visit, base: &str, visit: &str) -> (Call, broadcast::Receiver<CallEvent>) {
    let client = VisitClient::new(base, Arc::new(Fixed(v.access.clone()))).unwrap();
    let call = Call::start(
        Entry::Host {
            client,
            visit: visit.to_owned(),
            name: Some("Dr Rivera".into()),
        },
        loopback(),
    )
    .await
    .unwrap();
    let mut events = call.events();
    next_event(&mut events, "welcome", |e| {
        matches!(e, CallEvent::Welcome { .. })
    })
    .await;
    (call, events)
}

async fn next_event(
    events: &mut broadcast::Receiver<CallEvent>,
    what: &str,
    want: impl Fn(&CallEvent) -> bool,
) -> CallEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) if want(&e) => return e,
                Ok(CallEvent::Trouble {
                    message,
                    fatal: true,
                    ..
                }) => {
                    panic!("waiting for {what}: the call failed: {message}")
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("waiting for {what}: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// Admits `name` from the waiting room; returns their participant id.
async fn admit(call: &Call, events: &mut broadcast::Receiver<CallEvent>, name: &str) -> String {
    let e = next_event(events, &format!("{name} in the waiting room"), |e| {
        matches!(e, CallEvent::Roster(people) if people.iter().any(|p| p.name == name && p.standing == Standing::Waiting))
    })
    .await;
    let CallEvent::Roster(people) = e else {
        unreachable!()
    };
    let id = people.iter().find(|p| p.name == name).unwrap().id.clone();
    call.admit(&id);
    id
}

/// Waits until what Hearth received from `peer` satisfies `ok`.
async fn received_until(
    call: &Call,
    peer: &str,
    what: &str,
    ok: impl Fn(&PeerMedia) -> bool,
) -> PeerMedia {
    wait_for(WAIT, what, || async {
        call.received().get(peer).filter(|m| ok(m)).cloned()
    })
    .await
}

/// A browser on the join page with the pattern and tone as its camera and microphone.
async fn patient(
    v: &Visit,
    base: &str,
    visit: &str,
    who: &'static str,
    display: &str,
    role: Role,
) -> Browser {
    let l = link(base, &v.access, visit, role).await;
    let b = Browser::open_with(&v.driver, who, l.url.expose(), &v.devices.flags()).await;
    b.join_as(display).await;
    b
}

async fn serve_with(
    v: &Visit,
    tweak: impl FnOnce(&mut Settings),
) -> (hearth_visit_server::Running, String) {
    let svc = serve(&v.idp, tweak).await;
    let base = format!("http://{}", svc.addr);
    (svc, base)
}

/// The chat lines the join page shows.
async fn page_chat(b: &Browser) -> Vec<String> {
    let v = b
        .js("return Array.from(document.querySelectorAll('#chat-log .chat-msg')).map((p) => p.textContent)")
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_patient_in_chromium_and_hearths_engine_see_hear_and_chat_with_each_other() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let v = setup(&["appt-m1"]);
    runtime().block_on(async {
        let (_svc, base) = serve_with(&v, |_| {}).await;
        let (call, mut events) = host(&v, &base, "appt-m1").await;
        let page = patient(&v, &base, "appt-m1", "patient", "Ana Lopez", Role::Patient).await;
        let ana = admit(&call, &mut events, "Ana Lopez").await;
        page.wait_state("call").await;

        // Hearth decodes the patient's video: the frames carry the Y4M's numbers (0..60).
        let m = received_until(
            &call,
            &ana,
            "Hearth to decode 60 of the patient's frames with the pattern's stamp",
            |m| m.frames_decoded >= 60 && m.last_stamp.is_some(),
        )
        .await;
        let stamp = m.last_stamp.unwrap();
        assert!(stamp.frame < 60, "a frame number of the file: {stamp:?}");
        assert_eq!((m.width, m.height), (640, 480));
        // And hears the tone (0.3 amplitude sine: RMS ≈ 0.21, well above silence).
        let m = received_until(&call, &ana, "Hearth to hear the patient's tone", |m| {
            m.audio_loud_frames >= 25
        })
        .await;
        assert!(m.last_rms > 0.05, "the tone's level: {}", m.last_rms);

        // Chromium decodes Hearth's video.
        let s = page.decoding().await;
        assert!(s["framesDecoded"].as_u64().unwrap() > 0, "{s}");
        assert!(call.sent().frames_encoded > 0);

        // Chat both ways over the data channel.
        call.chat("Hello from Hearth <b>|^~\\&</b>");
        wait_for(WAIT, "the page to show Hearth's chat line", || async {
            page_chat(&page)
                .await
                .into_iter()
                .find(|l| l.contains("Hello from Hearth <b>|^~\\&</b>"))
        })
        .await;
        page.client
            .find(Locator::Css("#chat-button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        page.client
            .find(Locator::Css("#chat-input"))
            .await
            .unwrap()
            .send_keys("Hi doctor")
            .await
            .unwrap();
        page.client
            .find(Locator::Css("#chat-form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let e = next_event(&mut events, "the patient's chat line", |e| {
            matches!(e, CallEvent::Chat { .. })
        })
        .await;
        assert_eq!(
            e,
            CallEvent::Chat {
                from: ana.clone(),
                name: "Ana Lopez".into(),
                text: "Hi doctor".into()
            }
        );

        call.end();
        next_event(&mut events, "the end of the visit", |e| {
            *e == CallEvent::Ended
        })
        .await;
        page.wait_state("ended").await;
        page.close().await;
    });
}

#[test]
fn three_parties_hearth_a_patient_and_an_interpreter_all_decode_each_other() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let v = setup(&["appt-m2"]);
    runtime().block_on(async {
        let (_svc, base) = serve_with(&v, |_| {}).await;
        let (call, mut events) = host(&v, &base, "appt-m2").await;
        let p = patient(&v, &base, "appt-m2", "patient", "Ana Lopez", Role::Patient).await;
        let ana = admit(&call, &mut events, "Ana Lopez").await;
        p.wait_state("call").await;
        let g = patient(
            &v,
            &base,
            "appt-m2",
            "interpreter",
            "Interpreter",
            Role::Guest,
        )
        .await;
        let interpreter = admit(&call, &mut events, "Interpreter").await;
        g.wait_state("call").await;
        for (id, who) in [(&ana, "patient"), (&interpreter, "interpreter")] {
            received_until(
                &call,
                id,
                &format!("Hearth to decode the {who}'s video"),
                |m| m.frames_decoded >= 30 && m.last_stamp.is_some(),
            )
            .await;
        }
        // Each browser decodes both others: two connections with frames.
        for b in [&p, &g] {
            let what = format!("{} to decode video from both other parties", b.name);
            wait_for(WAIT, &what, || async {
                let decoding = b
                    .stats()
                    .await
                    .into_iter()
                    .filter(|s| {
                        s["framesDecoded"].as_u64().unwrap_or(0) > 0 && s["state"] == "connected"
                    })
                    .count();
                (decoding >= 2).then_some(())
            })
            .await;
        }
        call.end();
        p.close().await;
        g.close().await;
    });
}

fn turn_at(url: String, turn: &Coturn) -> impl FnOnce(&mut Settings) + '_ {
    move |s: &mut Settings| {
        s.turn = Some(Turn {
            urls: vec![url],
            secret: turn.secret.as_bytes().to_vec(),
            ttl: Duration::from_secs(3600),
        });
        s.ice_transport_policy = IcePolicy::Relay;
    }
}

#[test]
fn relay_only_through_coturn_with_the_services_credentials_media_flows() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let v = setup(&["appt-m3"]);
    let turn = Coturn::start();
    runtime().block_on(async {
        let (_svc, base) = serve_with(&v, turn_at(turn.url(), &turn)).await;
        let (call, mut events) = host(&v, &base, "appt-m3").await;
        let page = patient(&v, &base, "appt-m3", "patient", "Ana Lopez", Role::Patient).await;
        let ana = admit(&call, &mut events, "Ana Lopez").await;
        received_until(
            &call,
            &ana,
            "Hearth to decode the patient's video through the relay",
            |m| m.frames_decoded >= 30 && m.audio_frames > 0,
        )
        .await;
        let s = page.decoding().await;
        assert_eq!(
            (s["local"].as_str(), s["remote"].as_str()),
            (Some("relay"), Some("relay")),
            "the browser's selected pair is relayed both ends: {s}"
        );
        call.end();
        page.close().await;
    });
}

#[test]
fn with_loss_and_delay_video_keeps_flowing_recovers_by_pli_and_the_indicator_degrades() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let v = setup(&["appt-m4"]);
    let turn = Coturn::start();
    // 5 % loss and 100 ms delay on every datagram coming down from the relay: each media packet
    // crosses it once, on its way to its receiver.
    let proxy = Impairment::start(
        format!("127.0.0.1:{}", turn.port).parse().unwrap(),
        0.05,
        Duration::from_millis(100),
        0x4845_4152_5448,
    );
    runtime().block_on(async {
        let (_svc, base) = serve_with(&v, turn_at(proxy.turn_url(), &turn)).await;
        let (call, mut events) = host(&v, &base, "appt-m4").await;
        let page = patient(&v, &base, "appt-m4", "patient", "Ana Lopez", Role::Patient).await;
        let ana = admit(&call, &mut events, "Ana Lopez").await;
        let first = received_until(
            &call,
            &ana,
            "the first frames through the impaired relay",
            |m| m.frames_decoded >= 30,
        )
        .await;
        // The indicator degrades: Chromium's receiver reports carry the loss and the delay.
        next_event(&mut events, "the quality indicator to leave Good", |e| {
            matches!(
                e,
                CallEvent::Quality {
                    quality: Quality::Fair | Quality::Poor,
                    ..
                }
            )
        })
        .await;
        // A burst that NACK cannot repair (everything coming down dropped until 150 more
        // datagrams are gone, then the 5 % again) costs frames: Hearth asks for a key frame
        // (PLI) and decoding carries on after it.
        let before = call.received().get(&ana).cloned().unwrap_or_default();
        let dropped = || {
            proxy
                .stats
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let at = dropped();
        proxy.set_loss(1.0);
        wait_for(WAIT, "a burst of 150 datagrams dropped", || async {
            (dropped() >= at + 150).then_some(())
        })
        .await;
        proxy.set_loss(0.05);
        let after_pli =
            received_until(&call, &ana, "a PLI sent and frames decoded after it", |m| {
                m.plis_sent > before.plis_sent
                    && m.key_frames > before.key_frames
                    && m.frames_decoded >= before.frames_decoded.max(first.frames_decoded) + 60
            })
            .await;
        assert!(
            proxy
                .stats
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        // Chromium keeps decoding Hearth's video across the same path.
        let decoded = page.decoding().await["framesDecoded"].as_u64().unwrap();
        wait_for(
            WAIT,
            "Chromium to decode 60 more of Hearth's frames",
            || async {
                let now = page.decoding().await["framesDecoded"].as_u64().unwrap();
                (now >= decoded + 60).then_some(())
            },
        )
        .await;
        println!("after impairment: {after_pli:?}; sent {:?}", call.sent());
        call.end();
        page.close().await;
    });
}
