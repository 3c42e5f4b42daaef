//! The real `brain-shaper` binary between a client and an upstream on 127.0.0.1 ephemeral
//! ports: bytes pass unchanged, the rate and the delay are at least what was asked, resets
//! reach both peers, and the shaper stops by itself. Timing assertions are lower bounds only
//! (a sleep never ends early); a loaded machine can only make them pass more easily.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// A running shaper, killed if a test ends without stopping it.
struct Shaper {
    child: Child,
    addr: SocketAddr,
    stderr: Option<JoinHandle<String>>,
}

impl Shaper {
    /// Starts the binary in front of `upstream` with `args` and waits for its `listening` line.
    fn start(upstream: SocketAddr, args: &[&str]) -> Shaper {
        let mut child = Command::new(env!("CARGO_BIN_EXE_brain-shaper"))
            .args(["--upstream", &upstream.to_string(), "--max-seconds", "60"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("brain-shaper starts");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = thread::spawn(move || {
            let mut log = String::new();
            let _ = stderr.read_to_string(&mut log);
            log
        });
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reads stdout");
        let Some(addr) = line
            .strip_prefix("listening ")
            .and_then(|a| a.trim().parse().ok())
        else {
            let _ = child.kill();
            let log = stderr.join().unwrap_or_default();
            panic!("not a listening line: {line:?}; stderr:\n{log}");
        };
        Shaper {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// Closes its stdin, waits for it to exit, and returns its status and summary.
    fn stop(mut self) -> (ExitStatus, serde_json::Value) {
        drop(self.child.stdin.take());
        self.wait(Duration::from_secs(5))
    }

    /// Waits up to `limit` for it to exit by itself; returns its status and summary.
    fn wait(&mut self, limit: Duration) -> (ExitStatus, serde_json::Value) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the shaper did not exit within {limit:?}"
            );
            thread::sleep(Duration::from_millis(20));
        };
        let log = self
            .stderr
            .take()
            .expect("stderr thread")
            .join()
            .expect("stderr read");
        let last = log.lines().last().unwrap_or_default();
        let summary =
            serde_json::from_str(last).unwrap_or_else(|e| panic!("no summary ({e}) in:\n{log}"));
        (status, summary)
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to the shaper");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a peer saw its connection end.
#[derive(Debug, PartialEq)]
enum End {
    Eof,
    Reset,
    Other(io::ErrorKind),
}

impl End {
    /// ECONNRESET, or EPIPE from a write that came after the reset had been received (the
    /// first call after it reports ECONNRESET; a write may not be the first).
    fn of(e: &io::Error) -> End {
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => End::Reset,
            kind => End::Other(kind),
        }
    }
}

/// An upstream on an ephemeral port that runs `serve` on each connection in a thread, and
/// reports on the channel how each one's reading ended.
fn upstream<F>(serve: F) -> (SocketAddr, mpsc::Receiver<End>)
where
    F: Fn(TcpStream) -> io::Result<()> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let (ends, ended) = mpsc::channel();
    let serve = Arc::new(serve);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (ends, serve) = (ends.clone(), serve.clone());
            thread::spawn(move || {
                let end = match serve(stream) {
                    Ok(()) => End::Eof,
                    Err(e) => End::of(&e),
                };
                let _ = ends.send(end);
            });
        }
    });
    (addr, ended)
}

/// Sends back what it reads until EOF, then half-closes.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return stream.shutdown(Shutdown::Write);
        }
        stream.write_all(&buf[..n])?;
    }
}

/// Deterministic bytes that no shift or swap of chunks leaves unchanged.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn bytes_pass_unchanged_both_ways() {
    let (up, _) = upstream(echo);
    // Jitter on a fast link: many chunks whose draws would reorder them if they could.
    let shaper = Shaper::start(up, &["--profile", "campus", "--jitter-ms", "3"]);
    let sent = pattern(4 * MIB);
    let mut client = shaper.connect();
    let mut writer = client.try_clone().expect("clone");
    let data = sent.clone();
    let writing = thread::spawn(move || {
        for piece in data.chunks(10_007) {
            writer.write_all(piece).expect("write");
        }
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut received = Vec::with_capacity(sent.len());
    // The half-close travels through the shaper, the echo's own back: EOF after every byte.
    client.read_to_end(&mut received).expect("read to EOF");
    writing.join().expect("writer");
    assert_eq!(received.len(), sent.len());
    assert_eq!(fnv1a(&received), fnv1a(&sent));
    assert!(received == sent);

    let (status, summary) = shaper.stop();
    assert!(status.success());
    assert_eq!(summary["bytes_up"], sent.len());
    assert_eq!(summary["bytes_down"], sent.len());
    assert_eq!(summary["connections"], 1);
    assert_eq!(summary["resets"], 0);
}

#[test]
fn bandwidth_is_enforced_in_each_direction() {
    // The upstream takes 1 MiB, says when it had the last byte, then sends 1 MiB back.
    let (received_at, received) = mpsc::channel();
    let (up, _) = upstream(move |mut stream| {
        let mut got = vec![0u8; MIB];
        stream.read_exact(&mut got)?;
        let _ = received_at.send(Instant::now());
        stream.write_all(&pattern(MIB))?;
        stream.shutdown(Shutdown::Write)
    });
    let shaper = Shaper::start(up, &["--up-mbps", "10", "--down-mbps", "10"]);
    let mut client = shaper.connect();
    let start = Instant::now();
    client.write_all(&pattern(MIB)).expect("upload");
    let mut back = Vec::new();
    client.read_to_end(&mut back).expect("download");
    let done = Instant::now();
    assert_eq!(back.len(), MIB);
    let received = received.recv().expect("the upstream's time");

    // 1 MiB at 1.25 MB/s with a 16 KiB burst takes at least 0.826 s each way. Each span
    // starts before the first byte reached the shaper and ends after the last left it.
    let upload = received - start;
    let download = done - received;
    assert!(
        upload >= Duration::from_millis(800),
        "upload took {upload:?}"
    );
    assert!(
        download >= Duration::from_millis(800),
        "download took {download:?}"
    );
    shaper.stop();
}

#[test]
fn each_round_trip_takes_at_least_the_profiles_delay() {
    let (up, _) = upstream(echo);
    let shaper = Shaper::start(up, &["--rtt-ms", "80"]);
    let mut client = shaper.connect();
    let mut byte = [0u8; 1];
    for i in 0..5u8 {
        let sent = Instant::now();
        client.write_all(&[i]).expect("ping");
        client.read_exact(&mut byte).expect("pong");
        let rtt = sent.elapsed();
        assert_eq!(byte[0], i);
        assert!(
            rtt >= Duration::from_millis(80),
            "round trip {i} took {rtt:?}"
        );
    }
    shaper.stop();
}

#[test]
fn a_reset_profile_resets_both_peers() {
    let (up, ended) = upstream(echo);
    // A mean of 0.2 s: no reset within 10 s has probability e^-50.
    let shaper = Shaper::start(
        up,
        &[
            "--profile",
            "mobile",
            "--reset-every-s",
            "0.2",
            "--seed",
            "3",
        ],
    );
    let mut client = shaper.connect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut byte = [0u8; 1];
    let seen = loop {
        assert!(Instant::now() < deadline, "no reset within 10 s");
        let outcome = client.write_all(b"x").and_then(|()| client.read(&mut byte));
        match outcome {
            Ok(1) => thread::sleep(Duration::from_millis(20)),
            Ok(_) => break End::Eof,
            Err(e) => break End::of(&e),
        }
    };
    assert!(
        matches!(seen, End::Reset | End::Eof),
        "the client saw {seen:?}"
    );
    let upstream_saw = ended
        .recv_timeout(Duration::from_secs(5))
        .expect("the upstream's end");
    assert_eq!(
        upstream_saw,
        End::Reset,
        "the upstream saw a reset, not a clean close"
    );

    let (_, summary) = shaper.stop();
    assert_eq!(summary["resets"], 1);
    assert_eq!(summary["profile"], "mobile");
}

#[test]
fn the_shaper_exits_when_its_stdin_closes() {
    let (up, _) = upstream(echo);
    let shaper = Shaper::start(up, &[]);
    // A connection open and forwarding (echoed, so accepted) does not keep it running.
    let mut client = shaper.connect();
    let mut byte = [0u8; 1];
    client
        .write_all(b"a")
        .and_then(|()| client.read_exact(&mut byte))
        .expect("echoed");
    let (status, summary) = shaper.stop();
    assert!(status.success(), "{status}");
    assert_eq!(summary["connections"], 1);
    assert!(
        matches!(client.read(&mut byte), Ok(0) | Err(_)),
        "the connection outlived the shaper"
    );
}

#[test]
fn the_shaper_exits_after_max_seconds_with_stdin_open() {
    let (up, _) = upstream(echo);
    let started = Instant::now();
    // `start` passes --max-seconds 60; the later flag wins.
    let mut shaper = Shaper::start(up, &["--max-seconds", "1"]);
    let (status, _) = shaper.wait(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let (up, _) = upstream(echo);
    let shaper = Shaper::start(up, &["--max-connections", "1"]);
    let mut first = shaper.connect();
    let mut byte = [0u8; 1];
    // Echoed: the first connection is forwarded before the second is tried.
    first
        .write_all(b"a")
        .and_then(|()| first.read_exact(&mut byte))
        .expect("first connection");
    let mut second = shaper.connect();
    match second.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("the second connection was not refused: {other:?}"),
    }
    first
        .write_all(b"b")
        .and_then(|()| first.read_exact(&mut byte))
        .expect("first still served");
    let (_, summary) = shaper.stop();
    assert_eq!(summary["connections"], 1);
    assert_eq!(summary["refused"], 1);
}

#[test]
fn an_unreachable_upstream_resets_the_client() {
    // A port that was free a moment ago, with nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let shaper = Shaper::start(port, &[]);
    let mut client = shaper.connect();
    let mut byte = [0u8; 1];
    match client.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("the client was not told: {other:?}"),
    }
    let (_, summary) = shaper.stop();
    assert_eq!(summary["upstream_failures"], 1);
}

#[test]
fn help_lists_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_brain-shaper"))
        .arg("--help")
        .output()
        .expect("--help runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--upstream",
        "--profile",
        "--down-mbps",
        "--up-mbps",
        "--rtt-ms",
        "--jitter-ms",
        "--reset-every-s",
        "--seed",
        "--max-seconds",
        "--max-connections",
        "--ignore-stdin",
        "campus",
        "home",
        "mobile",
        "none",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}
