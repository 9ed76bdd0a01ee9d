//! An error and its causes on one line, for log fields: the host's `logging::Chain`,
//! repeated here (15 lines, as `sluice-runtime` does) so that the store needs nothing of
//! the host's.

use std::fmt;

/// `outer: cause: root cause`, for `error = %Chain(&e)`: a store error's `Display` names
/// only its operation, its `source()` what went wrong underneath.
pub(crate) struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("record: 3 outcomes")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_names_every_cause() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(Chain(&e).to_string(), "record: 3 outcomes: disk full");
    }
}
