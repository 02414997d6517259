//! keygate's client side: the connection code over real sockets, and `keygate conformance`
//! and `keygate load` (the real binary) against the real server.

mod conformance;
mod conn;
mod load;
