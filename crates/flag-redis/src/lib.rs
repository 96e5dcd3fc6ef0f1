//! `RedisCache`: the Redis implementation of `flag_core::FeatureFlagCache`.
//!
//! Not built yet (issue "flag-redis"); this crate only reserves its place in the workspace.
