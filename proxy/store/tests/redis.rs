//! The sans-IO Redis client against a real `redis-server` (Debian's package; .ci/run installs
//! it): AUTH, SET .. PX, GET, GETDEL over a non-blocking std `TcpStream` driven by a small poll
//! loop, plus a sealed session value through the store. The server listens on 127.0.0.1 on a
//! free port, with a password, no persistence, in a temporary directory; it is killed by its
//! pid when the test ends, passed or failed.

mod common;

use std::time::Instant;

use common::{Conn, PASSWORD, start_redis};
use sluice_store::{Auth, ConnError, KeySet, Refused, Reply, RequestError, Token};

#[test]
fn against_redis_server() {
    let redis = start_redis("redis");
    let auth = Auth { username: None, password: PASSWORD.into() };

    // AUTH, then SET PX / GET / GETDEL / GETDEL pipelined before any reply.
    let mut c = Conn::open(redis.addr, Some(auth.clone()));
    let now = Instant::now();
    c.client.set(now, Token(1), b"sluice:test:a", b"value-a\r\n\0binary", 60_000).unwrap();
    c.client.get(now, Token(2), b"sluice:test:a").unwrap();
    c.client.getdel(now, Token(3), b"sluice:test:a").unwrap();
    c.client.getdel(now, Token(4), b"sluice:test:a").unwrap();
    c.client.get(now, Token(5), b"sluice:test:a").unwrap();
    assert_eq!(c.wait(Token(1)), Ok(Reply::Stored));
    assert!(c.client.is_authenticated());
    assert_eq!(c.wait(Token(2)), Ok(Reply::Value(b"value-a\r\n\0binary".to_vec())));
    assert_eq!(c.wait(Token(3)), Ok(Reply::Value(b"value-a\r\n\0binary".to_vec())));
    assert_eq!(c.wait(Token(4)), Ok(Reply::Nil), "GETDEL deleted it: a TLS 1.3 ticket is single use");
    assert_eq!(c.wait(Token(5)), Ok(Reply::Nil));

    // A sealed session through the store: the store sees neither the ID nor the session.
    let keys = KeySet::parse("# test key\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n").unwrap();
    let session_id = [0x5a; 32];
    let store_key = keys.store_key(b"sluice:", &session_id);
    let sealed = keys.seal(&store_key, b"the session");
    let now = Instant::now();
    c.client.set(now, Token(10), &store_key, &sealed, 60_000).unwrap();
    c.client.get(now, Token(11), &store_key).unwrap();
    assert_eq!(c.wait(Token(10)), Ok(Reply::Stored));
    match c.wait(Token(11)) {
        Ok(Reply::Value(v)) => assert_eq!(keys.open(&store_key, &v).unwrap(), b"the session"),
        other => panic!("{other:?}"),
    }

    // Many requests through a small window: all answered, in order.
    let mut small = Conn::open_with(redis.addr, Some(auth.clone()), 4, 8);
    let mut accepted = Vec::new();
    let now = Instant::now();
    for i in 0..40u64 {
        let key = format!("sluice:test:n{i}");
        match small.client.set(now, Token(100 + i), key.as_bytes(), key.as_bytes(), 60_000) {
            Ok(()) => accepted.push(i),
            Err(Refused::Full) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    // 4 in flight (AUTH is one of them) and 8 waiting; the rest dropped.
    assert_eq!(accepted, (0..11).collect::<Vec<_>>());
    assert_eq!(small.client.stats().sets_dropped_full, 29);
    for &i in &accepted {
        assert_eq!(small.wait(Token(100 + i)), Ok(Reply::Stored));
    }
    for &i in &accepted {
        small.client.get(Instant::now(), Token(200 + i), format!("sluice:test:n{i}").as_bytes()).unwrap();
        assert_eq!(small.wait(Token(200 + i)), Ok(Reply::Value(format!("sluice:test:n{i}").into_bytes())));
    }

    // Without AUTH, Redis refuses each command: a server error for that request only.
    let mut anon = Conn::open(redis.addr, None);
    anon.client.get(Instant::now(), Token(20), b"sluice:test:a").unwrap();
    match anon.wait(Token(20)) {
        Err(RequestError::Server(msg)) => assert!(msg.starts_with("NOAUTH"), "{msg}"),
        other => panic!("{other:?}"),
    }

    // A wrong password breaks the connection; the pending GET fails with it.
    let mut bad = Conn::open(redis.addr, Some(Auth { username: None, password: "wrong".into() }));
    bad.client.get(Instant::now(), Token(30), b"sluice:test:a").unwrap();
    match bad.wait(Token(30)) {
        Err(RequestError::Connection(ConnError::AuthFailed(msg))) => assert!(msg.starts_with("WRONGPASS"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(!bad.client.is_connected());
    assert!(matches!(bad.error, Some(ConnError::AuthFailed(_))));

    // Username + password (the `default` ACL user).
    let mut acl = Conn::open(redis.addr, Some(Auth { username: Some("default".into()), password: PASSWORD.into() }));
    acl.client.get(Instant::now(), Token(40), b"sluice:test:none").unwrap();
    assert_eq!(acl.wait(Token(40)), Ok(Reply::Nil));
    drop(redis);
}
