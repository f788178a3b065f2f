//! The sans-IO Redis client against a real `redis-server` (Debian's package; .ci/run installs
//! it): AUTH, SET .. PX, GET, GETDEL over a non-blocking std `TcpStream` driven by a small poll
//! loop, plus a sealed session value through the store. The server listens on 127.0.0.1 on a
//! free port, with a password, no persistence, in a temporary directory; it is killed by its
//! pid when the test ends, passed or failed.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_store::{Auth, Client, ClientConfig, Completion, ConnError, KeySet, Refused, Reply, RequestError, Token};

const PASSWORD: &str = "s3cret-for-the-test";

/// The running server; killed and its directory removed on drop.
struct Redis {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for Redis {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_redis() -> Redis {
    let dir = std::env::temp_dir().join(format!("sluice-store-redis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A free port: bind 0, note it, release it for redis. Another process could take it in
    // between; then redis exits and we try another.
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--requirepass", PASSWORD])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let mut redis = Redis { child, dir: dir.clone(), addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        // Wait until it accepts connections, or has exited.
        for _ in 0..500 {
            if TcpStream::connect(redis.addr).is_ok() {
                return redis;
            }
            if redis.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
        eprintln!("redis-server on port {port} did not come up:\n{log}");
        drop(redis);
        std::fs::create_dir_all(&dir).unwrap();
    }
    panic!("redis-server did not start");
}

/// One connection: a non-blocking socket and the client state machine.
struct Conn {
    sock: TcpStream,
    client: Client,
    done: Vec<Completion>,
    error: Option<ConnError>,
}

impl Conn {
    fn open(addr: SocketAddr, auth: Option<Auth>) -> Self {
        Self::open_with(addr, auth, 256, 256)
    }

    fn open_with(addr: SocketAddr, auth: Option<Auth>, max_in_flight: usize, max_queued: usize) -> Self {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_nonblocking(true).unwrap();
        sock.set_nodelay(true).unwrap();
        let cfg = ClientConfig {
            auth,
            // Generous: the test is about behaviour, not speed.
            timeout: Duration::from_secs(10),
            stall_reset: Duration::from_secs(20),
            max_in_flight,
            max_queued,
            ..ClientConfig::default()
        };
        let mut client = Client::new(cfg);
        client.on_connected(Instant::now());
        Self { sock, client, done: Vec::new(), error: None }
    }

    /// Polls until `token` completes (or the connection breaks).
    fn wait(&mut self, token: Token) -> Result<Reply, RequestError> {
        let give_up = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = self.done.iter().position(|c| c.token == token) {
                return self.done.remove(i).result;
            }
            assert!(Instant::now() < give_up, "no answer for {token:?}");
            let mut progressed = false;
            while !self.client.pending_output().is_empty() {
                match self.sock.write(self.client.pending_output()) {
                    Ok(n) => {
                        self.client.advance_output(n);
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    self.client.connection_lost();
                    self.error.get_or_insert(ConnError::Closed);
                }
                Ok(n) => {
                    progressed = true;
                    if let Err(e) = self.client.handle_input(Instant::now(), &buf[..n]) {
                        self.error = Some(e);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            if let Err(e) = self.client.handle_timeout(Instant::now()) {
                self.error = Some(e);
            }
            while let Some(c) = self.client.poll_completion() {
                self.done.push(c);
            }
            if !progressed {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[test]
fn against_redis_server() {
    let redis = start_redis();
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
