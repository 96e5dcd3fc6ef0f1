//! `MemoryCache`: the in-process implementation of `flag_core::FeatureFlagCache`.
//!
//! Not built yet (issue "flag-memory and flag-conformance"); this crate only reserves its place
//! in the workspace.
