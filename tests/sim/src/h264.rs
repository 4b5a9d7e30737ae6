//! H.264 encoding of rendered frames with openh264: Constrained Baseline, no B-frames,
//! SPS/PPS split from the picture so callers can send them as a separate config packet.

use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Level, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;

use crate::app_render::I420Frame;

/// One encoded picture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncodedFrame {
    /// SPS and PPS (Annex-B), present before every keyframe.
    pub config: Vec<u8>,
    /// The picture's NAL units (Annex-B), without SPS/PPS.
    pub picture: Vec<u8>,
    pub keyframe: bool,
}

/// Why encoding failed.
#[derive(Debug, thiserror::Error)]
#[error("h264 encoder: {0}")]
pub struct EncodeError(String);

/// An openh264 encoder for frames of one size (a new size starts with a keyframe).
pub struct VideoEncoder {
    encoder: Encoder,
    force_keyframe: bool,
}

impl VideoEncoder {
    pub fn new(fps: u32) -> Result<Self, EncodeError> {
        let config = EncoderConfig::new()
            .profile(Profile::Baseline)
            .level(Level::Level_3_1)
            .usage_type(UsageType::ScreenContentRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(4_000_000))
            .max_frame_rate(FrameRate::from_hz(fps.clamp(1, 60) as f32))
            .skip_frames(false)
            .complexity(Complexity::Low)
            .intra_frame_period(IntraFramePeriod::from_num_frames(0))
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|error| EncodeError(error.to_string()))?;
        Ok(Self {
            encoder,
            force_keyframe: true,
        })
    }

    /// The next frame will be a keyframe (with SPS/PPS).
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Encodes `frame` at `pts_us`.
    pub fn encode(&mut self, frame: &I420Frame, pts_us: u64) -> Result<EncodedFrame, EncodeError> {
        if self.force_keyframe {
            self.encoder.force_intra_frame();
            self.force_keyframe = false;
        }
        let (width, height) = (frame.width as usize, frame.height as usize);
        if frame.y.len() != width * height
            || frame.u.len() != width * height / 4
            || frame.v.len() != frame.u.len()
            || width % 2 != 0
            || height % 2 != 0
        {
            return Err(EncodeError(format!("malformed {width}x{height} frame")));
        }
        let source = YUVSlices::new(
            (&frame.y, &frame.u, &frame.v),
            (width, height),
            (width, width / 2, width / 2),
        );
        let timestamp = openh264::Timestamp::from_millis(pts_us / 1000);
        let stream = self
            .encoder
            .encode_at(&source, timestamp)
            .map_err(|error| EncodeError(error.to_string()))?;
        Ok(split_access_unit(&stream.to_vec()))
    }
}

/// Splits an Annex-B access unit into SPS/PPS and the rest, and tells whether it has an IDR slice.
pub fn split_access_unit(bytes: &[u8]) -> EncodedFrame {
    let mut out = EncodedFrame::default();
    for nal in nal_units(bytes) {
        let kind = nal
            .get(start_code_len(nal))
            .map_or(0, |header| header & 0x1F);
        match kind {
            7 | 8 => out.config.extend_from_slice(nal),
            5 => {
                out.keyframe = true;
                out.picture.extend_from_slice(nal);
            }
            _ => out.picture.extend_from_slice(nal),
        }
    }
    out
}

fn start_code_len(nal: &[u8]) -> usize {
    if nal.starts_with(&[0, 0, 0, 1]) {
        4
    } else if nal.starts_with(&[0, 0, 1]) {
        3
    } else {
        0
    }
}

/// The NAL units of an Annex-B stream, each with its start code.
fn nal_units(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut index = 0;
    while index + 3 <= bytes.len() {
        if bytes[index] == 0 && bytes[index + 1] == 0 && bytes[index + 2] == 1 {
            // Include a fourth leading zero in the start code.
            let start = if index > 0 && bytes[index - 1] == 0 {
                index - 1
            } else {
                index
            };
            starts.push(start);
            index += 3;
        } else {
            index += 1;
        }
    }
    if starts.first() != Some(&0) && !bytes.is_empty() {
        starts.insert(0, 0);
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| &bytes[start..starts.get(i + 1).copied().unwrap_or(bytes.len())])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_render::{FrameInfo, render};
    use crate::launcher_app::LauncherApp;

    #[test]
    fn first_frame_is_a_baseline_keyframe_with_config() {
        let app = LauncherApp::new(1080, 2400);
        let mut frame = I420Frame::new(144, 320);
        render(&app, &mut frame, FrameInfo::default());
        let mut encoder = VideoEncoder::new(10).expect("encoder");
        let first = encoder.encode(&frame, 0).expect("encode");
        assert!(first.keyframe);
        // SPS first: NAL type 7, profile_idc 66 (Baseline).
        assert_eq!(&first.config[..5], &[0, 0, 0, 1, 0x67]);
        assert_eq!(first.config[5], 66);
        let second = encoder.encode(&frame, 100_000).expect("encode");
        assert!(!second.keyframe && second.config.is_empty());
        encoder.request_keyframe();
        let third = encoder.encode(&frame, 200_000).expect("encode");
        assert!(third.keyframe && !third.config.is_empty());
    }

    #[test]
    fn splits_nal_units() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 3, 4,
        ];
        let split = split_access_unit(&au);
        assert_eq!(split.config, vec![0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2]);
        assert_eq!(split.picture, vec![0, 0, 0, 1, 0x65, 3, 4]);
        assert!(split.keyframe);
        assert_eq!(split_access_unit(&[]), EncodedFrame::default());
    }
}
