//! The device pool: the compute devices this process may use (the CPU, and CUDA ordinals
//! when built with the `cuda` feature) and who holds them. PRM judges lease a device when
//! they load; the trainer leases from the same pool, so `/info` shows what runs where.
//! Leases are counted, not exclusive: a CPU is shared by everything that leases it.

use std::sync::{Arc, Mutex};

use candle_core::Device;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}; use auto, cpu or cuda:N")]
    Unknown(String),
    #[error("device {0} needs a build with `--features cuda`")]
    NoCuda(String),
    #[error("cannot open {0}: {1}")]
    Open(String, String),
}

struct Slot {
    name: String,
    device: Device,
    /// Names of the current holders (a model id, a training job).
    holders: Mutex<Vec<String>>,
}

pub struct DevicePool {
    slots: Vec<Slot>,
}

/// A device held by someone; dropping it returns the lease.
pub struct Lease {
    pool: Arc<DevicePool>,
    slot: usize,
    holder: String,
}

impl Lease {
    pub fn device(&self) -> &Device {
        &self.pool.slots[self.slot].device
    }
    pub fn name(&self) -> &str {
        &self.pool.slots[self.slot].name
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut h = lock(&self.pool.slots[self.slot].holders);
        if let Some(i) = h.iter().position(|x| *x == self.holder) {
            h.remove(i);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A holder list stays valid even if a thread panicked while holding it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceInfo {
    pub name: String,
    pub holders: Vec<String>,
}

pub fn open(name: &str) -> Result<Device, DeviceError> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(ord) = name
        .strip_prefix("cuda:")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return Err(DeviceError::Unknown(name.into()));
    };
    if !cfg!(feature = "cuda") {
        return Err(DeviceError::NoCuda(name.into()));
    }
    Device::new_cuda(ord).map_err(|e| DeviceError::Open(name.into(), e.to_string()))
}

impl DevicePool {
    /// `auto` (every CUDA device when built with `cuda`, else the CPU), or a comma list of
    /// `cpu` / `cuda:N`.
    pub fn new(spec: &str) -> Result<Arc<DevicePool>, DeviceError> {
        let names: Vec<String> = if spec == "auto" {
            let mut v: Vec<String> = Vec::new();
            if cfg!(feature = "cuda") {
                let mut i = 0;
                while i < 16 && open(&format!("cuda:{i}")).is_ok() {
                    v.push(format!("cuda:{i}"));
                    i += 1;
                }
            }
            if v.is_empty() {
                v.push("cpu".into());
            }
            v
        } else {
            spec.split(',').map(|s| s.trim().to_string()).collect()
        };
        let mut slots = Vec::with_capacity(names.len());
        for n in names {
            slots.push(Slot {
                device: open(&n)?,
                name: n,
                holders: Mutex::new(Vec::new()),
            });
        }
        Ok(Arc::new(DevicePool { slots }))
    }

    /// Lease the device with the fewest holders (the first on ties).
    pub fn lease(self: &Arc<Self>, holder: &str) -> Lease {
        let slot = (0..self.slots.len())
            .min_by_key(|&i| lock(&self.slots[i].holders).len())
            .unwrap_or(0);
        lock(&self.slots[slot].holders).push(holder.to_string());
        Lease {
            pool: self.clone(),
            slot,
            holder: holder.to_string(),
        }
    }

    pub fn list(&self) -> Vec<DeviceInfo> {
        self.slots
            .iter()
            .map(|s| DeviceInfo {
                name: s.name.clone(),
                holders: lock(&s.holders).clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_counted_and_returned() {
        let pool = DevicePool::new("cpu").unwrap();
        let a = pool.lease("judge:a");
        let b = pool.lease("train:1");
        assert_eq!(a.name(), "cpu");
        assert_eq!(pool.list()[0].holders, vec!["judge:a", "train:1"]);
        drop(b);
        assert_eq!(pool.list()[0].holders, vec!["judge:a"]);
        drop(a);
        assert!(pool.list()[0].holders.is_empty());
    }

    #[test]
    fn cuda_needs_the_feature_and_names_are_checked() {
        assert!(matches!(
            DevicePool::new("gpu7"),
            Err(DeviceError::Unknown(_))
        ));
        if !cfg!(feature = "cuda") {
            assert!(matches!(
                DevicePool::new("cuda:0"),
                Err(DeviceError::NoCuda(_))
            ));
        }
    }
}
