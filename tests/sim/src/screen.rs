//! The simulated screen: a deterministic picture per device, encoded as PNG or raw RGBA.

use crate::device_profile::DeviceProfile;

/// Background colour of a device's screen, derived from its model so devices look different.
pub fn background_rgb(profile: &DeviceProfile) -> [u8; 3] {
    let hash = profile.model.bytes().fold(0x811C_9DC5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let [a, b, c, _] = hash.to_le_bytes();
    // Keep the colour mid-range so the white and dark pattern stays visible.
    [64 + a / 2, 64 + b / 2, 64 + c / 2]
}

/// The colour of pixel (x, y): background, diagonal stripes, a dark status bar at the top
/// and a white navigation pill at the bottom.
pub fn pixel(profile: &DeviceProfile, x: u32, y: u32) -> [u8; 3] {
    let (width, height) = (profile.screen_width, profile.screen_height);
    let status_bar = height / 25;
    let pill_top = height - height / 30;
    let pill_left = width * 3 / 8;
    let pill_right = width * 5 / 8;
    if y < status_bar {
        return [20, 20, 20];
    }
    if y >= pill_top && y < height - height / 60 && (pill_left..pill_right).contains(&x) {
        return [250, 250, 250];
    }
    let base = background_rgb(profile);
    if ((x + y) / 60).is_multiple_of(4) {
        base.map(|channel| channel.saturating_add(60))
    } else {
        base
    }
}

/// `screencap -p`: the screen as a PNG (8-bit RGB).
pub fn render_png(profile: &DeviceProfile) -> Vec<u8> {
    let (width, height) = (profile.screen_width, profile.screen_height);
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        for x in 0..width {
            rgb.extend_from_slice(&pixel(profile, x, y));
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    // Writing into a Vec with dimensions that match the buffer cannot fail.
    let written = encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&rgb));
    if let Err(error) = written {
        tracing::error!(%error, "png encoding failed");
        return Vec::new();
    }
    out
}

/// `screencap` without `-p`: width, height, format (1 = RGBA_8888), colour space, then pixels.
pub fn render_raw(profile: &DeviceProfile) -> Vec<u8> {
    let (width, height) = (profile.screen_width, profile.screen_height);
    let mut out = Vec::with_capacity(16 + width as usize * height as usize * 4);
    for word in [width, height, 1, 0] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for y in 0..height {
        for x in 0..width {
            let [r, g, b] = pixel(profile, x, y);
            out.extend_from_slice(&[r, g, b, 255]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_decodes_to_the_screen_size_and_pattern() {
        let profile = DeviceProfile::generate("SIM-1", 0);
        let bytes = render_png(&profile);
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().expect("png header");
        let mut buffer = vec![0; reader.output_buffer_size().expect("size fits")];
        let info = reader.next_frame(&mut buffer).expect("png frame");
        assert_eq!(
            (info.width, info.height),
            (profile.screen_width, profile.screen_height)
        );
        // The status bar is dark, the middle has the background colour.
        assert_eq!(&buffer[0..3], &[20, 20, 20]);
        let row = (profile.screen_height / 2) as usize;
        let offset = (row * profile.screen_width as usize + 1) * 3;
        assert_eq!(&buffer[offset..offset + 3], &pixel(&profile, 1, row as u32));
    }
}
