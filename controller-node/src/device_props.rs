//! Device properties: the shell commands the node runs on a device and pure parsers for their output.

/// What the node knows about an Android device beyond its adb serial and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProps {
    /// `ro.serialno`, empty when unreadable.
    pub hardware_serial: String,
    /// `ro.product.model`.
    pub model: String,
    /// `ro.product.manufacturer`.
    pub manufacturer: String,
    /// `ro.build.version.release`.
    pub android_version: String,
    /// `ro.build.version.sdk`, 0 when unknown.
    pub sdk: u32,
    /// Physical screen size from `wm size`, 0 when unknown.
    pub screen_width: u32,
    pub screen_height: u32,
    /// Physical density from `wm density`, 0 when unknown.
    pub density: u32,
    /// Battery percent from `dumpsys battery`, -1 when unknown.
    pub battery_level: i32,
}

impl DeviceProps {
    /// Nothing known: empty strings, zeros and battery -1.
    pub fn unknown() -> Self {
        Self {
            hardware_serial: String::new(),
            model: String::new(),
            manufacturer: String::new(),
            android_version: String::new(),
            sdk: 0,
            screen_width: 0,
            screen_height: 0,
            density: 0,
            battery_level: -1,
        }
    }
}

impl Default for DeviceProps {
    fn default() -> Self {
        Self::unknown()
    }
}

/// One shell command the node runs to learn a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropQuery {
    SerialNo,
    Model,
    Manufacturer,
    AndroidVersion,
    Sdk,
    WmSize,
    WmDensity,
    Battery,
}

impl PropQuery {
    /// Every query, in the order the node runs them.
    pub const ALL: [PropQuery; 8] = [
        PropQuery::SerialNo,
        PropQuery::Model,
        PropQuery::Manufacturer,
        PropQuery::AndroidVersion,
        PropQuery::Sdk,
        PropQuery::WmSize,
        PropQuery::WmDensity,
        PropQuery::Battery,
    ];

    /// The shell command line for this query.
    pub fn command(self) -> &'static str {
        match self {
            PropQuery::SerialNo => "getprop ro.serialno",
            PropQuery::Model => "getprop ro.product.model",
            PropQuery::Manufacturer => "getprop ro.product.manufacturer",
            PropQuery::AndroidVersion => "getprop ro.build.version.release",
            PropQuery::Sdk => "getprop ro.build.version.sdk",
            PropQuery::WmSize => "wm size",
            PropQuery::WmDensity => "wm density",
            PropQuery::Battery => "dumpsys battery",
        }
    }
}

/// Folds the output of one query into `props`. Output that does not parse leaves the
/// property unknown; nothing here panics, whatever the bytes.
pub fn apply_output(props: &mut DeviceProps, query: PropQuery, output: &[u8]) {
    let text = String::from_utf8_lossy(output);
    match query {
        PropQuery::SerialNo => props.hardware_serial = parse_getprop_value(&text),
        PropQuery::Model => props.model = parse_getprop_value(&text),
        PropQuery::Manufacturer => props.manufacturer = parse_getprop_value(&text),
        PropQuery::AndroidVersion => props.android_version = parse_getprop_value(&text),
        PropQuery::Sdk => props.sdk = parse_getprop_value(&text).parse().unwrap_or(0),
        PropQuery::WmSize => {
            let (width, height) = parse_wm_size(&text).unwrap_or((0, 0));
            props.screen_width = width;
            props.screen_height = height;
        }
        PropQuery::WmDensity => props.density = parse_wm_density(&text).unwrap_or(0),
        PropQuery::Battery => props.battery_level = parse_battery_level(&text).unwrap_or(-1),
    }
}

/// The value printed by `getprop NAME`: its first line, trimmed. An error message from the
/// shell (e.g. "getprop: not found") or control characters yield an empty value.
pub fn parse_getprop_value(output: &str) -> String {
    let first = output.lines().next().unwrap_or("").trim();
    let looks_like_error = first.contains("not found")
        || first.starts_with("/system/bin/sh:")
        || first.starts_with("error:");
    if looks_like_error || first.chars().any(char::is_control) {
        return String::new();
    }
    first.to_string()
}

/// The physical screen size from `wm size` ("Physical size: 1080x2400"). When only an
/// override is printed (unusual), that is used instead.
pub fn parse_wm_size(output: &str) -> Option<(u32, u32)> {
    labelled_value(output, "Physical size:")
        .or_else(|| labelled_value(output, "Override size:"))
        .and_then(parse_dimensions)
}

/// The physical density from `wm density` ("Physical density: 420").
pub fn parse_wm_density(output: &str) -> Option<u32> {
    labelled_value(output, "Physical density:")
        .or_else(|| labelled_value(output, "Override density:"))
        .and_then(|value| value.parse().ok())
        .filter(|&density| density > 0)
}

/// The battery percent from `dumpsys battery` (`level` scaled by `scale`), in 0..=100.
pub fn parse_battery_level(output: &str) -> Option<i32> {
    let level: i64 = labelled_value(output, "level:")?.parse().ok()?;
    let scale: i64 = labelled_value(output, "scale:")
        .and_then(|value| value.parse().ok())
        .filter(|&scale| scale > 0)
        .unwrap_or(100);
    if level < 0 || level > scale {
        return None;
    }
    i32::try_from(level * 100 / scale).ok()
}

/// The trimmed text after `label` on the first line (trimmed) that starts with it.
fn labelled_value<'a>(output: &'a str, label: &str) -> Option<&'a str> {
    output
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(label))
        .map(str::trim)
}

/// "1080x2400" -> (1080, 2400); both must be positive.
fn parse_dimensions(value: &str) -> Option<(u32, u32)> {
    let (width, height) = value.split_once('x')?;
    let width: u32 = width.trim().parse().ok()?;
    let height: u32 = height.trim().parse().ok()?;
    (width > 0 && height > 0).then_some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATTERY_PIXEL: &str = "Current Battery Service state:\n  AC powered: false\n  USB powered: true\n  Wireless powered: false\n  Max charging current: 500000\n  Max charging voltage: 5000000\n  Charge counter: 3026000\n  status: 2\n  health: 2\n  present: true\n  level: 87\n  scale: 100\n  voltage: 4312\n  temperature: 284\n  technology: Li-ion\n";

    #[test]
    fn getprop_values() {
        assert_eq!(parse_getprop_value("Pixel 7\n"), "Pixel 7");
        assert_eq!(parse_getprop_value("samsung\r\n"), "samsung");
        assert_eq!(parse_getprop_value("\n"), "");
        assert_eq!(parse_getprop_value(""), "");
        assert_eq!(
            parse_getprop_value("/system/bin/sh: getprop: not found\n"),
            ""
        );
        assert_eq!(parse_getprop_value("a\u{1}b"), "");
    }

    #[test]
    fn wm_size_prefers_physical_size() {
        assert_eq!(
            parse_wm_size("Physical size: 1080x2400\n"),
            Some((1080, 2400))
        );
        assert_eq!(
            parse_wm_size("Physical size: 1440x3120\r\nOverride size: 1080x2340\r\n"),
            Some((1440, 3120))
        );
        assert_eq!(
            parse_wm_size("Override size: 720x1280\n"),
            Some((720, 1280))
        );
        assert_eq!(parse_wm_size("Physical size: 0x0\n"), None);
        assert_eq!(
            parse_wm_size("Physical size: 1080 x 2400"),
            Some((1080, 2400))
        );
        assert_eq!(parse_wm_size("cmd: Can't find service: window\n"), None);
    }

    #[test]
    fn wm_density_prefers_physical_density() {
        assert_eq!(parse_wm_density("Physical density: 420\n"), Some(420));
        assert_eq!(
            parse_wm_density("Physical density: 560\nOverride density: 480\n"),
            Some(560)
        );
        assert_eq!(parse_wm_density("Physical density: -3\n"), None);
    }

    #[test]
    fn battery_level_is_scaled() {
        assert_eq!(parse_battery_level(BATTERY_PIXEL), Some(87));
        assert_eq!(parse_battery_level("  level: 50\n  scale: 200\n"), Some(25));
        assert_eq!(parse_battery_level("  level: 50\n  scale: 0\n"), Some(50));
        assert_eq!(parse_battery_level("  level: 150\n  scale: 100\n"), None);
        assert_eq!(parse_battery_level("  level: -1\n"), None);
        assert_eq!(parse_battery_level("Can't find service: battery\n"), None);
    }

    #[test]
    fn apply_output_fills_every_field() {
        let mut props = DeviceProps::unknown();
        let outputs: [(PropQuery, &str); 8] = [
            (PropQuery::SerialNo, "R58M1234ABC\n"),
            (PropQuery::Model, "SM-G991B\n"),
            (PropQuery::Manufacturer, "samsung\n"),
            (PropQuery::AndroidVersion, "14\n"),
            (PropQuery::Sdk, "34\n"),
            (PropQuery::WmSize, "Physical size: 1080x2400\n"),
            (PropQuery::WmDensity, "Physical density: 420\n"),
            (PropQuery::Battery, BATTERY_PIXEL),
        ];
        for (query, output) in outputs {
            apply_output(&mut props, query, output.as_bytes());
        }
        assert_eq!(
            props,
            DeviceProps {
                hardware_serial: "R58M1234ABC".into(),
                model: "SM-G991B".into(),
                manufacturer: "samsung".into(),
                android_version: "14".into(),
                sdk: 34,
                screen_width: 1080,
                screen_height: 2400,
                density: 420,
                battery_level: 87,
            }
        );
    }

    #[test]
    fn garbage_never_panics_and_stays_unknown_where_unparseable() {
        let garbage: [&[u8]; 9] = [
            b"",
            b"\xff\xfe\x00\x01",
            b"Physical size: x",
            b"Physical size: 99999999999x1",
            b"level: 99999999999999999999999",
            b"level:",
            b"\n\n\n",
            b"Physical density: \xff",
            b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ];
        for bytes in garbage {
            for query in PropQuery::ALL {
                let mut props = DeviceProps::unknown();
                apply_output(&mut props, query, bytes);
                assert_eq!(props.sdk, 0);
                assert_eq!(props.screen_width, 0);
                assert_eq!(props.density, 0);
                assert_eq!(props.battery_level, -1);
            }
        }
        // Every byte value in every position of a short input.
        for a in 0..=255u8 {
            for query in PropQuery::ALL {
                let mut props = DeviceProps::unknown();
                apply_output(&mut props, query, &[a, b':', a, b'x', a, b'\n']);
            }
        }
    }
}
