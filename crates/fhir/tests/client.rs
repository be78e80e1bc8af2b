//! The FHIR client against a real FHIR server (sekmet-fhir on loopback), and its retry rules
//! against a stub that answers what a busy server would.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test file: a failed unwrap is the test failing"
)]

use hearth_fhir::{Client, Entry, FhirError, NoToken, RetryPolicy};
use hearth_testkit::FhirServer;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(base: &str) -> Client {
    Client::new(base, Arc::new(NoToken), RetryPolicy::none()).unwrap()
}

#[test]
fn search_pages_by_next_link_and_conditional_writes_are_idempotent() {
    let server = FhirServer::start();
    let c = client(&server.base_url);
    let rt = rt();
    rt.block_on(async {
        for i in 0..7 {
            let body = format!(r#"{{"resourceType":"Patient","identifier":[{{"system":"urn:t","value":"{i}"}}],"extension":[{{"url":"urn:x","valueInteger":{i}}}],"futureElement":{{"a":[1,2]}}}}"#);
            let first = c.create("Patient", &body, Some(&format!("identifier=urn:t|{i}"))).await.unwrap();
            assert!(first.created);
            let again = c.create("Patient", &body, Some(&format!("identifier=urn:t|{i}"))).await.unwrap();
            assert!(!again.created, "a replayed conditional create made a second patient");
            assert_eq!(again.resource.id, first.resource.id);
        }
        // Three pages of three, by next link only.
        let mut page = c.search("Patient", &[("_count", "3")]).await.unwrap();
        let mut ids = Vec::new();
        let mut pages = 1;
        loop {
            for e in &page.entries {
                let Ok(Entry::Resource(r)) = e else { panic!("{e:?}") };
                ids.push(r.id.clone());
                // Unknown elements and extensions arrive as served.
                assert!(r.json.contains(r#""futureElement":{"a":[1,2]}"#));
            }
            match c.next_page(&page).await.unwrap() {
                Some(next) => {
                    page = next;
                    pages += 1;
                }
                None => break,
            }
        }
        ids.sort();
        ids.dedup();
        assert_eq!((ids.len(), pages), (7, 3));

        // If-Match: the right version updates, a stale one is a typed conflict.
        let p = c.read("Patient", &ids[0]).await.unwrap();
        let v1 = p.version_id.clone().unwrap();
        let updated = c.update("Patient", &p.id, &p.json, Some(&format!("W/\"{v1}\""))).await.unwrap();
        assert_ne!(updated.resource.version_id.as_deref(), Some(v1.as_str()));
        let stale = c.update("Patient", &p.id, &p.json, Some(&format!("W/\"{v1}\""))).await;
        assert!(matches!(stale, Err(FhirError::VersionConflict { ref what }) if what == &format!("Patient/{}", p.id)), "{stale:?}");

        // The server's OperationOutcome comes back in the error.
        let bad = c.update("Patient", &p.id, r#"{"resourceType":"Observation","id":"x"}"#, None).await;
        match bad {
            Err(FhirError::Rejected { status: 400, outcome }) => {
                assert!(outcome.summary().contains("does not match"), "{}", outcome.summary())
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.read("Patient", "nope").await, Err(FhirError::NotFound { .. })));
    });
}

/// A stub HTTP server: answers each request with the next canned response; counts requests.
fn stub(responses: Vec<&'static str>) -> (String, Arc<AtomicUsize>) {
    // Each request gets the next answer, in order.
    let next = AtomicUsize::new(0);
    answering(move |_| {
        let i = next.fetch_add(1, Ordering::SeqCst);
        responses.get(i).copied().unwrap_or("").as_bytes().to_vec()
    })
}

const BUSY: &str = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const OK: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{\"resourceType\":\"Patient\",\"id\":\"p-ok1\"}\n";
const SLOW_DOWN: &str = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[test]
fn busy_answers_are_retried_and_a_long_retry_after_is_not_waited_for() {
    let policy = RetryPolicy {
        attempts: 4,
        base_delay: Duration::from_millis(10),
        ..RetryPolicy::default()
    };
    let rt = rt();
    let (base, count) = stub(vec![BUSY, BUSY, OK]);
    let c = Client::new(&base, Arc::new(NoToken), policy).unwrap();
    let p = rt.block_on(c.read("Patient", "p-ok1")).unwrap();
    assert_eq!((p.id.as_str(), count.load(Ordering::SeqCst)), ("p-ok1", 3));

    let (base, count) = stub(vec![SLOW_DOWN, OK]);
    let c = Client::new(&base, Arc::new(NoToken), policy).unwrap();
    let e = rt.block_on(c.read("Patient", "p-ok1")).unwrap_err();
    assert!(matches!(e, FhirError::Server { status: 429, .. }), "{e:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // Nobody listening: unreachable, after the attempts.
    let port = hearth_testkit::free_port();
    let c = Client::new(
        &format!("http://127.0.0.1:{port}/fhir"),
        Arc::new(NoToken),
        policy,
    )
    .unwrap();
    let e = rt.block_on(c.read("Patient", "p")).unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("cannot be reached"),
        "{e}"
    );
}

#[test]
fn a_next_link_back_to_a_page_already_read_is_refused_not_followed_for_ever() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!(
        "http://127.0.0.1:{}/fhir",
        listener.local_addr().unwrap().port()
    );
    // Page 1 links to page 2, and page 2 back to page 1.
    let page = |next: &str| {
        format!(
            r#"{{"resourceType":"Bundle","type":"searchset","link":[{{"relation":"next","url":"{base}/Patient?page={next}"}}],"entry":[]}}"#
        )
    };
    let (first, second) = (page("2"), page("1"));
    let served = Arc::new(AtomicUsize::new(0));
    let n = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(10) {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 4096];
            let len = s.read(&mut buf).unwrap_or(0);
            let body = if String::from_utf8_lossy(&buf[..len]).contains("page=2") {
                &second
            } else {
                &first
            };
            n.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    let c = client(&base);
    rt().block_on(async {
        let p1 = c.search("Patient", &[("page", "1")]).await.unwrap();
        let p2 = c.next_page(&p1).await.unwrap().unwrap();
        let e = c.next_page(&p2).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bundle: field `link(next)` leads back to a page already read; not followed"
        );
    });
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

/// A stub that answers every request with `answer(path)` and counts them.
fn answering(answer: impl Fn(&str) -> Vec<u8> + Send + 'static) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!(
        "http://127.0.0.1:{}/fhir",
        listener.local_addr().unwrap().port()
    );
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 4096];
            let len = s.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..len]).to_string();
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            n.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(&answer(&path));
        }
    });
    (base, count)
}

#[test]
fn redirects_are_followed_only_within_the_ehrs_origin() {
    let patient = r#"{"resourceType":"Patient","id":"p1"}"#;
    let ok = move |_: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{patient}",
            patient.len()
        )
        .into_bytes()
    };
    // Another server, which must never be asked (it would get the bearer token and PHI).
    let (elsewhere, asked_elsewhere) = answering(ok);
    let target = format!("{elsewhere}/Patient/p1");
    let (base, _) = answering(move |path: &str| {
        let to = if path.ends_with("/moved") {
            "/fhir/Patient/p1".to_string()
        } else {
            target.clone()
        };
        if path.ends_with("/Patient/p1") {
            return ok(path);
        }
        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .into_bytes()
    });
    let c = client(&base);
    let rt = rt();
    // Within the EHR's origin: followed.
    let same = rt.block_on(c.read("Patient", "moved")).unwrap();
    assert_eq!(same.id, "p1");
    // To another origin: refused, and the other server never asked.
    let e = rt.block_on(c.read("Patient", "away")).unwrap_err();
    assert!(
        e.to_string().contains("follows redirects only within"),
        "{e}"
    );
    assert_eq!(asked_elsewhere.load(Ordering::SeqCst), 0);
}

#[test]
fn an_answer_larger_than_the_cap_is_not_read_into_memory() {
    // One says so up front; the other streams on without saying.
    let (declared, _) = answering(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 104857600\r\nConnection: close\r\n\r\n{".to_vec()
    });
    let (streamed, _) = answering(|_| {
        let mut out =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_vec();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..70 {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(&chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    });
    let rt = rt();
    for base in [declared, streamed] {
        let e = rt
            .block_on(client(&base).read("Patient", "p1"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/fhir/Patient/p1: field `(body)` is larger than 64 MiB; not read",
            "{base}"
        );
    }
}
