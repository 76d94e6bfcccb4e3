//! A picture's brightness on a small grid ([`super::detect::GRID`]), read straight from the
//! raw frame (no conversion element, no copy of the frame): the luma plane of YUV and grey
//! formats, the green of RGB ones. Only 8-bit formats; others are not watched.

use gst_video::{VideoFormatFlags, VideoFrameExt};

use super::detect::GRID;

/// The grid of `buffer`, a picture described by `info`.
pub fn sample(buffer: &gst::BufferRef, info: &gst_video::VideoInfo) -> Option<Vec<u8>> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).ok()?;
    let finfo = info.format_info();
    let flags = finfo.flags();
    if flags.contains(VideoFormatFlags::COMPLEX) || flags.contains(VideoFormatFlags::TILED) {
        return None;
    }
    // Brightness: Y (or grey), else green.
    let component =
        if flags.contains(VideoFormatFlags::YUV) || flags.contains(VideoFormatFlags::GRAY) {
            0
        } else {
            1
        };
    if finfo.depth().get(component) != Some(&8) {
        return None;
    }
    let plane = *finfo.plane().get(component)? as usize;
    let offset = *finfo.poffset().get(component)? as usize;
    let pixel_stride = usize::try_from(*finfo.pixel_stride().get(component)?).ok()?;
    let stride = usize::try_from(*frame.plane_stride().get(plane)?).ok()?;
    let data = frame.plane_data(plane as u32).ok()?;
    let (width, height) = (info.width() as usize, info.height() as usize);
    if width == 0 || height == 0 {
        return None;
    }
    let (columns, rows) = GRID;
    let mut grid = Vec::with_capacity(columns * rows);
    for row in 0..rows {
        let y = (2 * row + 1) * height / (2 * rows);
        for column in 0..columns {
            let x = (2 * column + 1) * width / (2 * columns);
            grid.push(*data.get(y * stride + x * pixel_stride + offset)?);
        }
    }
    Some(grid)
}
