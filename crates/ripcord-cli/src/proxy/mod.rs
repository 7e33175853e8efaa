//! `ripcord proxy`: a reverse proxy that puts ripcord's pipelines in front of
//! any HTTP upstream, with an admin API, `/metrics` and a live dashboard.

pub mod admin;
pub mod config;
pub mod server;
pub mod state;
