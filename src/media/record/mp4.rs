//! Reading back a fragmented MP4 segment that `mp4mux fragment-duration=…` wrote: its real
//! duration, and a torn end (a `kill -9` or a power cut in the middle of a write) cut off.
//!
//! Only the top-level boxes are walked (`ftyp`, `moov`, then `moof`+`mdat` pairs, `mfra` at
//! a clean end); a fragment counts once its `mdat` is whole. The duration of a segment cut
//! short is not in its header (`mehd` stays 0, see docs/recording-notes.md): it is the end of
//! the video track's last whole fragment (`tfdt` plus its `trun` sample durations), which is
//! then written into `mehd`, so the next start reads it there.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::Duration;

/// Boxes read into memory whole (`moov`, `moof`) are at most this long: a `moof` of one second
/// of 60 fps video is a few kB, and a longer one is no segment of ours.
const MAX_HEADER_BOX: u64 = 4 << 20;

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    pub duration: Duration,
    /// Its length once anything torn is cut off.
    pub len: u64,
    /// Something torn was cut off.
    pub repaired: bool,
    /// Its header lacked its duration (written now, when repairing).
    pub header_missing: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Mp4Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a fragmented MP4 of ours: {0}")]
    Format(&'static str),
}

/// Reads `file`'s duration, cutting off a torn end and writing a missing duration into its
/// header (the file must be open for writing).
pub fn scan_and_repair(file: &mut File) -> Result<Scanned, Mp4Error> {
    scan(file, true)
}

/// Whether `file` needs nothing done: its index (`mfra`) was written at its end, so it was
/// finished and is whole, and its header says how long it is. Then its duration, from a few
/// reads (not a walk of every fragment: a start with thousands of recordings).
pub fn finished_duration(file: &mut File) -> Option<Duration> {
    let len = file.metadata().ok()?.len();
    // mfro, the last box: size 16, its version and flags, then the mfra's size.
    let mut tail = [0u8; 16];
    file.seek(SeekFrom::Start(len.checked_sub(16)?)).ok()?;
    file.read_exact(&mut tail).ok()?;
    if &tail[4..8] != b"mfro" {
        return None;
    }
    let mut pos = 0;
    while pos < len {
        let (kind, header, size) = box_header(file, pos, len).ok()??;
        let end = pos.checked_add(size).filter(|end| *end <= len)?;
        if &kind == b"moov" {
            let body = read_body(file, pos + header, size - header).ok()?;
            let movie = Movie::parse(&body, pos + header).ok()?;
            let mehd = movie.mehd?;
            return (mehd.value > 0 && movie.movie_timescale > 0).then(|| {
                Duration::from_secs_f64(mehd.value as f64 / f64::from(movie.movie_timescale))
            });
        }
        pos = end;
    }
    None
}

/// [`scan_and_repair`], cutting and writing nothing unless `repair` (`repaired` then says
/// what a repair would do).
pub fn scan(file: &mut File, repair: bool) -> Result<Scanned, Mp4Error> {
    let len = file.metadata()?.len();
    let mut movie: Option<Movie> = None;
    let mut good = 0u64;
    let mut pending_end: Option<u64> = None;
    let mut end_ticks = 0u64;
    let mut pos = 0u64;
    let mut torn = false;
    while pos < len {
        let Some((kind, header, size)) = box_header(file, pos, len)? else {
            torn = true;
            break;
        };
        let Some(end) = pos.checked_add(size).filter(|end| *end <= len) else {
            torn = true;
            break;
        };
        match &kind {
            b"moov" => {
                let body = read_body(file, pos + header, size - header)?;
                movie = Some(Movie::parse(&body, pos + header)?);
                good = end;
            }
            b"moof" => {
                let movie = movie.as_ref().ok_or(Mp4Error::Format("moof before moov"))?;
                let body = read_body(file, pos + header, size - header)?;
                pending_end = fragment_end(&body, movie);
            }
            b"mdat" => {
                if let Some(fragment_end) = pending_end.take() {
                    end_ticks = end_ticks.max(fragment_end);
                }
                good = end;
            }
            _ => good = end,
        }
        pos = end;
    }
    let movie = movie.ok_or(Mp4Error::Format("no moov"))?;
    if (torn || good < len) && repair {
        file.set_len(good)?;
    }
    let duration = if movie.timescale == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(end_ticks as f64 / f64::from(movie.timescale))
    };
    let missing = movie.mehd.is_some_and(|mehd| mehd.value == 0);
    if let Some(mehd) = movie.mehd
        && repair
        && mehd.value == 0
        && movie.movie_timescale > 0
        && good >= mehd.offset + mehd.width
    {
        let ticks = (duration.as_secs_f64() * f64::from(movie.movie_timescale)).round() as u64;
        file.seek(SeekFrom::Start(mehd.offset))?;
        if mehd.width == 8 {
            file.write_all(&ticks.to_be_bytes())?;
        } else {
            file.write_all(&u32::try_from(ticks).unwrap_or(u32::MAX).to_be_bytes())?;
        }
    }
    Ok(Scanned {
        duration,
        len: good,
        repaired: torn || good < len,
        header_missing: missing,
    })
}

/// A box's type, header length and size at `pos`; `None` if its header is cut off.
pub(super) fn box_header(
    file: &mut File,
    pos: u64,
    len: u64,
) -> io::Result<Option<([u8; 4], u64, u64)>> {
    if pos + 8 > len {
        return Ok(None);
    }
    let mut head = [0u8; 8];
    file.seek(SeekFrom::Start(pos))?;
    file.read_exact(&mut head)?;
    let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let kind = [head[4], head[5], head[6], head[7]];
    let (header, size) = match size32 {
        // To the end of the file: what mp4mux writes while a plain mdat grows.
        0 => (8, len - pos),
        1 => {
            if pos + 16 > len {
                return Ok(None);
            }
            let mut large = [0u8; 8];
            file.read_exact(&mut large)?;
            (16, u64::from_be_bytes(large))
        }
        n => (8, u64::from(n)),
    };
    if size < header {
        // A size smaller than its own header: garbage from here on.
        return Ok(None);
    }
    Ok(Some((kind, header, size)))
}

pub(super) fn read_body(file: &mut File, at: u64, len: u64) -> Result<Vec<u8>, Mp4Error> {
    if len > MAX_HEADER_BOX {
        return Err(Mp4Error::Format("header box too large"));
    }
    let mut body = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut body)?;
    Ok(body)
}

/// Child boxes of a box's body: (type, body).
pub(super) fn children(body: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.len() < 8 {
            return None;
        }
        let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if size < 8 || size > rest.len() {
            return None;
        }
        let (this, next) = rest.split_at(size);
        rest = next;
        Some((&this[4..8], &this[8..]))
    })
}

pub(super) fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(body).find(|(k, _)| *k == kind).map(|(_, b)| b)
}

pub(super) fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

pub(super) fn be64(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at + 8)?;
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    Some(u64::from_be_bytes(out))
}

/// Where the `mehd` duration field is, and what it holds.
#[derive(Debug, Clone, Copy)]
struct Mehd {
    offset: u64,
    width: u64,
    value: u64,
}

/// What the `moov` says: the video track, its timescale and default sample duration.
#[derive(Debug)]
struct Movie {
    track: u32,
    timescale: u32,
    default_duration: u32,
    movie_timescale: u32,
    mehd: Option<Mehd>,
}

impl Movie {
    /// `at`: the body's offset in the file.
    fn parse(moov: &[u8], at: u64) -> Result<Movie, Mp4Error> {
        let mvhd = child(moov, b"mvhd").ok_or(Mp4Error::Format("no mvhd"))?;
        let movie_timescale = if mvhd.first() == Some(&1) {
            be32(mvhd, 20)
        } else {
            be32(mvhd, 12)
        }
        .unwrap_or(0);
        let (track, timescale) = children(moov)
            .filter(|(k, _)| *k == b"trak")
            .find_map(|(_, trak)| video_track(trak))
            .ok_or(Mp4Error::Format("no video track"))?;
        let mut default_duration = 0;
        let mut mehd = None;
        if let Some(mvex) = child(moov, b"mvex") {
            for (kind, body) in children(mvex) {
                if kind == b"trex" && be32(body, 4) == Some(track) {
                    default_duration = be32(body, 12).unwrap_or(0);
                }
                if kind == b"mehd" {
                    let offset = body.as_ptr() as u64 - moov.as_ptr() as u64 + at + 4;
                    mehd = Some(if body.first() == Some(&1) {
                        Mehd {
                            offset,
                            width: 8,
                            value: be64(body, 4).unwrap_or(0),
                        }
                    } else {
                        Mehd {
                            offset,
                            width: 4,
                            value: u64::from(be32(body, 4).unwrap_or(0)),
                        }
                    });
                }
            }
        }
        Ok(Movie {
            track,
            timescale,
            default_duration,
            movie_timescale,
            mehd,
        })
    }
}

/// A `trak` that is video: its id and its media timescale.
fn video_track(trak: &[u8]) -> Option<(u32, u32)> {
    let tkhd = child(trak, b"tkhd")?;
    let id = if tkhd.first() == Some(&1) {
        be32(tkhd, 20)?
    } else {
        be32(tkhd, 12)?
    };
    let mdia = child(trak, b"mdia")?;
    let handler = child(mdia, b"hdlr")?.get(8..12)?;
    if handler != b"vide" {
        return None;
    }
    let mdhd = child(mdia, b"mdhd")?;
    let timescale = if mdhd.first() == Some(&1) {
        be32(mdhd, 20)?
    } else {
        be32(mdhd, 12)?
    };
    Some((id, timescale))
}

/// Where the video track's fragment in this `moof` ends, in its timescale.
fn fragment_end(moof: &[u8], movie: &Movie) -> Option<u64> {
    let traf = children(moof)
        .filter(|(k, _)| *k == b"traf")
        .map(|(_, b)| b)
        .find(|traf| child(traf, b"tfhd").and_then(|t| be32(t, 4)) == Some(movie.track))?;
    let tfdt = child(traf, b"tfdt")?;
    let base = if tfdt.first() == Some(&1) {
        be64(tfdt, 4)?
    } else {
        u64::from(be32(tfdt, 4)?)
    };
    base.checked_add(traf_duration(traf, movie.default_duration)?)
}

/// The sum of a `traf`'s sample durations (`trex_default`: its track's default); `None`
/// when its boxes say more than they hold.
pub(super) fn traf_duration(traf: &[u8], trex_default: u32) -> Option<u64> {
    let tfhd = child(traf, b"tfhd")?;
    let flags = be32(tfhd, 0)? & 0x00ff_ffff;
    // Optional fields in order: base-data-offset (8), sample-description-index (4), then
    // default-sample-duration (4).
    let mut at = 8;
    if flags & 0x01 != 0 {
        at += 8;
    }
    if flags & 0x02 != 0 {
        at += 4;
    }
    let default = if flags & 0x08 != 0 {
        be32(tfhd, at)?
    } else {
        trex_default
    };
    let mut total = 0u64;
    for (_, trun) in children(traf).filter(|(k, _)| *k == b"trun") {
        total = total.checked_add(trun_duration(trun, default)?)?;
    }
    Some(total)
}

/// The sum of a `trun`'s sample durations. Its sample count comes from the file: each
/// sample's fields must be there (a count of billions in a small box is not walked).
fn trun_duration(trun: &[u8], default: u32) -> Option<u64> {
    let flags = be32(trun, 0)? & 0x00ff_ffff;
    let count = be32(trun, 4)? as usize;
    let mut at = 8;
    if flags & 0x01 != 0 {
        at += 4; // data offset
    }
    if flags & 0x04 != 0 {
        at += 4; // first sample flags
    }
    if flags & 0x100 == 0 {
        return Some(u64::from(default).saturating_mul(count as u64));
    }
    let per_sample = [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|f| flags & **f != 0)
        .count()
        * 4;
    let needed = count.checked_mul(per_sample)?.checked_add(at)?;
    if needed > trun.len() {
        return None;
    }
    (0..count).try_fold(0u64, |total, i| {
        total.checked_add(u64::from(be32(trun, at + i * per_sample)?))
    })
}
