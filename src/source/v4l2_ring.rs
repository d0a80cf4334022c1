//! The ring of memory-mapped V4L2 capture buffers a camera fills and vigil drains.
//!
//! Why not the `v4l` crate's `MmapStream::next()`: it re-queues the buffer it
//! handed out last *before* waiting for the next one, and when that wait times
//! out it re-queues the same (still queued) buffer on the following call, which
//! the kernel refuses with EINVAL. Every camera slower than the wait (any
//! camera, under load) would be "lost" every other read; the emulated-board
//! test saw exactly that on vivid. Here a buffer is re-queued right after it
//! was copied, so a timeout leaves nothing half done.
//!
//! The ioctls, `mmap` and the kernel structs still come from the `v4l` crate.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use v4l::buffer::Flags;
use v4l::device::Handle;
use v4l::memory::Memory;
use v4l::v4l_sys::{v4l2_buffer, v4l2_requestbuffers};
use v4l::v4l2;

/// What the driver reported about a dequeued buffer.
#[derive(Debug, Clone, Copy)]
pub struct Filled {
    /// Bytes of image data in the buffer.
    pub bytes_used: usize,
    /// The driver flagged the buffer as corrupt (`V4L2_BUF_FLAG_ERROR`).
    pub error: bool,
}

/// A streaming capture ring: buffers requested, mapped, queued and the stream on.
/// Dropping it turns the stream off and unmaps the buffers (errors ignored: the
/// device may be gone).
pub struct MmapRing {
    handle: Arc<Handle>,
    buffers: Vec<(*mut u8, usize)>,
}

// SAFETY: the mappings belong to this ring alone; it moves between threads whole.
unsafe impl Send for MmapRing {}

const CAPTURE: u32 = v4l::buffer::Type::VideoCapture as u32;

fn ioctl<T>(handle: &Handle, request: v4l2::vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is the struct `request` expects, borrowed for the call.
    unsafe { v4l2::ioctl(handle.fd(), request, (arg as *mut T).cast()) }
}

fn buffer_desc(index: u32) -> v4l2_buffer {
    // SAFETY: v4l2_buffer is a plain C struct; all-zero is its documented initial state.
    v4l2_buffer { index, type_: CAPTURE, memory: Memory::Mmap as u32, ..unsafe { std::mem::zeroed() } }
}

impl MmapRing {
    /// Request `count` buffers from the driver (it may grant fewer or more), map and
    /// queue them all, and start streaming.
    pub fn start(handle: Arc<Handle>, count: u32) -> io::Result<Self> {
        // SAFETY: plain C struct, zero is valid.
        let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        (req.count, req.type_, req.memory) = (count, CAPTURE, Memory::Mmap as u32);
        ioctl(&handle, v4l2::vidioc::VIDIOC_REQBUFS, &mut req)?;
        let mut ring = MmapRing { handle, buffers: Vec::with_capacity(req.count as usize) };
        for index in 0..req.count {
            let mut buf = buffer_desc(index);
            ioctl(&ring.handle, v4l2::vidioc::VIDIOC_QUERYBUF, &mut buf)?;
            let len = buf.length as usize;
            // SAFETY: maps the driver's buffer `index` at the offset it gave; unmapped in Drop.
            let ptr = unsafe {
                v4l2::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    ring.handle.fd(),
                    buf.m.offset as libc::off_t,
                )?
            };
            ring.buffers.push((ptr.cast(), len));
        }
        for index in 0..req.count {
            ioctl(&ring.handle, v4l2::vidioc::VIDIOC_QBUF, &mut buffer_desc(index))?;
        }
        let mut typ = CAPTURE;
        ioctl(&ring.handle, v4l2::vidioc::VIDIOC_STREAMON, &mut typ)?;
        Ok(ring)
    }

    /// Wait up to `timeout` for a filled buffer; hand it to `take` and queue it again.
    /// `Ok(None)`: nothing arrived in time. An error means the stream is broken
    /// (the device vanished, the driver stopped): reopen.
    pub fn next<R>(&mut self, timeout: Duration, take: impl FnOnce(&[u8], Filled) -> R) -> io::Result<Option<R>> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        match self.handle.poll(libc::POLLIN, ms) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            // A signal (SIGHUP for a reload) landed on this thread: not the camera's fault.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut buf = buffer_desc(0);
        ioctl(&self.handle, v4l2::vidioc::VIDIOC_DQBUF, &mut buf)?;
        let Some(&(ptr, len)) = self.buffers.get(buf.index as usize) else {
            return Err(io::Error::other(format!("driver returned buffer {} of {}", buf.index, self.buffers.len())));
        };
        // SAFETY: buffer `index` is dequeued, so the driver does not write it until QBUF below.
        let data = unsafe { std::slice::from_raw_parts(ptr, len) };
        let filled = Filled {
            bytes_used: (buf.bytesused as usize).min(len),
            error: Flags::from(buf.flags).contains(Flags::ERROR),
        };
        let out = take(data, filled);
        ioctl(&self.handle, v4l2::vidioc::VIDIOC_QBUF, &mut buffer_desc(buf.index))?;
        Ok(Some(out))
    }
}

impl Drop for MmapRing {
    fn drop(&mut self) {
        let mut typ = CAPTURE;
        let _ = ioctl(&self.handle, v4l2::vidioc::VIDIOC_STREAMOFF, &mut typ);
        for &(ptr, len) in &self.buffers {
            // SAFETY: mapped in `start` with this length, not used after this.
            let _ = unsafe { v4l2::munmap(ptr.cast(), len) };
        }
        // SAFETY: plain C struct, zero is valid.
        let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        (req.type_, req.memory) = (CAPTURE, Memory::Mmap as u32);
        let _ = ioctl(&self.handle, v4l2::vidioc::VIDIOC_REQBUFS, &mut req);
    }
}
