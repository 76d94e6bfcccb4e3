//! The recordings on disk: `PATH/{camera}/{camera}_{YYYYMMDD}T{HHMMSS}.{mmm}Z.mp4`,
//! one file per segment named after its camera and the UTC time of its first frame, and an
//! index of them in memory (read from the directory at start, kept by the recorders) that
//! listing, serving, deleting and retention use.
//!
//! A recording's id is its file's stem: checked character by character before it is ever
//! joined to a path, so no id reaches outside the recordings' directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use super::mp4;
use crate::camera_name::CameraName;
use crate::sync::lock;

/// The time in a file name: `20261208T001500.123Z`.
const NAME_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z");

/// What a segment is written as (fragmented MP4 for H.264; WebM for VP8 is to come).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Mp4,
}

impl Container {
    pub fn extension(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Container::Mp4 => "video/mp4",
        }
    }

    fn of_extension(ext: &str) -> Option<Container> {
        match ext {
            "mp4" => Some(Container::Mp4),
            _ => None,
        }
    }
}

/// One segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub id: String,
    pub camera: String,
    pub start: OffsetDateTime,
    pub duration: Duration,
    pub bytes: u64,
    pub container: Container,
    /// Being written now (not deleted by retention, its duration grows).
    pub writing: bool,
}

impl Segment {
    pub fn end(&self) -> OffsetDateTime {
        self.start
            .checked_add(time::Duration::try_from(self.duration).unwrap_or(time::Duration::ZERO))
            .unwrap_or(self.start)
    }
}

/// A segment's id, checked: `{camera}_{time}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentId {
    pub camera: String,
    pub start: OffsetDateTime,
}

impl SegmentId {
    pub fn parse(id: &str) -> Option<SegmentId> {
        let (camera, when) = id.rsplit_once('_')?;
        let camera = CameraName::parse(camera).ok()?;
        let start = time::PrimitiveDateTime::parse(when, NAME_TIME)
            .ok()?
            .assume_utc();
        Some(SegmentId {
            camera: camera.as_str().to_string(),
            start,
        })
    }

    pub fn new(camera: &str, start: OffsetDateTime) -> SegmentId {
        // Whole milliseconds: what the name keeps.
        let millis = start.millisecond();
        let start =
            start.replace_nanosecond(0).unwrap_or(start) + Duration::from_millis(u64::from(millis));
        SegmentId {
            camera: camera.to_string(),
            start,
        }
    }

    pub fn text(&self) -> String {
        let when = self.start.format(NAME_TIME).unwrap_or_default();
        format!("{}_{when}", self.camera)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such recording")]
    NotFound,
    #[error("the recording is being written")]
    Writing,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What retention deleted, and why.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub for_age: usize,
    pub for_space: usize,
}

/// The recordings' directory and its index.
pub struct Store {
    root: PathBuf,
    /// By start time, then camera: the oldest first.
    index: Mutex<BTreeMap<(OffsetDateTime, String), Segment>>,
}

impl Store {
    /// Reads what `root` holds (creating it), repairing segments cut short by a crash:
    /// blocking (a directory walk and a read of each segment's boxes).
    pub fn open(root: &Path) -> std::io::Result<Store> {
        std::fs::create_dir_all(root)?;
        let store = Store {
            root: root.to_path_buf(),
            index: Mutex::default(),
        };
        let mut found = BTreeMap::new();
        for camera_dir in std::fs::read_dir(root)?.flatten() {
            let Some(camera) = camera_dir.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if CameraName::parse(&camera).is_err() || !camera_dir.path().is_dir() {
                continue;
            }
            let files = match std::fs::read_dir(camera_dir.path()) {
                Ok(files) => files,
                Err(err) => {
                    tracing::warn!(camera, %err, "recordings of this camera cannot be read");
                    continue;
                }
            };
            for file in files.flatten() {
                if let Some(segment) = read_segment(&file.path(), &camera) {
                    found.insert((segment.start, segment.camera.clone()), segment);
                }
            }
        }
        *lock(&store.index) = found;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a new segment of `camera` starting at `start` goes (its directory made).
    pub fn create_path(
        &self,
        id: &SegmentId,
        container: Container,
    ) -> std::io::Result<(String, PathBuf)> {
        let dir = self.root.join(&id.camera);
        std::fs::create_dir_all(&dir)?;
        let text = id.text();
        let path = dir.join(format!("{text}.{}", container.extension()));
        Ok((text, path))
    }

    /// A segment being written, or its progress (duration, bytes).
    pub fn writing(&self, segment: Segment) {
        lock(&self.index).insert((segment.start, segment.camera.clone()), segment);
    }

    /// A segment that ended: its final duration and size (or gone, when it held nothing).
    pub fn finished(&self, mut segment: Segment, keep: bool) {
        let key = (segment.start, segment.camera.clone());
        let mut index = lock(&self.index);
        if keep {
            segment.writing = false;
            index.insert(key, segment);
        } else {
            index.remove(&key);
        }
    }

    /// Segments of `camera` (any: `None`) overlapping `from`..`to`, oldest first.
    pub fn list(
        &self,
        camera: Option<&str>,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
    ) -> Vec<Segment> {
        lock(&self.index)
            .values()
            .filter(|s| camera.is_none_or(|c| s.camera == c))
            .filter(|s| from.is_none_or(|from| s.end() >= from))
            .filter(|s| to.is_none_or(|to| s.start <= to))
            .cloned()
            .collect()
    }

    /// A recording and its file, by id.
    pub fn get(&self, id: &str) -> Option<(Segment, PathBuf)> {
        let parsed = SegmentId::parse(id)?;
        let segment = lock(&self.index)
            .get(&(parsed.start, parsed.camera.clone()))
            .cloned()?;
        let path = self.path_of(&segment);
        Some((segment, path))
    }

    /// Where a segment's file is.
    pub fn path_of(&self, segment: &Segment) -> PathBuf {
        self.root.join(&segment.camera).join(format!(
            "{}.{}",
            segment.id,
            segment.container.extension()
        ))
    }

    /// Deletes a finished recording.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let parsed = SegmentId::parse(id).ok_or(StoreError::NotFound)?;
        let key = (parsed.start, parsed.camera);
        let segment = {
            let index = lock(&self.index);
            let segment = index.get(&key).cloned().ok_or(StoreError::NotFound)?;
            if segment.writing {
                return Err(StoreError::Writing);
            }
            segment
        };
        remove_file(&self.path_of(&segment))?;
        lock(&self.index).remove(&key);
        Ok(())
    }

    /// Bytes free for an unprivileged writer on the recordings' filesystem.
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.root).map_err(std::io::Error::from)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Deletes the oldest finished segments while they are older than `keep` or free space
    /// is below `min_free` (blocking: file system calls), counted in `recordings_deleted`.
    pub fn enforce(&self, keep: Option<Duration>, min_free: u64) -> Deleted {
        let mut deleted = Deleted::default();
        let oldest_kept = keep
            .and_then(|keep| SystemTime::now().checked_sub(keep))
            .map(OffsetDateTime::from);
        let candidates: Vec<Segment> = lock(&self.index)
            .values()
            .filter(|s| !s.writing)
            .cloned()
            .collect();
        for segment in candidates {
            let too_old = oldest_kept.is_some_and(|oldest| segment.end() < oldest);
            let short = !too_old && self.free_bytes().is_ok_and(|free| free < min_free);
            if !too_old && !short {
                break;
            }
            let path = self.path_of(&segment);
            match remove_file(&path) {
                Ok(()) => {
                    lock(&self.index).remove(&(segment.start, segment.camera.clone()));
                    let reason = if too_old { "age" } else { "space" };
                    crate::metrics::get()
                        .recordings_deleted
                        .get_or_create(&crate::metrics::ReasonLabel { reason })
                        .inc();
                    if too_old {
                        deleted.for_age += 1;
                    } else {
                        deleted.for_space += 1;
                    }
                    tracing::info!(
                        recording = segment.id,
                        reason = if too_old { "age" } else { "space" },
                        "recording deleted"
                    );
                }
                Err(err) => {
                    tracing::warn!(recording = segment.id, %err, "cannot delete a recording");
                    break;
                }
            }
        }
        deleted
    }
}

fn remove_file(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// A fragmented MP4's duration and length: at once for a finished one; else its fragments
/// are read, and it is repaired if it needs it and can be (a read-only disk: read as it is).
fn read_mp4(path: &Path, stem: &str) -> Option<(Duration, u64)> {
    let mut file = std::fs::File::open(path).ok()?;
    let bytes = file.metadata().ok()?.len();
    if let Some(duration) = mp4::finished_duration(&mut file) {
        return Some((duration, bytes));
    }
    let scanned = match mp4::scan(&mut file, false) {
        Ok(scanned) => scanned,
        Err(err) => {
            tracing::warn!(recording = stem, %err, "a recording cannot be read: left alone");
            return None;
        }
    };
    if !scanned.repaired && !scanned.header_missing {
        return Some((scanned.duration, scanned.len));
    }
    let repaired = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(mp4::Mp4Error::from)
        .and_then(|mut file| mp4::scan_and_repair(&mut file));
    match repaired {
        Ok(repaired) => {
            if repaired.repaired {
                tracing::info!(
                    recording = stem,
                    duration_s = repaired.duration.as_secs_f64(),
                    "a recording cut short (the daemon stopped while writing it) was repaired"
                );
            }
            Some((repaired.duration, repaired.len))
        }
        Err(err) => {
            // Listed as far as it plays (a torn end is ignored by readers).
            tracing::warn!(recording = stem, %err, "a recording cut short cannot be repaired");
            Some((scanned.duration, scanned.len))
        }
    }
}

/// A segment file found at start: its duration read (an MP4 cut short is repaired); one that
/// holds nothing is removed.
fn read_segment(path: &Path, camera: &str) -> Option<Segment> {
    let container = Container::of_extension(path.extension()?.to_str()?)?;
    let stem = path.file_stem()?.to_str()?;
    let id = SegmentId::parse(stem)?;
    if id.camera != camera {
        return None;
    }
    let (duration, bytes) = match container {
        Container::Mp4 => read_mp4(path, stem)?,
    };
    if duration.is_zero() {
        tracing::info!(recording = stem, "an empty recording removed");
        let _ = remove_file(path);
        return None;
    }
    Some(Segment {
        id: stem.to_string(),
        camera: id.camera,
        start: id.start,
        duration,
        bytes,
        container,
        writing: false,
    })
}
