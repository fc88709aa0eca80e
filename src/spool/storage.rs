//! The journal's file I/O, behind a small trait so that tests can run the
//! journal on simulated storage that loses what was not synced, tears
//! writes and fails `fdatasync`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Segment files (fixed size, numbered by slot) and large-message files
/// (by name) of one journal.
pub trait Storage: Send {
    /// The segment slots that exist.
    fn slots(&mut self) -> io::Result<Vec<u32>>;
    /// Creates segment `slot`, `size` octets of zeros, durable (data and
    /// name) when this returns.
    fn create(&mut self, slot: u32, size: u64) -> io::Result<()>;
    fn size(&mut self, slot: u32) -> io::Result<u64>;
    /// Fills `buf` from `offset` (short only at the end of the file).
    fn read_at(&mut self, slot: u32, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes `parts` one after the other from `offset` (one vectored
    /// write where the platform has it).
    fn write_at(&mut self, slot: u32, offset: u64, parts: &[&[u8]]) -> io::Result<()>;
    /// `fdatasync`: what was written to `slot` is on stable storage.
    fn sync(&mut self, slot: u32) -> io::Result<()>;
    /// Writes and syncs a large message's file (its name is made durable
    /// by [`Storage::sync_large_dir`]).
    fn write_large(&mut self, name: &str, parts: &[&[u8]]) -> io::Result<()>;
    fn sync_large_dir(&mut self) -> io::Result<()>;
    /// Moves a synced file (same filesystem) in as large file `name`.
    fn adopt_large(&mut self, name: &str, from: &Path) -> io::Result<()>;
    fn read_large(&mut self, name: &str) -> io::Result<Vec<u8>>;
    fn remove_large(&mut self, name: &str) -> io::Result<()>;
    /// Every large file's name.
    fn large_names(&mut self) -> io::Result<Vec<String>>;
}

/// A journal directory on disk: `segment-NNNNNN` files and `large/`.
pub struct Disk {
    dir: PathBuf,
    large: PathBuf,
    files: HashMap<u32, File>,
}

pub fn segment_path(dir: &Path, slot: u32) -> PathBuf {
    dir.join(format!("segment-{slot:06}"))
}

impl Disk {
    /// Opens (creating) `dir` and `dir/large`.
    pub fn open(dir: &Path) -> io::Result<Disk> {
        let large = dir.join("large");
        fs::create_dir_all(&large)?;
        File::open(dir)?.sync_all()?;
        if let Some(parent) = dir.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(Disk {
            dir: dir.to_path_buf(),
            large,
            files: HashMap::new(),
        })
    }

    /// Opens an existing journal directory without creating or syncing
    /// anything (offline reading).
    pub fn open_existing(dir: &Path) -> io::Result<Disk> {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no journal", dir.display()),
            ));
        }
        Ok(Disk {
            dir: dir.to_path_buf(),
            large: dir.join("large"),
            files: HashMap::new(),
        })
    }

    fn file(&mut self, slot: u32) -> io::Result<&File> {
        if !self.files.contains_key(&slot) {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment_path(&self.dir, slot))?;
            self.files.insert(slot, f);
        }
        self.files
            .get(&slot)
            .ok_or_else(|| io::Error::other("segment vanished"))
    }
}

impl Storage for Disk {
    fn slots(&mut self) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix("segment-"))
                .and_then(|n| n.parse().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn create(&mut self, slot: u32, size: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, slot);
        let tmp = path.with_extension("new");
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // Zeros written, not a sparse or fallocated file: later writes
        // then change no extent, and fdatasync flushes data only.
        let zeros = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.files.insert(slot, f);
        Ok(())
    }

    fn size(&mut self, slot: u32) -> io::Result<u64> {
        Ok(self.file(slot)?.metadata()?.len())
    }

    fn read_at(&mut self, slot: u32, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = self.file(slot)?;
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    #[allow(unsafe_code)] // FFI (libc); SAFETY comment at the call
    fn write_at(&mut self, slot: u32, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file(slot)?.as_raw_fd();
        let mut iov: Vec<libc::iovec> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut at = offset;
        let mut first = 0;
        while first < iov.len() {
            let count = (iov.len() - first).min(1024) as libc::c_int;
            // SAFETY: the iovecs point into `parts`, alive for this call.
            let n = unsafe { libc::pwritev(fd, iov[first..].as_ptr(), count, at as libc::off_t) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut n = n as usize;
            at += n as u64;
            while first < iov.len() && n >= iov[first].iov_len {
                n -= iov[first].iov_len;
                first += 1;
            }
            if n > 0 {
                iov[first].iov_base = (iov[first].iov_base as usize + n) as *mut libc::c_void;
                iov[first].iov_len -= n;
            }
        }
        Ok(())
    }

    fn sync(&mut self, slot: u32) -> io::Result<()> {
        self.file(slot)?.sync_data()
    }

    fn write_large(&mut self, name: &str, parts: &[&[u8]]) -> io::Result<()> {
        let path = self.large.join(name);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            for p in parts {
                f.write_all(p)?;
            }
            f.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&path);
        }
        result
    }

    fn sync_large_dir(&mut self) -> io::Result<()> {
        File::open(&self.large)?.sync_all()
    }

    fn adopt_large(&mut self, name: &str, from: &Path) -> io::Result<()> {
        fs::rename(from, self.large.join(name))
    }

    fn read_large(&mut self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.large.join(name))
    }

    fn remove_large(&mut self, name: &str) -> io::Result<()> {
        fs::remove_file(self.large.join(name))
    }

    fn large_names(&mut self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.large) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in entries {
            if let Some(n) = e?.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }
}

/// Simulated storage (tests): what was written but not synced can be
/// dropped or torn by [`Sim::crash`], and syncs can be made to fail with
/// `EIO`, after which (as Linux does, the "fsyncgate" behaviour) the
/// failed writes never become durable.
#[derive(Clone, Default)]
pub struct Sim {
    inner: std::sync::Arc<std::sync::Mutex<SimInner>>,
}

#[derive(Default, Clone)]
struct SimInner {
    segments: BTreeMap<u32, SimFile>,
    large: BTreeMap<String, Vec<u8>>,
    fail_sync: bool,
    syncs: u64,
}

#[derive(Default, Clone)]
struct SimFile {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Writes since the last sync, in order.
    unsynced: Vec<(u64, Vec<u8>)>,
}

fn apply(file: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if file.len() < end {
        file.resize(end, 0);
    }
    file[offset as usize..end].copy_from_slice(data);
}

impl Sim {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on every sync fails with EIO (or works again).
    pub fn fail_syncs(&self, fail: bool) {
        self.lock().fail_sync = fail;
    }

    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Unsynced writes not yet durable, over all segments.
    pub fn unsynced_writes(&self) -> usize {
        self.lock()
            .segments
            .values()
            .map(|f| f.unsynced.len())
            .sum()
    }

    /// The storage a crash leaves: of the writes not synced, the first
    /// `keep` survive (in order, over all segments by slot), the next one
    /// survives only for its first `tear` octets, the rest are lost.
    pub fn crash(&self, keep: usize, tear: usize) -> Sim {
        let inner = self.lock();
        let mut out = SimInner {
            large: inner.large.clone(),
            ..Default::default()
        };
        let mut left = keep;
        let mut torn = false;
        for (slot, f) in &inner.segments {
            let mut d = f.durable.clone();
            for (off, data) in &f.unsynced {
                if left > 0 {
                    apply(&mut d, *off, data);
                    left -= 1;
                } else if !torn {
                    apply(&mut d, *off, &data[..tear.min(data.len())]);
                    torn = true;
                }
            }
            out.segments.insert(
                *slot,
                SimFile {
                    current: d.clone(),
                    durable: d,
                    unsynced: Vec::new(),
                },
            );
        }
        Sim {
            inner: std::sync::Arc::new(std::sync::Mutex::new(out)),
        }
    }
}

impl Storage for Sim {
    fn slots(&mut self) -> io::Result<Vec<u32>> {
        Ok(self.lock().segments.keys().copied().collect())
    }

    fn create(&mut self, slot: u32, size: u64) -> io::Result<()> {
        let zeros = vec![0; size as usize];
        self.lock().segments.insert(
            slot,
            SimFile {
                durable: zeros.clone(),
                current: zeros,
                unsynced: Vec::new(),
            },
        );
        Ok(())
    }

    fn size(&mut self, slot: u32) -> io::Result<u64> {
        self.lock()
            .segments
            .get(&slot)
            .map(|f| f.current.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn read_at(&mut self, slot: u32, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let inner = self.lock();
        let f = inner
            .segments
            .get(&slot)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let start = (offset as usize).min(f.current.len());
        let n = buf.len().min(f.current.len() - start);
        buf[..n].copy_from_slice(&f.current[start..start + n]);
        Ok(n)
    }

    fn write_at(&mut self, slot: u32, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        let mut inner = self.lock();
        let f = inner
            .segments
            .get_mut(&slot)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let data: Vec<u8> = parts.concat();
        apply(&mut f.current, offset, &data);
        f.unsynced.push((offset, data));
        Ok(())
    }

    fn sync(&mut self, slot: u32) -> io::Result<()> {
        let mut inner = self.lock();
        inner.syncs += 1;
        let fail = inner.fail_sync;
        let f = inner
            .segments
            .get_mut(&slot)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let writes = std::mem::take(&mut f.unsynced);
        if fail {
            // The pages are marked clean: what they held is lost.
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        for (off, data) in writes {
            apply(&mut f.durable, off, &data);
        }
        Ok(())
    }

    fn write_large(&mut self, name: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.lock().large.insert(name.to_string(), parts.concat());
        Ok(())
    }

    fn sync_large_dir(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn adopt_large(&mut self, name: &str, from: &Path) -> io::Result<()> {
        let data = fs::read(from)?;
        fs::remove_file(from)?;
        self.lock().large.insert(name.to_string(), data);
        Ok(())
    }

    fn read_large(&mut self, name: &str) -> io::Result<Vec<u8>> {
        self.lock()
            .large
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn remove_large(&mut self, name: &str) -> io::Result<()> {
        self.lock().large.remove(name);
        Ok(())
    }

    fn large_names(&mut self) -> io::Result<Vec<String>> {
        Ok(self.lock().large.keys().cloned().collect())
    }
}
