//! Sluice's cross-cutting tests, one binary sharing one engine
//! (`sluice_tests::runtime`): hostile plugins against the sandbox, the default
//! plugins through the host, and the bounce parser against its corpus.

mod bounce_corpus;
mod default_plugins;
mod hostile_plugins;
