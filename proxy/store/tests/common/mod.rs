//! Shared by the integration tests: a `redis-server` of our own (killed by its pid on drop)
//! and a connection driven by a small poll loop over a non-blocking std `TcpStream`.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_store::{Auth, Client, ClientConfig, Completion, ConnError, Reply, RequestError, Token};

pub const PASSWORD: &str = "s3cret-for-the-test";

/// The running server; killed and its directory removed on drop.
pub struct Redis {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl Drop for Redis {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn start_redis(name: &str) -> Redis {
    let dir = std::env::temp_dir().join(format!("sluice-store-{name}-{}", std::process::id()));
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
pub struct Conn {
    pub sock: TcpStream,
    pub client: Client,
    pub done: Vec<Completion>,
    pub error: Option<ConnError>,
}

impl Conn {
    pub fn open(addr: SocketAddr, auth: Option<Auth>) -> Self {
        Self::open_with(addr, auth, 256, 256)
    }

    pub fn open_with(addr: SocketAddr, auth: Option<Auth>, max_in_flight: usize, max_queued: usize) -> Self {
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
    pub fn wait(&mut self, token: Token) -> Result<Reply, RequestError> {
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
