//! `flood`: a good client's handshake latency while bad handshakes flood
//! the server (issue 18: "a flood of handshakes with bad tokens"). Each
//! round starts a fresh palaver, measures `handshakes` good handshakes one
//! after another with nothing else going on (idle), then the same while
//! `flooders` clients from other loopback addresses send handshakes with
//! bad tokens (half garbage, half well-formed with a broken signature) at
//! `rate` per second in all, open loop (a flooder that falls behind sends
//! back to back). Reported: the p50 and p99 of each, their ratio, the bad
//! handshakes per second reached and the server's CPU use during the flood;
//! then the medians over the rounds.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;

use crate::median;
use crate::scenarios::{connect, connect_base, next, Setup};
use crate::target::{self, Target};

/// One round's figures.
struct Round {
    idle_p50: f64,
    idle_p99: f64,
    flood_p50: f64,
    flood_p99: f64,
    bad_per_sec: f64,
    server_cpu: f64,
}

pub async fn flood(rounds: usize, handshakes: usize, flooders: usize, rate: f64) -> Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let bin = target::palaver_binary()?;
    println!(
        "good handshakes one at a time, {handshakes} per phase; flood: {flooders} clients, \
         {rate:.0} bad handshakes/s asked"
    );
    println!("| round | idle p50 | idle p99 | flood p50 | flood p99 | p99 ratio | bad/s reached | server CPU in flood |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut all = Vec::new();
    for round in 1..=rounds {
        let pal = Target::palaver(&bin)?;
        let r = one_round(&pal, handshakes, flooders, rate).await?;
        println!(
            "| {round} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} | {:.0} | {:.0} % |",
            r.idle_p50,
            r.idle_p99,
            r.flood_p50,
            r.flood_p99,
            r.flood_p99 / r.idle_p99,
            r.bad_per_sec,
            r.server_cpu * 100.0
        );
        all.push(r);
    }
    let m = |f: fn(&Round) -> f64| median(all.iter().map(f).collect());
    println!(
        "median: idle p99 {:.2} ms, flood p99 {:.2} ms, ratio {:.2} (per-round ratios' median), \
         {:.0} bad handshakes/s, server CPU {:.0} %",
        m(|r| r.idle_p99),
        m(|r| r.flood_p99),
        m(|r| r.flood_p99 / r.idle_p99),
        m(|r| r.bad_per_sec),
        m(|r| r.server_cpu) * 100.0
    );
    Ok(())
}

async fn one_round(pal: &Target, handshakes: usize, flooders: usize, rate: f64) -> Result<Round> {
    let setup = Arc::new(Setup::palaver(pal, 1).await?);
    // Warm up (first connections, allocator, caches).
    good(pal, &setup, handshakes.min(50)).await?;
    let idle = good(pal, &setup, handshakes).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let period = Duration::from_secs_f64(flooders as f64 / rate.max(1.0));
    let tasks: Vec<_> = (0..flooders)
        .map(|i| {
            let (setup, stop, refused) = (setup.clone(), stop.clone(), refused.clone());
            let target_base = pal.base.clone();
            tokio::spawn(async move {
                // 127.0.0.2 …: never the good client's address.
                let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 200) as u8));
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let token = if n.is_multiple_of(2) {
                        "garbage".to_owned()
                    } else {
                        setup.forged()
                    };
                    n += 1;
                    let path = setup.path(0, &token);
                    let mut ws = connect_base(&target_base, &path, src).await?;
                    match next(&mut ws).await? {
                        Err(4001) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        other => bail!("a bad handshake was not refused: {other:?}"),
                    }
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    // The flood under way before the good client starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused.load(Ordering::Relaxed) < flooders * 5 {
        if Instant::now() > deadline {
            bail!("the flood did not start");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (started, before, cpu0) = (
        Instant::now(),
        refused.load(Ordering::Relaxed),
        pal.cpu_seconds(),
    );
    let flood = good(pal, &setup, handshakes).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let bad_per_sec = (refused.load(Ordering::Relaxed) - before) as f64 / elapsed;
    let server_cpu = (pal.cpu_seconds() - cpu0) / elapsed;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(Round {
        idle_p50: ms(&idle, 0.5),
        idle_p99: ms(&idle, 0.99),
        flood_p50: ms(&flood, 0.5),
        flood_p99: ms(&flood, 0.99),
        bad_per_sec,
        server_cpu,
    })
}

/// `n` good handshakes one after another from 127.0.0.1 (tokens minted
/// before the clock starts): connect, `connected`, close.
async fn good(pal: &Target, setup: &Setup, n: usize) -> Result<Histogram<u64>> {
    let paths: Vec<String> = (0..n).map(|_| setup.path(0, &setup.mint())).collect();
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 3)?;
    let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for path in &paths {
        let t = Instant::now();
        let mut ws = connect(pal, path, src).await?;
        match next(&mut ws).await? {
            Ok(frame) if frame["type"] == "connected" => {}
            other => bail!("a good handshake failed: {other:?}"),
        }
        h.record(t.elapsed().as_micros().max(1) as u64)?;
        let _ = ws.close(None).await;
    }
    Ok(h)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}
