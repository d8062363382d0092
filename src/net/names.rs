//! Names that end up in filesystem paths and map keys, validated once, before any use: interface
//! names ([`IfName`], the kernel's `dev_valid_name` rules), the NIC references of the `lancet
//! filter|nic|stats` commands ([`NicKey`]: an interface name or `<ifname>@<netns inode>`, the pin
//! directory names of [`super::pin`]) and VM names ([`VmName`]). A name that passes cannot be
//! `.`/`..`, contain `/` or be an absolute path, so joining it onto `/sys/fs/bpf/lancet` or
//! `/run/lancet` stays inside.

use std::{fmt, str::FromStr};

/// `IFNAMSIZ` (NUL included): an interface name has at most 15 bytes.
pub const IFNAME_MAX: usize = 15;
/// A VM name has at most 15 bytes: the `vm_names` map key is 16 bytes with its NUL
/// (`VM_NAME_LEN` in bpf/steer.bpf.c), so a longer name would be truncated there.
pub const VM_NAME_MAX: usize = 15;

/// A name that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{name:?} is not a valid interface name: {why} (1..=15 bytes, no '/', ':' or whitespace, not '.' or '..')")]
    Interface { name: String, why: &'static str },
    #[error("{name:?} is not a valid VM name: {why} (1..=15 letters, digits, '_', '.', '-'; no leading '.')")]
    Vm { name: String, why: &'static str },
    #[error("{name:?} is not a valid network namespace name: {why} (a name `ip netns list` shows: no '/', not '.' or '..')")]
    Netns { name: String, why: &'static str },
}

/// Why `name` is not an interface name the kernel accepts (`dev_valid_name` in net/core/dev.c),
/// `None` when it is.
fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > IFNAME_MAX {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are refused")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains(':') {
        Some("it contains ':'")
    } else if name
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b == b'\x0b')
    {
        Some("it contains whitespace")
    } else if name.bytes().any(|b| b.is_ascii_control()) {
        Some("it contains a control character")
    } else {
        None
    }
}

/// A network interface name the kernel would accept (control characters are refused too).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfName(String);

impl IfName {
    /// Validate `name`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        match ifname_problem(name) {
            Some(why) => Err(NameError::Interface {
                name: name.to_string(),
                why,
            }),
            None => Ok(Self(name.to_string())),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A NIC as the `lancet filter|nic|stats` commands name it: an interface name, or a pin
/// directory name `<ifname>@<netns inode>` (see [`super::pin`]). `lancet stats` also takes a VM
/// name here; every [`VmName`] is a valid `NicKey`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NicKey(String);

impl NicKey {
    /// Validate `name`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let ifname = match name.rsplit_once('@') {
            Some((ifname, tag)) if !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_digit()) => {
                ifname
            }
            _ => name,
        };
        IfName::new(ifname)?;
        Ok(Self(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A VM name: `[A-Za-z0-9_.-]{1,15}`, not starting with '.'.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmName(String);

impl VmName {
    /// Validate `name`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let why = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > VM_NAME_MAX {
            Some("it is longer than 15 bytes")
        } else if name.starts_with('.') {
            Some("it starts with '.'")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            Some("it contains a character other than a letter, digit, '_', '.' or '-'")
        } else {
            None
        };
        match why {
            Some(why) => Err(NameError::Vm {
                name: name.to_string(),
                why,
            }),
            None => Ok(Self(name.to_string())),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest file name (`NAME_MAX`): a named network namespace is a file under /run/netns.
pub const NETNS_NAME_MAX: usize = 255;

/// A network namespace name as `ip netns` makes them (a file name under /run/netns): no '/', not
/// '.' or '..', no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetnsName(String);

impl NetnsName {
    /// Validate `name`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let why = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > NETNS_NAME_MAX {
            Some("it is longer than 255 bytes")
        } else if name == "." || name == ".." {
            Some("'.' and '..' are refused")
        } else if name.contains('/') {
            Some("it contains '/'")
        } else if name.contains('\0') {
            Some("it contains a NUL byte")
        } else {
            None
        };
        match why {
            Some(why) => Err(NameError::Netns {
                name: name.to_string(),
                why,
            }),
            None => Ok(Self(name.to_string())),
        }
    }
}

macro_rules! name_traits {
    ($($ty:ident),*) => {$(
        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
    )*};
}
name_traits!(IfName, NicKey, VmName, NetnsName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel() {
        for ok in ["lt-nic", "eth0", "a", "123456789012345", "x@y", "br.10"] {
            assert!(IfName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "/tmp/x",
            "a/b",
            "eth0:1",
            "a b",
            "a\tb",
            "1234567890123456",
        ] {
            assert!(IfName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nic_keys_take_a_netns_tag() {
        assert!(NicKey::new("lt-nic@4026532000").is_ok());
        assert!(NicKey::new("lt-nic").is_ok());
        assert!(NicKey::new("/tmp/x@1").is_err());
        assert!(NicKey::new("../x").is_err());
        assert!(NicKey::new("lt-nic-long-name@1").is_err());
        assert!(NicKey::new("@1").is_err());
    }

    #[test]
    fn netns_names_stay_under_run_netns() {
        assert!(NetnsName::new("lt-lx4a3007h").is_ok());
        for bad in ["", ".", "..", "../../etc/x", "/proc/1/ns/net"] {
            assert!(NetnsName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vm_names_are_short_and_plain() {
        for ok in ["vm", "web1", "a.b-c_d", "123456789012345"] {
            assert!(VmName::new(ok).is_ok(), "{ok}");
            assert!(NicKey::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".x",
            "..",
            "../x",
            "a/b",
            "a b",
            "1234567890123456",
            "é",
        ] {
            let err = VmName::new(bad).unwrap_err().to_string();
            assert!(err.contains("not a valid VM name"), "{err}");
        }
    }
}
