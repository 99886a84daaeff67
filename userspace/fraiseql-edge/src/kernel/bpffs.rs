//! bpffs and tracefs: the kernel layer needs the first for its pins and the
//! second to attach the tracepoint. Both are absent on a fresh machine.

use std::path::{Path, PathBuf};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::statfs,
};

use super::KernelError;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Serializes check-then-mount within a process: two threads mounting at
/// once would stack two bpffs instances and hide the first one's pins.
static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
const TRACEFS: &str = "/sys/kernel/tracing";

/// The nearest existing ancestor of `path` (itself included).
fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| p.exists()).map(Path::to_path_buf)
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` lies on bpffs; mounts `/sys/fs/bpf` when the pin
/// directory is under it and nothing is mounted there yet.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), KernelError> {
    let _serial = MOUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let probe = existing_ancestor(pin_dir).unwrap_or_else(|| PathBuf::from("/"));
    if is_bpffs(&probe) {
        return Ok(());
    }
    if pin_dir.starts_with(DEFAULT_BPFFS) && !is_bpffs(Path::new(DEFAULT_BPFFS)) {
        mount(
            Some("bpf"),
            DEFAULT_BPFFS,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| {
            KernelError::Filesystem(format!(
                "bpffs is not mounted at {DEFAULT_BPFFS} and mounting it failed: {e}"
            ))
        })?;
        tracing::info!("mounted bpffs at {DEFAULT_BPFFS}");
        return Ok(());
    }
    Err(KernelError::Filesystem(format!(
        "pin_path {} is not on a bpffs mount (mount -t bpf bpf {DEFAULT_BPFFS})",
        pin_dir.display()
    )))
}

/// Makes the tracepoint visible: mounts tracefs at `/sys/kernel/tracing` if
/// neither it nor the debugfs copy is there.
pub fn ensure_tracefs() -> Result<(), KernelError> {
    let _serial = MOUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let event = "events/sock/inet_sock_set_state";
    if Path::new(TRACEFS).join(event).exists()
        || Path::new("/sys/kernel/debug/tracing").join(event).exists()
    {
        return Ok(());
    }
    mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        KernelError::Filesystem(format!(
            "tracefs is not mounted and mounting it failed: {e}"
        ))
    })?;
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok(())
}
