//! The guest's CPUID: KVM's supported set with chosen features hidden (features this machine's nested
//! KVM cannot emulate in guest ring 0: cmpxchg16b, XSAVE and everything built on it, SMAP/SMEP,
//! FSGSBASE, POPCNT) and the per-vCPU APIC ids filled in.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

use super::error::{kvm_err, Result, VmmError};

/// Leaf 1: family/model/features.
const LEAF_FEATURES: u32 = 1;
/// Leaf 7 subleaf 0: structured extended features.
const LEAF_EXT_FEATURES: u32 = 7;
/// Leaf 0xB: extended topology.
const LEAF_TOPOLOGY: u32 = 0xb;
/// Leaf 0xD: XSAVE state components (emptied when XSAVE is hidden).
const LEAF_XSAVE: u32 = 0xd;
/// Leaf 0x8000_0008: address sizes and AMD extended features (EBX bit 2 XSAVEERPTR).
const LEAF_AMD_EXT_EBX: u32 = 0x8000_0008;
/// Leaf 0x8000_0008 EBX: FXSAVE always saves the error pointers (avoids Linux's FXSAVE-leak workaround).
const AMD_XSAVEERPTR_BIT: u32 = 1 << 2;
/// Leaf 1 EBX bits 31..24: initial APIC id.
const LEAF1_EBX_APIC_ID_SHIFT: u32 = 24;
/// Leaf 1 EBX bits 23..16: logical processors per package.
const LEAF1_EBX_LOGICAL_COUNT_SHIFT: u32 = 16;

/// Which register of which leaf a feature bit lives in.
#[derive(Clone, Copy, Debug)]
enum Reg {
    Ecx,
    Ebx,
}

/// A CPU feature that can be hidden: its name (as in /proc/cpuinfo), and every (leaf, register,
/// bit) that must be cleared with it (features that depend on it go along).
struct Feature {
    name: &'static str,
    bits: &'static [(u32, Reg, u32)],
}

const FEATURES: &[Feature] = &[
    Feature {
        name: "cx16",
        bits: &[(LEAF_FEATURES, Reg::Ecx, 13)],
    },
    Feature {
        name: "popcnt",
        bits: &[(LEAF_FEATURES, Reg::Ecx, 23)],
    },
    Feature {
        name: "x2apic",
        bits: &[(LEAF_FEATURES, Reg::Ecx, 21)],
    },
    Feature {
        // XSAVE, OSXSAVE and every feature whose state XSAVE manages: AVX, FMA, F16C, AVX2, AVX-512.
        name: "xsave",
        bits: &[
            (LEAF_FEATURES, Reg::Ecx, 26),
            (LEAF_FEATURES, Reg::Ecx, 27),
            (LEAF_FEATURES, Reg::Ecx, 28),
            (LEAF_FEATURES, Reg::Ecx, 12),
            (LEAF_FEATURES, Reg::Ecx, 29),
            (LEAF_EXT_FEATURES, Reg::Ebx, 5),
            (LEAF_EXT_FEATURES, Reg::Ebx, 16),
            (LEAF_EXT_FEATURES, Reg::Ebx, 17),
            (LEAF_EXT_FEATURES, Reg::Ebx, 21),
            (LEAF_EXT_FEATURES, Reg::Ebx, 26),
            (LEAF_EXT_FEATURES, Reg::Ebx, 27),
            (LEAF_EXT_FEATURES, Reg::Ebx, 28),
            (LEAF_EXT_FEATURES, Reg::Ebx, 30),
            (LEAF_EXT_FEATURES, Reg::Ebx, 31),
            (LEAF_EXT_FEATURES, Reg::Ecx, 1),
            (LEAF_EXT_FEATURES, Reg::Ecx, 6),
            (LEAF_EXT_FEATURES, Reg::Ecx, 11),
            (LEAF_EXT_FEATURES, Reg::Ecx, 12),
            (LEAF_EXT_FEATURES, Reg::Ecx, 14),
        ],
    },
    Feature {
        name: "avx2",
        bits: &[(LEAF_EXT_FEATURES, Reg::Ebx, 5)],
    },
    Feature {
        name: "fsgsbase",
        bits: &[(LEAF_EXT_FEATURES, Reg::Ebx, 0)],
    },
    Feature {
        name: "smep",
        bits: &[(LEAF_EXT_FEATURES, Reg::Ebx, 7)],
    },
    Feature {
        name: "smap",
        bits: &[(LEAF_EXT_FEATURES, Reg::Ebx, 20)],
    },
    Feature {
        name: "rdrand",
        bits: &[(LEAF_FEATURES, Reg::Ecx, 30)],
    },
];

/// Features hidden unless the user says otherwise (what made Linux boot on this machine's KVM).
pub const DEFAULT_HIDDEN: &str = "cx16,xsave,smap,smep,fsgsbase,popcnt";

/// A parsed `--cpuid-hide` list.
#[derive(Clone, Debug, Default)]
pub struct HiddenFeatures(Vec<&'static Feature>);

impl std::fmt::Debug for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl HiddenFeatures {
    /// Parses a comma-separated list of feature names; an empty string hides nothing.
    pub fn parse(list: &str) -> Result<Self> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let feature = FEATURES
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    let known: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
                    VmmError::UnknownCpuFeature(name.to_string(), known.join(","))
                })?;
            out.push(feature);
        }
        Ok(Self(out))
    }

    /// The hidden features' names.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|f| f.name)
    }

    /// Kernel parameters that hide the same features from Linux's own CPUID view (`noxsave`,
    /// `clearcpuid=`): needed where the hypervisor does not apply KVM_SET_CPUID2 to every leaf (this
    /// machine's nested KVM answers CPUID for xsave/popcnt/smep/smap/fsgsbase itself).
    pub fn linux_cmdline_args(&self) -> String {
        let mut args = Vec::new();
        if self.hides_xsave() {
            args.push("noxsave".to_string());
        }
        let others: Vec<_> = self.names().filter(|n| *n != "xsave").collect();
        if !others.is_empty() {
            args.push(format!("clearcpuid={}", others.join(",")));
        }
        args.join(" ")
    }

    fn hides_xsave(&self) -> bool {
        self.0.iter().any(|f| f.name == "xsave")
    }
}

/// Builds the CPUID table for vCPU `cpu_index` of `cpu_count`.
pub fn guest_cpuid(
    kvm: &Kvm,
    hidden: &HiddenFeatures,
    cpu_index: u8,
    cpu_count: u8,
) -> Result<CpuId> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    for entry in cpuid.as_mut_slice() {
        adjust_entry(entry, hidden, cpu_index, cpu_count);
    }
    Ok(cpuid)
}

fn adjust_entry(e: &mut kvm_cpuid_entry2, hidden: &HiddenFeatures, cpu: u8, count: u8) {
    for feature in &hidden.0 {
        for &(leaf, reg, bit) in feature.bits {
            if e.function == leaf && (leaf != LEAF_EXT_FEATURES || e.index == 0) {
                match reg {
                    Reg::Ecx => e.ecx &= !(1 << bit),
                    Reg::Ebx => e.ebx &= !(1 << bit),
                }
            }
        }
    }
    match e.function {
        LEAF_FEATURES => {
            e.ebx = (e.ebx & 0x0000_ffff)
                | (u32::from(cpu) << LEAF1_EBX_APIC_ID_SHIFT)
                | (u32::from(count) << LEAF1_EBX_LOGICAL_COUNT_SHIFT);
        }
        LEAF_TOPOLOGY => e.edx = u32::from(cpu),
        LEAF_XSAVE if hidden.hides_xsave() => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = 0;
            e.edx = 0;
        }
        LEAF_AMD_EXT_EBX => e.ebx |= AMD_XSAVEERPTR_BIT,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list_parses_and_unknown_names_are_rejected() {
        assert_eq!(HiddenFeatures::parse(DEFAULT_HIDDEN).unwrap().0.len(), 6);
        assert!(HiddenFeatures::parse("").unwrap().0.is_empty());
        let err = HiddenFeatures::parse("cx16,warp").unwrap_err().to_string();
        assert!(err.contains("warp") && err.contains("known"), "{err}");
        let args = HiddenFeatures::parse(DEFAULT_HIDDEN)
            .unwrap()
            .linux_cmdline_args();
        assert_eq!(args, "noxsave clearcpuid=cx16,smap,smep,fsgsbase,popcnt");
        assert_eq!(HiddenFeatures::parse("").unwrap().linux_cmdline_args(), "");
    }

    #[test]
    fn hidden_bits_are_cleared_and_apic_id_set() {
        let hidden = HiddenFeatures::parse("cx16,xsave,smep").unwrap();
        let mut leaf1 = kvm_cpuid_entry2 {
            function: 1,
            ecx: u32::MAX,
            ebx: 0xffff_ffff,
            ..Default::default()
        };
        adjust_entry(&mut leaf1, &hidden, 2, 4);
        assert_eq!(leaf1.ecx & (1 << 13), 0);
        assert_eq!(leaf1.ecx & (1 << 26), 0);
        assert_eq!(leaf1.ecx & (1 << 28), 0);
        assert_ne!(
            leaf1.ecx & (1 << 23),
            0,
            "popcnt was not asked to be hidden"
        );
        assert_eq!(leaf1.ebx >> 24, 2);
        let mut leaf7 = kvm_cpuid_entry2 {
            function: 7,
            ebx: u32::MAX,
            ..Default::default()
        };
        adjust_entry(&mut leaf7, &hidden, 0, 1);
        assert_eq!(leaf7.ebx & (1 << 7), 0);
        assert_eq!(leaf7.ebx & (1 << 5), 0, "avx2 goes with xsave");
    }
}
