//! The farm broker: inventory, reservations and node links behind one gRPC + HTTP port.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod fleet;
pub mod grid;
pub mod grpc;
pub mod http;
pub mod live;
pub mod metrics;
pub mod store;
