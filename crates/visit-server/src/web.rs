//! HTTP: join links, link checks, visit snapshots, the join page, health; security headers on
//! everything. Requests are logged by method, route and status only: tokens travel in headers,
//! bodies and URL fragments, never in a path or query.

use crate::error::Refusal;
use crate::tokens::{random_id, LinkClaims};
use crate::{now_ms, ws, App};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hearth_visit_protocol::{
    ErrorCode, LinkCheck, LinkInfo, LinkRequest, LinkResponse, Role, Secret, VisitSnapshot,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

const PAGE: &str = include_str!("../assets/join.html");
const SCRIPT: &str = include_str!("../assets/join.js");
const STYLE: &str = include_str!("../assets/join.css");

/// Longest visit window a link may cover.
const MAX_VISIT_MS: u64 = 24 * 3600 * 1000;

pub fn router(app: Arc<App>) -> Router {
    let origins: Vec<HeaderValue> = app
        .settings
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    Router::new()
        .route("/v1/links", post(make_link))
        .route("/v1/links/check", post(check_link))
        .route("/v1/visits/{id}", get(snapshot))
        .route("/v1/ws", get(ws::upgrade))
        .route(
            "/join",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/assets/join.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/join.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/healthz", get(health))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(cors)
        .layer(middleware::from_fn_with_state(app.clone(), headers))
        .with_state(app)
}

/// `ok`, or 503 `unavailable` when the shared state (Redis) does not answer in time.
async fn health(State(app): State<Arc<App>>) -> Result<&'static str, Refusal> {
    app.shared.healthy().await?;
    Ok("ok")
}

fn asset(text: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], text).into_response()
}

/// Security headers on every response, and one log line without the query or any token.
async fn headers(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let status = response.status();
    let public = &app.settings.public_url;
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set("content-security-policy", &app.csp);
    set("x-content-type-options", "nosniff");
    set("referrer-policy", "no-referrer");
    set("cross-origin-opener-policy", "same-origin");
    set("cross-origin-resource-policy", "same-origin");
    set(
        "permissions-policy",
        "camera=(self), microphone=(self), geolocation=(), payment=()",
    );
    set("cache-control", "no-store");
    if public.scheme() == "https" {
        set("strict-transport-security", "max-age=31536000");
    }
    tracing::info!(%method, path = %route_of(&path), status = status.as_u16(), "request");
    response
}

/// A path for the log: visit ids are kept out (they name appointments).
fn route_of(path: &str) -> &str {
    if path.starts_with("/v1/visits/") {
        "/v1/visits/{id}"
    } else {
        path
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(self.body())).into_response()
    }
}

/// The client's address: the socket's; for a request from a trusted proxy, the rightmost
/// `X-Forwarded-For` hop that is not a trusted proxy (each proxy appends the address it was
/// called from: what is left of that was written by the client and proves nothing).
pub fn client_ip(app: &App, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    forwarded_client(&app.settings.trusted_proxies, peer.ip(), headers)
}

pub fn forwarded_client(trusted: &[ipnet::IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    let mut client = peer;
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.into_iter().rev() {
        // A hop that is not an address: the proxy that appended the last good one is
        // the best we know.
        let Ok(ip) = hop.parse::<IpAddr>() else {
            return client;
        };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            return client;
        }
    }
    client
}

fn bearer(headers: &HeaderMap) -> Result<Secret, Refusal> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Secret::new(t.trim()))
        .ok_or_else(|| Refusal::new(ErrorCode::Unauthorized, "sign in first: no bearer token"))
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            ErrorCode::BadMessage,
            format!("the request could not be read: {e}"),
        )
    })
}

async fn make_link(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<LinkResponse>, Refusal> {
    let clinician = match app.verifier.verify(&bearer(&headers)?).await {
        Ok(c) => c,
        Err(e) => {
            // Failed sign-ins count against the address; successful ones do not.
            if !app.limiter.allow(client_ip(&app, peer, &headers)) {
                return Err(Refusal::rate_limited());
            }
            return Err(e);
        }
    };
    let request: LinkRequest = json_body(&body)?;
    if !hearth_fhir::is_id(&request.appointment) {
        return Err(Refusal::new(
            ErrorCode::BadMessage,
            "appointment must be a FHIR logical id (letters, digits, '-', '.'; at most 64)",
        ));
    }
    if request.role == Role::Clinician {
        return Err(Refusal::new(
            ErrorCode::BadMessage,
            "links are for patients and guests; clinicians join with their sign-in",
        ));
    }
    app.appointments
        .require(&request.appointment, clinician.fhir_user.as_deref())
        .await?;
    if request.end_ms < request.start_ms || request.end_ms - request.start_ms > MAX_VISIT_MS {
        return Err(Refusal::new(
            ErrorCode::BadMessage,
            "the appointment must end after it starts, within 24 hours",
        ));
    }
    let nbf = request
        .start_ms
        .saturating_sub(app.settings.early.as_millis() as u64);
    let exp = request.end_ms + app.settings.late.as_millis() as u64;
    if exp <= now_ms() {
        return Err(Refusal::new(
            ErrorCode::LinkExpired,
            "that appointment is over",
        ));
    }
    if app
        .shared
        .get(&request.appointment)
        .await?
        .is_some_and(|v| v.ended)
    {
        return Err(Refusal::new(ErrorCode::VisitOver, "that visit is over"));
    }
    let token = app.signer.sign(&LinkClaims {
        v: 1,
        visit: request.appointment.clone(),
        role: request.role,
        nbf,
        exp,
        jti: random_id(),
    });
    let mut url = app.settings.public_url.clone();
    let path = format!("{}/join", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_fragment(Some(token.expose()));
    tracing::info!(by = %clinician.subject, role = ?request.role, "join link made");
    Ok(Json(LinkResponse {
        visit: request.appointment,
        url: Secret::new(url.as_str()),
        not_before_ms: nbf,
        expires_ms: exp,
    }))
}

async fn check_link(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<LinkInfo>, Refusal> {
    if !app.limiter.allow(client_ip(&app, peer, &headers)) {
        return Err(Refusal::rate_limited());
    }
    let check: LinkCheck = json_body(&body)?;
    let claims = app.signer.verify(&check.token, now_ms())?;
    ws::same_visit(&claims, check.visit.as_deref())?;
    if !app.visit_limiter.allow(claims.visit.clone()) {
        return Err(Refusal::visit_busy());
    }
    if app
        .shared
        .get(&claims.visit)
        .await?
        .is_some_and(|v| v.ended)
    {
        return Err(Refusal::new(ErrorCode::VisitOver, "this visit is over"));
    }
    Ok(Json(LinkInfo {
        visit: claims.visit,
        role: claims.role,
        not_before_ms: claims.nbf,
        expires_ms: claims.exp,
    }))
}

async fn snapshot(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<VisitSnapshot>, Refusal> {
    let clinician = app.verifier.verify(&bearer(&headers)?).await?;
    app.appointments
        .require(&id, clinician.fhir_user.as_deref())
        .await?;
    let visit = app.shared.get(&id).await?.ok_or_else(|| {
        Refusal::new(
            ErrorCode::UnknownParticipant,
            "no one has joined this visit yet",
        )
    })?;
    Ok(Json(VisitSnapshot {
        participants: visit.participants(),
        visit: visit.id,
        ended: visit.ended,
    }))
}

#[cfg(test)]
mod tests {
    use super::forwarded_client;
    use axum::http::HeaderMap;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!("test address"))
    }

    #[test]
    fn only_hops_the_trusted_proxies_appended_count() {
        let trusted: Vec<ipnet::IpNet> = ["127.0.0.1/32", "10.0.0.0/8"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    "x-forwarded-for",
                    v.parse().unwrap_or_else(|_| unreachable!()),
                );
            }
            h
        };
        let cases = [
            // Not from a proxy: the socket's address, whatever the header says.
            ("198.51.100.9", vec!["1.2.3.4"], "198.51.100.9"),
            ("127.0.0.1", vec![], "127.0.0.1"),
            ("127.0.0.1", vec!["203.0.113.7"], "203.0.113.7"),
            // The client's own hops (left) are skipped; trusted proxies are walked through.
            (
                "127.0.0.1",
                vec!["1.2.3.4, 203.0.113.7, 10.0.0.5"],
                "203.0.113.7",
            ),
            (
                "127.0.0.1",
                vec!["1.2.3.4", "203.0.113.7, 10.0.0.5"],
                "203.0.113.7",
            ),
            (
                "::ffff:127.0.0.1",
                vec!["::ffff:203.0.113.7"],
                "203.0.113.7",
            ),
            // Garbage in the proxies' part: the last proxy is the client we know.
            (
                "127.0.0.1",
                vec!["203.0.113.7, nonsense, 10.0.0.5"],
                "10.0.0.5",
            ),
            ("127.0.0.1", vec!["10.0.0.6, 10.0.0.5"], "10.0.0.6"),
        ];
        for (peer, headers, expect) in cases {
            assert_eq!(
                forwarded_client(&trusted, ip(peer), &with(&headers)),
                ip(expect),
                "{peer} {headers:?}"
            );
        }
    }
}
