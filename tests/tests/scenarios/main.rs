//! End-to-end scenarios against the real kmsim server, one module per area. They form one test
//! binary so the suite links the server once, not once per file.

mod aliases_and_listing;
mod audit;
mod bad_input;
mod bench_smoke;
mod ceremony;
mod clock_audit;
mod clock_expiry;
mod component;
mod degraded_start;
mod deletion;
mod deployment;
mod envelope;
mod faults;
mod hsm;
mod iam;
mod lifecycle;
mod persistence;
mod policies;
mod registrations;
mod rest;
mod rotation;
mod sdk;
mod seeding;
mod service_surface;
mod simulator;
mod snapshots;
mod standard_and_import;
mod state_matrix;
mod timeline;
mod tls;
