//! Opus with redundancy (RED, RFC 2198) from a peer, unwrapped before the jitterbuffer.
//!
//! Chromium sends each Opus frame again inside the next packet when the other side lists
//! `red/48000/2` (with `fmtp PT OPUS/OPUS`) before Opus: a single lost packet then costs
//! nothing, from the first second of the call (its in-band FEC follows a loss estimate it
//! smooths over ~10 s). webrtcbin 1.22 has a RED path of its own: its `rtpreddec` (in front
//! of the jitterbuffer) marks the copies redundant, `rtpstorage` parks them, and the FEC
//! decoder after the jitterbuffer is to take one out once its packet is declared lost. For
//! audio that rebuilt nothing (measured: 10 % stayed lost; webrtcbin logs "failed to match
//! fec decoder with transceiver"). Here each RED packet is split before webrtcbin's decoder
//! (and, should there be none, before the jitterbuffer): its primary block becomes a plain
//! Opus packet, and each redundant block whose packet did not arrive goes first, as a plain
//! packet, in time for the jitterbuffer to fill the hole. webrtcbin's decoder then sees
//! plain Opus and passes it through.
//!
//! A redundant block's sequence number is not in the packet: the blocks are the frames sent
//! just before the primary, oldest first (RFC 2198 §3, and what Chromium sends), so block
//! `i` of `n` was packet `seq - (n - i)`. What a peer can make of this is bounded: at most
//! [`MAX_REDUNDANT`] blocks per packet are used, the timestamp offset must be positive (it
//! has 14 bits: at most 341 ms at 48 kHz), blocks must fit the packet, and a sequence number
//! seen in the last 64 (RED or plain) is never given again (a hostile peer gains nothing it
//! could not send as plain packets). Chromium sends a frame of 1 KiB or more plain and
//! leaves it out of its copies: such a frame marks its number as arrived; were it lost, the
//! next copy (of the frame before it) would stand in for it — at speech rates an Opus frame
//! is ~100 bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gst::prelude::*;

use crate::sync::lock;

/// Redundant blocks used from one packet (Chromium sends 1, at most 2 by default).
const MAX_REDUNDANT: usize = 4;
/// A sequence number further than this from the newest one seen (either way) says the
/// stream started over: the window follows it from there (as the jitterbuffer would).
const MAX_JUMP: u16 = 3000;
/// Audio streams followed at once per call (a call receives one; a peer sending more gets
/// the oldest forgotten).
const MAX_STREAMS: usize = 4;

/// Which payload types of the call carry Opus in RED: (RED's, Opus's). Set once the call's
/// descriptions are known; empty, nothing is touched.
#[derive(Debug, Default)]
pub struct RedPayloads {
    /// Whether `pairs` has any (read for every packet; the lock only for RED's).
    any: AtomicBool,
    pairs: Mutex<Vec<(u8, u8)>>,
    streams: Mutex<HashMap<u32, Window>>,
    /// Packets rebuilt so far.
    recovered: AtomicU64,
}

impl RedPayloads {
    pub fn set(&self, pairs: Vec<(u8, u8)>) {
        self.any.store(!pairs.is_empty(), Ordering::Relaxed);
        *lock(&self.pairs) = pairs;
    }

    /// Lost packets rebuilt from a redundant copy so far.
    pub fn recovered(&self) -> u64 {
        self.recovered.load(Ordering::Relaxed)
    }

    /// What packets of payload type `pt` are here: RED (with its Opus payload type), or
    /// that Opus sent plain (its sequence number is remembered).
    fn kind_of(&self, pt: u8) -> Option<Kind> {
        let pairs = lock(&self.pairs);
        if let Some((_, primary)) = pairs.iter().find(|(red, _)| *red == pt) {
            return Some(Kind::Red(*primary));
        }
        pairs
            .iter()
            .any(|(_, primary)| *primary == pt)
            .then_some(Kind::Plain)
    }

    /// Splits `packet` if it is RED: the packets to hand the jitterbuffer first (recovered
    /// ones, oldest first), and what replaces it (its primary block). `None`: leave it.
    fn split(&self, packet: &[u8]) -> Option<Split> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let rtp = rtp_types::RtpPacket::parse(packet).ok()?;
        let kind = self.kind_of(rtp.payload_type())?;
        let mut streams = lock(&self.streams);
        if !streams.contains_key(&rtp.ssrc()) && streams.len() >= MAX_STREAMS {
            streams.clear();
        }
        let window = streams.entry(rtp.ssrc()).or_default();
        let Kind::Red(primary_pt) = kind else {
            // Opus sent plain (before RED was set up, or a frame too large to be copied):
            // it arrived, so no copy of it is given later.
            window.mark(rtp.sequence_number());
            return None;
        };
        let split = split(&rtp, primary_pt, window)?;
        self.recovered
            .fetch_add(split.recovered.len() as u64, Ordering::Relaxed);
        Some(split)
    }
}

enum Kind {
    Red(u8),
    Plain,
}

#[derive(Debug, PartialEq, Eq)]
struct Split {
    recovered: Vec<Vec<u8>>,
    primary: Vec<u8>,
}

/// One RED block header: its payload type, timestamp offset and length (`None` for the
/// final header, whose block runs to the end).
struct Block {
    pt: u8,
    offset: u32,
    len: Option<usize>,
}

/// The block headers of a RED payload, and where the blocks' data starts. `None` if it is
/// malformed (or has more redundant blocks than anyone sends).
fn headers(payload: &[u8]) -> Option<(Vec<Block>, usize)> {
    let mut blocks = Vec::new();
    let mut at = 0;
    loop {
        let first = *payload.get(at)?;
        if first & 0x80 == 0 {
            blocks.push(Block {
                pt: first & 0x7f,
                offset: 0,
                len: None,
            });
            return Some((blocks, at + 1));
        }
        if blocks.len() >= MAX_REDUNDANT {
            return None;
        }
        let rest = payload.get(at + 1..at + 4)?;
        blocks.push(Block {
            pt: first & 0x7f,
            offset: (u32::from(rest[0]) << 6) | (u32::from(rest[1]) >> 2),
            len: Some(((usize::from(rest[1]) & 0x03) << 8) | usize::from(rest[2])),
        });
        at += 4;
    }
}

fn split(rtp: &rtp_types::RtpPacket<'_>, primary_pt: u8, seen: &mut Window) -> Option<Split> {
    let payload = rtp.payload();
    let (blocks, mut at) = headers(payload)?;
    let redundant = blocks.len() - 1;
    let seq = rtp.sequence_number();
    // (sequence number, packet): marked as arrived only once the whole packet was read.
    let mut recovered: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut primary = None;
    for (i, block) in blocks.iter().enumerate() {
        let len = block.len.unwrap_or(payload.len().saturating_sub(at));
        let data = payload.get(at..at + len)?;
        at += len;
        if block.pt != primary_pt {
            continue;
        }
        match block.len {
            None => {
                primary = Some(
                    rtp.as_builder()
                        .clear_payloads()
                        .payload(data)
                        .payload_type(primary_pt)
                        .write_vec()
                        .ok()?,
                );
            }
            Some(_) => {
                let back = u16::try_from(redundant - i).ok()?;
                let lost = seq.wrapping_sub(back);
                if block.offset == 0 || data.is_empty() {
                    continue;
                }
                if seen.has(lost) {
                    continue;
                }
                let packet = rtp_types::RtpPacketBuilder::<&[u8], &[u8]>::new()
                    .payload_type(primary_pt)
                    .sequence_number(lost)
                    .timestamp(rtp.timestamp().wrapping_sub(block.offset))
                    .ssrc(rtp.ssrc())
                    .payload(data)
                    .write_vec()
                    .ok()?;
                recovered.push((lost, packet));
            }
        }
    }
    let primary = primary?;
    for (lost, _) in &recovered {
        seen.mark(*lost);
    }
    seen.mark(seq);
    Some(Split {
        recovered: recovered.into_iter().map(|(_, packet)| packet).collect(),
        primary,
    })
}

/// The sequence numbers of the last 64 packets of a stream: which arrived.
#[derive(Debug, Default)]
struct Window {
    top: Option<u16>,
    bits: u64,
}

impl Window {
    /// Whether `seq` arrived; one older than the window counts as arrived (too late to give).
    fn has(&self, seq: u16) -> bool {
        let Some(top) = self.top else {
            return false;
        };
        let behind = top.wrapping_sub(seq) as i16;
        match behind {
            i16::MIN..0 => false,
            0..64 => self.bits >> behind & 1 == 1,
            _ => true,
        }
    }

    fn mark(&mut self, seq: u16) {
        let Some(top) = self.top else {
            self.top = Some(seq);
            self.bits = 1;
            return;
        };
        let ahead = seq.wrapping_sub(top) as i16;
        if ahead.unsigned_abs() > MAX_JUMP {
            // The stream started over (or jumped): follow it from here.
            self.top = Some(seq);
            self.bits = 1;
        } else if ahead > 0 {
            self.bits = if ahead >= 64 { 0 } else { self.bits << ahead };
            self.bits |= 1;
            self.top = Some(seq);
        } else if ahead > -64 {
            self.bits |= 1u64 << (-ahead);
        }
        // Else late, behind the window: nothing to remember.
    }
}

/// Splits RED on the way into every jitterbuffer webrtcbin makes for the call (see the
/// module's text). Adding a pad probe to a new child is not a webrtcbin call; the probe runs
/// on the receiving streaming thread.
pub fn unwrap_before_jitterbuffer(webrtcbin: &gst::Element, payloads: Arc<RedPayloads>) {
    let Some(bin) = webrtcbin.downcast_ref::<gst::Bin>() else {
        return;
    };
    bin.connect_deep_element_added(move |_, _, element| {
        let entry = element
            .factory()
            .is_some_and(|f| ["rtpreddec", "rtpjitterbuffer"].contains(&f.name().as_str()));
        let Some(pad) = element.static_pad("sink").filter(|_| entry) else {
            return;
        };
        let payloads = Arc::clone(&payloads);
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let split = {
                let Ok(map) = buffer.map_readable() else {
                    return gst::PadProbeReturn::Ok;
                };
                payloads.split(&map)
            };
            let Some(split) = split else {
                return gst::PadProbeReturn::Ok;
            };
            let like = |data: Vec<u8>| {
                let mut out = gst::Buffer::from_mut_slice(data);
                if let Some(out) = out.get_mut() {
                    out.set_pts(buffer.pts());
                    out.set_dts(buffer.dts());
                }
                out
            };
            let primary = like(split.primary);
            let recovered: Vec<gst::Buffer> = split.recovered.into_iter().map(like).collect();
            // The recovered packets first, through this same pad (plain Opus: the probe
            // lets them by), then the primary in the RED packet's place.
            for packet in recovered {
                let _ = pad.chain(packet);
            }
            info.data = Some(gst::PadProbeData::Buffer(primary));
            gst::PadProbeReturn::Ok
        });
    });
}

/// The (RED, Opus) payload type pairs of the audio m-lines of `sdp`: `a=rtpmap:R red/48000/2`
/// whose `a=fmtp:R O/O…` names an Opus payload type `O` of the same m-line.
pub fn pairs(sdp: &gst_sdp::SDPMessageRef) -> Vec<(u8, u8)> {
    sdp.medias()
        .filter(|m| m.media() == Some("audio"))
        .flat_map(pairs_of)
        .collect()
}

fn pairs_of(media: &gst_sdp::SDPMediaRef) -> Vec<(u8, u8)> {
    let opus = super::sdp::payloads_named(media, "opus");
    super::sdp::payloads_named(media, "red")
        .into_iter()
        .filter_map(|red| {
            let params = media
                .attributes()
                .filter(|a| a.key() == "fmtp")
                .find_map(|a| {
                    let (pt, params) = a.value()?.split_once(' ')?;
                    (pt.parse::<u8>().ok()? == red).then_some(params)
                })?;
            let primary: u8 = params.split('/').next()?.trim().parse().ok()?;
            opus.contains(&primary).then_some((red, primary))
        })
        .collect()
}

/// Puts RED for Opus first in each audio m-line of our description `ours` (Chromium sends
/// RED only to a peer that prefers it). In an answer (`offer` given), only where the offer
/// has RED for that m-line, with the offer's payload type; in an offer, with 63 (what
/// browsers use) or the first free dynamic payload type.
pub fn prefer_red(ours: &mut gst_sdp::SDPMessageRef, offer: Option<&gst_sdp::SDPMessageRef>) {
    let used: Vec<u8> = ours
        .medias()
        .flat_map(|m| (0..m.formats_len()).filter_map(move |i| m.format(i)?.parse().ok()))
        .collect();
    for (index, media) in ours.medias_mut().enumerate() {
        if media.media() != Some("audio") {
            continue;
        }
        let Some(&opus) = super::sdp::payloads_named(media, "opus").first() else {
            continue;
        };
        if !super::sdp::payloads_named(media, "red").is_empty() {
            continue;
        }
        let red = match offer {
            Some(offer) => u32::try_from(index)
                .ok()
                .and_then(|i| offer.media(i))
                .map(pairs_of)
                .and_then(|p| {
                    p.iter()
                        .find(|(_, primary)| *primary == opus)
                        .map(|(r, _)| *r)
                }),
            None => std::iter::once(63)
                .chain(96..=127)
                .find(|pt| !used.contains(pt)),
        };
        let Some(red) = red else {
            continue;
        };
        let _ = media.insert_format(Some(0), &red.to_string());
        media.add_attribute("rtpmap", Some(&format!("{red} red/48000/2")));
        media.add_attribute("fmtp", Some(&format!("{red} {opus}/{opus}")));
    }
}

#[cfg(test)]
#[path = "red_tests.rs"]
mod tests;
