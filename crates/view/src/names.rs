//! Who the devices behind changes are, for people.

use std::collections::BTreeMap;

use fieldsync_identity::DeviceId;

/// What a view knows of devices: names (from their certificates) and which
/// device is this one. Text views label a device `d3f1a2b4 (R. Alvarez)`,
/// `d3f1a2b4 (this device)`, or just `d3f1a2b4`; JSON views add a
/// `device_name` field where a name is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceNames {
    names: BTreeMap<DeviceId, String>,
    this_device: Option<DeviceId>,
}

impl DeviceNames {
    /// Knows no device: every device is shown by its short id.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `device` as this one (text views say "this device").
    pub fn with_this_device(mut self, device: DeviceId) -> Self {
        self.this_device = Some(device);
        self
    }

    /// Adds (or replaces) the name of `device`.
    pub fn insert(&mut self, device: DeviceId, name: impl Into<String>) {
        self.names.insert(device, name.into());
    }

    /// The name of `device`, if known.
    pub fn name(&self, device: &DeviceId) -> Option<&str> {
        self.names.get(device).map(String::as_str)
    }

    /// The text label of `device`: its short id, followed by "(this device)"
    /// or by its name in parentheses when known.
    pub fn label(&self, device: &DeviceId) -> String {
        if self.this_device.as_ref() == Some(device) {
            format!("{} (this device)", device.short())
        } else if let Some(name) = self.name(device) {
            format!("{} ({name})", device.short())
        } else {
            device.short()
        }
    }
}

impl FromIterator<(DeviceId, String)> for DeviceNames {
    fn from_iter<I: IntoIterator<Item = (DeviceId, String)>>(iter: I) -> Self {
        Self {
            names: iter.into_iter().collect(),
            this_device: None,
        }
    }
}
