//! Several segments of a camera joined into one playable fragmented MP4, without re-encoding
//! and without writing anything: the first segment's `ftyp` and `moov` (its `mehd` set to
//! the whole length), then every segment's fragments as they are on disk, each `moof` copied
//! with two fields changed — its `mfhd` sequence number, and each track's `tfdt` moved on by
//! the length of the segments before — since everything else in a fragment is relative to
//! its `moof`. Every track moves on by the length of the video before (converted to its
//! timescale), so that the audio stays where it was against the video in each segment.
//! Segments join only while their sample descriptions (`stsd`: SPS/PPS, sizes)
//! are the same as the first's: an encoder restarted with other settings ends the join.
//!
//! The result is a list of pieces (bytes made here, or a range of a segment's file) with a
//! known length, so that HTTP can answer `Range` from it.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use super::mp4::{Mp4Error, be32, be64, box_header, child, children, read_body, traf_duration};

/// One piece of the joined file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Bytes(Vec<u8>),
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl Piece {
    pub fn size(&self) -> u64 {
        match self {
            Piece::Bytes(bytes) => bytes.len() as u64,
            Piece::File { len, .. } => *len,
        }
    }
}

#[derive(Debug)]
pub struct Joined {
    pub pieces: Vec<Piece>,
    pub len: u64,
    pub duration: Duration,
    /// How many of the segments asked for it holds (fewer: one differed from the first).
    pub segments: usize,
}

/// A track: its timescale and default sample duration (`trex`).
#[derive(Debug, Clone, Copy)]
struct Track {
    timescale: u32,
    default_duration: u32,
    video: bool,
}

/// Joins `files` (in order): blocking (reads each segment's boxes, not its media).
pub fn join(files: &[PathBuf]) -> Result<Joined, Mp4Error> {
    let mut pieces = Vec::new();
    let mut header: Option<(Vec<u8>, Vec<Vec<u8>>)> = None;
    let mut tracks: HashMap<u32, Track> = HashMap::new();
    // Where each track's next segment starts, in its ticks, and in seconds (the video's).
    let mut offsets: HashMap<u32, u64> = HashMap::new();
    let mut offset_secs = 0f64;
    let mut sequence = 0u32;
    let mut joined = 0;
    for path in files {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut ends: HashMap<u32, u64> = HashMap::new();
        let mut pending: Option<Vec<u8>> = None;
        let mut pos = 0u64;
        let mut fragments = Vec::new();
        let mut same = true;
        let mut pending_spans: Vec<(u32, u64)> = Vec::new();
        while let Some((kind, head, size)) = box_header(&mut file, pos, len)? {
            let Some(box_end) = pos.checked_add(size).filter(|end| *end <= len) else {
                break;
            };
            match &kind {
                b"ftyp" | b"moov" if header.is_none() || kind == *b"moov" => {
                    let whole = read_body(&mut file, pos, size)?;
                    if kind == *b"ftyp" {
                        header = Some((whole, Vec::new()));
                    } else {
                        let moov = &whole[head as usize..];
                        let descriptions = sample_descriptions(moov);
                        match &mut header {
                            Some((bytes, known)) if known.is_empty() => {
                                bytes.extend_from_slice(&whole);
                                *known = descriptions;
                                tracks = read_tracks(moov);
                            }
                            Some((_, known)) => same = *known == descriptions,
                            None => return Err(Mp4Error::Format("moov before ftyp")),
                        }
                    }
                }
                b"moof" => {
                    let mut moof = read_body(&mut file, pos, size)?;
                    sequence += 1;
                    let spans = shift(&mut moof, head as usize, &offsets, &tracks, sequence)?;
                    for (track, end) in spans {
                        let end_in_segment =
                            end.saturating_sub(offsets.get(&track).copied().unwrap_or(0));
                        let e = ends.entry(track).or_default();
                        *e = (*e).max(end_in_segment);
                    }
                    pending = Some(moof);
                }
                b"mdat" => {
                    for (track, end) in pending_spans.drain(..) {
                        let in_segment =
                            end.saturating_sub(offsets.get(&track).copied().unwrap_or(0));
                        let e = ends.entry(track).or_default();
                        *e = (*e).max(in_segment);
                    }
                    if let Some(moof) = pending.take() {
                        fragments.push(Piece::Bytes(moof));
                        fragments.push(Piece::File {
                            path: path.clone(),
                            offset: pos,
                            len: size,
                        });
                    }
                }
                _ => {}
            }
            if !same {
                break;
            }
            pos = box_end;
        }
        if !same || header.as_ref().is_none_or(|(_, known)| known.is_empty()) {
            break;
        }
        if fragments.is_empty() {
            // Nothing whole yet (a segment begun less than a fragment ago): nothing to play.
            continue;
        }
        if joined == 0
            && let Some((bytes, _)) = &header
        {
            pieces.push(Piece::Bytes(bytes.clone()));
        }
        pieces.extend(fragments);
        let video_secs = ends.iter().find_map(|(id, end)| {
            let track = tracks.get(id).filter(|t| t.video && t.timescale > 0)?;
            Some(*end as f64 / f64::from(track.timescale))
        });
        match video_secs {
            Some(secs) => {
                offset_secs += secs;
                for (id, track) in &tracks {
                    let ticks = (offset_secs * f64::from(track.timescale)).round() as u64;
                    offsets.insert(*id, ticks);
                }
            }
            // No video (not one of ours): each track after its own end.
            None => {
                for (track, end) in ends {
                    *offsets.entry(track).or_default() += end;
                }
            }
        }
        joined += 1;
    }
    let duration = if offset_secs > 0.0 {
        Duration::from_secs_f64(offset_secs)
    } else {
        offsets
            .iter()
            .filter_map(|(id, ticks)| {
                let timescale = tracks.get(id)?.timescale;
                (timescale > 0)
                    .then(|| Duration::from_secs_f64(*ticks as f64 / f64::from(timescale)))
            })
            .max()
            .unwrap_or_default()
    };
    if let Some(Piece::Bytes(head)) = pieces.first_mut() {
        set_mehd(head, duration);
    }
    let len = pieces.iter().map(Piece::size).sum();
    Ok(Joined {
        pieces,
        len,
        duration,
        segments: joined,
    })
}

/// Each track's sample descriptions, in order.
fn sample_descriptions(moov: &[u8]) -> Vec<Vec<u8>> {
    children(moov)
        .filter(|(k, _)| *k == b"trak")
        .filter_map(|(_, trak)| {
            let stbl = child(child(child(trak, b"mdia")?, b"minf")?, b"stbl")?;
            Some(without_bitrate(child(stbl, b"stsd")?))
        })
        .collect()
}

/// A sample description without its `btrt` box (the bit rates mp4mux measured over that
/// segment: they differ from segment to segment, the stream does not).
fn without_bitrate(stsd: &[u8]) -> Vec<u8> {
    let mut out = stsd.to_vec();
    while let Some(at) = out.windows(4).position(|w| w == b"btrt") {
        let Some(start) = at.checked_sub(4) else {
            break;
        };
        let size = be32(&out, start).unwrap_or(0) as usize;
        if size < 8 || start + size > out.len() {
            break;
        }
        out.drain(start..start + size);
    }
    out
}

fn read_tracks(moov: &[u8]) -> HashMap<u32, Track> {
    let mut tracks = HashMap::new();
    for (_, trak) in children(moov).filter(|(k, _)| *k == b"trak") {
        let Some(tkhd) = child(trak, b"tkhd") else {
            continue;
        };
        let id = if tkhd.first() == Some(&1) {
            be32(tkhd, 20)
        } else {
            be32(tkhd, 12)
        };
        let mdia = child(trak, b"mdia");
        let video = mdia
            .and_then(|m| child(m, b"hdlr"))
            .and_then(|h| h.get(8..12))
            == Some(b"vide".as_slice());
        let mdhd = mdia.and_then(|m| child(m, b"mdhd"));
        let timescale = mdhd.and_then(|m| {
            if m.first() == Some(&1) {
                be32(m, 20)
            } else {
                be32(m, 12)
            }
        });
        if let (Some(id), Some(timescale)) = (id, timescale) {
            tracks.insert(
                id,
                Track {
                    timescale,
                    default_duration: 0,
                    video,
                },
            );
        }
    }
    if let Some(mvex) = child(moov, b"mvex") {
        for (_, trex) in children(mvex).filter(|(k, _)| *k == b"trex") {
            if let (Some(id), Some(duration)) = (be32(trex, 4), be32(trex, 12))
                && let Some(track) = tracks.get_mut(&id)
            {
                track.default_duration = duration;
            }
        }
    }
    tracks
}

/// Sets a `moof`'s (`whole`, its header `head` bytes long) sequence number and moves each
/// track's `tfdt` on by its offset; returns where each track's fragment ends (shifted).
fn shift(
    whole: &mut [u8],
    head: usize,
    offsets: &HashMap<u32, u64>,
    tracks: &HashMap<u32, Track>,
    sequence: u32,
) -> Result<Vec<(u32, u64)>, Mp4Error> {
    // Positions to write, found first (the walk borrows the bytes).
    let mut writes: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut spans = Vec::new();
    let base = whole.as_ptr() as usize;
    let body = &whole[head..];
    for (kind, inner) in children(body) {
        let at = inner.as_ptr() as usize - base;
        if kind == b"mfhd" {
            writes.push((at + 4, sequence.to_be_bytes().to_vec()));
        }
        if kind != b"traf" {
            continue;
        }
        let Some(tfhd) = child(inner, b"tfhd") else {
            continue;
        };
        let track = be32(tfhd, 4).ok_or(Mp4Error::Format("tfhd"))?;
        let offset = offsets.get(&track).copied().unwrap_or(0);
        let tfdt = child(inner, b"tfdt").ok_or(Mp4Error::Format("no tfdt"))?;
        let tfdt_at = tfdt.as_ptr() as usize - base;
        let start = if tfdt.first() == Some(&1) {
            let start = be64(tfdt, 4).ok_or(Mp4Error::Format("tfdt"))? + offset;
            writes.push((tfdt_at + 4, start.to_be_bytes().to_vec()));
            start
        } else {
            let start = u64::from(be32(tfdt, 4).ok_or(Mp4Error::Format("tfdt"))?) + offset;
            let start32 = u32::try_from(start)
                .map_err(|_| Mp4Error::Format("a joined tfdt does not fit 32 bits"))?;
            writes.push((tfdt_at + 4, start32.to_be_bytes().to_vec()));
            start
        };
        let default = tracks.get(&track).map_or(0, |t| t.default_duration);
        let length = traf_duration(inner, default).ok_or(Mp4Error::Format("trun"))?;
        spans.push((track, start.saturating_add(length)));
    }
    for (at, bytes) in writes {
        if let Some(slot) = whole.get_mut(at..at + bytes.len()) {
            slot.copy_from_slice(&bytes);
        }
    }
    Ok(spans)
}

/// Sets the `mehd` (fragment duration) in `head` (`ftyp` and `moov`) to `duration`.
fn set_mehd(head: &mut [u8], duration: Duration) {
    let Some(moov_at) = find_box(head, 0, b"moov") else {
        return;
    };
    let moov = &head[moov_at + 8..];
    let timescale = child(moov, b"mvhd").and_then(|m| {
        if m.first() == Some(&1) {
            be32(m, 20)
        } else {
            be32(m, 12)
        }
    });
    let mehd = child(moov, b"mvex").and_then(|mvex| child(mvex, b"mehd"));
    let (Some(timescale), Some(mehd)) = (timescale, mehd) else {
        return;
    };
    let at = mehd.as_ptr() as usize - head.as_ptr() as usize + 4;
    let ticks = (duration.as_secs_f64() * f64::from(timescale)).round() as u64;
    let version = mehd.first().copied();
    if version == Some(1) {
        if let Some(slot) = head.get_mut(at..at + 8) {
            slot.copy_from_slice(&ticks.to_be_bytes());
        }
    } else if let Some(slot) = head.get_mut(at..at + 4) {
        slot.copy_from_slice(&u32::try_from(ticks).unwrap_or(u32::MAX).to_be_bytes());
    }
}

/// Where a top-level box of `kind` starts in `bytes`, from `from`.
fn find_box(bytes: &[u8], from: usize, kind: &[u8; 4]) -> Option<usize> {
    let mut at = from;
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        if &bytes[at + 4..at + 8] == kind {
            return Some(at);
        }
        if size < 8 {
            return None;
        }
        at += size as usize;
    }
    None
}

/// The bytes `range` of the joined file (blocking: reads segment files).
pub fn read_range(pieces: &[Piece], range: std::ops::Range<u64>) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut at = 0u64;
    for piece in pieces {
        let (start, end) = (at, at + piece.size());
        at = end;
        if end <= range.start || start >= range.end {
            continue;
        }
        let from = range.start.max(start) - start;
        let to = range.end.min(end) - start;
        match piece {
            Piece::Bytes(bytes) => out.extend_from_slice(&bytes[from as usize..to as usize]),
            Piece::File { path, offset, .. } => {
                let mut file = File::open(path)?;
                file.seek(SeekFrom::Start(offset + from))?;
                let mut buf = vec![0u8; (to - from) as usize];
                file.read_exact(&mut buf)?;
                out.extend_from_slice(&buf);
            }
        }
    }
    Ok(out)
}
