//! What a simulated device is: its identity, system properties, screen and battery.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The fixed description of one simulated device. Immutable once built.
#[derive(Debug)]
pub struct DeviceProfile {
    /// `ro.serialno`, unique per simulator process.
    pub serial: String,
    pub model: String,
    pub manufacturer: String,
    pub brand: String,
    /// `ro.product.name`.
    pub product: String,
    /// `ro.product.device`.
    pub device: String,
    pub android_version: String,
    pub sdk: u32,
    pub screen_width: u32,
    pub screen_height: u32,
    pub density: u32,
    pub battery_level: u8,
    pub ac_powered: bool,
    /// Encoded `screencap -p` output, rendered on first use (the screen never changes).
    screenshot_png: OnceLock<Vec<u8>>,
}

struct CatalogEntry {
    model: &'static str,
    manufacturer: &'static str,
    brand: &'static str,
    product: &'static str,
    device: &'static str,
    android_version: &'static str,
    sdk: u32,
    screen: (u32, u32),
    density: u32,
}

const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        model: "Pixel 7",
        manufacturer: "Google",
        brand: "google",
        product: "panther",
        device: "panther",
        android_version: "14",
        sdk: 34,
        screen: (1080, 2400),
        density: 420,
    },
    CatalogEntry {
        model: "Galaxy S23",
        manufacturer: "samsung",
        brand: "samsung",
        product: "dm1qxeea",
        device: "dm1q",
        android_version: "13",
        sdk: 33,
        screen: (1080, 2340),
        density: 480,
    },
    CatalogEntry {
        model: "Pixel Tablet",
        manufacturer: "Google",
        brand: "google",
        product: "tangorpro",
        device: "tangorpro",
        android_version: "14",
        sdk: 34,
        screen: (2560, 1600),
        density: 320,
    },
    CatalogEntry {
        model: "Pixel 6a",
        manufacturer: "Google",
        brand: "google",
        product: "bluejay",
        device: "bluejay",
        android_version: "13",
        sdk: 33,
        screen: (1080, 2400),
        density: 420,
    },
    CatalogEntry {
        model: "Galaxy A54",
        manufacturer: "samsung",
        brand: "samsung",
        product: "a54xnseea",
        device: "a54x",
        android_version: "14",
        sdk: 34,
        screen: (1080, 2340),
        density: 450,
    },
    CatalogEntry {
        model: "moto g54",
        manufacturer: "motorola",
        brand: "motorola",
        product: "cancunf_g",
        device: "cancunf",
        android_version: "12",
        sdk: 31,
        screen: (1080, 2400),
        density: 400,
    },
];

const BATTERY_LEVELS: &[u8] = &[85, 62, 100, 37, 14, 93, 50];

impl DeviceProfile {
    /// The `index`-th device (0-based) of a simulator whose serials start with `serial_prefix`.
    /// Models, battery levels and charging cycle through a fixed catalog.
    pub fn generate(serial_prefix: &str, index: usize) -> Self {
        let entry = &CATALOG[index % CATALOG.len()];
        Self {
            serial: format!("{serial_prefix}-{:02}", index + 1),
            model: entry.model.to_string(),
            manufacturer: entry.manufacturer.to_string(),
            brand: entry.brand.to_string(),
            product: entry.product.to_string(),
            device: entry.device.to_string(),
            android_version: entry.android_version.to_string(),
            sdk: entry.sdk,
            screen_width: entry.screen.0,
            screen_height: entry.screen.1,
            density: entry.density,
            battery_level: BATTERY_LEVELS[index % BATTERY_LEVELS.len()],
            ac_powered: index.is_multiple_of(2),
            screenshot_png: OnceLock::new(),
        }
    }

    /// The CNXN banner the device answers the host with.
    pub fn banner(&self) -> String {
        format!(
            "device::ro.product.name={};ro.product.model={};ro.product.device={};features=shell_v2,cmd,stat_v2",
            self.product, self.model, self.device
        )
    }

    /// All system properties, as `getprop` lists them (sorted by key).
    pub fn properties(&self) -> BTreeMap<&'static str, String> {
        let fingerprint = format!(
            "{}/{}/{}:{}/SIM.{}/1:user/release-keys",
            self.brand, self.product, self.device, self.android_version, self.sdk
        );
        let characteristics = if self.screen_width > self.screen_height {
            "tablet"
        } else {
            "nosdcard"
        };
        BTreeMap::from([
            ("ro.serialno", self.serial.clone()),
            ("ro.boot.serialno", self.serial.clone()),
            ("ro.product.model", self.model.clone()),
            ("ro.product.manufacturer", self.manufacturer.clone()),
            ("ro.product.brand", self.brand.clone()),
            ("ro.product.name", self.product.clone()),
            ("ro.product.device", self.device.clone()),
            ("ro.product.cpu.abi", "arm64-v8a".to_string()),
            ("ro.build.version.release", self.android_version.clone()),
            ("ro.build.version.sdk", self.sdk.to_string()),
            ("ro.build.type", "user".to_string()),
            ("ro.build.fingerprint", fingerprint),
            ("ro.build.characteristics", characteristics.to_string()),
            ("ro.sf.lcd_density", self.density.to_string()),
            ("sys.boot_completed", "1".to_string()),
            ("persist.sys.timezone", "Etc/UTC".to_string()),
        ])
    }

    /// `getprop KEY`: the value, or an empty string for an unknown key (as Android does).
    pub fn property(&self, key: &str) -> String {
        self.properties().remove(key).unwrap_or_default()
    }

    /// The PNG screenshot, rendered once.
    pub fn screenshot_png(&self) -> &[u8] {
        self.screenshot_png
            .get_or_init(|| crate::screen::render_png(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_differ_and_serials_are_numbered() {
        let first = DeviceProfile::generate("SIM-4000", 0);
        let second = DeviceProfile::generate("SIM-4000", 1);
        assert_eq!(first.serial, "SIM-4000-01");
        assert_eq!(second.serial, "SIM-4000-02");
        assert_ne!(first.model, second.model);
        assert_eq!(first.property("ro.product.model"), "Pixel 7");
        assert_eq!(first.property("no.such.key"), "");
        assert!(
            first
                .banner()
                .starts_with("device::ro.product.name=panther;")
        );
    }
}
