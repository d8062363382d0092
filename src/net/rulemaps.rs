//! The rule set as it lives in the steering program's maps: add, delete, list with hit counters,
//! and the VM name registry. Works the same on the maps of an in-process steering program
//! and on the maps pinned under bpffs by another process ([`RuleMaps::open_pinned`]).
//!
//! State: `rule_texts` (rule id -> canonical text) is the source of truth; every change recompiles
//! the whole rule set into the standby table (`rules` entries tagged with the table number,
//! `rule_masks`, the mask count in `rule_cfg`), deletes what that table held beyond it, then flips
//! `rule_cfg.table` with one 4-byte write. A frame sees the old rule set or the new one, never a
//! half-installed rule, and the program is never reloaded. The table that was live before the flip
//! is only rewritten by the next change, when no program run can still be inside it (runs last
//! microseconds; changes are whole CLI invocations apart). Concurrent changes from several
//! processes are serialized by an flock on the pin directory.
//!
//! Overlapping entries (two rules whose compiled keys are identical under the same mask, e.g.
//! `tcp dport 8080` and a range block covering exactly 8080) keep the better rank: the same
//! result as evaluating both rules.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::Serialize;

use super::{
    abi::{
        self, rule_action_kind, rule_cfg, rule_entry, rule_mask, steer_skel::SteerMaps,
        vm_name_entry, MAX_VMS, RULE_TABLES,
    },
    rules::{
        Action, FlowKey, Rule, RuleError, MAX_ENTRIES, MAX_MASKS, MAX_RULE_IDS, RULE_ID_BITS,
        RULE_TEXT_LEN, VM_NAME_LEN,
    },
    NetError,
};

/// Pin names (= map names in bpf/steer.bpf.c) of the rule maps, for the processes that open them
/// by pin path (`lancet filter`, a second VM); a loaded program's maps come from its skeleton.
pub const MAP_RULE_CFG: &str = "rule_cfg";
/// See [`MAP_RULE_CFG`].
pub const MAP_RULE_MASKS: &str = "rule_masks";
/// See [`MAP_RULE_CFG`].
pub const MAP_RULES: &str = "rules";
/// See [`MAP_RULE_CFG`].
pub const MAP_RULE_HITS: &str = "rule_hits";
/// See [`MAP_RULE_CFG`].
pub const MAP_RULE_TEXTS: &str = "rule_texts";
/// See [`MAP_RULE_CFG`].
pub const MAP_VM_NAMES: &str = "vm_names";

/// Mask ids fit in the low byte of a tag.
const MAX_MASK_IDS: u32 = 256;
/// XSKMAP slot a rule gets when its VM is not registered: the program drops and counts.
const NO_VM_SLOT: u32 = MAX_VMS;

/// Errors of rule changes; nothing was changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("no rule with id {id} on {ifname:?}: see `lancet filter list {ifname}`")]
    UnknownRule { ifname: String, id: u32 },
    #[error("{0}: delete rules (`lancet filter del IFACE ID`) or merge rules into prefixes")]
    Full(String),
    #[error("no lancet steering program is pinned for {ifname:?}: start `lancet run` on it or run `lancet nic attach {ifname}` first (a `lancet run` started under `ip netns exec NS` pins into that command's private /sys, where no other command sees it: start it with `lancet run --netns NS` instead)")]
    NotAttached { ifname: String },
    #[error("the pinned maps of {ifname:?} are damaged or from another lancet version ({what}): run `lancet nic detach {ifname}` and attach again")]
    Damaged { ifname: String, what: String },
    #[error(transparent)]
    Net(#[from] NetError),
}

fn bpf(context: &str) -> impl FnOnce(libbpf_rs::Error) -> FilterError + '_ {
    move |source| {
        FilterError::Net(NetError::Bpf {
            context: context.to_string(),
            source,
        })
    }
}

/// A registered VM name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmName {
    /// The name rules use.
    pub name: String,
    /// Its XSKMAP slot.
    pub slot: u32,
    /// The queue its socket is bound to.
    pub queue: u32,
    /// The owner token of the VM that registered it ([`super::owner`]): the registering process's
    /// id unless that was taken (a second VM of the process, or a process of the same id in
    /// another pid namespace).
    pub pid: u32,
    /// Its MAC.
    pub mac: [u8; 6],
}

impl VmName {
    fn key(name: &str) -> [u8; VM_NAME_LEN] {
        let mut k = [0u8; VM_NAME_LEN];
        let n = name.len().min(VM_NAME_LEN - 1);
        k[..n].copy_from_slice(&name.as_bytes()[..n]);
        k
    }

    fn value(&self) -> vm_name_entry {
        vm_name_entry {
            slot: self.slot,
            queue: self.queue,
            pid: self.pid,
            mac: self.mac,
            pad: [0; 2],
        }
    }

    fn from_map(key: &[u8], value: &[u8]) -> Option<Self> {
        let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
        let entry = abi::from_bytes::<vm_name_entry>(value)?;
        Some(Self {
            name: String::from_utf8_lossy(&key[..end]).into_owned(),
            slot: entry.slot,
            queue: entry.queue,
            pid: entry.pid,
            mac: entry.mac,
        })
    }

    /// Whether the VM that registered it is gone: nobody holds its owner lock (a test that does
    /// not depend on pid namespaces or pid reuse, see [`super::owner`]).
    pub fn is_stale(&self) -> bool {
        !super::owner::is_live(self.pid)
    }
}

/// One rule as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedRule {
    /// Its id (for `lancet filter del`).
    pub id: u32,
    /// Its priority.
    pub prio: u16,
    /// The match part of its text.
    pub matches: String,
    /// The action part of its text.
    pub action: String,
    /// The whole canonical text.
    pub text: String,
    /// Frames it decided, summed over CPUs.
    pub hits: u64,
    /// The rule itself.
    #[serde(skip)]
    pub rule: Rule,
}

/// Mask count per rule table (`rule_cfg.mask_count`).
type MaskCounts = [u32; RULE_TABLES as usize];

/// The compiled form of a whole rule set.
struct Compiled {
    /// Masks sorted by the best rank they hold: (mask, best rank).
    masks: Vec<(FlowKey, u32)>,
    /// Per mask, masked value -> entry.
    entries: HashMap<FlowKey, HashMap<FlowKey, rule_entry>>,
}

/// The rule maps of one steering program.
#[derive(Debug)]
pub struct RuleMaps {
    ifname: String,
    cfg: MapHandle,
    masks: MapHandle,
    rules: MapHandle,
    hits: MapHandle,
    texts: MapHandle,
    vm_names: MapHandle,
    /// Directory to flock while changing (the pin directory), if pinned.
    lock_dir: Option<PathBuf>,
}

/// Holds an exclusive flock on a NIC's pin directory until dropped: serializes rule changes,
/// VM name and steering registrations of every lancet process on that NIC.
#[derive(Debug)]
pub struct DirLock {
    _file: Option<File>,
}

impl DirLock {
    /// Lock `dir` (waiting for the holder); `None`: nothing to lock (maps not pinned).
    pub fn take(dir: Option<&Path>) -> Result<Self, FilterError> {
        let Some(dir) = dir else {
            return Ok(Self { _file: None });
        };
        let file = File::open(dir)
            .map_err(|e| NetError::io(format!("opening {} to lock it", dir.display()), e))?;
        // SAFETY: flock on a descriptor we own; blocks until other rule changes finish.
        let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if ret != 0 {
            return Err(NetError::io(
                format!("locking {}", dir.display()),
                std::io::Error::last_os_error(),
            )
            .into());
        }
        Ok(Self { _file: Some(file) })
    }
}

fn open_named(
    object_maps: &dyn Fn(&str) -> Result<MapHandle, NetError>,
    name: &str,
) -> Result<MapHandle, NetError> {
    object_maps(name)
}

impl RuleMaps {
    /// The rule maps from a map-opening function (by map name).
    pub fn from_fn(
        ifname: &str,
        open: &dyn Fn(&str) -> Result<MapHandle, NetError>,
        lock_dir: Option<PathBuf>,
    ) -> Result<Self, NetError> {
        Ok(Self {
            ifname: ifname.to_string(),
            cfg: open_named(open, MAP_RULE_CFG)?,
            masks: open_named(open, MAP_RULE_MASKS)?,
            rules: open_named(open, MAP_RULES)?,
            hits: open_named(open, MAP_RULE_HITS)?,
            texts: open_named(open, MAP_RULE_TEXTS)?,
            vm_names: open_named(open, MAP_VM_NAMES)?,
            lock_dir,
        })
    }

    /// The rule maps of a loaded steering skeleton (its map fields: no names to get wrong).
    pub fn from_skel(
        ifname: &str,
        maps: &SteerMaps<'_>,
        lock_dir: Option<PathBuf>,
    ) -> Result<Self, NetError> {
        let dup = abi::map_handle;
        Ok(Self {
            ifname: ifname.to_string(),
            cfg: dup(&maps.rule_cfg)?,
            masks: dup(&maps.rule_masks)?,
            rules: dup(&maps.rules)?,
            hits: dup(&maps.rule_hits)?,
            texts: dup(&maps.rule_texts)?,
            vm_names: dup(&maps.vm_names)?,
            lock_dir,
        })
    }

    /// The rule maps pinned for `ifname` by `lancet run` or `lancet nic attach`.
    pub fn open_pinned(ifname: &str) -> Result<Self, FilterError> {
        let dir = super::pin::pin_dir(ifname)?;
        if !dir.join(MAP_RULE_TEXTS).exists() {
            return Err(FilterError::NotAttached {
                ifname: ifname.to_string(),
            });
        }
        let open = |name: &str| -> Result<MapHandle, NetError> {
            MapHandle::from_pinned_path(dir.join(name)).map_err(|source| NetError::Bpf {
                context: format!("opening pinned map {}", dir.join(name).display()),
                source,
            })
        };
        Ok(Self::from_fn(ifname, &open, Some(dir.clone()))?)
    }

    /// The interface these maps steer.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Every rule, by id, with its hit counter.
    pub fn list(&self) -> Result<Vec<ListedRule>, FilterError> {
        let rules = self.load_rules()?;
        Ok(rules
            .into_iter()
            .map(|(id, rule)| {
                let text = rule.to_string();
                let matches = super::rules::Match::describe(&rule);
                let action = text[matches.len()..]
                    .trim()
                    .trim_end_matches(&format!("prio {}", rule.prio))
                    .trim()
                    .to_string();
                ListedRule {
                    id,
                    prio: rule.prio,
                    matches: if matches.is_empty() {
                        "any".into()
                    } else {
                        matches
                    },
                    action,
                    hits: self.hits(id),
                    text,
                    rule,
                }
            })
            .collect())
    }

    /// Frames rule `id` decided, summed over CPUs.
    pub fn hits(&self, id: u32) -> u64 {
        abi::percpu_u64_sum(&self.hits, id)
    }

    /// Add one rule; returns its id. Invalid or unplaceable rules change nothing.
    pub fn add(&self, rule: Rule) -> Result<u32, FilterError> {
        Ok(self.add_many(vec![rule])?[0])
    }

    /// Add several rules in one change (one table flip); returns their ids.
    pub fn add_many(&self, new: Vec<Rule>) -> Result<Vec<u32>, FilterError> {
        let _lock = DirLock::take(self.lock_dir.as_deref())?;
        let mut rules = self.load_rules()?;
        let mut ids = Vec::with_capacity(new.len());
        let mut next = 1u32;
        for rule in new {
            while rules.contains_key(&next) {
                next += 1;
            }
            if next >= MAX_RULE_IDS {
                return Err(FilterError::Full(format!(
                    "{} rules is the most one NIC holds",
                    MAX_RULE_IDS - 1
                )));
            }
            let text = rule.to_string();
            if text.len() >= RULE_TEXT_LEN {
                return Err(RuleError(format!(
                    "the rule text is longer than {} bytes",
                    RULE_TEXT_LEN - 1
                ))
                .into());
            }
            rules.insert(next, rule);
            ids.push(next);
        }
        let compiled = self.compile(&rules)?;
        let zero = vec![vec![0u8; 8]; libbpf_rs::num_possible_cpus().unwrap_or(1)];
        let written: Vec<u32> = ids.clone();
        let result = (|| -> Result<(), FilterError> {
            for id in &ids {
                self.hits
                    .update_percpu(&id.to_ne_bytes(), &zero, MapFlags::ANY)
                    .map_err(bpf("resetting a rule's hit counter"))?;
                let mut text = [0u8; RULE_TEXT_LEN];
                let t = rules[id].to_string();
                text[..t.len()].copy_from_slice(t.as_bytes());
                self.texts
                    .update(&id.to_ne_bytes(), &text, MapFlags::NO_EXIST)
                    .map_err(bpf("storing the rule text"))?;
            }
            self.install(&compiled)
        })();
        if let Err(e) = result {
            for id in written {
                let _ = self.texts.delete(&id.to_ne_bytes());
            }
            return Err(e);
        }
        Ok(ids)
    }

    /// Delete rule `id`; returns it.
    pub fn delete(&self, id: u32) -> Result<Rule, FilterError> {
        let _lock = DirLock::take(self.lock_dir.as_deref())?;
        let mut rules = self.load_rules()?;
        let rule = rules.remove(&id).ok_or_else(|| FilterError::UnknownRule {
            ifname: self.ifname.clone(),
            id,
        })?;
        let compiled = self.compile(&rules)?;
        self.install(&compiled)?;
        self.texts
            .delete(&id.to_ne_bytes())
            .map_err(bpf("removing the rule text"))?;
        Ok(rule)
    }

    /// Delete every rule.
    pub fn clear(&self) -> Result<usize, FilterError> {
        let _lock = DirLock::take(self.lock_dir.as_deref())?;
        let rules = self.load_rules()?;
        self.install(&self.compile(&BTreeMap::new())?)?;
        for id in rules.keys() {
            let _ = self.texts.delete(&id.to_ne_bytes());
        }
        Ok(rules.len())
    }

    /// Recompile the rule set (after a VM registered or left, so `to vm NAME` follows it).
    pub fn recommit(&self) -> Result<(), FilterError> {
        let _lock = self.lock()?;
        self.recommit_locked()
    }

    /// Serialize with the other lancet processes on this NIC until the guard drops.
    pub fn lock(&self) -> Result<DirLock, FilterError> {
        DirLock::take(self.lock_dir.as_deref())
    }

    fn recommit_locked(&self) -> Result<(), FilterError> {
        let rules = self.load_rules()?;
        let compiled = self.compile(&rules)?;
        self.install(&compiled)
    }

    /// A second handle of the `vm_names` map.
    pub fn vms_handle(&self) -> Result<MapHandle, NetError> {
        MapHandle::try_from(&self.vm_names).map_err(|source| NetError::Bpf {
            context: "duplicating the vm_names map handle".into(),
            source,
        })
    }

    /// Registered VM names.
    pub fn vms(&self) -> Vec<VmName> {
        self.vm_names
            .keys()
            .filter_map(|k| {
                let v = self.vm_names.lookup(&k, MapFlags::ANY).ok().flatten()?;
                VmName::from_map(&k, &v)
            })
            .collect()
    }

    /// Register `vm` under its name. Fails when a live process holds the name; a stale holder
    /// (its process is gone) is replaced. Recompiles the rules that name it.
    pub fn register_vm(&self, vm: &VmName) -> Result<(), FilterError> {
        // A name that fits the key whole: a longer one would be compared in full but stored cut.
        super::names::VmName::new(&vm.name).map_err(NetError::from)?;
        // The check and the write under one lock: two VMs starting at once cannot both pass.
        let _lock = self.lock()?;
        let key = VmName::key(&vm.name);
        let old = self
            .vm_names
            .lookup(&key, MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| VmName::from_map(&key, &v));
        if let Some(old) = old {
            if old.pid != vm.pid && !old.is_stale() {
                return Err(NetError::InvalidConfig(format!(
                    "VM name {:?} is already used on {:?} by a running VM (owner {}): choose another name",
                    vm.name, self.ifname, old.pid
                ))
                .into());
            }
        }
        self.vm_names
            .update(&key, abi::bytes(&vm.value()), MapFlags::ANY)
            .map_err(bpf("registering the VM name"))?;
        self.recommit_locked()
    }

    /// Remove `name` from the registry (only if `pid` holds it) and recompile.
    pub fn unregister_vm(&self, name: &str, pid: u32) -> Result<(), FilterError> {
        if let Some(old) = self.vms().into_iter().find(|v| v.name == name) {
            if old.pid == pid {
                let _ = self.vm_names.delete(&VmName::key(name));
                return self.recommit();
            }
        }
        Ok(())
    }

    /// Registrations whose process is gone.
    pub fn stale_vms(&self) -> Vec<VmName> {
        self.vms().into_iter().filter(|v| v.is_stale()).collect()
    }

    /// Remove a stale registration (its process is gone).
    pub fn forget_vm(&self, name: &str) {
        let _ = self.vm_names.delete(&VmName::key(name));
    }

    fn load_rules(&self) -> Result<BTreeMap<u32, Rule>, FilterError> {
        let mut out = BTreeMap::new();
        for key in self.texts.keys() {
            let Some(id) = key.get(..4).and_then(|b| b.try_into().ok()) else {
                continue;
            };
            let id = u32::from_ne_bytes(id);
            let Some(value) = self
                .texts
                .lookup(&key, MapFlags::ANY)
                .map_err(bpf("reading a rule text"))?
            else {
                continue;
            };
            let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
            let text = String::from_utf8_lossy(&value[..end]);
            let rule = Rule::parse_str(&text).map_err(|e| FilterError::Damaged {
                ifname: self.ifname.clone(),
                what: format!("rule {id} {text:?}: {e}"),
            })?;
            out.insert(id, rule);
        }
        Ok(out)
    }

    fn compile(&self, rules: &BTreeMap<u32, Rule>) -> Result<Compiled, FilterError> {
        let vms: HashMap<String, VmName> = self
            .vms()
            .into_iter()
            .filter(|v| !v.is_stale())
            .map(|v| (v.name.clone(), v))
            .collect();
        let mut entries: HashMap<FlowKey, HashMap<FlowKey, rule_entry>> = HashMap::new();
        let mut total = 0usize;
        for (id, rule) in rules {
            let rank = (u32::from(rule.prio) << RULE_ID_BITS) | id;
            let (action, vm) = match &rule.action {
                Action::ToVm(n) => (rule_action_kind::RULE_ACT_VM, vms.get(n)),
                Action::Mirror(n) => (rule_action_kind::RULE_ACT_MIRROR, vms.get(n)),
                Action::Pass => (rule_action_kind::RULE_ACT_PASS, None),
                Action::Drop => (rule_action_kind::RULE_ACT_DROP, None),
            };
            let entry = rule_entry {
                rank,
                action: action.0,
                slot: vm.map_or(NO_VM_SLOT, |v| v.slot),
                queue: vm.map_or(0, |v| v.queue),
            };
            for (mask, value) in rule.compile() {
                let per_mask = entries.entry(mask).or_default();
                match per_mask.get(&value) {
                    Some(e) if e.rank <= rank => {}
                    Some(_) => {
                        per_mask.insert(value, entry);
                    }
                    None => {
                        per_mask.insert(value, entry);
                        total += 1;
                    }
                }
            }
        }
        if entries.len() > MAX_MASKS {
            return Err(FilterError::Full(format!(
                "the rules need {} different match shapes (masks); the program walks at most {MAX_MASKS}",
                entries.len()
            )));
        }
        if total > MAX_ENTRIES / RULE_TABLES as usize {
            return Err(FilterError::Full(format!(
                "the rules compile to {total} entries; a table holds {}",
                MAX_ENTRIES / RULE_TABLES as usize
            )));
        }
        let mut masks: Vec<(FlowKey, u32)> = entries
            .iter()
            .map(|(m, e)| (*m, e.values().map(|x| x.rank).min().unwrap_or(u32::MAX)))
            .collect();
        masks.sort_by_key(|(m, rank)| (*rank, *m));
        Ok(Compiled { masks, entries })
    }

    fn read_cfg(&self) -> Result<(u32, MaskCounts), FilterError> {
        let cfg = self
            .cfg
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf("reading rule_cfg"))?
            .and_then(|v| abi::from_bytes::<rule_cfg>(&v))
            .unwrap_or_default();
        Ok((cfg.table & 1, cfg.mask_count))
    }

    fn write_cfg(&self, table: u32, mask_count: MaskCounts) -> Result<(), FilterError> {
        let cfg = rule_cfg { table, mask_count };
        self.cfg
            .update(&0u32.to_ne_bytes(), abi::bytes(&cfg), MapFlags::ANY)
            .map_err(bpf("writing rule_cfg"))
    }

    /// Write `compiled` into the standby table and make it live.
    fn install(&self, compiled: &Compiled) -> Result<(), FilterError> {
        let (live, mut counts) = self.read_cfg()?;
        let standby = 1 - live;
        // Mask ids: keep the ids the live table uses for the same masks (small diffs).
        let mut ids: HashMap<FlowKey, u32> = HashMap::new();
        for i in 0..counts[live as usize].min(MAX_MASKS as u32) {
            let idx = live * MAX_MASKS as u32 + i;
            if let Some(v) = self
                .masks
                .lookup(&idx.to_ne_bytes(), MapFlags::ANY)
                .map_err(bpf("reading rule_masks"))?
            {
                if let Some(m) = abi::from_bytes::<rule_mask>(&v) {
                    let k = FlowKey::from_abi(&m.mask);
                    let id = k.tag() & (MAX_MASK_IDS - 1);
                    ids.insert(k.with_tag(0), id);
                }
            }
        }
        let mut used: HashSet<u32> = HashSet::new();
        let mut assigned: Vec<(FlowKey, u32, u32)> = Vec::new();
        for (mask, rank) in &compiled.masks {
            if let Some(id) = ids.get(mask).filter(|id| !used.contains(id)) {
                used.insert(*id);
                assigned.push((*mask, *rank, *id));
            }
        }
        for (mask, rank) in &compiled.masks {
            if assigned.iter().any(|(m, _, _)| m == mask) {
                continue;
            }
            let id = (0..MAX_MASK_IDS)
                .find(|id| !used.contains(id) && !ids.values().any(|v| v == id))
                .or_else(|| (0..MAX_MASK_IDS).find(|id| !used.contains(id)))
                .ok_or_else(|| FilterError::Full("no free mask id".into()))?;
            used.insert(id);
            assigned.push((*mask, *rank, id));
        }
        assigned.sort_by_key(|(m, rank, _)| (*rank, *m));
        let tag_of = |id: u32| (standby << 8) | id;

        // The standby table's current entries; everything not wanted is deleted.
        let mut stale: HashSet<Vec<u8>> = self
            .rules
            .keys()
            .filter(|k| {
                k.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(|b| u32::from_ne_bytes(b) >> 8 == standby)
                    .unwrap_or(false)
            })
            .collect();
        // Make the standby table unreachable while it is rewritten (it already is: not live).
        counts[standby as usize] = 0;
        for (mask, _, id) in &assigned {
            let Some(per_mask) = compiled.entries.get(mask) else {
                continue;
            };
            for (value, entry) in per_mask {
                let key = value.with_tag(tag_of(*id));
                stale.remove(key.0.as_slice());
                self.rules
                    .update(&key.0, abi::bytes(entry), MapFlags::ANY)
                    .map_err(bpf("writing a rule entry"))?;
            }
        }
        for key in stale {
            let _ = self.rules.delete(&key);
        }
        for (i, (mask, rank, id)) in assigned.iter().enumerate() {
            let idx = standby * MAX_MASKS as u32 + i as u32;
            let entry = rule_mask {
                mask: mask.with_tag(tag_of(*id)).to_abi(),
                best_rank: *rank,
                pad: 0,
            };
            self.masks
                .update(&idx.to_ne_bytes(), abi::bytes(&entry), MapFlags::ANY)
                .map_err(bpf("writing a rule mask"))?;
        }
        counts[standby as usize] = assigned.len() as u32;
        // Two writes: the standby count first (the live table number unchanged), then the flip.
        self.write_cfg(live, counts)?;
        self.write_cfg(standby, counts)
    }
}
