//! The rounding rule of every invoice, from `sluice-money` (where it is
//! stated and tested): re-exported so billing code names it in one place.

pub use sluice_money::{ROUNDING_RULE, format_minor, round_lines, round_to_minor};
