//! Integration tests against real PostgreSQL clusters the tests start themselves.
//!
//! Every test owns its cluster (initdb into a temporary folder, a free loopback port), so the
//! tests run in parallel without sharing state. A missing PostgreSQL installation fails the
//! test with a message saying what to install; nothing is skipped silently.

mod support;

mod alerts;
mod backup_consistency;
mod backup_failures;
mod backup_fidelity;
mod configuration;
mod connection_urls;
mod copies_on_every_target;
mod daemon;
mod deployment;
mod drills;
mod encryption;
mod fidelity_corpus;
mod fidelity_data;
mod immutable_copies;
mod incremental;
mod incremental_ddl;
mod json_envelope;
mod many_tables;
mod metrics;
mod monitoring;
mod pitr;
mod plugin_conformance;
mod plugins;
mod progress;
mod quickstart;
mod recovery_fidelity;
mod recovery_interrupts;
mod recovery_latest;
mod recovery_new_server;
mod recovery_owner;
mod recovery_safety;
mod recovery_strategies;
mod repository_integrity;
mod repository_lifecycle;
mod retention;
mod tamper_evidence;
mod tls;
mod unattended_runs;
mod validator_sandbox;
mod validators;
