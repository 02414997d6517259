//! Operating keygate: config checks, hot reload, metrics, load shedding, shutdown and
//! signals, the admin listener.

mod admin;
mod config;
mod durability;
mod metrics;
mod reload;
mod shed;
mod shutdown;
