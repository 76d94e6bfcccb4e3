//! Calls over links that are not perfect, made inside the test's own network namespace (only
//! `lo`, see common/browser.rs): nftables cuts UDP (every ICE path) while signaling, over TCP,
//! stays up. A short cut heals by itself on the same call; a path that stays dead ends the
//! call with reason `network` within `ice_recovery_secs`.

mod common;

use std::time::{Duration, Instant};

use common::browser::Net;
use common::*;
use serde_json::Value;

/// All UDP in the namespace dropped while this lives (nftables, input hook: every packet on
/// `lo` passes it).
struct UdpCut;

impl UdpCut {
    fn start() -> UdpCut {
        nft(&["add", "table", "inet", "cut"]);
        nft(&[
            "add",
            "chain",
            "inet",
            "cut",
            "input",
            "{ type filter hook input priority 0; }",
        ]);
        nft(&[
            "add", "rule", "inet", "cut", "input", "meta", "l4proto", "udp", "drop",
        ]);
        UdpCut
    }
}

impl Drop for UdpCut {
    fn drop(&mut self) {
        nft(&["delete", "table", "inet", "cut"]);
    }
}

fn nft(args: &[&str]) {
    let status = std::process::Command::new("nft")
        .args(args)
        .status()
        .expect("nft (Debian package nftables)");
    assert!(status.success(), "nft {args:?}");
}

fn frames(call: &Value) -> u64 {
    call["video_frames"].as_u64().unwrap_or(0)
}

/// How many calls of `p` ended with `reason`, from `/metrics`.
async fn ended_with(p: &Proc, reason: &str) -> u64 {
    let (_, text) = webrtcd::service::api_client::request("GET", &p.api("/metrics"), None, None)
        .await
        .expect("GET /metrics");
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .filter(|l| l.starts_with("webrtcd_sessions_ended_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

netns_test!(
    a_cut_heals_on_the_same_call_and_a_dead_path_ends_it,
    Net::LoopbackOnly,
    {
        const RECOVERY_SECS: u64 = 10;
        let config = format!("ice_recovery_secs = {RECOVERY_SECS}\n");
        let door = Proc::daemon(
            "cut-door",
            &light_profile("cut-door", ""),
            &["--config", &config_file("cut-door", &config)],
        );
        let visitor = Proc::daemon(
            "cut-visitor",
            &light_profile("cut-visitor", ""),
            &[
                "--config",
                &config_file("cut-visitor", &config),
                "--relay",
                &door.ws_url(),
            ],
        );
        wait_peer(&visitor, "cut-door").await;
        let session = place_call(&visitor, "cut-door").await;
        assert_call_works(&visitor, &door, &session).await;

        // 6 s without any UDP: the call stays, and media flows again soon after.
        let cut = UdpCut::start();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let mut during = Vec::new();
        for p in [&door, &visitor] {
            during.push(frames(&wait_call(p, &session, "the call", |_| true).await));
        }
        drop(cut);
        let restored = Instant::now();
        for (p, before) in [&door, &visitor].into_iter().zip(during) {
            wait_call(p, &session, "video after the cut", |c| {
                frames(c) > before + 30
            })
            .await;
        }
        let healed = restored.elapsed();
        eprintln!("video flowed again {healed:?} after the cut ended");
        assert!(healed <= Duration::from_secs(5), "{healed:?}");
        assert_eq!(ended_with(&door, "network").await, 0);

        // A cut that does not end: the call ends with `network`, within the bound.
        let _cut = UdpCut::start();
        let cut_at = Instant::now();
        wait_for(
            "the dead call to end",
            Duration::from_secs(RECOVERY_SECS + 15),
            || async { (ended_with(&door, "network").await >= 1).then_some(()) },
        )
        .await;
        let ended = cut_at.elapsed();
        eprintln!("dead path ended the call after {ended:?}");
        assert!(ended >= Duration::from_secs(RECOVERY_SECS - 1), "{ended:?}");
        wait_idle(&door).await;
        wait_idle(&visitor).await;
    }
);
