//! End-to-end tests of the `rbackup` binary: real processes, a real local vault, real files.

mod admin;
mod agent;
mod append_only;
mod append_only_cloud;
mod browse;
mod cloud;
mod copy;
mod credentials;
mod damage;
mod display;
mod freshness;
mod harness;
mod hostile;
mod jobs;
mod keys;
mod links;
mod mount;
mod passphrase;
mod restore_target;
mod resume;
mod roundtrip;
mod soft_delete;
mod tier;
mod usage;
mod vault_input;
