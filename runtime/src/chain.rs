//! An error and its causes on one line, for log fields: the host's `logging::Chain`,
//! repeated here (15 lines) so that the runtime needs nothing of the host's.

use std::fmt;

/// `outer: cause: root cause`, for `error = %Chain(&e)`.
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
