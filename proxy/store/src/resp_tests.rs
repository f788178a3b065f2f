//! Tests for the Redis client state machine, against scripted server bytes.

use proptest::prelude::*;

use super::*;

fn t0() -> Instant {
    // One base instant for every test; offsets from it are the virtual clock.
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn at(ms: u64) -> Instant {
    t0() + Duration::from_millis(ms)
}

fn config() -> ClientConfig {
    ClientConfig {
        auth: None,
        max_in_flight: 4,
        max_queued: 2,
        timeout: Duration::from_millis(5),
        stall_reset: Duration::from_millis(100),
        max_reply_bytes: 1024,
        max_value_bytes: 512,
    }
}

fn connected(cfg: ClientConfig) -> Client {
    let mut c = Client::new(cfg);
    c.on_connected(at(0));
    c
}

/// Takes everything the client wants written.
fn written(c: &mut Client) -> Vec<u8> {
    let out = c.pending_output().to_vec();
    c.advance_output(out.len());
    out
}

fn completions(c: &mut Client) -> Vec<Completion> {
    std::iter::from_fn(|| c.poll_completion()).collect()
}

fn ok(token: u64, reply: Reply) -> Completion {
    Completion { token: Token(token), result: Ok(reply) }
}

fn err(token: u64, e: RequestError) -> Completion {
    Completion { token: Token(token), result: Err(e) }
}

// Encoding.

#[test]
fn commands_on_the_wire() {
    let mut c = connected(config());
    c.set(at(0), Token(1), b"sluice:k", b"v\r\n\0", 300_000).unwrap();
    c.get(at(0), Token(2), b"sluice:k").unwrap();
    c.getdel(at(0), Token(3), b"k").unwrap();
    assert_eq!(
        written(&mut c),
        b"*5\r\n$3\r\nSET\r\n$8\r\nsluice:k\r\n$4\r\nv\r\n\0\r\n$2\r\nPX\r\n$6\r\n300000\r\n\
          *2\r\n$3\r\nGET\r\n$8\r\nsluice:k\r\n*2\r\n$6\r\nGETDEL\r\n$1\r\nk\r\n"
    );
    // An expiry of 0 would be refused by Redis: sent as 1 ms.
    c.set(at(0), Token(4), b"k", b"v", 0).unwrap();
    assert!(written(&mut c).ends_with(b"$2\r\nPX\r\n$1\r\n1\r\n"));
}

#[test]
fn auth_goes_first_with_or_without_a_user() {
    let mut cfg = config();
    cfg.auth = Some(Auth { username: None, password: "pw".into() });
    let mut c = connected(cfg.clone());
    assert!(!c.is_authenticated());
    c.get(at(0), Token(1), b"k").unwrap();
    assert_eq!(written(&mut c), b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    c.handle_input(at(1), b"+OK\r\n$-1\r\n").unwrap();
    assert!(c.is_authenticated());
    assert_eq!(completions(&mut c), vec![ok(1, Reply::Nil)]);
    cfg.auth = Some(Auth { username: Some("sluice".into()), password: "pw".into() });
    let mut c = connected(cfg);
    assert_eq!(written(&mut c), b"*3\r\n$4\r\nAUTH\r\n$6\r\nsluice\r\n$2\r\npw\r\n");
    assert!(!format!("{c:?}").contains("\"pw\""), "the password stays out of Debug");
}

// Replies.

#[test]
fn replies_match_requests_in_order_even_byte_by_byte() {
    let mut c = connected(config());
    c.set(at(0), Token(10), b"a", b"1", 1000).unwrap();
    c.get(at(0), Token(11), b"a").unwrap();
    c.getdel(at(0), Token(12), b"a").unwrap();
    c.getdel(at(0), Token(13), b"a").unwrap();
    written(&mut c);
    assert!(!c.is_authenticated(), "no AUTH: proven by the first good reply");
    let reply = b"+OK\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n";
    for b in reply.iter() {
        c.handle_input(at(1), std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(
        completions(&mut c),
        vec![
            ok(10, Reply::Stored),
            ok(11, Reply::Value(b"1".to_vec())),
            ok(12, Reply::Value(b"1".to_vec())),
            ok(13, Reply::Nil)
        ]
    );
    assert_eq!(c.in_flight(), 0);
    assert!(c.is_authenticated(), "no AUTH configured: a good reply proves the connection");
    // An empty value is a value, not nil.
    c.get(at(2), Token(14), b"e").unwrap();
    c.handle_input(at(2), b"$0\r\n\r\n").unwrap();
    assert_eq!(completions(&mut c), vec![ok(14, Reply::Value(vec![]))]);
}

#[test]
fn a_server_error_fails_only_its_request() {
    let mut c = connected(config());
    c.getdel(at(0), Token(1), b"a").unwrap();
    c.get(at(0), Token(2), b"a").unwrap();
    c.handle_input(at(1), b"-ERR unknown command 'GETDEL'\r\n$2\r\nhi\r\n").unwrap();
    assert_eq!(
        completions(&mut c),
        vec![err(1, RequestError::Server("ERR unknown command 'GETDEL'".into())), ok(2, Reply::Value(b"hi".to_vec()))]
    );
    assert!(c.is_connected());
}

#[test]
fn refused_auth_breaks_the_connection_and_fails_everything() {
    let mut cfg = config();
    cfg.auth = Some(Auth { username: None, password: "wrong".into() });
    let mut c = connected(cfg);
    c.get(at(0), Token(1), b"a").unwrap();
    c.set(at(0), Token(2), b"a", b"v", 10).unwrap();
    let e = c.handle_input(at(1), b"-WRONGPASS invalid username-password pair\r\n-NOAUTH\r\n").unwrap_err();
    let why = ConnError::AuthFailed("WRONGPASS invalid username-password pair".into());
    assert_eq!(e, why);
    assert_eq!(
        completions(&mut c),
        vec![err(1, RequestError::Connection(why.clone())), err(2, RequestError::Connection(why))]
    );
    assert!(!c.is_connected());
    assert_eq!(c.stats().connection_errors, 1);
    assert_eq!(c.stats().failed_by_connection, 2);
    assert!(c.pending_output().is_empty());
}

// Garbage from the server.

fn broken_by(bytes: &[u8]) -> (ConnError, Vec<Completion>) {
    let mut c = connected(config());
    c.get(at(0), Token(1), b"a").unwrap();
    c.set(at(0), Token(2), b"a", b"v", 10).unwrap();
    written(&mut c);
    let e = c.handle_input(at(1), bytes).unwrap_err();
    assert!(!c.is_connected());
    // Nothing more is accepted until the caller reconnects.
    assert_eq!(c.get(at(1), Token(3), b"a"), Err(Refused::Down));
    assert_eq!(c.handle_input(at(1), b"+OK\r\n"), Ok(()));
    (e, completions(&mut c))
}

#[test]
fn garbage_breaks_the_connection_and_fails_all_pending() {
    let cases: &[(&[u8], ConnError)] = &[
        (b"HTTP/1.1 400 Bad Request\r\n", ConnError::Protocol),
        (b"*1\r\n$1\r\na\r\n", ConnError::UnexpectedReply),
        (b":1\r\n", ConnError::UnexpectedReply),
        (b"+PONG\r\n", ConnError::UnexpectedReply),
        (b"$1\r\na\r\n$1\r\nb\r\n", ConnError::UnexpectedReply), // a bulk string for SET
        (b"$-1\r\n$-1\r\n", ConnError::UnexpectedReply),         // nil for SET
        (b"$abc\r\n", ConnError::Protocol),
        (b"$-7\r\n", ConnError::Protocol),
        (b"$2\r\nabcd\r\n", ConnError::Protocol),
        (b"%1\r\n", ConnError::Protocol), // RESP3 map
        (b"\0", ConnError::Protocol),
    ];
    for (bytes, why) in cases {
        let (e, done) = broken_by(bytes);
        assert_eq!(&e, why, "{:?}", String::from_utf8_lossy(bytes));
        assert_eq!(done.len(), 2, "{:?}: every pending request completes once", String::from_utf8_lossy(bytes));
        assert_eq!(done.iter().map(|d| d.token).collect::<Vec<_>>(), [Token(1), Token(2)]);
        // The GET may have had its good reply before the garbage; the SET never has.
        assert_eq!(done[1].result, Err(RequestError::Connection(why.clone())));
        if !bytes.starts_with(b"$")
            || bytes.starts_with(b"$abc")
            || bytes.starts_with(b"$-7")
            || bytes.starts_with(b"$2")
        {
            assert_eq!(done[0].result, Err(RequestError::Connection(why.clone())));
        }
    }
}

#[test]
fn endless_first_lines_break_the_connection() {
    // A bulk string length that never ends.
    let mut c = connected(config());
    c.get(at(0), Token(1), b"a").unwrap();
    c.handle_input(at(1), b"$1234567890123456789012").unwrap();
    assert_eq!(c.handle_input(at(1), b"3"), Err(ConnError::Protocol));
    // A status line longer than any Redis sends, fed a byte at a time.
    let mut cfg = config();
    cfg.max_reply_bytes = 100_000;
    let mut c = connected(cfg);
    c.get(at(0), Token(1), b"a").unwrap();
    c.handle_input(at(1), b"-ERR ").unwrap();
    let mut result = Ok(());
    for _ in 0..MAX_STATUS_LINE {
        result = c.handle_input(at(1), b"x");
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(ConnError::Protocol));
}

#[test]
fn a_complete_reply_over_the_bound_in_one_read_breaks_the_connection() {
    let mut c = connected(config());
    c.get(at(0), Token(1), b"a").unwrap();
    let mut reply = b"$2000\r\n".to_vec();
    reply.extend_from_slice(&[b'x'; 2000]);
    reply.extend_from_slice(b"\r\n");
    assert_eq!(c.handle_input(at(1), &reply), Err(ConnError::ReplyTooLarge));
}

#[test]
fn a_reply_nobody_asked_for_breaks_the_connection() {
    let mut c = connected(config());
    assert_eq!(c.handle_input(at(0), b"+OK\r\n"), Err(ConnError::UnexpectedReply));
}

#[test]
fn a_reply_larger_than_the_bound_breaks_the_connection() {
    let mut c = connected(config());
    c.get(at(0), Token(1), b"a").unwrap();
    // A huge announced length is just incomplete until the buffer passes the bound.
    c.handle_input(at(1), b"$100000000\r\n").unwrap();
    c.handle_input(at(1), &[b'x'; 1000]).unwrap();
    assert_eq!(c.handle_input(at(1), &[b'x'; 100]), Err(ConnError::ReplyTooLarge));
    assert_eq!(completions(&mut c), vec![err(1, RequestError::Connection(ConnError::ReplyTooLarge))]);
}

// Bounds.

#[test]
fn in_flight_is_bounded_the_rest_waits_then_is_refused() {
    let mut c = connected(config()); // 4 in flight, 2 queued
    for t in 0..4 {
        c.get(at(0), Token(t), b"k").unwrap();
    }
    let first = written(&mut c);
    assert_eq!(first.len(), 4 * b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".len());
    c.get(at(0), Token(4), b"k").unwrap();
    c.set(at(0), Token(5), b"k", b"v", 10).unwrap();
    assert_eq!((c.in_flight(), c.queued()), (4, 2));
    assert!(c.pending_output().is_empty(), "waiting requests are not written");
    // Full: a GET is refused at once, a SET dropped; both counted.
    assert_eq!(c.get(at(0), Token(6), b"k"), Err(Refused::Full));
    assert_eq!(c.getdel(at(0), Token(7), b"k"), Err(Refused::Full));
    assert_eq!(c.set(at(0), Token(8), b"k", b"v", 10), Err(Refused::Full));
    let s = c.stats();
    assert_eq!((s.gets_refused_full, s.sets_dropped_full), (2, 1));
    // One reply makes room: the first waiting request is written.
    c.handle_input(at(1), b"$-1\r\n").unwrap();
    assert_eq!(written(&mut c), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    assert_eq!((c.in_flight(), c.queued()), (4, 1));
    c.handle_input(at(1), b"$-1\r\n$-1\r\n").unwrap();
    assert!(written(&mut c).starts_with(b"*5\r\n$3\r\nSET"));
    c.handle_input(at(1), b"$-1\r\n$-1\r\n+OK\r\n").unwrap();
    let done = completions(&mut c);
    assert_eq!(done.iter().map(|d| d.token.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(done[5], ok(5, Reply::Stored));
    assert_eq!((c.in_flight(), c.queued()), (0, 0));
}

#[test]
fn a_value_over_the_bound_is_refused() {
    let mut c = connected(config());
    assert_eq!(c.set(at(0), Token(1), b"k", &[0; 513], 10), Err(Refused::TooLarge));
    assert_eq!(c.stats().sets_too_large, 1);
    c.set(at(0), Token(2), b"k", &[0; 512], 10).unwrap();
    assert!(c.pending_output().len() > 512);
}

#[test]
fn nothing_is_accepted_while_down() {
    let mut c = Client::new(config());
    assert_eq!(c.get(at(0), Token(1), b"k"), Err(Refused::Down));
    assert_eq!(c.set(at(0), Token(2), b"k", b"v", 1), Err(Refused::Down));
    let s = c.stats();
    assert_eq!((s.gets_refused_down, s.sets_dropped_down), (1, 1));
    assert!(c.pending_output().is_empty() && c.poll_completion().is_none() && c.poll_timeout().is_none());
}

#[test]
fn partial_writes_are_resumed() {
    let mut c = connected(config());
    c.get(at(0), Token(1), b"key").unwrap();
    let all = c.pending_output().to_vec();
    c.advance_output(5);
    assert_eq!(c.pending_output(), &all[5..]);
    c.advance_output(1000);
    assert!(c.pending_output().is_empty());
}

// Time.

#[test]
fn a_slow_reply_times_out_and_is_thrown_away_when_it_comes() {
    let mut c = connected(config());
    c.get(at(0), Token(1), b"a").unwrap();
    c.get(at(2), Token(2), b"b").unwrap();
    assert_eq!(c.poll_timeout(), Some(at(5)));
    c.handle_timeout(at(4)).unwrap();
    assert!(completions(&mut c).is_empty());
    c.handle_timeout(at(5)).unwrap();
    assert_eq!(completions(&mut c), vec![err(1, RequestError::TimedOut)]);
    assert_eq!(c.poll_timeout(), Some(at(7)));
    // The late reply for 1 is discarded; 2's reply still reaches 2.
    c.handle_input(at(6), b"$1\r\nA\r\n$1\r\nB\r\n").unwrap();
    assert_eq!(completions(&mut c), vec![ok(2, Reply::Value(b"B".to_vec()))]);
    let s = c.stats();
    assert_eq!((s.timed_out, s.late_replies), (1, 1));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn waiting_requests_time_out_without_being_sent() {
    let mut cfg = config();
    cfg.max_in_flight = 1;
    let mut c = connected(cfg);
    c.get(at(0), Token(1), b"a").unwrap();
    c.get(at(1), Token(2), b"b").unwrap();
    written(&mut c);
    c.handle_timeout(at(6)).unwrap();
    assert_eq!(completions(&mut c), vec![err(1, RequestError::TimedOut), err(2, RequestError::TimedOut)]);
    assert_eq!(c.queued(), 0);
    // 1's late reply frees the slot; 2 was never sent, so nothing is written.
    c.handle_input(at(7), b"$-1\r\n").unwrap();
    assert!(c.pending_output().is_empty());
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn a_connection_hopelessly_behind_is_reset() {
    let mut c = connected(config());
    c.get(at(0), Token(1), b"a").unwrap();
    c.handle_timeout(at(10)).unwrap();
    assert_eq!(completions(&mut c), vec![err(1, RequestError::TimedOut)]);
    c.get(at(50), Token(2), b"b").unwrap();
    assert_eq!(c.poll_timeout(), Some(at(55)));
    c.handle_timeout(at(55)).unwrap();
    assert_eq!(c.poll_timeout(), Some(at(100)), "the stall check of the oldest unanswered request");
    assert_eq!(c.handle_timeout(at(100)), Err(ConnError::Stalled));
    assert!(!c.is_connected());
    assert_eq!(completions(&mut c), vec![err(2, RequestError::TimedOut)], "already timed out: no second completion");
}

#[test]
fn stall_fails_requests_not_yet_timed_out() {
    let mut cfg = config();
    cfg.timeout = Duration::from_millis(500);
    let mut c = connected(cfg);
    c.get(at(0), Token(1), b"a").unwrap();
    assert_eq!(c.handle_timeout(at(100)), Err(ConnError::Stalled));
    assert_eq!(completions(&mut c), vec![err(1, RequestError::Connection(ConnError::Stalled))]);
}

// Reconnection.

#[test]
fn lost_connection_fails_everything_and_reconnect_starts_clean() {
    let mut cfg = config();
    cfg.auth = Some(Auth { username: None, password: "pw".into() });
    let mut c = connected(cfg);
    c.get(at(0), Token(1), b"a").unwrap();
    c.handle_input(at(0), b"+OK\r\n$1").unwrap(); // half a reply
    c.connection_lost();
    assert_eq!(completions(&mut c), vec![err(1, RequestError::Connection(ConnError::Closed))]);
    assert_eq!(c.stats().connection_errors, 0, "a closed socket is not a protocol error");
    c.on_connected(at(10));
    assert_eq!(written(&mut c), b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n");
    c.get(at(10), Token(2), b"b").unwrap();
    written(&mut c);
    // The half reply of the old connection is gone.
    c.handle_input(at(11), b"+OK\r\n$1\r\nx\r\n").unwrap();
    assert_eq!(completions(&mut c), vec![ok(2, Reply::Value(b"x".to_vec()))]);
}

#[test]
fn backoff_grows_caps_jitters_and_resets() {
    let base = Duration::from_millis(100);
    let cap = Duration::from_secs(5);
    let mut b = Backoff::new(base, cap, 42);
    let mut nominal = base;
    for _ in 0..12 {
        let d = b.next_delay();
        assert!(d >= nominal / 2 && d <= nominal, "{d:?} not in [{:?}, {nominal:?}]", nominal / 2);
        nominal = (nominal * 2).min(cap);
    }
    assert_eq!(b.attempt(), 12);
    // Jitter: two seeds do not march in step.
    let mut x = Backoff::new(base, cap, 1);
    let mut y = Backoff::new(base, cap, 2);
    assert!((0..6).any(|_| x.next_delay() != y.next_delay()));
    b.reset();
    assert_eq!(b.attempt(), 0);
    assert!(b.next_delay() <= base);
    // Many failures never overflow.
    for _ in 0..200 {
        assert!(b.next_delay() <= cap);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Whatever the server sends, in whatever pieces: no panic, and every accepted request
    /// completes exactly once (after the caller closes the connection at the latest).
    #[test]
    fn arbitrary_server_bytes(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                Just(b"+OK\r\n".to_vec()),
                Just(b"$-1\r\n".to_vec()),
                Just(b"$3\r\nabc\r\n".to_vec()),
                Just(b"-ERR x\r\n".to_vec()),
            ],
            0..12,
        ),
        requests in proptest::collection::vec(0u8..3, 0..10),
        steps in proptest::collection::vec(0u64..20, 12),
    ) {
        let mut c = connected(config());
        let mut accepted = std::collections::HashSet::new();
        for (i, r) in requests.iter().enumerate() {
            let t = Token(i as u64);
            let res = match r {
                0 => c.get(at(0), t, b"k"),
                1 => c.getdel(at(0), t, b"k"),
                _ => c.set(at(0), t, b"k", b"v", 5),
            };
            if res.is_ok() {
                accepted.insert(t);
            }
        }
        let mut now = 0;
        let mut seen = Vec::new();
        for (chunk, step) in chunks.iter().zip(&steps) {
            now += step;
            written(&mut c);
            let _ = c.handle_input(at(now), chunk);
            let _ = c.handle_timeout(at(now));
            seen.extend(completions(&mut c));
        }
        c.connection_lost();
        seen.extend(completions(&mut c));
        let tokens: Vec<Token> = seen.iter().map(|d| d.token).collect();
        let unique: std::collections::HashSet<Token> = tokens.iter().copied().collect();
        prop_assert_eq!(unique.len(), tokens.len(), "a request completed twice");
        prop_assert_eq!(unique, accepted);
    }
}
