//! End-to-end scenarios against the real kmsim server, one module per area. They form one test
//! binary so the suite links the server once, not once per file.

mod aliases_and_listing;
mod audit;
mod deletion;
mod deployment;
mod envelope;
mod faults;
mod hsm;
mod iam;
mod persistence;
mod rotation;
mod service_surface;
mod simulator;
mod standard_and_import;
mod state_matrix;
