//! The visit service over its real HTTP and WebSocket interface, with the clinician's token
//! from a real OpenID Connect provider (the SMART test peer), checked against its JWKS.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::*;
use hearth_testkit::smart::SmartEhr;
use hearth_visit_protocol::{
    ClientMsg, ErrorCode, Role, Secret, ServerMsg, Standing, VisitSnapshot,
};
use hearth_visit_server::tokens::{LinkClaims, LinkSigner};
use std::time::Duration;

async fn check(base: &str, token: &Secret, visit: Option<&str>) -> (u16, String) {
    let body = serde_json::json!({ "token": token.expose(), "visit": visit });
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/links/check"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[test]
fn links_open_only_their_own_visit_inside_their_window() {
    let idp = ehr_with(&["appt-1"]);
    let access = clinician_token(&idp);
    runtime().block_on(async {
        let svc = serve(&idp, |_| {}).await;
        let base = format!("http://{}", svc.addr);
        let http = reqwest::Client::new();

        // Links need a clinician's valid access token.
        for bearer in [None, Some("not-a-jwt"), Some(&format!("{access}x")[..])] {
            let mut req = http.post(format!("{base}/v1/links")).body("{}");
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401);
            assert_eq!(code_of(&r.text().await.unwrap()), ErrorCode::Unauthorized);
        }
        let link = link(&base, &access, "appt-1", Role::Patient).await;
        assert!(link.url.expose().starts_with(&format!("{base}/join#")));
        let token = token_of(&link);
        let (status, body) = check(&base, &token, None).await;
        assert_eq!(status, 200, "{body}");

        // Expired, tampered, for another visit: refused over HTTP and on the socket.
        let signer = LinkSigner::new(LINK_SECRET.as_bytes());
        let expired = signer.sign(&LinkClaims {
            v: 1,
            visit: "appt-1".into(),
            role: Role::Patient,
            nbf: now_ms() - 7_200_000,
            exp: now_ms() - 1_000,
            jti: "x".into(),
        });
        let mut tampered = token.expose().to_owned();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        let tampered = Secret::new(tampered);
        let cases = [
            (&expired, None, 410, ErrorCode::LinkExpired),
            (&tampered, None, 400, ErrorCode::LinkInvalid),
            (&token, Some("appt-2"), 403, ErrorCode::WrongVisit),
        ];
        for (token, visit, status, code) in cases {
            let (s, body) = check(&base, token, visit).await;
            assert_eq!((s, code_of(&body)), (status, code), "link check");
            let mut ws = Ws::connect(&base).await;
            ws.send(&ClientMsg::Join {
                token: token.clone(),
                name: "Ana".into(),
                visit: visit.map(str::to_owned),
            })
            .await;
            ws.until("the refusal", is_error(code)).await;
        }

        // A service that trusts another audience refuses the same clinician token.
        let picky = serve(&idp, |s| {
            s.identity.audiences = vec!["https://elsewhere/fhir".into()]
        })
        .await;
        let r = http
            .post(format!("http://{}/v1/links", picky.addr))
            .bearer_auth(&access)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert!(r.text().await.unwrap().contains("another audience"));
    });
}

#[test]
fn the_waiting_room_admits_signaling_flows_only_between_admitted_and_times_are_kept() {
    let idp = ehr_with(&["appt-7"]);
    let access = clinician_token(&idp);
    runtime().block_on(async {
        let svc = serve(&idp, |_| {}).await;
        let base = format!("http://{}", svc.addr);
        let mut doc = Ws::host(&base, &access, "appt-7", true).await;
        doc.until("admitted", |m| matches!(m, ServerMsg::Admitted { .. })).await;
        let patient_link = link(&base, &access, "appt-7", Role::Patient).await;
        let mut pat = Ws::join(&base, &token_of(&patient_link), "Ana Lopez").await;
        assert_eq!(pat.next().await, Some(ServerMsg::Waiting));
        let roster = doc.until("the patient waiting", |m| roster_entry(m, &pat.participant).is_some()).await;
        let entry = roster_entry(&roster, &pat.participant).unwrap();
        assert_eq!((entry.standing, entry.name.as_str(), entry.role), (Standing::Waiting, "Ana Lopez", Role::Patient));

        // Nothing reaches or leaves the waiting room.
        let offer = serde_json::json!({"sdp": {"type": "offer", "sdp": "v=0"}});
        doc.send(&ClientMsg::Signal { to: pat.participant.clone(), data: offer.clone() }).await;
        doc.until("not_admitted", is_error(ErrorCode::NotAdmitted)).await;
        pat.send(&ClientMsg::Signal { to: doc.participant.clone(), data: offer.clone() }).await;
        assert!(matches!(pat.next().await, Some(ServerMsg::Error(e)) if e.code == ErrorCode::NotAdmitted));
        pat.send(&ClientMsg::Admit { participant: pat.participant.clone() }).await;
        assert!(matches!(pat.next().await, Some(ServerMsg::Error(e)) if e.code == ErrorCode::NotClinician));
        pat.send(&ClientMsg::Ping { id: 1 }).await;
        assert_eq!(pat.next().await, Some(ServerMsg::Pong { id: 1 }), "the waiting patient got nothing else");

        // Admitted: the clinician hears of the patient, the patient offers, signaling flows.
        doc.send(&ClientMsg::Admit { participant: pat.participant.clone() }).await;
        let joined = doc.until("peer_joined", |m| matches!(m, ServerMsg::PeerJoined { .. })).await;
        assert!(matches!(joined, ServerMsg::PeerJoined { peer } if peer.id == pat.participant && peer.name == "Ana Lopez"));
        let admitted = pat.until("admitted", |m| matches!(m, ServerMsg::Admitted { .. })).await;
        assert!(matches!(&admitted, ServerMsg::Admitted { peers, .. } if peers.len() == 1 && peers[0].id == doc.participant));
        pat.send(&ClientMsg::Signal { to: doc.participant.clone(), data: offer.clone() }).await;
        let got = doc.until("the offer", |m| matches!(m, ServerMsg::Signal { .. })).await;
        assert_eq!(got, ServerMsg::Signal { from: pat.participant.clone(), data: offer.clone() });
        let answer = serde_json::json!({"sdp": {"type": "answer", "sdp": "v=0"}});
        doc.send(&ClientMsg::Signal { to: pat.participant.clone(), data: answer.clone() }).await;
        let got = pat.until("the answer", |m| matches!(m, ServerMsg::Signal { .. })).await;
        assert_eq!(got, ServerMsg::Signal { from: doc.participant.clone(), data: answer });

        // A third participant (an interpreter) with a link of their own, admitted the same way.
        let guest_link = link(&base, &access, "appt-7", Role::Guest).await;
        let mut guest = Ws::join(&base, &token_of(&guest_link), "Interpreter").await;
        assert_eq!(guest.next().await, Some(ServerMsg::Waiting));
        doc.send(&ClientMsg::Admit { participant: guest.participant.clone() }).await;
        let admitted = guest.until("admitted", |m| matches!(m, ServerMsg::Admitted { .. })).await;
        assert!(matches!(&admitted, ServerMsg::Admitted { peers, .. } if peers.len() == 2));
        pat.until("the interpreter joining", |m| matches!(m, ServerMsg::PeerJoined { peer } if peer.role == Role::Guest)).await;

        // The patient leaves; the clinician ends the visit; times are there for the Encounter.
        pat.send(&ClientMsg::Leave).await;
        doc.until("peer_left", |m| matches!(m, ServerMsg::PeerLeft { peer } if *peer == pat.participant)).await;
        let snapshot: VisitSnapshot = serde_json::from_str(
            &reqwest::Client::new()
                .get(format!("{base}/v1/visits/appt-7"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        let p = snapshot.participants.iter().find(|p| p.id == pat.participant).unwrap();
        assert_eq!(p.standing, Standing::Left);
        let (joined, admitted, left) = (p.joined_ms, p.admitted_ms.unwrap(), p.left_ms.unwrap());
        assert!(joined <= admitted && admitted <= left && left <= now_ms());
        doc.send(&ClientMsg::End).await;
        assert_eq!(guest.until("ended", |m| matches!(m, ServerMsg::Ended)).await, ServerMsg::Ended);
        assert_eq!(guest.next().await, None, "the socket closes after `ended`");
        let (status, body) = check(&base, &token_of(&guest_link), None).await;
        assert_eq!((status, code_of(&body)), (410, ErrorCode::VisitOver));
    });
}

#[test]
fn a_dropped_participant_resumes_in_place_until_the_grace_period_ends() {
    let idp = ehr_with(&["appt-9"]);
    let access = clinician_token(&idp);
    runtime().block_on(async {
        let svc = serve(&idp, |s| s.grace = Duration::from_secs(2)).await;
        let base = format!("http://{}", svc.addr);
        let mut doc = Ws::host(&base, &access, "appt-9", true).await;
        let l = link(&base, &access, "appt-9", Role::Patient).await;
        let mut pat = Ws::join(&base, &token_of(&l), "Ana").await;
        doc.send(&ClientMsg::Admit {
            participant: pat.participant.clone(),
        })
        .await;
        pat.until("admitted", |m| matches!(m, ServerMsg::Admitted { .. }))
            .await;
        doc.until("peer_joined", |m| matches!(m, ServerMsg::PeerJoined { .. }))
            .await;

        // The network drops: the clinician's side closes its connection to the patient...
        pat.close().await;
        let old = pat;
        doc.until("peer_left", |m| matches!(m, ServerMsg::PeerLeft { .. }))
            .await;
        // ...a wrong secret gets nowhere...
        let mut thief = Ws::connect(&base).await;
        thief
            .send(&ClientMsg::Resume {
                visit: "appt-9".into(),
                participant: old.participant.clone(),
                resume: Secret::new("guess"),
            })
            .await;
        thief
            .until("resume_refused", is_error(ErrorCode::ResumeRefused))
            .await;
        // ...and the patient is back in the call, the clinician expecting their offer.
        let mut back = old.resume(&base).await;
        let admitted = back
            .until("admitted again", |m| {
                matches!(m, ServerMsg::Admitted { .. })
            })
            .await;
        assert!(
            matches!(admitted, ServerMsg::Admitted { peers, .. } if peers[0].id == doc.participant)
        );
        doc.until(
            "peer_joined again",
            |m| matches!(m, ServerMsg::PeerJoined { peer } if peer.id == back.participant),
        )
        .await;

        // Gone longer than the grace period: they have left, at the time they dropped.
        back.close().await;
        let roster = doc
            .until("the patient lapsed", |m| {
                roster_entry(m, &old.participant).is_some_and(|p| p.standing == Standing::Left)
            })
            .await;
        assert!(roster_entry(&roster, &old.participant)
            .unwrap()
            .left_ms
            .is_some());
        let mut late = Ws::connect(&base).await;
        late.send(&ClientMsg::Resume {
            visit: "appt-9".into(),
            participant: old.participant.clone(),
            resume: old.resume.clone().unwrap(),
        })
        .await;
        late.until("resume_refused", is_error(ErrorCode::ResumeRefused))
            .await;
    });
}

#[test]
fn join_attempts_are_rate_limited_and_the_page_is_locked_down() {
    let idp = SmartEhr::identity_only();
    runtime().block_on(async {
        let svc = serve(&idp, |s| s.joins_per_minute = 3).await;
        let base = format!("http://{}", svc.addr);
        let junk = Secret::new("junk.junk");
        for _ in 0..3 {
            assert_eq!(check(&base, &junk, None).await.0, 400);
        }
        let (status, body) = check(&base, &junk, None).await;
        assert_eq!((status, code_of(&body)), (429, ErrorCode::RateLimited));
        let mut ws = Ws::connect(&base).await;
        ws.send(&ClientMsg::Join {
            token: junk.clone(),
            name: "x".into(),
            visit: None,
        })
        .await;
        ws.until("rate_limited", is_error(ErrorCode::RateLimited))
            .await;

        let http = reqwest::Client::new();
        let page = http.get(format!("{base}/join")).send().await.unwrap();
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        for directive in [
            "default-src 'none'",
            "script-src 'self';",
            "style-src 'self';",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
        // No other site may call the API from a browser, nor open the socket.
        let preflight = http
            .request(reqwest::Method::OPTIONS, format!("{base}/v1/links"))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none());
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{}/v1/ws", svc.addr),
            )
            .unwrap();
        request
            .headers_mut()
            .insert("origin", "https://evil.example".parse().unwrap());
        let refused = tokio_tungstenite::connect_async(request).await;
        assert!(refused.is_err(), "a socket from another origin is refused");
    });
}
