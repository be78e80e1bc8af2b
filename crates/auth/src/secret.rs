use subtle::ConstantTimeEq;

/// A token or code: its `Debug` never shows it, and comparing two takes constant time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn ct_eq(&self, other: &str) -> bool {
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
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
