//! `SqlRepository`: the sqlx implementation of `flag_core::FeatureFlagRepository`.
//!
//! Not built yet (issue "flag-sql"); this crate only reserves its place in the workspace.
