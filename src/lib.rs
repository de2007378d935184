//! stepkto judges mathematical reasoning and trains models to reason better.
//!
//! The crate map: [`outcome`] decides whether a final answer equals the reference (pure,
//! synchronous); [`store`] caches verdicts in SQLite or PostgreSQL; [`api`] serves it all
//! over HTTP with axum; [`cli`] runs the same engines over JSONL files; [`config`] turns raw
//! arguments into a validated [`config::Config`]. Dependencies point one way:
//! `api -> {judge, outcome, store, devices}`, `judge -> {model, outcome, devices}`,
//! `model -> {}`, and `outcome` depends on nothing inside the crate. [`judge`] holds the
//! stepwise judges (symbolic checks and PRMs on candle); [`model`] what the judge and the
//! trainer share about a Hugging Face checkpoint (config, weights, tokenizer, chat template,
//! the CPU kernels: the only `unsafe` of the crate); [`devices`] is the pool of compute
//! devices they lease.

pub mod api;
pub mod cli;
pub mod config;
pub mod devices;
pub mod jobs;
pub mod judge;
pub mod model;
pub mod outcome;
pub mod steps;
pub mod store;
pub mod toy;
pub mod train;
