//! `vigil cameras`: the V4L2 capture devices here, with their formats and sizes.

use super::{EXIT_OK, Error};
use vigil::source::v4l2;

/// List every capture device.
pub fn run() -> Result<i32, Error> {
    let cameras = v4l2::list_cameras();
    if cameras.is_empty() {
        outln!("no V4L2 capture devices found (/dev/video*)");
    }
    for c in cameras {
        outln!("{}: {} ({})", c.path.display(), c.card, c.driver);
        for f in &c.formats {
            outln!("  {}", v4l2::describe_offer(f));
        }
    }
    Ok(EXIT_OK)
}
