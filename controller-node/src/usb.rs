//! USB inventory with rusb: vendor, product, bus, address, class; video-class devices are cameras.

use rusb::UsbContext;

/// The USB interface class of video devices (UVC cameras).
pub const VIDEO_CLASS: u8 = 0x0E;

/// One USB device on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDeviceInfo {
    pub vendor_id: u16,
    pub product_id: u16,
    pub bus: u8,
    pub address: u8,
    /// The device class from the device descriptor (0 means "per interface").
    pub class_code: u8,
    pub camera: bool,
    pub description: String,
}

/// The USB list, or why there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsbReport {
    pub devices: Vec<UsbDeviceInfo>,
    /// Empty when the list is real, e.g. "no USB bus: ..." otherwise.
    pub status: String,
}

/// Whether a device with this device class and these interface classes is a camera.
pub fn is_camera(device_class: u8, interface_classes: &[u8]) -> bool {
    device_class == VIDEO_CLASS || interface_classes.contains(&VIDEO_CLASS)
}

/// A short human description of a device class.
pub fn describe(vendor_id: u16, product_id: u16, class_code: u8, camera: bool) -> String {
    let kind = if camera {
        "camera"
    } else {
        match class_code {
            0x09 => "hub",
            0x08 => "mass storage",
            0x03 => "hid",
            0x02 => "communications",
            0xFF => "vendor specific",
            _ => "device",
        }
    };
    format!("{vendor_id:04x}:{product_id:04x} {kind}")
}

/// Lists USB devices. Keeps its libusb context between scans; when there is no USB bus
/// (no context), every scan tries again and reports the reason as the status.
#[derive(Default)]
pub struct UsbScanner {
    context: Option<rusb::Context>,
}

impl std::fmt::Debug for UsbScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsbScanner")
            .field("has_context", &self.context.is_some())
            .finish()
    }
}

impl UsbScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// One scan. Never panics: a missing bus or a failing device is reported, not raised.
    pub fn scan(&mut self) -> UsbReport {
        let context = match &self.context {
            Some(context) => context,
            None => match rusb::Context::new() {
                Ok(context) => self.context.insert(context),
                Err(error) => {
                    return UsbReport {
                        devices: Vec::new(),
                        status: format!("no USB bus: {error}"),
                    };
                }
            },
        };
        let list = match context.devices() {
            Ok(list) => list,
            Err(error) => {
                return UsbReport {
                    devices: Vec::new(),
                    status: format!("USB enumeration failed: {error}"),
                };
            }
        };
        let devices = list
            .iter()
            .filter_map(|device| {
                let descriptor = device.device_descriptor().ok()?;
                let interface_classes: Vec<u8> = (0..descriptor.num_configurations())
                    .filter_map(|index| device.config_descriptor(index).ok())
                    .flat_map(|config| {
                        config
                            .interfaces()
                            .flat_map(|interface| {
                                interface
                                    .descriptors()
                                    .map(|d| d.class_code())
                                    .collect::<Vec<_>>()
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let camera = is_camera(descriptor.class_code(), &interface_classes);
                Some(UsbDeviceInfo {
                    vendor_id: descriptor.vendor_id(),
                    product_id: descriptor.product_id(),
                    bus: device.bus_number(),
                    address: device.address(),
                    class_code: descriptor.class_code(),
                    camera,
                    description: describe(
                        descriptor.vendor_id(),
                        descriptor.product_id(),
                        descriptor.class_code(),
                        camera,
                    ),
                })
            })
            .collect();
        UsbReport {
            devices,
            status: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_interfaces_make_a_camera() {
        assert!(is_camera(0xEF, &[0x0E, 0x0E, 0x01]));
        assert!(is_camera(0x0E, &[]));
        assert!(!is_camera(0x09, &[0x09]));
        assert!(!is_camera(0x00, &[0x08, 0x03]));
    }

    #[test]
    fn descriptions() {
        assert_eq!(describe(0x046d, 0x0825, 0xEF, true), "046d:0825 camera");
        assert_eq!(describe(0x1d6b, 0x0002, 0x09, false), "1d6b:0002 hub");
    }

    #[test]
    fn scanning_never_panics_and_explains_an_empty_list() {
        let report = UsbScanner::new().scan();
        // On a machine without a USB bus the status says why; with one, the list is real.
        assert!(
            report.status.is_empty() || report.devices.is_empty(),
            "{report:?}"
        );
    }
}
