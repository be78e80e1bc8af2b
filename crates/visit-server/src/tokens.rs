//! Link tokens (signed by the service), resume secrets, and TURN credentials.
//!
//! A link token is `base64url(claims JSON) "." base64url(HMAC-SHA256(key, first part))`. The
//! claims name one visit, one role and the window in which the link works; nothing about the
//! patient. Tokens are compared and verified in constant time.

use crate::error::Refusal;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hearth_visit_protocol::{ErrorCode, Role, Secret};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// What a link token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    /// Token format version.
    pub v: u8,
    pub visit: String,
    pub role: Role,
    /// Epoch ms: the link opens the waiting room from `nbf` and stops working at `exp`.
    pub nbf: u64,
    pub exp: u64,
    /// Random, so two links for the same visit differ.
    pub jti: String,
}

/// Signs and checks link tokens with the service's key.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl LinkSigner {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        }
    }

    pub fn sign(&self, claims: &LinkClaims) -> Secret {
        let body = match serde_json::to_vec(claims) {
            Ok(b) => b,
            Err(_) => unreachable!("link claims always serialise"),
        };
        let head = URL_SAFE_NO_PAD.encode(body);
        let mut mac = self.mac();
        mac.update(head.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Secret::new(format!("{head}.{sig}"))
    }

    /// Checks the signature, then the window (`now_ms`), and returns the claims.
    pub fn verify(&self, token: &Secret, now_ms: u64) -> Result<LinkClaims, Refusal> {
        let invalid = || {
            Refusal::new(
                ErrorCode::LinkInvalid,
                "this visit link is not valid (it may have been copied incompletely)",
            )
        };
        let (head, sig) = token.expose().split_once('.').ok_or_else(invalid)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| invalid())?;
        let mut mac = self.mac();
        mac.update(head.as_bytes());
        mac.verify_slice(&sig).map_err(|_| invalid())?;
        let body = URL_SAFE_NO_PAD.decode(head).map_err(|_| invalid())?;
        let claims: LinkClaims = serde_json::from_slice(&body).map_err(|_| invalid())?;
        if claims.v != 1 || claims.role == Role::Clinician {
            return Err(invalid());
        }
        if now_ms >= claims.exp {
            return Err(Refusal::new(
                ErrorCode::LinkExpired,
                "this visit link has expired; ask the clinic for a new one",
            ));
        }
        if now_ms < claims.nbf {
            return Err(Refusal::new(
                ErrorCode::LinkNotYet,
                "this visit has not opened yet; come back closer to the appointment time",
            ));
        }
        Ok(claims)
    }
}

/// A fresh random identifier (128 bits, hex).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh resume secret (256 bits) and the hash the visit state keeps instead of it.
pub fn resume_secret() -> (Secret, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = Secret::new(URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_secret(&secret);
    (secret, hash)
}

pub fn hash_secret(secret: &Secret) -> String {
    let digest = Sha256::digest(secret.expose().as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

/// Constant-time check of a presented resume secret against the stored hash.
pub fn resume_matches(presented: &Secret, stored_hash: &str) -> bool {
    use subtle::ConstantTimeEq;
    hash_secret(presented)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// TURN REST API credentials (coturn `use-auth-secret`): the username is
/// `<expiry epoch s>:<participant>`, the password `base64(HMAC-SHA1(secret, username))`.
pub fn turn_credentials(secret: &[u8], participant: &str, expires_s: u64) -> (String, Secret) {
    let username = format!("{expires_s}:{participant}");
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    mac.update(username.as_bytes());
    let password = STANDARD.encode(mac.finalize().into_bytes());
    (username, Secret::new(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(visit: &str, nbf: u64, exp: u64) -> LinkClaims {
        LinkClaims {
            v: 1,
            visit: visit.into(),
            role: Role::Patient,
            nbf,
            exp,
            jti: random_id(),
        }
    }

    #[test]
    fn a_link_works_inside_its_window_only() {
        let signer = LinkSigner::new(b"0123456789abcdef0123456789abcdef");
        let token = signer.sign(&claims("appt-1", 1_000, 2_000));
        assert_eq!(
            signer.verify(&token, 1_500).map(|c| c.visit),
            Ok("appt-1".into())
        );
        let code = |now| signer.verify(&token, now).map_err(|e| e.code);
        assert_eq!(code(999), Err(ErrorCode::LinkNotYet));
        assert_eq!(code(2_000), Err(ErrorCode::LinkExpired));
    }

    #[test]
    fn a_tampered_or_foreign_token_is_invalid() {
        let signer = LinkSigner::new(b"0123456789abcdef0123456789abcdef");
        let token = signer.sign(&claims("appt-1", 0, u64::MAX));
        // Another visit in the claims, the old signature.
        let (_, sig) = token.expose().split_once('.').unwrap_or_default();
        let forged_head = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims("appt-2", 0, u64::MAX)).unwrap_or_default());
        let forged = Secret::new(format!("{forged_head}.{sig}"));
        assert_eq!(
            signer.verify(&forged, 5).map_err(|e| e.code),
            Err(ErrorCode::LinkInvalid)
        );
        // A key the service does not have.
        let other = LinkSigner::new(b"another-key-another-key-another-key");
        let foreign = other.sign(&claims("appt-1", 0, u64::MAX));
        assert_eq!(
            signer.verify(&foreign, 5).map_err(|e| e.code),
            Err(ErrorCode::LinkInvalid)
        );
        for junk in ["", ".", "abc", "a.b.c", "%%%.%%%"] {
            let got = signer.verify(&Secret::new(junk), 5).map_err(|e| e.code);
            assert_eq!(got, Err(ErrorCode::LinkInvalid), "{junk:?}");
        }
    }

    #[test]
    fn resume_secrets_are_checked_against_their_hash() {
        let (secret, hash) = resume_secret();
        assert!(resume_matches(&secret, &hash));
        assert!(!resume_matches(&Secret::new("guess"), &hash));
        assert!(!hash.contains(secret.expose()));
    }

    #[test]
    fn turn_credentials_follow_the_rest_api_scheme() {
        // Reference value computed independently (Python's hmac + base64).
        let (user, pass) = turn_credentials(b"secret", "p1", 1_700_000_000);
        assert_eq!(user, "1700000000:p1");
        assert_eq!(pass.expose(), "0eBzZq6Gbz8vtWCnJTCAn+awJQI=");
        assert_eq!(pass.expose().len(), 28);
    }
}
