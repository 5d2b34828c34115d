//! Unit tests of [`super`] (the fault proxy) against a tiny echo server on loopback.

use super::*;

/// A tiny HTTP/1.1 server: answers every request with its method, target and body length.
async fn echo_server() -> Result<(SocketAddr, JoinHandle<()>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let h = tokio::spawn(async move {
        for _ in 0..1000 {
            let Ok((s, _)) = l.accept().await else { break };
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                for _ in 0..1000 {
                    let Ok(Some(head)) = read_head(&mut r, true).await else {
                        break;
                    };
                    let Ok(body) = read_body(&mut r, &head).await else {
                        break;
                    };
                    let text = format!("{} {} {}", head.method, head.target, body.len());
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len());
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok((addr, h))
}

/// Sends one request on a new connection; returns the raw response (until close or timeout).
async fn request(addr: SocketAddr, req: &str) -> Result<(String, Duration)> {
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // The echo server keeps the connection: stop at a complete response.
                let text = String::from_utf8_lossy(&out);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok());
                    if len.is_some_and(|n| body.len() >= n) {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    Ok((String::from_utf8_lossy(&out).into_owned(), started.elapsed()))
}

const PUT: &str = "PUT /bucket/key HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
const CHUNKED: &str = "PUT /bucket/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n";

#[tokio::test]
async fn forwards_and_injects_each_fault() -> Result<()> {
    let (server, _h) = echo_server().await?;
    let proxy = FaultProxy::start(Upstream::Plain(server), FaultPlan::none()).await?;
    let (r, _) = request(proxy.addr(), PUT).await?;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("PUT /bucket/key 5"), "{r}");
    let (r, _) = request(proxy.addr(), CHUNKED).await?;
    // The chunked body is forwarded with its framing: 3 + 4 bytes of data, 28 bytes raw.
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("PUT /bucket/chunked"),
        "{r}"
    );

    proxy.set_plan(FaultPlan {
        error_500: 1.0,
        ..FaultPlan::none()
    });
    let (r, _) = request(proxy.addr(), PUT).await?;
    assert!(
        r.starts_with("HTTP/1.1 500") && r.contains("<Code>InternalError</Code>"),
        "{r}"
    );

    proxy.set_plan(FaultPlan {
        slow_down_503: 1.0,
        ..FaultPlan::none()
    });
    let (r, _) = request(proxy.addr(), PUT).await?;
    assert!(
        r.starts_with("HTTP/1.1 503") && r.contains("<Code>SlowDown</Code>"),
        "{r}"
    );

    proxy.set_plan(FaultPlan {
        stall: 1.0,
        stall_for: Duration::from_millis(700),
        ..FaultPlan::none()
    });
    let (r, took) = request(proxy.addr(), PUT).await?;
    assert!(
        r.is_empty() && took >= Duration::from_millis(650),
        "a stall answers nothing: {r:?} after {took:?}"
    );

    proxy.set_plan(FaultPlan {
        drop_response: 1.0,
        ..FaultPlan::none()
    });
    let (r, _) = request(proxy.addr(), PUT).await?;
    assert!(
        r.starts_with("HTTP/1.1 200") && !r.ends_with("PUT /bucket/key 5"),
        "cut mid-response: {r:?}"
    );

    let s = proxy.stats();
    assert_eq!(
        (s.requests, s.passed, s.error_500, s.slow_down_503, s.stalls, s.drops),
        (6, 2, 1, 1, 1, 1),
        "{s:?}"
    );
    assert_eq!(s.stalls_client_gave_up, 0, "the client waited the stall out: {s:?}");

    // A client that gives up during a stall is counted as such.
    proxy.set_phase("timeouts");
    proxy.set_plan(FaultPlan {
        stall: 1.0,
        stall_for: Duration::from_secs(30),
        ..FaultPlan::none()
    });
    let mut c = TcpStream::connect(proxy.addr()).await?;
    c.write_all(PUT.as_bytes()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    let mut gave_up = 0;
    for _ in 0..50 {
        gave_up = proxy.phase_stats("timeouts").stalls_client_gave_up;
        if gave_up == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gave_up, 1, "{:?}", proxy.phase_stats("timeouts"));

    // A store without conditional writes: 501 to If-None-Match, other requests unharmed.
    proxy.set_phase("no-conditional");
    proxy.set_plan(FaultPlan {
        reject_conditional: true,
        ..FaultPlan::none()
    });
    let conditional = "PUT /bucket/key HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\nContent-Length: 5\r\n\r\nhello";
    let (r, _) = request(proxy.addr(), conditional).await?;
    assert!(
        r.starts_with("HTTP/1.1 501") && r.contains("<Code>NotImplemented</Code>"),
        "{r}"
    );
    let (r, _) = request(proxy.addr(), "GET /bucket/key HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("GET /bucket/key 0"), "{r}");
    let p = proxy.phase_stats("no-conditional");
    assert_eq!(
        (p.requests, p.rejected_conditional, p.passed, p.faults()),
        (2, 1, 1, 0),
        "{p:?}"
    );
    assert_eq!(
        proxy.phase_stats("").requests,
        6,
        "earlier requests stay in their phase"
    );
    proxy.set_phase("");

    proxy.set_plan(FaultPlan::none());
    proxy.set_down(true);
    let (r, took) = request(proxy.addr(), PUT).await?;
    assert!(
        r.is_empty() && took < Duration::from_secs(2),
        "down: closed at once: {r:?}"
    );
    proxy.set_down(false);
    proxy.down_when_path_contains("/bundles/");
    let (r, _) = request(proxy.addr(), PUT).await?;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let (r, _) = request(
        proxy.addr(),
        "GET /bucket/backups/x/bundles/000000 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await?;
    assert!(
        r.is_empty() && proxy.is_down(),
        "the trigger takes the store down: {r:?}"
    );
    let (r, _) = request(proxy.addr(), PUT).await?;
    assert!(r.is_empty(), "and it stays down: {r:?}");
    Ok(())
}

#[tokio::test]
async fn faults_are_deterministic_and_near_the_rate() -> Result<()> {
    let (server, _h) = echo_server().await?;
    let plan = FaultPlan::mixed(42, 0.25, Duration::from_millis(1));
    let a = FaultProxy::start(Upstream::Plain(server), plan.clone()).await?;
    let b = FaultProxy::start(Upstream::Plain(server), plan).await?;
    let sa: Vec<Fault> = (0..2000).map(|_| a.state.choose()).collect();
    let sb: Vec<Fault> = (0..2000).map(|_| b.state.choose()).collect();
    assert_eq!(sa, sb, "same seed, same faults");
    let faulted = sa.iter().filter(|f| **f != Fault::Pass).count();
    assert!((400..600).contains(&faulted), "about 25% faulted: {faulted}/2000");
    Ok(())
}

#[tokio::test]
async fn stops_on_drop_and_refuses_other_hosts() -> Result<()> {
    let (server, _h) = echo_server().await?;
    let proxy = FaultProxy::start(Upstream::Plain(server), FaultPlan::none()).await?;
    let addr = proxy.addr();
    drop(proxy);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is gone");
    let far: SocketAddr = "192.0.2.1:80".parse()?;
    assert!(
        FaultProxy::start(Upstream::Plain(far), FaultPlan::none())
            .await
            .is_err(),
        "loopback only"
    );
    Ok(())
}
