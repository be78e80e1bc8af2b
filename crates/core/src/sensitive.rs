use std::fmt;

/// A value that is PHI or a secret. Its `Debug` and `Display` print `<redacted>`, so it cannot
/// reach a log line, a panic message or an error string by accident; the value is read only
/// through [`Sensitive::expose`], which makes each use visible in review.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> From<T> for Sensitive<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let name = Sensitive::new("Ada Abernathy".to_string());
        assert_eq!(format!("{name:?}"), "<redacted>");
        assert_eq!(format!("{name}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&name)), "Some(<redacted>)");
        assert_eq!(name.expose(), "Ada Abernathy");
    }
}
