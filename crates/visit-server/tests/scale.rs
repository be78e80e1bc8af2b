//! Scale-out: two `hearth-visit` processes sharing state and signaling through a real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::*;
use hearth_testkit::visit::Redis;
use hearth_visit_protocol::{ClientMsg, Role, ServerMsg, Standing};

#[test]
fn two_instances_share_a_visit_and_a_killed_ones_participants_carry_on_on_the_other() {
    let idp = ehr_with(&["appt-s1"]);
    let access = clinician_token(&idp);
    let redis = Redis::start();
    let mut a = Instance::spawn(&idp, Some(&redis.url), "");
    let b = Instance::spawn(&idp, Some(&redis.url), "");
    let mut secrets = vec![access.clone()];
    runtime().block_on(async {
        // The clinician on B, the patient on A (a load balancer's doing).
        let mut doc = Ws::host(&b.base, &access, "appt-s1", true).await;
        let l = link(&a.base, &access, "appt-s1", Role::Patient).await;
        secrets.push(l.url.expose().to_owned());
        secrets.push(token_of(&l).expose().to_owned());
        let mut pat = Ws::join(&a.base, &token_of(&l), "Zed Quillfeather").await;
        secrets.push(pat.resume.clone().unwrap().expose().to_owned());
        assert_eq!(pat.next().await, Some(ServerMsg::Waiting));
        doc.until("the patient waiting (through Redis)", |m| {
            roster_entry(m, &pat.participant).is_some_and(|p| p.standing == Standing::Waiting)
        })
        .await;
        doc.send(&ClientMsg::Admit {
            participant: pat.participant.clone(),
        })
        .await;
        pat.until("admitted (from B)", |m| {
            matches!(m, ServerMsg::Admitted { .. })
        })
        .await;
        let offer = serde_json::json!({"sdp": {"type": "offer", "sdp": "v=0"}});
        pat.send(&ClientMsg::Signal {
            to: doc.participant.clone(),
            data: offer.clone(),
        })
        .await;
        let got = doc
            .until("the offer from A", |m| {
                matches!(m, ServerMsg::Signal { .. })
            })
            .await;
        assert_eq!(
            got,
            ServerMsg::Signal {
                from: pat.participant.clone(),
                data: offer.clone()
            }
        );

        // A dies mid-visit. The patient's page reconnects (to B, behind the load balancer)
        // and is back in the call; the clinician expects its new offer.
        a.kill();
        assert_eq!(pat.next().await, None, "A's socket is gone");
        let mut back = pat.resume(&b.base).await;
        back.until("admitted again on B", |m| {
            matches!(m, ServerMsg::Admitted { .. })
        })
        .await;
        doc.until(
            "peer_joined again",
            |m| matches!(m, ServerMsg::PeerJoined { peer } if peer.id == back.participant),
        )
        .await;
        back.send(&ClientMsg::Signal {
            to: doc.participant.clone(),
            data: offer.clone(),
        })
        .await;
        doc.until("the new offer", |m| matches!(m, ServerMsg::Signal { .. }))
            .await;
        doc.send(&ClientMsg::End).await;
        back.until("ended", |m| matches!(m, ServerMsg::Ended)).await;
    });
    // No token, link, resume secret or patient name in either instance's log.
    let logs = a.log_text() + &b.log_text();
    assert!(
        logs.contains("participant joined"),
        "the logs are there: {logs}"
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
    }
    assert!(
        !logs.contains("Quillfeather"),
        "the patient's name reached the logs"
    );
}
