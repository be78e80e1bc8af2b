use crate::StoreError;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

/// The 256-bit key of the encrypted database. It lives in memory (zeroised when dropped) and
/// in the OS keychain only; `Debug` shows `[REDACTED]`.
#[derive(Debug)]
pub struct DbKey(SecretBox<[u8; 32]>);

impl DbKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| StoreError::Random(e.to_string()))?;
        Ok(Self::from_bytes(*bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// Lowercase hex, for keychains that hold text; zeroised when dropped.
    pub fn hex(&self) -> SecretString {
        let mut hex = String::with_capacity(64);
        for b in self.0.expose_secret() {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            hex.push(char::from(DIGITS[usize::from(b >> 4)]));
            hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
        SecretString::from(hex)
    }

    /// The raw bytes, for deriving a test store's audit key (zeroised with the key).
    pub(crate) fn raw(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.0.expose_secret())
    }

    /// SQLCipher's statements that give a connection this raw key and the database's page
    /// size (`cipher_page_size`, which the encrypted file cannot tell); zeroised when dropped.
    pub(crate) fn pragma(&self, page_size: u32) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "PRAGMA key = \"x'{}'\"; PRAGMA cipher_page_size = {page_size};",
            self.hex().expose_secret()
        ))
    }

    /// Parses the hex form; `None` if it is not 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self::from_bytes(*bytes))
    }
}

impl Clone for DbKey {
    fn clone(&self) -> Self {
        Self::from_bytes(*self.0.expose_secret())
    }
}

impl PartialEq for DbKey {
    /// In time that does not depend on where the keys differ.
    fn eq(&self, other: &Self) -> bool {
        self.0
            .expose_secret()
            .iter()
            .zip(other.0.expose_secret())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl Eq for DbKey {}

/// The 256-bit key of the audit log's chain (HMAC-SHA256). Kept in the OS keychain in an
/// entry of its own, apart from the database key: whoever has the database key alone can read
/// and change the database, but cannot make a changed audit entry verify. `Debug` shows
/// `[REDACTED]`; zeroised when dropped.
#[derive(Debug)]
pub struct AuditKey(SecretBox<[u8; 32]>);

impl AuditKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| StoreError::Random(e.to_string()))?;
        Ok(Self(SecretBox::new(Box::new(*bytes))))
    }

    /// For stores opened without a keychain (tests, benches, tools given only a database
    /// key): a key derived from the database key, so such a store's chain still verifies
    /// across openings. It gives no protection beyond the database key's; the app and the
    /// `hearth-sync` tool open with the keychain, where the audit key is its own entry.
    pub fn derived_from(db: &DbKey) -> Self {
        let raw = db.raw();
        let mac = crate::audit::hmac_sha256(&raw[..], &[b"hearth audit key v1"]);
        Self(SecretBox::new(Box::new(mac)))
    }

    /// Lowercase hex, for keychains that hold text; zeroised when dropped.
    pub fn hex(&self) -> SecretString {
        DbKey::from_bytes(*self.0.expose_secret()).hex()
    }

    /// Parses the hex form; `None` if it is not 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        DbKey::from_hex(s).map(|k| Self(SecretBox::new(Box::new(*k.raw()))))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_redacted_and_round_trip_as_hex() {
        let a = DbKey::generate().unwrap();
        let b = DbKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.clone(), a);
        let hex = a.hex();
        let shown = format!("{a:?} {hex:?}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert!(!shown.contains(&hex.expose_secret()[..8]), "{shown}");
        assert_eq!(DbKey::from_hex(hex.expose_secret()), Some(a));
        assert_eq!(DbKey::from_hex("zz"), None);
        assert_eq!(DbKey::from_hex(&"g".repeat(64)), None);
        // The hex digits, independently of `hex()`.
        let known = DbKey::from_bytes(std::array::from_fn(|i| u8::try_from(i * 8).unwrap()));
        assert_eq!(
            known.hex().expose_secret(),
            "0008101820283038404850586068707880889098a0a8b0b8c0c8d0d8e0e8f0f8"
        );
    }
}
