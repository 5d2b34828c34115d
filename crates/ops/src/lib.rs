//! Deployment and tuning modules of pgvault: `tune` (recommended `postgresql.conf` settings),
//! `doctor` (a production-readiness audit of a running server) and `deploy` (ready-to-use
//! systemd, Compose and Kubernetes artifacts with backups wired in).
//!
//! This crate sits on top of the engine: it uses `pgvault-core` (configuration, units, the
//! repository, the server connection), and nothing in the engine imports it. Rules are data
//! (each with its reason and reference), so they stay easy to read and to extend.

pub mod deploy;
pub mod doctor;
pub mod tune;
