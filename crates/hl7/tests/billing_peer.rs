//! DFT^P03 charges sent over MLLP to the strict billing peer (hl7apy 1.3.5, STRICT, v2.5.1;
//! values read back with python-hl7): what it accepts, refuses, and dedupes.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use hearth_hl7::{
    parse, AckCode, ChargeLine, CodeSystem, Delimiters, DftP03, Diagnosis, Message, MllpClient,
    Patient, PatientIdentifier, Provider, Visit,
};
use hearth_testkit::billing::{BillingPeer, Received};
use std::time::{Duration, Instant};

fn time(day: u32, h: u32, m: u32, offset_h: i32) -> DateTime<FixedOffset> {
    FixedOffset::east_opt(offset_h * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, 12, day, h, m, 0)
        .unwrap()
}

fn client(peer: &BillingPeer) -> MllpClient {
    MllpClient {
        connect_timeout: Duration::from_secs(2),
        ack_timeout: Duration::from_secs(15),
        ..MllpClient::new(peer.addr())
    }
}

fn provider(id: &str, family: &str, given: &str) -> Provider {
    Provider {
        id: id.into(),
        family: family.into(),
        given: given.into(),
    }
}

fn line(tx: &str, code: &str, modifiers: &[&str], pos: Option<&str>, dx: &[&str]) -> ChargeLine {
    ChargeLine {
        transaction_id: tx.into(),
        service_date: time(2, 9, 15, -5),
        code: code.into(),
        system: if code.starts_with(|c: char| c.is_ascii_digit()) {
            CodeSystem::Cpt
        } else {
            CodeSystem::Hcpcs
        },
        description: Some(format!("{code} | desc ^ with ~ all \\ delims & a\rCR")),
        modifiers: modifiers.iter().map(|m| m.to_string()).collect(),
        quantity: 1,
        place_of_service: pos.map(str::to_string),
        diagnosis_codes: dx.iter().map(|d| d.to_string()).collect(),
        performer: Some(provider("1902837465", "Okafor|Adé", "Mara^J")),
    }
}

fn dft(control_id: &str, patient_class: &str, lines: Vec<ChargeLine>) -> DftP03 {
    DftP03 {
        sending_application: "HEARTH".into(),
        sending_facility: "Hearth Clinic & Co".into(),
        receiving_application: "BILLING".into(),
        receiving_facility: "PAYER".into(),
        control_id: control_id.into(),
        processing_id: "T".into(),
        message_time: time(2, 10, 0, -5),
        patient: Patient {
            identifiers: vec![PatientIdentifier {
                id: "MRN-0042".into(),
                assigning_authority: "HEARTH".into(),
                type_code: "MR".into(),
            }],
            family: "O'Brien|Smith^Jr~\\&".into(),
            given: vec!["Ann\rMarie".into(), "Zoë".into()],
            birth_date: NaiveDate::from_ymd_opt(1980, 2, 29),
            sex: Some("F".into()),
        },
        visit: Visit {
            patient_class: patient_class.into(),
            visit_number: Some("enc-7f3a".into()),
            attending: Some(provider("1902837465", "Okafor|Adé", "Mara^J")),
            start: Some(time(2, 9, 0, -5)),
        },
        lines,
        diagnoses: vec![
            Diagnosis {
                code: "J06.9".into(),
                description: Some("Acute upper respiratory infection | unspecified".into()),
                priority: 1,
            },
            Diagnosis {
                code: "R05.9".into(),
                description: Some("Cough, unspecified".into()),
                priority: 2,
            },
            Diagnosis {
                code: "Z71.89".into(),
                description: None,
                priority: 3,
            },
        ],
    }
}

/// Virtual (modifier 95, POS 10 and 02) and in-person (POS 11) visits.
fn visits() -> Vec<DftP03> {
    vec![
        dft(
            "HRT-V10-0001",
            "O",
            vec![line(
                "V10-1",
                "99213",
                &["95"],
                Some("10"),
                &["J06.9", "R05.9"],
            )],
        ),
        dft(
            "HRT-V02-0001",
            "O",
            vec![
                line("V02-1", "99214", &["95", "25"], Some("02"), &["J06.9"]),
                line("V02-2", "G2211", &[], Some("02"), &["R05.9", "Z71.89"]),
            ],
        ),
        dft(
            "HRT-P11-0001",
            "O",
            vec![
                line("P11-1", "99203", &[], Some("11"), &["J06.9"]),
                line("P11-2", "87880", &["QW"], Some("11"), &["J06.9", "R05.9"]),
                line("P11-3", "94640", &[], Some("11"), &["R05.9"]),
            ],
        ),
    ]
}

fn received_for(peer: &BillingPeer, control_id: &str) -> Vec<Received> {
    peer.received()
        .into_iter()
        .filter(|r| r.control_id == control_id)
        .collect()
}

/// The values the peer read (python-hl7's unescaping) against the struct the charge was built
/// from: the expectation is the input, not the builder's output.
fn assert_peer_read(r: &Received, d: &DftP03) {
    let v = |s: &str, o: usize, f: usize, rep: usize, c: usize| r.value(s, o, f, rep, c, 1);
    let some = |s: &str| Some(s.to_string());
    assert_eq!(v("MSH", 1, 10, 1, 1), some(&d.control_id));
    assert_eq!(v("MSH", 1, 4, 1, 1), some(&d.sending_facility));
    assert_eq!(v("PID", 1, 3, 1, 1), some(&d.patient.identifiers[0].id));
    assert_eq!(v("PID", 1, 5, 1, 1), some(&d.patient.family));
    assert_eq!(v("PID", 1, 5, 1, 2), some(&d.patient.given[0]));
    assert_eq!(v("PID", 1, 5, 1, 3), some(&d.patient.given[1]));
    assert_eq!(v("PID", 1, 7, 1, 1), some("19800229"));
    let attending = d.visit.attending.as_ref().unwrap();
    assert_eq!(v("PV1", 1, 7, 1, 2), some(&attending.family));
    assert_eq!(v("PV1", 1, 7, 1, 3), some(&attending.given));
    assert_eq!(v("PV1", 1, 19, 1, 1), d.visit.visit_number.clone());
    for (i, l) in d.lines.iter().enumerate() {
        let o = i + 1;
        assert_eq!(v("FT1", o, 2, 1, 1), some(&l.transaction_id));
        assert_eq!(v("FT1", o, 4, 1, 1), some("20261202091500-0500"));
        assert_eq!(v("FT1", o, 6, 1, 1), some("CG"));
        assert_eq!(v("FT1", o, 7, 1, 1), some(&l.code));
        assert_eq!(v("FT1", o, 7, 1, 2), l.description.clone());
        assert_eq!(v("FT1", o, 25, 1, 1), some(&l.code));
        let system = if l.system == CodeSystem::Cpt {
            "C4"
        } else {
            "HCPCS"
        };
        assert_eq!(v("FT1", o, 25, 1, 3), some(system));
        assert_eq!(v("FT1", o, 10, 1, 1), some(&l.quantity.to_string()));
        assert_eq!(v("FT1", o, 16, 1, 1), l.place_of_service.clone());
        for (k, m) in l.modifiers.iter().enumerate() {
            assert_eq!(v("FT1", o, 26, k + 1, 1), some(m));
        }
        for (k, dx) in l.diagnosis_codes.iter().enumerate() {
            assert_eq!(v("FT1", o, 19, k + 1, 1), some(dx));
            assert_eq!(v("FT1", o, 19, k + 1, 3), some("I10"));
        }
        let performer = l.performer.as_ref().unwrap();
        assert_eq!(v("FT1", o, 20, 1, 2), some(&performer.family));
    }
    for (i, dx) in d.diagnoses.iter().enumerate() {
        let o = i + 1;
        assert_eq!(v("DG1", o, 3, 1, 1), some(&dx.code));
        assert_eq!(
            v("DG1", o, 3, 1, 2).filter(|s| !s.is_empty()),
            dx.description.clone()
        );
        assert_eq!(v("DG1", o, 6, 1, 1), some("F"));
        assert_eq!(v("DG1", o, 15, 1, 1), some(&dx.priority.to_string()));
    }
}

#[tokio::test]
async fn virtual_and_in_person_visits_are_accepted_and_read_back() {
    let peer = BillingPeer::start(&[]);
    let client = client(&peer);
    for d in visits() {
        let text = d.encode().expect("encodes");
        let ack = client.send(&text).await.expect("acknowledged");
        let r = received_for(&peer, &d.control_id);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (ack.code, ack.control_id.as_str()),
            (AckCode::ApplicationAccept, d.control_id.as_str()),
            "the peer answered {} ({}) for {}",
            r[0].ack,
            r[0].reason,
            d.control_id
        );
        assert_eq!(r[0].message, text, "the peer received what was sent");
        assert_peer_read(&r[0], &d);
        // And the peer's copy, read by this crate, gives the charge back.
        let back = DftP03::from_message(&parse(&r[0].message).expect("parses")).expect("a DFT");
        assert!(back == d, "{} read back differs", d.control_id);
    }
    assert_eq!(
        peer.accepted_control_ids(),
        ["HRT-V10-0001", "HRT-V02-0001", "HRT-P11-0001"]
    );
}

#[tokio::test]
async fn other_delimiters_are_accepted_too() {
    let peer = BillingPeer::start(&[]);
    let d = dft(
        "HRT-DELIM-0001",
        "O",
        vec![line("D-1", "99213", &["95"], Some("10"), &["J06.9"])],
    );
    let standard = d.to_message().expect("builds");
    let mut other = Message::new(Delimiters::new('#', '!', '$', '@', '*').unwrap());
    for s in standard.segments() {
        other.push(s.clone());
    }
    let text = other.encode();
    assert!(text.starts_with("MSH#!$@*#HEARTH#"));
    let ack = client(&peer).send(&text).await.expect("acknowledged");
    let r = received_for(&peer, "HRT-DELIM-0001");
    assert_eq!(ack.code, AckCode::ApplicationAccept, "{}", r[0].reason);
    assert_peer_read(&r[0], &d);
}

#[tokio::test]
async fn the_peer_is_strict_about_order_and_lengths() {
    let peer = BillingPeer::start(&[]);
    let client = client(&peer);
    let d = dft(
        "HRT-ORDER-0001",
        "O",
        vec![line("O-1", "99213", &[], Some("11"), &["J06.9"])],
    );
    let text = d.encode().unwrap();
    // PV1 before PID.
    let mut segs: Vec<&str> = text.split('\r').filter(|s| !s.is_empty()).collect();
    segs.swap(2, 3);
    let swapped = segs.join("\r") + "\r";
    let ack = client.send(&swapped).await.expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationReject);
    assert!(
        ack.text
            .as_deref()
            .unwrap_or_default()
            .contains("segment sequence"),
        "{ack:?}"
    );
    // DG1 before FT1.
    let mut segs: Vec<&str> = text.split('\r').filter(|s| !s.is_empty()).collect();
    let dg1 = segs.remove(5);
    segs.insert(4, dg1);
    let ack = client
        .send(&(segs.join("\r") + "\r"))
        .await
        .expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationReject);
    // A 21-character MSH-10 (the builder refuses one; written here by hand).
    let long = text.replace("HRT-ORDER-0001", "HRT-ORDER-0001-ABCDEF");
    let ack = client.send(&long).await.expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationReject);
    assert_eq!(ack.errors, ["MSH-10 is longer than 20 characters"]);
    // A wrong datatype (hl7apy's own strict check): a quantity that is not a number.
    let bad_nm = text.replacen("|1||||||11|", "|x||||||11|", 1);
    assert_ne!(bad_nm, text);
    let ack = client.send(&bad_nm).await.expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationReject);
    // A raw control character inside a field (the builder writes \Xhh\): NUL, MLLP's 0x0B.
    for raw in ["\u{0}", "\u{b}"] {
        let spoiled = text.replacen("PID|", &format!("PID|{raw}"), 1);
        let ack = client.send(&spoiled).await.expect("acknowledged");
        assert_eq!(ack.code, AckCode::ApplicationReject, "{raw:?}");
    }
    // Non-ASCII text without MSH-18 saying UNICODE UTF-8 (else a message is ASCII).
    let ascii_only = text
        .replacen("|UNICODE UTF-8", "", 1)
        .replacen("PID|", "PID|é", 1);
    assert_ne!(ascii_only, text);
    let ack = client.send(&ascii_only).await.expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationReject);
    assert!(peer.accepted_control_ids().is_empty());
    // The same message as built is accepted.
    let ack = client.send(&text).await.expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationAccept);
    // Its control id on another message is no resend: refused.
    let other = text.replacen("|1||||||11|", "|2||||||11|", 1);
    let ack = client.send(&other).await.expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationReject);
}

#[tokio::test]
async fn a_refused_code_gets_ae_and_the_corrected_charge_is_accepted() {
    let reason = "Level 5 visit needs documentation | see payer rule 12";
    let peer = BillingPeer::start(&[("99215", reason)]);
    let client = client(&peer);
    let refused = dft(
        "HRT-AE-0001",
        "O",
        vec![line("AE-1", "99215", &["95"], Some("10"), &["J06.9"])],
    );
    let ack = client
        .send(&refused.encode().unwrap())
        .await
        .expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationError);
    assert_eq!(ack.control_id, "HRT-AE-0001");
    assert_eq!(ack.text.as_deref(), Some(reason));
    assert_eq!(ack.errors, [reason]);

    let mut corrected = refused.clone();
    corrected.control_id = "HRT-AE-0002".into();
    corrected.lines[0].code = "99214".into();
    let ack = client
        .send(&corrected.encode().unwrap())
        .await
        .expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationAccept);
    assert_eq!(peer.accepted_control_ids(), ["HRT-AE-0002"]);
    let log = peer.received();
    assert_eq!(
        (log[0].ack.as_str(), log[0].reason.as_str()),
        ("AE", reason)
    );
}

#[tokio::test]
async fn a_stopped_peer_fails_fast_and_retryable_and_resume_goes_through() {
    let mut peer = BillingPeer::start(&[]);
    let client = client(&peer);
    let d = dft(
        "HRT-DOWN-0001",
        "O",
        vec![line("DN-1", "99213", &["95"], Some("02"), &["J06.9"])],
    );
    let text = d.encode().unwrap();
    peer.stop();
    let started = Instant::now();
    let e = client.send(&text).await.expect_err("the peer is down");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.code(), "mllp.unreachable");
    peer.resume();
    let ack = client.send(&text).await.expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationAccept);
    assert_eq!(peer.accepted_control_ids(), ["HRT-DOWN-0001"]);
}

#[tokio::test]
async fn a_resent_control_id_is_a_duplicate() {
    let mut peer = BillingPeer::start(&[]);
    let client = client(&peer);
    let d = dft(
        "HRT-DUP-0001",
        "O",
        vec![line("DU-1", "99213", &[], Some("11"), &["J06.9"])],
    );
    let text = d.encode().unwrap();
    for _ in 0..2 {
        let ack = client.send(&text).await.expect("acknowledged");
        assert_eq!(ack.code, AckCode::ApplicationAccept);
    }
    // The receiver's dedupe outlives its restart.
    peer.stop();
    peer.resume();
    let ack = client.send(&text).await.expect("acknowledged");
    assert_eq!(ack.code, AckCode::ApplicationAccept);
    let dups: Vec<bool> = received_for(&peer, "HRT-DUP-0001")
        .iter()
        .map(|r| r.duplicate)
        .collect();
    assert_eq!(dups, [false, true, true]);
    assert_eq!(peer.accepted_control_ids(), ["HRT-DUP-0001"]);
}
