//! sluice's shared session store, the parts that need no socket: issue 14's foundations.
//!
//! A fleet of sluices shares TLS sessions through Redis, sealed so the store learns neither
//! the sessions nor their IDs, and looked up before rustls sees the ClientHello so that no
//! worker ever waits on the network inside a handshake. This crate holds the pieces, each
//! sans-IO (the caller owns sockets and clocks) and each tested on its own:
//!
//! - [`client_hello`]: [`client_hello::peek`], a bounds-checked read of the TLS 1.2 session ID
//!   and the TLS 1.3 PSK identity (and SNI) from the first bytes a client sent, over several
//!   records if need be. Not a validator: rustls still reads every byte after it.
//! - [`seal`]: the key file ([`seal::KeySet::parse`]: first key seals, all keys open), store
//!   keys (HMAC of prefix + ID) and AES-256-GCM sealed values bound to their store key. Not a
//!   key manager: the caller re-reads the file on SIGHUP and swaps the set.
//! - [`resp`]: [`resp::Client`], a pipelined, bounded Redis client state machine (`AUTH`,
//!   `SET .. PX`, `GET`, `GETDEL`) with per-request timeouts and [`resp::Backoff`] for
//!   reconnects. RESP2 framing from the `redis-protocol` crate. Not a general client: no
//!   cluster, no RESP3, no TLS, no socket.
//! - [`link`]: [`link::Link`], one node's connection life (connect, back off, reconnect)
//!   around a [`resp::Client`]. Not the socket.
//! - [`rendezvous`]: [`rendezvous::Rendezvous`], which node holds a key (highest random
//!   weight), skipping nodes marked down. Not a health checker.
//! - [`config`]: [`config::SessionStoreConfig`], the `[session_store]` table, and
//!   [`config::RedisUrl`]. Not the reader of the rest of sluice's config.
//! - [`ticket_keys`]: nginx-compatible `ssl_session_ticket_key` files (48 or 80 bytes),
//!   parsed and checked. Not the ticket encryption.
//!
//! How a worker is meant to use them (the wiring lives in the proxy crate; `tests/fleet.rs`
//! runs this flow end to end with rustls and a real Redis):
//!
//! 1. Start: `SessionStoreConfig::validate` gives the nodes; per node a [`link::Link`] made
//!    from `client_config(node)` and a [`resp::Backoff`]; a [`rendezvous::Rendezvous`] over
//!    their `node_name`s; a [`seal::KeySet`] from `key_file` (again on SIGHUP, swapped whole).
//! 2. The first bytes of a connection: `peek` until it is not `Incomplete` (keep at most
//!    `MAX_PEEK_BYTES`). On `ClientHello(ids)` with `ids.lookup_id(tls13_enabled)` and a
//!    local cache miss: `store_key(prefix, id)`, `pick` a node that is up, `get` (TLS 1.2,
//!    reusable) or `getdel` (TLS 1.3, single use) with a `Token` naming the parked
//!    connection. A refusal (`Down`, `Full`) is a miss at once.
//! 3. Its `Completion` (or `TimedOut` after `timeout_ms`): on `Value`, `open` it (an error is
//!    a counted miss) and put it into the local cache; then hand the buffered ClientHello to
//!    rustls, hit or miss. A handshake never waits longer than the budget.
//! 4. A new session (the local cache's `put`): `seal` it for its `store_key` and `set` it
//!    with the session lifetime as `PX`; never waited for, dropped and counted when full.
//! 5. The event loop: write `pending_output`, feed reads to `handle_input`, call
//!    `handle_timeout` at the earliest `poll_timeout`, connect when `poll_connect` says so,
//!    close the socket on any `Err`, and mark the node up or down in the `Rendezvous`.

#![forbid(unsafe_code)]

pub mod client_hello;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod link;
pub mod rendezvous;
pub mod resp;
pub mod seal;
pub mod ticket_keys;

pub use client_hello::{HelloIds, NotReason, Peek, SessionId, peek};
pub use config::{ConfigError, RedisUrl, SessionStoreConfig, Urls};
pub use link::{Link, LinkState};
pub use rendezvous::Rendezvous;
pub use resp::{
    Auth, Backoff, Client, ClientConfig, ClientStats, Completion, ConnError, Refused, Reply, RequestError, Token,
};
pub use seal::{KeyFileError, KeySet, OpenError};
pub use ticket_keys::{TicketCipher, TicketKey, TicketKeyError, TicketKeys};
