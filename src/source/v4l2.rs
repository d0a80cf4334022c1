//! V4L2 cameras (USB UVC webcams, CSI bridges, any capture node) through the
//! `v4l` crate: format negotiation, then memory-mapped streaming through our
//! own [`MmapRing`] (a dequeue that waits with a timeout and survives it: see
//! `v4l2_ring.rs` for why not the crate's stream).
//!
//! Negotiation ([`negotiate`]) is a plain function over what the device offers,
//! so it is unit-tested without a device; the real driver path runs on the
//! kernel's vivid driver in the emulated-board test.

use std::time::Duration;

use v4l::format::{Colorspace, FourCC, Quantization};
use v4l::framesize::FrameSizeEnum;
use v4l::prelude::Device;
use v4l::video::Capture as _;

use super::config::{SourceFormat, SourceSection};
use super::live::{Capture, OpenError, Read};
use super::v4l2_ring::{Filled, MmapRing};
use crate::frame::{Frame, Matrix, PixelFormat, Range, YuvColour};
use crate::tomlfile::{SettingsError, TomlFile};

/// Capture formats vigil converts, by V4L2 fourcc; in the order `auto` prefers them
/// (uncompressed first: cheap to convert; MJPEG last: a JPEG decode per frame).
pub const FORMATS: [(&[u8; 4], PixelFormat, &str); 7] = [
    (b"YUYV", PixelFormat::Yuyv, "yuyv"),
    (b"NV12", PixelFormat::Nv12, "nv12"),
    (b"YU12", PixelFormat::I420, "i420"),
    (b"RGB3", PixelFormat::Rgb24, "rgb24"),
    (b"GREY", PixelFormat::Grey, "grey"),
    (b"MJPG", PixelFormat::Encoded, "mjpeg"),
    (b"JPEG", PixelFormat::Encoded, "mjpeg"),
];

/// The vigil format of a fourcc, if vigil converts it.
pub fn format_of(fourcc: &[u8; 4]) -> Option<(PixelFormat, &'static str)> {
    FORMATS.iter().find(|(f, _, _)| *f == fourcc).map(|(_, p, n)| (*p, *n))
}

/// Frame sizes a device offers for one format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeOffer {
    /// One size.
    Discrete(u32, u32),
    /// A range (min, max, step) for width and for height.
    Stepwise {
        /// Widths: min, max, step.
        width: (u32, u32, u32),
        /// Heights: min, max, step.
        height: (u32, u32, u32),
    },
}

/// One format a device offers, with its sizes.
#[derive(Debug, Clone)]
pub struct FormatOffer {
    /// The V4L2 fourcc.
    pub fourcc: [u8; 4],
    /// The sizes it comes in.
    pub sizes: Vec<SizeOffer>,
}

/// What the config asks of a camera.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Want {
    /// A format name from [`FORMATS`] (`yuyv`, `mjpeg`, ...), or `None` for the best offered.
    pub format: Option<String>,
    /// Frame size, or `None` for the smallest that covers the model's input.
    pub size: Option<(u32, u32)>,
    /// The model's input size.
    pub model: (u32, u32),
}

/// Pick a fourcc and size from `offers` for `want`; say what was offered when nothing fits.
pub fn negotiate(offers: &[FormatOffer], want: &Want) -> Result<([u8; 4], u32, u32), String> {
    let usable: Vec<&FormatOffer> = FORMATS
        .iter()
        .filter(|(_, _, name)| want.format.as_deref().is_none_or(|w| w == *name))
        .filter_map(|(fourcc, _, _)| offers.iter().find(|o| &o.fourcc == *fourcc))
        .collect();
    let offered =
        || offers.iter().map(|o| String::from_utf8_lossy(&o.fourcc).into_owned()).collect::<Vec<_>>().join(", ");
    if usable.is_empty() {
        return Err(match &want.format {
            Some(f) => format!("the camera does not offer format `{f}` (it offers: {})", offered()),
            None => format!("the camera offers no format vigil converts (it offers: {})", offered()),
        });
    }
    for offer in &usable {
        if let Some((w, h)) = pick_size(&offer.sizes, want) {
            return Ok((offer.fourcc, w, h));
        }
    }
    let (w, h) = want.size.unwrap_or_default();
    Err(format!("no offered format comes in {w}x{h} (offered: {})", describe_sizes(&usable)))
}

fn describe_sizes(offers: &[&FormatOffer]) -> String {
    let mut parts = Vec::new();
    for o in offers {
        let sizes: Vec<String> = o
            .sizes
            .iter()
            .map(|s| match s {
                SizeOffer::Discrete(w, h) => format!("{w}x{h}"),
                SizeOffer::Stepwise { width, height } => {
                    format!("{}-{}x{}-{}", width.0, width.1, height.0, height.1)
                }
            })
            .collect();
        parts.push(format!("{}: {}", String::from_utf8_lossy(&o.fourcc), sizes.join(" ")));
    }
    parts.join("; ")
}

/// The configured size if offered; otherwise the smallest (by area) covering the
/// model's input, or the largest when none covers it.
fn pick_size(sizes: &[SizeOffer], want: &Want) -> Option<(u32, u32)> {
    let fits = |(w, h): (u32, u32), s: &SizeOffer| match s {
        SizeOffer::Discrete(dw, dh) => (w, h) == (*dw, *dh),
        SizeOffer::Stepwise { width, height } => {
            let ok = |v: u32, (min, max, step): (u32, u32, u32)| {
                (min..=max).contains(&v) && (v - min).is_multiple_of(step.max(1))
            };
            ok(w, *width) && ok(h, *height)
        }
    };
    if let Some(size) = want.size {
        return sizes.iter().any(|s| fits(size, s)).then_some(size);
    }
    let (mw, mh) = want.model;
    let candidates = sizes.iter().map(|s| match s {
        SizeOffer::Discrete(w, h) => (*w, *h),
        // The smallest step-aligned size covering the model.
        SizeOffer::Stepwise { width, height } => {
            let up = |v: u32, (min, max, step): (u32, u32, u32)| {
                let step = step.max(1);
                (min + v.saturating_sub(min).div_ceil(step) * step).min(max)
            };
            (up(mw, *width), up(mh, *height))
        }
    });
    let area = |(w, h): (u32, u32)| u64::from(w) * u64::from(h);
    let covering = candidates.clone().filter(|&(w, h)| w >= mw && h >= mh).min_by_key(|&s| area(s));
    covering.or_else(|| candidates.max_by_key(|&s| area(s)))
}

/// A V4L2 camera as configured (`kind = "v4l2"`).
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Spec {
    /// The device node, e.g. `/dev/video0` (or a stable `/dev/v4l/by-id/...` link).
    pub device: String,
    /// Format and size wanted (`want.model` is set from the bundle when the source opens).
    pub want: Want,
    /// Frame rate to ask for (the driver may round it); `None` keeps the device's.
    pub fps: Option<u32>,
}

impl V4l2Spec {
    /// The v4l2 keys of `[source]` (`device`, `format`, `width`/`height`, `fps`), checked.
    pub fn from_section(s: &SourceSection, file: &TomlFile) -> Result<V4l2Spec, SettingsError> {
        let Some(device) = &s.device else {
            return Err(file.error(
                Some("source.device".into()),
                "missing: a v4l2 source needs `device` (e.g. \"/dev/video0\"; `vigil cameras` lists them)",
            ));
        };
        if let Some(f) = &s.format
            && *f.get_ref() == SourceFormat::Y4m
        {
            return Err(file.error_at(
                f.span(),
                "source.format",
                "`y4m` is a pipe format: a camera gives auto, yuyv, nv12, i420, rgb24, grey or mjpeg",
            ));
        }
        if s.width.is_some() != s.height.is_some() {
            return Err(file.error(Some("source.width".into()), "give both `width` and `height`, or neither"));
        }
        let fps = s.fps(file)?;
        Ok(V4l2Spec {
            device: device.get_ref().clone(),
            want: Want {
                format: s
                    .format
                    .as_ref()
                    .map(|f| *f.get_ref())
                    .filter(|f| *f != SourceFormat::Auto)
                    .map(|f| f.name().into()),
                size: s.size(file)?,
                model: (0, 0),
            },
            fps: (fps > 0.0).then(|| fps.round() as u32),
        })
    }
}

struct Streaming {
    // Declared first so it is dropped (stream off, buffers unmapped) before the device closes.
    ring: MmapRing,
    _device: Device,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    colour: YuvColour,
}

/// Captures from a V4L2 device with memory-mapped buffers.
pub struct V4l2Capture {
    spec: V4l2Spec,
    open: Option<Streaming>,
    /// What was negotiated at the last open, for `describe`.
    negotiated: Option<String>,
}

/// Buffers the driver fills while one is being copied out.
const BUFFERS: u32 = 4;

impl V4l2Capture {
    /// A capture for `spec`; nothing is opened yet.
    pub fn new(spec: V4l2Spec) -> V4l2Capture {
        V4l2Capture { spec, open: None, negotiated: None }
    }
}

/// What `device` offers: its capture formats and their sizes.
pub fn offers(device: &Device) -> std::io::Result<Vec<FormatOffer>> {
    let mut out = Vec::new();
    for desc in device.enum_formats()? {
        let sizes = device
            .enum_framesizes(desc.fourcc)
            .unwrap_or_default()
            .into_iter()
            .map(|fs| match fs.size {
                FrameSizeEnum::Discrete(d) => SizeOffer::Discrete(d.width, d.height),
                FrameSizeEnum::Stepwise(s) => SizeOffer::Stepwise {
                    width: (s.min_width, s.max_width, s.step_width),
                    height: (s.min_height, s.max_height, s.step_height),
                },
            })
            .collect();
        out.push(FormatOffer { fourcc: desc.fourcc.repr, sizes });
    }
    Ok(out)
}

/// A capture device found by [`list_cameras`].
#[derive(Debug, Clone)]
pub struct CameraInfo {
    /// The device node.
    pub path: std::path::PathBuf,
    /// The driver's name for the card (e.g. "HD Pro Webcam C920").
    pub card: String,
    /// The driver (uvcvideo, vivid, ...).
    pub driver: String,
    /// Formats offered, with sizes; empty when they could not be read.
    pub formats: Vec<FormatOffer>,
}

/// Every `/dev/video*` node that can capture video, sorted by path. Nodes that are
/// not capture devices (UVC metadata nodes, encoders) are left out.
pub fn list_cameras() -> Vec<CameraInfo> {
    let mut nodes: Vec<_> = v4l::context::enum_devices().into_iter().map(|n| n.path().to_path_buf()).collect();
    nodes.sort();
    nodes
        .into_iter()
        .filter_map(|path| {
            let device = Device::with_path(&path).ok()?;
            let caps = device.query_caps().ok()?;
            caps.capabilities.contains(v4l::capability::Flags::VIDEO_CAPTURE).then(|| CameraInfo {
                formats: offers(&device).unwrap_or_default(),
                path,
                card: caps.card,
                driver: caps.driver,
            })
        })
        .collect()
}

/// One line per offered size list, for `vigil cameras`.
pub fn describe_offer(offer: &FormatOffer) -> String {
    let name = format_of(&offer.fourcc).map_or("(not converted by vigil)", |(_, n)| n);
    format!(
        "{} {name}: {}",
        String::from_utf8_lossy(&offer.fourcc),
        describe_sizes(&[offer]).split_once(": ").map_or("", |x| x.1)
    )
}

/// How the driver says its YUV samples are coded: BT.601 limited range unless it says otherwise.
fn colour_of(colorspace: Colorspace, quantization: Quantization) -> YuvColour {
    let matrix = if matches!(colorspace, Colorspace::Rec709) { Matrix::Bt709 } else { Matrix::Bt601 };
    let range = match quantization {
        Quantization::FullRange => Range::Full,
        Quantization::LimitedRange => Range::Limited,
        // V4L2's default for Y'CbCr is limited range, except the JPEG colourspace.
        _ if matches!(colorspace, Colorspace::JPEG) => Range::Full,
        _ => Range::Limited,
    };
    YuvColour { matrix, range }
}

/// Copy a filled driver buffer into `frame.data` as packed rows; `Err` says why the frame is bad.
fn copy_frame(
    buf: &[u8],
    filled: Filled,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    frame: &mut Frame,
) -> Result<(), String> {
    if filled.error {
        return Err("the driver flagged the frame as corrupt".into());
    }
    let used = filled.bytes_used;
    frame.data.clear();
    if format == PixelFormat::Encoded {
        if used == 0 {
            return Err("empty MJPEG frame".into());
        }
        frame.data.extend_from_slice(&buf[..used]);
        return Ok(());
    }
    let packed = format.frame_len(width, height).expect("raw format");
    let row = format.frame_len(width, 1).expect("raw format");
    let planar = matches!(format, PixelFormat::Nv12 | PixelFormat::I420);
    if stride == row || planar {
        if used < packed {
            return Err(format!("short frame: {used} of {packed} bytes"));
        }
        frame.data.extend_from_slice(&buf[..packed]);
    } else {
        // Padded rows (bytesperline > width * bytes per pixel): pack them.
        let need = stride * (height as usize - 1) + row;
        if used < need {
            return Err(format!("short frame: {used} of {need} bytes"));
        }
        for r in 0..height as usize {
            frame.data.extend_from_slice(&buf[r * stride..r * stride + row]);
        }
    }
    Ok(())
}

impl Capture for V4l2Capture {
    fn open(&mut self) -> Result<(), OpenError> {
        self.open = None;
        let path = &self.spec.device;
        let device = Device::with_path(path).map_err(|e| OpenError::Unavailable(format!("{path}: {e}")))?;
        let caps = device.query_caps().map_err(|e| OpenError::Unavailable(format!("{path}: {e}")))?;
        if !caps.capabilities.contains(v4l::capability::Flags::VIDEO_CAPTURE) {
            return Err(OpenError::Unsupported(format!("{path} ({}) is not a video capture device", caps.card)));
        }
        let offered = offers(&device).map_err(|e| OpenError::Unavailable(format!("{path}: {e}")))?;
        let (fourcc, w, h) =
            negotiate(&offered, &self.spec.want).map_err(|e| OpenError::Unsupported(format!("{path}: {e}")))?;
        let mut fmt = device.format().map_err(|e| OpenError::Unavailable(format!("{path}: {e}")))?;
        (fmt.width, fmt.height, fmt.fourcc) = (w, h, FourCC::new(&fourcc));
        let fmt = device.set_format(&fmt).map_err(|e| OpenError::Unavailable(format!("{path}: set format: {e}")))?;
        let Some((format, name)) = format_of(&fmt.fourcc.repr) else {
            return Err(OpenError::Unsupported(format!("{path}: driver switched to format {}", fmt.fourcc)));
        };
        if (fmt.width, fmt.height) != (w, h) {
            return Err(OpenError::Unsupported(format!(
                "{path}: asked for {w}x{h}, the driver gave {}x{}",
                fmt.width, fmt.height
            )));
        }
        if let Some(fps) = self.spec.fps
            && let Err(e) = device.set_params(&v4l::video::capture::Parameters::with_fps(fps))
        {
            log::warn!("{path}: cannot set {fps} fps ({e}); keeping the device's rate");
        }
        let ring = MmapRing::start(device.handle(), BUFFERS)
            .map_err(|e| OpenError::Unavailable(format!("{path}: start streaming: {e}")))?;
        let min_stride = format.frame_len(fmt.width, 1).unwrap_or(0);
        // Planar formats report the luma stride; vigil packs rows, so only unpadded planar frames are taken.
        let stride = (fmt.stride as usize).max(min_stride);
        let colour = colour_of(fmt.colorspace, fmt.quantization);
        let desc = format!("{name} {}x{} ({:?}, {:?} range)", fmt.width, fmt.height, colour.matrix, colour.range);
        log::info!("{path} ({}): capturing {desc}", caps.card);
        self.negotiated = Some(desc);
        self.open =
            Some(Streaming { ring, _device: device, format, width: fmt.width, height: fmt.height, stride, colour });
        Ok(())
    }

    fn read(&mut self, frame: &mut Frame, timeout: Duration) -> Read {
        let Some(s) = self.open.as_mut() else { return Read::Failed("not open".into()) };
        let (format, width, height, stride) = (s.format, s.width, s.height, s.stride);
        let copied = s.ring.next(timeout, |buf, filled| copy_frame(buf, filled, format, width, height, stride, frame));
        match copied {
            Ok(None) => return Read::Timeout,
            Ok(Some(Err(why))) => return Read::Bad(why),
            Ok(Some(Ok(()))) => {}
            Err(e) => return Read::Failed(format!("dequeue failed: {e}")),
        }
        frame.format = s.format;
        (frame.width, frame.height) = if s.format == PixelFormat::Encoded { (0, 0) } else { (s.width, s.height) };
        frame.colour = s.colour;
        frame.origin = None;
        Read::Frame
    }

    fn close(&mut self) {
        self.open = None;
    }

    fn reopen_on_stall(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        match &self.negotiated {
            Some(n) => format!("V4L2 {} ({n})", self.spec.device),
            None => format!("V4L2 {}", self.spec.device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webcam() -> Vec<FormatOffer> {
        let sizes = |list: &[(u32, u32)]| list.iter().map(|&(w, h)| SizeOffer::Discrete(w, h)).collect();
        vec![
            FormatOffer { fourcc: *b"MJPG", sizes: sizes(&[(1920, 1080), (1280, 720), (640, 480), (320, 240)]) },
            FormatOffer { fourcc: *b"YUYV", sizes: sizes(&[(640, 480), (320, 240), (160, 120)]) },
        ]
    }

    #[test]
    fn auto_prefers_uncompressed_at_the_smallest_size_covering_the_model() {
        let want = Want { model: (224, 224), ..Want::default() };
        assert_eq!(negotiate(&webcam(), &want), Ok((*b"YUYV", 320, 240)));
    }

    #[test]
    fn configured_format_and_size_are_honoured_or_refused_naming_the_offer() {
        let want = Want { format: Some("mjpeg".into()), size: Some((1280, 720)), model: (224, 224) };
        assert_eq!(negotiate(&webcam(), &want), Ok((*b"MJPG", 1280, 720)));
        let want = Want { format: Some("yuyv".into()), size: Some((1280, 720)), model: (224, 224) };
        let err = negotiate(&webcam(), &want).unwrap_err();
        assert!(err.contains("1280x720") && err.contains("YUYV: 640x480 320x240 160x120"), "{err}");
        let want = Want { format: Some("nv12".into()), ..Want::default() };
        let err = negotiate(&webcam(), &want).unwrap_err();
        assert!(err.contains("`nv12`") && err.contains("MJPG, YUYV"), "{err}");
    }

    #[test]
    fn stepwise_sizes_round_up_to_the_step_and_small_cameras_give_their_largest() {
        let offers = [FormatOffer {
            fourcc: *b"NV12",
            sizes: vec![SizeOffer::Stepwise { width: (64, 4096, 16), height: (64, 2160, 8) }],
        }];
        let want = Want { model: (300, 300), ..Want::default() };
        assert_eq!(negotiate(&offers, &want), Ok((*b"NV12", 304, 304)));
        let want = Want { size: Some((640, 480)), ..want };
        assert_eq!(negotiate(&offers, &want), Ok((*b"NV12", 640, 480)));
        let tiny = [FormatOffer { fourcc: *b"GREY", sizes: vec![SizeOffer::Discrete(160, 120)] }];
        let want = Want { model: (224, 224), ..Want::default() };
        assert_eq!(negotiate(&tiny, &want), Ok((*b"GREY", 160, 120)));
    }

    #[test]
    fn unknown_formats_only_is_refused() {
        let offers = [FormatOffer { fourcc: *b"BA81", sizes: vec![SizeOffer::Discrete(640, 480)] }];
        let err = negotiate(&offers, &Want { model: (224, 224), ..Want::default() }).unwrap_err();
        assert!(err.contains("no format vigil converts") && err.contains("BA81"), "{err}");
    }

    #[test]
    fn driver_colour_description_maps_to_matrix_and_range() {
        assert_eq!(colour_of(Colorspace::Default, Quantization::Default), YuvColour::default());
        assert_eq!(colour_of(Colorspace::SRGB, Quantization::Default).range, Range::Limited);
        assert_eq!(colour_of(Colorspace::JPEG, Quantization::Default).range, Range::Full);
        assert_eq!(
            colour_of(Colorspace::Rec709, Quantization::FullRange),
            YuvColour { matrix: Matrix::Bt709, range: Range::Full }
        );
    }
}
