//! Numbered, compiled examples: one complete plugin per stage.
//!
//! Each module is a whole plugin but for its last line: a plugin crate ends
//! with the stage's export macro (shown in each module's doc), which these
//! examples leave out because the SDK itself must not export anything.
//! Their tests show the native harness at work.

pub mod ex01_ingest;
pub mod ex02_router;
pub mod ex03_send;
pub mod ex04_bounce;
pub mod ex05_rater;
pub mod ex06_own_relay_first;
pub mod ex07_free_then_tiered;
