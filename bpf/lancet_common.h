/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * lancet's BPF ABI: every struct, enum and constant the BPF programs (steer.bpf.c, port.bpf.c,
 * bridge.bpf.c) share with user space (src/net/abi.rs). build.rs generates a libbpf-cargo
 * skeleton per program; its `types` module holds these definitions as read from the object's
 * BTF, and src/net/abi.rs builds on them, so a change here that user space does not follow fails
 * to compile.
 *
 * BTF carries only the types something in the object uses: the map key/value structs are used
 * by their maps; the enums of counter indexes and constants are used by `lancet_abi` (below).
 */
#ifndef LANCET_COMMON_H
#define LANCET_COMMON_H

#include <linux/types.h>
#include <linux/if_ether.h>

/* ---- Limits and special values ---- */

enum lancet_limit {
	MAX_VMS = 64,                /* VMs (XSKMAP slots) one NIC serves */
	RULE_MAX_MASKS = 32,         /* masks per rule table */
	RULE_TABLES = 2,             /* rule tables (double buffering) */
	RULE_MAX_IDS = 16384,        /* rule ids (hit counters); ids are below this */
	RULE_ID_BITS = 14,           /* bits of the rule id in a rank */
	RULE_MAX_ENTRIES = 65536,    /* `rules` hash entries of both tables together */
	RULE_TEXT_LEN = 256,         /* bytes of a stored rule text, NUL included */
	VM_NAME_LEN = 16,            /* bytes of a VM name, NUL padding included */
};

/* The `queue` of a VM (struct vm_slot, rule_entry, vm_name_entry): the NIC RX queue its socket is
 * bound to, or one of these. */
enum vm_queue {
	/* A VM that owns every queue of the NIC (one AF_XDP socket per RX queue, sharing one UMEM):
	 * its frames go to XSKMAP slot rx_queue_index, whatever queue they arrived on. */
	ALL_QUEUES = 0xfffffffd,
	/* A VM served through a veth port (src/net/port.rs): its slot indexes the `ports` DEVMAP. */
	PORT_QUEUE = 0xffffffff,
};

/* The 4-byte XDP metadata tag the steering program puts in front of a mirrored frame ("LMRR");
 * every other frame handed to a VM carries 0 there. */
enum mirror_meta {
	MIRROR_META_MAGIC = 0x4c4d5252,
};

/* ---- Steering program (steer.bpf.c) ---- */

/* Index into `verdicts`. */
enum verdict {
	VERDICT_TO_VM = 0,          /* unicast to a registered VM MAC, redirected */
	VERDICT_TO_VM_ARP = 1,      /* ARP request for a VM IPv4, redirected */
	VERDICT_TO_VM_NS = 2,       /* IPv6 neighbour solicitation for a VM address, redirected */
	VERDICT_TO_HOST = 3,        /* passed to the host stack */
	VERDICT_DROP_NO_SOCKET = 4, /* for a VM whose XSKMAP slot is empty */
	VERDICT_DROP_WRONG_QUEUE = 5, /* for a VM, but arrived on a queue its socket is not bound to */
	VERDICT_RULE_TO_VM = 6,     /* a rule sent it to a VM, redirected */
	VERDICT_RULE_PASS = 7,      /* a rule passed it to the host */
	VERDICT_RULE_DROP = 8,      /* a rule dropped it */
	VERDICT_RULE_MIRROR = 9,    /* a rule mirrored it: redirected to the VM with a mirror tag */
	VERDICT_COUNT = 10,
};

/* What a registered VM maps to (value of `vm_macs`, `vm_ipv4`, `vm_ipv6`). */
struct vm_slot {
	__u32 slot;  /* XSKMAP index, or `ports` index for PORT_QUEUE */
	__u32 queue; /* rx queue the VM's socket is bound to, or enum vm_queue */
};

/* Key of `vm_ipv6`: an IPv6 address, network order. */
#define IPV6_ADDR_LEN 16
struct ipv6_key {
	__u8 addr[IPV6_ADDR_LEN];
};

/* `flow_key.vlan` of a tagged frame: VLAN_PRESENT | VID. */
enum flow_vlan {
	VLAN_PRESENT = 0x1000,
};

/* `flow_key.ipflags` bits. */
enum flow_ipflag {
	IPFLAG_IP = 1,    /* an IPv4 or IPv6 frame */
	IPFLAG_V6 = 2,    /* ... and it is IPv6 */
	IPFLAG_NO_L4 = 4, /* IPv6 whose extension header chain was not parsed: no transport */
};

/* The header fields a rule can match, in frame byte order except `tag` and `vlan` (host order).
 * 60 bytes = 15 words (the program ANDs it word by word). */
struct flow_key {
	__u32 tag;         /* in a rules key: table << 8 | mask id; 0 in the frame's key */
	__u16 vlan;        /* VLAN_PRESENT | VID, or 0 */
	__u16 ethertype;   /* after the VLAN tag, network order */
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u8 src_ip[16];   /* IPv4 in the first 4 bytes */
	__u8 dst_ip[16];
	__u16 sport;       /* TCP/UDP, network order; 0 for other protocols and later fragments */
	__u16 dport;
	__u8 proto;        /* IPv4 protocol / IPv6 next header */
	__u8 ipflags;      /* enum flow_ipflag bits */
	__u8 pad[2];
};

/* Value of `rule_masks`: one mask of a table. */
struct rule_mask {
	struct flow_key mask; /* mask.tag: the tag (table << 8 | mask id) ORed into the key */
	__u32 best_rank;      /* the best rank among this mask's entries */
	__u32 pad;
};

/* `rule_entry.action`. */
enum rule_action_kind {
	RULE_ACT_VM = 1,
	RULE_ACT_PASS = 2,
	RULE_ACT_DROP = 3,
	RULE_ACT_MIRROR = 4,
};

/* Value of `rules`. */
struct rule_entry {
	__u32 rank;   /* prio << RULE_ID_BITS | rule id: lower wins */
	__u32 action; /* enum rule_action_kind */
	__u32 slot;   /* XSKMAP slot (to VM, mirror); MAX_VMS when the VM is not running */
	__u32 queue;  /* the queue that VM's socket is bound to */
};

/* Value of `rule_cfg`: the live table and each table's mask count. */
struct rule_cfg {
	__u32 table;
	__u32 mask_count[RULE_TABLES];
};

/* Value of `rule_texts`: a rule's canonical text, NUL-padded. */
struct rule_text {
	char text[RULE_TEXT_LEN];
};

/* Key of `vm_names`: a NUL-padded VM name. */
struct vm_name {
	char name[VM_NAME_LEN];
};

/* Value of `vm_names`: where the VM's socket sits. */
struct vm_name_entry {
	__u32 slot;
	__u32 queue;
	__u32 pid;   /* the VMM process that registered it (stale when that process is gone) */
	__u8 mac[ETH_ALEN];
	__u8 pad[2];
};

/* ---- Port programs (port.bpf.c) ---- */

/* Index into `port_drops`. */
enum port_drop {
	PORT_DROP_RX_NO_SOCKET = 0, /* for the VM, but its socket is not in `port_xsk` */
	PORT_DROP_TX_NO_NIC = 1,    /* sent by the VM, but the NIC redirect failed */
	PORT_DROP_COUNT = 2,
};

/* ---- Local bridge (bridge.bpf.c) ---- */

/* Index into `br_counters`. */
enum br_counter {
	BR_VM_TO_HOST = 0,      /* unicast from a VM injected into the NIC's receive path */
	BR_VM_TO_VM = 1,        /* unicast from a VM redirected to another VM's tap */
	BR_VM_GROUP = 2,        /* group frames from a VM (each cloned to the host and other VMs) */
	BR_HOST_TO_VM = 3,      /* unicast from the host redirected to a VM's tap */
	BR_HOST_GROUP = 4,      /* group frames from the host, copied to the VMs */
	BR_WIRE_GROUP = 5,      /* group frames from the wire, copied to the VMs */
	BR_COPIES = 6,          /* clones made (one per receiving tap or host) */
	BR_DROP_NO_DEST = 7,    /* a VM's local frame for no local address: dropped */
	BR_DROP_REDIRECT = 8,   /* a redirect or clone the kernel refused */
	BR_COUNT = 9,
};

/* Value of `br_macs` and `br_taps`: a local VM's tap. */
struct br_port {
	__u32 ifindex; /* the VM's tap (0: free entry) */
	__u32 pid;     /* the VMM process that owns it */
};

/* Value of `br_cfg`: the NIC. */
struct br_config {
	__u32 nic_ifindex;
	__u8 nic_mac[ETH_ALEN];
	__u8 pad[2];
};

/* ---- The enums in BTF ----
 *
 * Enums are only constants to the compiler: they reach BTF (and so the Rust skeleton) only when a
 * type of something in the object names them. Every program object defines this one variable in a
 * section libbpf does not load (it skips unknown data sections): it costs no map and no
 * instruction, and puts every enum above into each skeleton's `types`.
 */
struct lancet_abi_enums {
	enum lancet_limit limit;
	enum vm_queue queue;
	enum mirror_meta mirror;
	enum verdict verdict;
	enum flow_vlan vlan;
	enum flow_ipflag ipflag;
	enum rule_action_kind action;
	enum port_drop port_drop;
	enum br_counter br_counter;
};

#define LANCET_ABI_ENUMS \
	const struct lancet_abi_enums lancet_abi_enums SEC(".lancet.abi") = {}

/* A MAC address as a map key: the 6 bytes in the low bytes of a zeroed __u64
 * (src/net/abi.rs mac_key). */
static __always_inline __u64 lancet_mac_key(const unsigned char *mac)
{
	__u64 key = 0;

	__builtin_memcpy(&key, mac, ETH_ALEN);
	return key;
}

/* Broadcast and multicast destinations have the group bit (I/G) set. */
static __always_inline int lancet_is_group(const unsigned char *mac)
{
	return mac[0] & 1;
}

#endif
