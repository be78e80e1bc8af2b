use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// A token or code: its `Debug` never shows it (`[REDACTED]`), it is zeroised when dropped,
/// and comparing two takes constant time.
#[derive(Clone, Debug)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn ct_eq(&self, other: &str) -> bool {
        self.expose().as_bytes().ct_eq(other.as_bytes()).into()
    }

    pub(crate) fn as_secret_string(&self) -> &SecretString {
        &self.0
    }
}

impl From<SecretString> for Secret {
    fn from(value: SecretString) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_comparison_works() {
        let s = Secret::new("eyJ-very-secret");
        assert!(!format!("{s:?}").contains("secret"));
        assert!(s.ct_eq("eyJ-very-secret"));
        assert!(!s.ct_eq("eyJ-very-secreT"));
        assert!(!s.ct_eq("eyJ"));
    }
}
