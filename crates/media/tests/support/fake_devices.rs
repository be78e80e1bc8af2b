//! What the browsers' fake devices play: the pattern and a tone (shared by the call tests and
//! the bench).

use hearth_media::pattern;

pub struct FakeDevices {
    _dir: tempfile::TempDir,
    flags: Vec<String>,
}

impl FakeDevices {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("fake devices' folder: {e}"));
        let flags = pattern::write_fake_devices(dir.path())
            .unwrap_or_else(|e| panic!("writing the fake devices' files: {e}"));
        Self { _dir: dir, flags }
    }

    /// The Chromium flags that play them.
    pub fn flags(&self) -> Vec<String> {
        self.flags.clone()
    }
}
