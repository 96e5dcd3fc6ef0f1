//! Goose load scenarios and the benchmark runner for `flag-server`, over HTTP only.
//!
//! Not built yet (issue "loadtests"); this crate only reserves its place in the workspace.
