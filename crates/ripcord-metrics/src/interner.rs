//! Names to series, with a cap: past `max_names` names per policy, new names
//! share one series labelled `name="other"`.
//!
//! Each policy has an open-addressing table of twice `max_names` slots (a
//! power of two), each slot set once and never cleared, so lookups and
//! inserts never lock: a lookup hashes the name and reads slots until it
//! finds the name or an empty slot; an insert claims the first empty slot of
//! the name's probe sequence with a compare-and-set (`OnceLock::set`), and a
//! writer that loses the slot goes on probing, so a name is never stored
//! twice. The table is allocated on the policy's first name.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use ripcord::Name;

use crate::series::{Series, POLICIES};

/// The `name` label of the series that names past the cap share.
pub const OTHER: &str = "other";

type Slot = OnceLock<(Name, Arc<Series>)>;

struct PolicyNames {
    table: OnceLock<Box<[Slot]>>,
    /// Names with a series of their own (may run one over per racing
    /// writer for an instant, never for good).
    len: AtomicUsize,
    other: OnceLock<Arc<Series>>,
}

pub(crate) struct Interner {
    policies: [PolicyNames; POLICIES.len()],
    hasher: foldhash::fast::RandomState,
    max_names: usize,
    bounds: usize,
}

impl Interner {
    pub(crate) fn new(max_names: usize, bounds: usize) -> Self {
        Interner {
            policies: std::array::from_fn(|_| PolicyNames {
                table: OnceLock::new(),
                len: AtomicUsize::new(0),
                other: OnceLock::new(),
            }),
            hasher: foldhash::fast::RandomState::default(),
            max_names,
            bounds,
        }
    }

    fn table(&self, policy: usize) -> &[Slot] {
        self.policies[policy].table.get_or_init(|| {
            let size = self.max_names.saturating_mul(2).next_power_of_two();
            (0..size).map(|_| OnceLock::new()).collect()
        })
    }

    /// Runs `f` on the series of `name` (creating it, or folding the name
    /// into `other`), without cloning the series' `Arc` when it exists.
    #[inline]
    pub(crate) fn with<R>(
        &self,
        policy: usize,
        name: &Name,
        f: impl FnOnce(&Arc<Series>) -> R,
    ) -> R {
        if name.as_bytes() == OTHER.as_bytes() {
            // A policy really named `other` shares the overflow series, so
            // that no two series have the same labels.
            return f(self.other(policy));
        }
        let table = self.table(policy);
        let mask = table.len() - 1;
        let mut i = self.hasher.hash_one(name.as_bytes()) as usize;
        let mut new: Option<Arc<Series>> = None;
        // The table always has an empty slot (it is twice the cap), so the
        // probe ends.
        for _ in 0..table.len() {
            let slot = &table[i & mask];
            match slot.get() {
                Some((n, s)) if n.as_bytes() == name.as_bytes() => return f(s),
                Some(_) => {}
                None => {
                    let names = &self.policies[policy];
                    if names.len.fetch_add(1, Ordering::AcqRel) >= self.max_names {
                        names.len.fetch_sub(1, Ordering::AcqRel);
                        return f(self.other(policy));
                    }
                    let series = new.take().unwrap_or_else(|| {
                        Arc::new(Series::new(policy, name.clone(), false, self.bounds))
                    });
                    match slot.set((name.clone(), series)) {
                        Ok(()) => {
                            if let Some((_, s)) = slot.get() {
                                return f(s);
                            }
                        }
                        Err((_, series)) => {
                            // Another writer took the slot: maybe for this
                            // very name; look again.
                            names.len.fetch_sub(1, Ordering::AcqRel);
                            new = Some(series);
                            if let Some((n, s)) = slot.get() {
                                if n.as_bytes() == name.as_bytes() {
                                    return f(s);
                                }
                            }
                        }
                    }
                }
            }
            i = i.wrapping_add(1);
        }
        f(self.other(policy))
    }

    /// The series of `name`.
    pub(crate) fn resolve(&self, policy: usize, name: &Name) -> Arc<Series> {
        self.with(policy, name, Arc::clone)
    }

    fn other(&self, policy: usize) -> &Arc<Series> {
        self.policies[policy]
            .other
            .get_or_init(|| Arc::new(Series::new(policy, Name::new(OTHER), true, self.bounds)))
    }

    /// Names with a series of their own (not folded into `other`).
    pub(crate) fn len(&self, policy: usize) -> usize {
        self.policies[policy]
            .len
            .load(Ordering::Acquire)
            .min(self.max_names)
    }

    /// Every series, ordered by policy, then name, then `other`.
    pub(crate) fn all(&self) -> Vec<Arc<Series>> {
        let mut out = Vec::new();
        for names in &self.policies {
            let start = out.len();
            if let Some(table) = names.table.get() {
                out.extend(table.iter().filter_map(|s| s.get()).map(|(_, s)| s.clone()));
            }
            out[start..].sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
            if let Some(o) = names.other.get() {
                out.push(o.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_the_cap_fold_into_other() {
        let i = Interner::new(2, 1);
        let a = i.resolve(0, &Name::new("a"));
        let b = i.resolve(0, &Name::new("b"));
        let c = i.resolve(0, &Name::new("c"));
        let d = i.resolve(0, &Name::new("d"));
        assert!(!a.folded && !b.folded);
        assert!(c.folded && Arc::ptr_eq(&c, &d));
        assert_eq!(c.name, OTHER);
        assert!(Arc::ptr_eq(&a, &i.resolve(0, &Name::new("a"))));
        assert!(Arc::ptr_eq(&c, &i.resolve(0, &Name::new(OTHER))));
        assert_eq!(i.len(0), 2);
        // Another policy has its own cap.
        assert!(!i.resolve(1, &Name::new("c")).folded);
        let names: Vec<_> = i.all().iter().map(|s| s.name.to_string()).collect();
        assert_eq!(names, ["a", "b", "other", "c"]);
    }

    #[test]
    fn racing_writers_store_each_name_once() {
        let i = Arc::new(Interner::new(500, 1));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let i = i.clone();
                std::thread::spawn(move || {
                    for k in 0..400 {
                        // Half the names are shared by every thread.
                        let name = if k % 2 == 0 {
                            format!("shared-{k}")
                        } else {
                            format!("own-{t}-{k}")
                        };
                        i.resolve(0, &Name::new(&name));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // 200 shared names + 4 × 200 own names = 1000 > 500: capped.
        assert_eq!(i.len(0), 500);
        let all = i.all();
        let named: Vec<_> = all.iter().filter(|s| !s.folded).collect();
        assert_eq!(named.len(), 500);
        let mut names: Vec<_> = named.iter().map(|s| s.name.to_string()).collect();
        names.dedup();
        assert_eq!(names.len(), 500, "no name twice");
        for s in &named {
            assert!(Arc::ptr_eq(s, &i.resolve(0, &s.name)));
        }
    }
}
