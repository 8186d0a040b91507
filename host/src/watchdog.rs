//! The Linux watchdog device (`/dev/watchdog`, e.g. the softdog module), the layer below the
//! fencing guard: armed only while this node runs a writable primary, kept alive once per HA
//! loop, disarmed with the magic close (`V`) when it stops being one. If the loop or the
//! whole process stops (frozen, killed, the guard dead too), the kernel resets the machine
//! when the timeout (`ttl - safety_margin`) passes, before another node can take the leader
//! key.
//!
//! May touch: the watchdog device only.

use crate::config::{WatchdogConfig, WatchdogMode};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;

nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc_int);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc_int);

#[allow(non_camel_case_types)]
type libc_int = std::ffi::c_int;

/// Why the watchdog could not be armed.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The device could not be opened.
    #[error("cannot open the watchdog device {device}: {source}")]
    Open {
        /// The device path.
        device: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The device refused the timeout, or is no watchdog.
    #[error("the watchdog device {device} refused a {timeout} s timeout: {source}")]
    Timeout {
        /// The device path.
        device: String,
        /// The timeout asked for.
        timeout: u64,
        /// The error.
        source: nix::Error,
    },
    /// The device's timeout is longer than the leader key's margin allows.
    #[error(
        "the watchdog device {device} runs with a {actual} s timeout, longer than the {wanted} s that fence this node before its leader key expires"
    )]
    Unsafe {
        /// The device path.
        device: String,
        /// The timeout in effect.
        actual: u64,
        /// The timeout needed.
        wanted: u64,
    },
}

/// The watchdog as the supervisor drives it.
#[derive(Debug)]
pub struct Watchdog {
    cfg: WatchdogConfig,
    armed: Option<File>,
    /// Until when a device that could not be armed in `required` mode counts as unusable
    /// (a `ttl` after the failure: the node stays out of elections instead of winning one it
    /// cannot take, then tries again).
    failed_until: Option<std::time::Instant>,
}

impl Watchdog {
    /// A watchdog, not armed.
    pub fn new(cfg: WatchdogConfig) -> Watchdog {
        Watchdog {
            cfg,
            armed: None,
            failed_until: None,
        }
    }

    /// Replace the settings (a reload); an armed device is re-armed at the next
    /// [`Watchdog::activate`].
    pub fn set_config(&mut self, cfg: WatchdogConfig) {
        if cfg != self.cfg {
            self.disable();
            self.cfg = cfg;
            self.failed_until = None;
        }
    }

    /// `required` mode and the device cannot be used: this node must not lead (Patroni's
    /// `watchdog_failed`): it cannot be opened for writing, or arming it failed less than a
    /// `ttl` ago.
    pub fn required_but_unusable(&self) -> bool {
        self.cfg.mode == WatchdogMode::Required
            && self.armed.is_none()
            && (self
                .failed_until
                .is_some_and(|t| std::time::Instant::now() < t)
                || nix::unistd::access(&self.cfg.device, nix::unistd::AccessFlags::W_OK).is_err())
    }

    /// Arm the device for a leader key of `ttl` seconds, before this node becomes writable.
    /// `Ok(false)`: not armed, and that is allowed (mode off, or automatic without a usable
    /// device; the reason is logged). An error: `required` mode and the device could not be
    /// armed safely: the node must not become writable.
    pub fn activate(&mut self, ttl: u64) -> Result<bool, WatchdogError> {
        if self.cfg.mode == WatchdogMode::Off {
            return Ok(false);
        }
        if self.armed.is_some() {
            return Ok(true);
        }
        match self.arm(ttl) {
            Ok(f) => {
                self.armed = Some(f);
                Ok(true)
            }
            Err(e) if self.cfg.mode == WatchdogMode::Automatic => {
                tracing::warn!(error = %e, "no watchdog: leading without one (watchdog.mode: automatic)");
                Ok(false)
            }
            Err(e) => {
                self.failed_until =
                    Some(std::time::Instant::now() + std::time::Duration::from_secs(ttl));
                Err(e)
            }
        }
    }

    fn arm(&self, ttl: u64) -> Result<File, WatchdogError> {
        let device = self.cfg.device.display().to_string();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.cfg.device)
            .map_err(|source| WatchdogError::Open {
                device: device.clone(),
                source,
            })?;
        let wanted = self.cfg.timeout(ttl);
        let mut t = wanted as libc_int;
        // SAFETY: the fd is open for the whole call and `t` is a valid c_int the kernel
        // reads and writes.
        let set = unsafe { wdioc_settimeout(f.as_raw_fd(), &mut t) };
        if let Err(source) = set {
            // The device is open, and a real watchdog may already be ticking: close it with
            // the magic character so that it stops.
            let _ = f.write_all(b"V");
            return Err(WatchdogError::Timeout {
                device,
                timeout: wanted,
                source,
            });
        }
        let mut actual: libc_int = 0;
        // SAFETY: as above.
        let _ = unsafe { wdioc_gettimeout(f.as_raw_fd(), &mut actual) };
        let actual = u64::try_from(actual).unwrap_or(0);
        if actual > wanted {
            let _ = f.write_all(b"V");
            return Err(WatchdogError::Unsafe {
                device,
                actual,
                wanted,
            });
        }
        tracing::info!(device = %device, timeout_s = actual.max(1), "watchdog armed");
        Ok(f)
    }

    /// Arm and at once disarm: whether the device can be armed, before work that would be
    /// wasted if it cannot (a bootstrap). `Ok` as [`Watchdog::activate`].
    pub fn trial(&mut self, ttl: u64) -> Result<(), WatchdogError> {
        if self.armed.is_some() {
            return Ok(());
        }
        let armed = self.activate(ttl)?;
        if armed {
            self.disable();
        }
        Ok(())
    }

    /// Keep an armed device from firing (once per HA loop while primary).
    pub fn keepalive(&mut self) {
        let Some(f) = &self.armed else { return };
        let mut dummy: libc_int = 0;
        // SAFETY: the fd is open; WDIOC_KEEPALIVE ignores its argument.
        if let Err(e) = unsafe { wdioc_keepalive(f.as_raw_fd(), &mut dummy) } {
            tracing::error!(error = %e, "watchdog keepalive failed");
        }
    }

    /// Disarm: the magic close, so that closing the device does not reset the machine.
    pub fn disable(&mut self) {
        if let Some(mut f) = self.armed.take() {
            match f.write_all(b"V") {
                Ok(()) => tracing::info!("watchdog disarmed"),
                Err(e) => tracing::error!(
                    error = %e,
                    "could not disarm the watchdog (magic close); the machine will reset when it expires"
                ),
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disable();
    }
}
