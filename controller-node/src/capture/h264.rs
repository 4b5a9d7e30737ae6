//! H.264 Annex-B helpers (sans-IO): NAL unit splitting, the picture size in an SPS, and an
//! access-unit splitter for raw byte streams such as `screenrecord --output-format=h264`.

use std::collections::VecDeque;

pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

/// The 4-byte Annex-B start code this module writes.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// The largest NAL unit (or pending bytes without a start code) accepted.
pub const MAX_NAL_BYTES: usize = 16 << 20;

/// The NAL unit type of a NAL unit (without start code).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1F)
}

/// Where the next start code (`00 00 01`) at or after `from` begins: (position of the
/// start code's first byte, counting a leading extra `00`, and its length).
fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if i > from && data[i - 1] == 0 {
                return Some((i - 1, 4));
            }
            return Some((i, 3));
        } else {
            i += 1;
        }
    }
    None
}

/// Splits Annex-B data into NAL units (without start codes); bytes before the first start
/// code are ignored, trailing zero bytes of a NAL unit are dropped.
pub fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let Some((mut at, mut len)) = find_start_code(data, 0) else {
        return units;
    };
    loop {
        let begin = at + len;
        let next = find_start_code(data, begin);
        let end = next.map_or(data.len(), |(p, _)| p);
        let nal = trim_trailing_zeros(&data[begin..end]);
        if !nal.is_empty() {
            units.push(nal);
        }
        match next {
            Some((p, l)) => (at, len) = (p, l),
            None => return units,
        }
    }
}

fn trim_trailing_zeros(nal: &[u8]) -> &[u8] {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    &nal[..end]
}

/// Whether Annex-B `data` starts with an SPS (its config is already in front).
pub fn starts_with_sps(data: &[u8]) -> bool {
    nal_units(data)
        .first()
        .is_some_and(|nal| nal_type(nal) == Some(NAL_SPS))
}

/// The picture size (after cropping) an SPS NAL unit (header byte included) describes.
pub fn sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    if nal_type(nal)? != NAL_SPS {
        return None;
    }
    let rbsp = unescape(nal.get(1..)?);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bits(1)?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bits(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bits(1)? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bits(1)? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bits(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bits(1)?);
    if frame_mbs_only == 0 {
        r.bits(1)?; // mb_adaptive_frame_field_flag
    }
    r.bits(1)?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0u64, 0u64, 0u64, 0u64);
    if r.bits(1)? == 1 {
        left = r.ue()?.into();
        right = r.ue()?.into();
        top = r.ue()?.into();
        bottom = r.ue()?.into();
    }
    let (sub_width, sub_height) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (crop_x, crop_y) = if chroma_format_idc == 0 {
        (1, 2 - frame_mbs_only)
    } else {
        (sub_width, sub_height * (2 - frame_mbs_only))
    };
    let width = (width_mbs * 16).checked_sub(crop_x * (left + right))?;
    let height =
        ((2 - frame_mbs_only) * height_map_units * 16).checked_sub(crop_y * (top + bottom))?;
    let ok = (1..=16_384).contains(&width) && (1..=16_384).contains(&height);
    ok.then_some((width as u32, height as u32))
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + i64::from(r.se()?) + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Removes emulation-prevention bytes (`00 00 03` -> `00 00`).
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, bit: 0 }
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.bit / 8)?;
            value = (value << 1) | u32::from((byte >> (7 - self.bit % 8)) & 1);
            self.bit += 1;
        }
        Some(value)
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        ((1u64 << zeros) - 1 + u64::from(rest)).try_into().ok()
    }

    fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        v.try_into().ok()
    }
}

/// Whether this NAL unit (or its first two bytes) begins a new access unit (H.264 7.4.1.2.3,
/// simplified: parameter sets, SEI, AUD, or the first slice of a picture).
fn starts_access_unit(nal: &[u8]) -> bool {
    let Some(kind) = nal_type(nal) else {
        return false;
    };
    // first_mb_in_slice == 0 is the exp-Golomb code `1`: the slice header's first bit.
    let first_slice_of_picture =
        matches!(kind, NAL_SLICE | NAL_IDR) && nal.get(1).is_some_and(|b| b & 0x80 != 0);
    matches!(kind, NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD | 14..=18) || first_slice_of_picture
}

/// One access unit found by [`AccessUnitSplitter`], Annex-B with 4-byte start codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    pub data: Vec<u8>,
    /// It holds an IDR slice.
    pub keyframe: bool,
    /// It holds an SPS (and so its config is inside).
    pub has_sps: bool,
}

/// The byte stream did not look like H.264.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the H.264 stream has a NAL unit over {MAX_NAL_BYTES} bytes (not H.264?)")]
pub struct NalTooLarge;

/// Splits a raw Annex-B byte stream, fed in arbitrary pieces, into access units.
///
/// A NAL unit is complete when the next start code arrives, so the last access unit is
/// held until more bytes come or [`AccessUnitSplitter::flush`] says the input paused.
#[derive(Debug, Default)]
pub struct AccessUnitSplitter {
    pending: Vec<u8>,
    scanned: usize,
    current: Vec<u8>,
    current_has_slice: bool,
    current_idr: bool,
    current_sps: bool,
    ready: VecDeque<AccessUnit>,
}

impl AccessUnitSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; complete access units become available from [`Self::poll`].
    pub fn push(&mut self, data: &[u8]) -> Result<(), NalTooLarge> {
        self.pending.extend_from_slice(data);
        loop {
            let Some((first, len)) = find_start_code(&self.pending, 0) else {
                // Keep the last bytes: they may be the beginning of a start code.
                let keep = self.pending.len().min(3);
                self.pending.drain(..self.pending.len() - keep);
                self.scanned = 0;
                return Ok(());
            };
            let from = (first + len).max(self.scanned);
            match find_start_code(&self.pending, from) {
                Some((next, _)) => {
                    let nal = trim_trailing_zeros(&self.pending[first + len..next]).to_vec();
                    self.pending.drain(..next);
                    self.scanned = 0;
                    self.add_nal(&nal);
                }
                None => {
                    self.peek_next_nal();
                    self.scanned = self.pending.len().saturating_sub(3);
                    if self.pending.len() > MAX_NAL_BYTES {
                        self.pending.clear();
                        self.scanned = 0;
                        return Err(NalTooLarge);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Whether bytes are held that [`Self::flush`] would turn into an access unit.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.current.is_empty()
    }

    /// The next complete access unit.
    pub fn poll(&mut self) -> Option<AccessUnit> {
        self.ready.pop_front()
    }

    /// The input paused or ended: treat the bytes held as a complete NAL unit and the
    /// current access unit as complete; [`Self::poll`] then returns them.
    pub fn flush(&mut self) {
        if let Some((first, len)) = find_start_code(&self.pending, 0) {
            let nal = trim_trailing_zeros(&self.pending[first + len..]).to_vec();
            self.add_nal(&nal);
        }
        self.pending.clear();
        self.scanned = 0;
        self.finish_current();
    }

    /// The input restarted: drop a partial NAL unit and access unit, keep complete ones.
    pub fn discard_partial(&mut self) {
        self.pending.clear();
        self.scanned = 0;
        self.current.clear();
        self.current_has_slice = false;
        self.current_idr = false;
        self.current_sps = false;
    }

    fn add_nal(&mut self, nal: &[u8]) {
        let Some(kind) = nal_type(nal) else { return };
        if self.current_has_slice && starts_access_unit(nal) {
            self.finish_current();
        }
        self.current.extend_from_slice(&START_CODE);
        self.current.extend_from_slice(nal);
        match kind {
            NAL_SLICE => self.current_has_slice = true,
            NAL_IDR => (self.current_has_slice, self.current_idr) = (true, true),
            NAL_SPS => self.current_sps = true,
            _ => {}
        }
    }

    /// The access unit being built is complete as soon as the header of the NAL unit after
    /// it shows a new one begins: no need to wait for that NAL unit's end.
    fn peek_next_nal(&mut self) {
        if let Some((first, len)) = find_start_code(&self.pending, 0)
            && let Some(head) = self.pending.get(first + len..first + len + 2)
            && self.current_has_slice
            && starts_access_unit(head)
        {
            self.finish_current();
        }
    }

    fn finish_current(&mut self) {
        if self.current_has_slice {
            self.ready.push_back(AccessUnit {
                data: std::mem::take(&mut self.current),
                keyframe: self.current_idr,
                has_sps: self.current_sps,
            });
        }
        // Parameter sets without a picture stay for the next picture.
        if self.current_has_slice {
            self.current.clear();
        }
        self.current_has_slice = false;
        self.current_idr = false;
        if self.current.is_empty() {
            self.current_sps = false;
        }
    }
}

#[cfg(test)]
#[path = "h264_tests.rs"]
pub(crate) mod tests;
