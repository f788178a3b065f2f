//! One proxied connection, whatever transport carries it: TLS termination and the relay to a
//! backend ([`relay`]), the choice of backend ([`backend`]: pools, routes, health), the PROXY v2
//! preamble ([`proxy_protocol`]) and the connection limits ([`limits`]).

pub mod backend;
pub mod limits;
pub mod proxy_protocol;
pub mod relay;
pub mod report;
