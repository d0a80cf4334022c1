//! The board's own health, for the status line: the SoC temperature and, where the firmware
//! says so, throttling. A Pi in a sealed box slows down at 80–85 °C, and whoever reads the
//! status wants to see why frames/s fell.
//!
//! - Temperature: the kernel's thermal zones (`/sys/class/thermal/thermal_zone*/temp`, in
//!   millidegrees Celsius). The zone whose `type` names the CPU or SoC is taken (`cpu-thermal`
//!   on a Raspberry Pi, `CPU-therm` on a Jetson), else the first zone.
//! - Throttling: the Raspberry Pi firmware's flags (`get_throttled` under its sysfs node, the
//!   number `vcgencmd get_throttled` prints). Other boards do not report it: no flags.
//!
//! Both are found once at start and read at each status line (a few small sysfs reads every
//! status period); a board without them reports neither.

use std::path::{Path, PathBuf};

/// Raspberry Pi firmware throttling flags (`vcgencmd get_throttled`), bits 0–3: now.
pub const THROTTLED_NOW: [(u32, &str); 4] = [
    (1 << 0, "under_voltage"),
    (1 << 1, "frequency_capped"),
    (1 << 2, "throttled"),
    (1 << 3, "soft_temperature_limit"),
];
/// Bits 16–19: the same conditions, occurred since boot.
pub const THROTTLED_SINCE_BOOT_SHIFT: u32 = 16;

/// Where this board's temperature and throttling flags are, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct BoardHealth {
    temperature: Option<PathBuf>,
    throttled: Option<PathBuf>,
}

/// One reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BoardReading {
    /// SoC temperature, °C (one decimal).
    pub soc_temp_c: Option<f64>,
    /// The firmware's throttling flags ([`THROTTLED_NOW`], and the same shifted by
    /// [`THROTTLED_SINCE_BOOT_SHIFT`] for "since boot").
    pub throttled: Option<u32>,
}

impl BoardHealth {
    /// This machine's.
    pub fn find() -> BoardHealth {
        BoardHealth::under(Path::new("/sys"))
    }

    /// The one described by a sysfs tree mounted at `sys`.
    pub fn under(sys: &Path) -> BoardHealth {
        let mut zones: Vec<PathBuf> = std::fs::read_dir(sys.join("class/thermal"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        zones.retain(|z| z.file_name().is_some_and(|n| n.to_string_lossy().starts_with("thermal_zone")));
        // thermal_zone2 before thermal_zone10.
        zones.sort_by_key(|z| {
            z.file_name().and_then(|n| n.to_string_lossy().trim_start_matches("thermal_zone").parse::<u32>().ok())
        });
        let names_the_soc = |zone: &PathBuf| {
            std::fs::read_to_string(zone.join("type")).is_ok_and(|t| {
                let t = t.trim().to_ascii_lowercase();
                t.contains("cpu") || t.contains("soc")
            })
        };
        let zone = zones.iter().find(|z| names_the_soc(z)).or(zones.first());
        let temperature = zone.map(|z| z.join("temp")).filter(|t| t.is_file());
        let throttled = Some(sys.join("devices/platform/soc/soc:firmware/get_throttled")).filter(|p| p.is_file());
        BoardHealth { temperature, throttled }
    }

    /// What the board says now (nothing it cannot say, or what fails to read or parse).
    pub fn read(&self) -> BoardReading {
        let read = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
        let soc_temp_c = read(&self.temperature)
            .and_then(|t| t.trim().parse::<i64>().ok())
            .map(|milli| (milli as f64 / 100.0).round() / 10.0);
        // The kernel prints the flags in hex without a prefix (`50005`); accept `0x` too.
        let throttled =
            read(&self.throttled).and_then(|t| u32::from_str_radix(t.trim().trim_start_matches("0x"), 16).ok());
        BoardReading { soc_temp_c, throttled }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs tree as a Raspberry Pi 4's kernel lays it out (the parts read here).
    fn pi_tree(dir: &Path, temp: &str, throttled: &str) {
        for (zone, kind, t) in [("thermal_zone0", "cpu-thermal", temp), ("thermal_zone1", "pmic-thermal", "31000")] {
            let z = dir.join("class/thermal").join(zone);
            std::fs::create_dir_all(&z).unwrap();
            std::fs::write(z.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(z.join("temp"), format!("{t}\n")).unwrap();
        }
        // Not a zone: the kernel puts cooling devices in the same folder.
        std::fs::create_dir_all(dir.join("class/thermal/cooling_device0")).unwrap();
        let fw = dir.join("devices/platform/soc/soc:firmware");
        std::fs::create_dir_all(&fw).unwrap();
        std::fs::write(fw.join("get_throttled"), format!("{throttled}\n")).unwrap();
    }

    #[test]
    fn a_pi_reports_its_soc_temperature_and_throttling() {
        let dir = tempfile::tempdir().unwrap();
        pi_tree(dir.path(), "81234", "50005");
        let r = BoardHealth::under(dir.path()).read();
        assert_eq!(r, BoardReading { soc_temp_c: Some(81.2), throttled: Some(0x50005) });
        let now: Vec<&str> =
            THROTTLED_NOW.iter().filter(|(bit, _)| r.throttled.unwrap() & bit != 0).map(|(_, n)| *n).collect();
        assert_eq!(now, ["under_voltage", "throttled"]);
    }

    #[test]
    fn the_zone_naming_the_cpu_wins_and_a_board_without_sensors_reports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A Jetson-like order: the CPU zone is not the first one.
        for (zone, kind, t) in [("thermal_zone0", "AO-therm", "30000"), ("thermal_zone1", "CPU-therm", "45500")] {
            let z = dir.path().join("class/thermal").join(zone);
            std::fs::create_dir_all(&z).unwrap();
            std::fs::write(z.join("type"), kind).unwrap();
            std::fs::write(z.join("temp"), t).unwrap();
        }
        assert_eq!(BoardHealth::under(dir.path()).read(), BoardReading { soc_temp_c: Some(45.5), throttled: None });

        let empty = tempfile::tempdir().unwrap();
        assert_eq!(BoardHealth::under(empty.path()).read(), BoardReading::default());
        // A sensor that cannot be read right now (an I2C hiccup prints garbage or fails): nothing.
        pi_tree(empty.path(), "not a number", "zz");
        assert_eq!(BoardHealth::under(empty.path()).read(), BoardReading::default());
    }
}
