//! The behaviour suite that every cache and repository adapter of `flag-core` must pass.
//!
//! Not built yet (issue "flag-memory and flag-conformance"); this crate only reserves its place
//! in the workspace.
