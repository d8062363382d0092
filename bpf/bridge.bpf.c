// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * lancet local bridge (src/net/bridge.rs): the paths the XDP fast path cannot take. An XSK only
 * receives from the XDP hook of its own device and AF_XDP transmits with dev_direct_xmit, so frames
 * between a VM and the host that owns the NIC, between two VMs on one NIC, and broadcast/multicast
 * copies go through one TAP device per VM (its "local link", lt-h<pid>n<idx>, read and written by
 * the VMM) and three TC (tcx) programs:
 *
 *   lancet_br_tap     TC ingress of a VM's tap = frames the VM sent locally (the VMM writes there
 *                     only frames for the host, for another local VM, and group frames):
 *                       dst == the NIC's MAC      -> NIC ingress (the host receives it "on the NIC")
 *                       dst == another VM's MAC   -> that VM's tap (egress = the VMM reads it)
 *                       group                     -> clone to NIC ingress and every other VM's tap
 *                       anything else             -> drop, counted
 *   lancet_br_egress  TC egress of the NIC = frames the host stack sends:
 *                       dst == a VM's MAC         -> that VM's tap, not on the wire
 *                       group                     -> clone to every VM's tap, and on the wire
 *   lancet_br_ingress TC ingress of the NIC = frames the XDP program passed to the host:
 *                       group, src not a VM       -> clone to every VM's tap, and to the host
 *                     (a VM's frames injected by lancet_br_tap also pass here: skipped by src MAC)
 *
 * Maps (pinned with the NIC's other maps): `br_macs` MAC -> tap of the VM, `br_taps` the taps in a
 * small array for the clone loop, `br_cfg` the NIC, `br_counters` per-CPU counters.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lancet_common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VMS);
	__type(key, __u64);
	__type(value, struct br_port);
} br_macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VMS);
	__type(key, __u32);
	__type(value, struct br_port);
} br_taps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct br_config);
} br_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BR_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} br_counters SEC(".maps");

static __always_inline void count(__u32 index, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&br_counters, &index);

	if (c)
		*c += n;
}

/* Read the destination and source MAC; 0 when the frame is too short. */
static __always_inline int read_macs(struct __sk_buff *skb, __u8 *dst, __u8 *src)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return 0;
	__builtin_memcpy(dst, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(src, eth->h_source, ETH_ALEN);
	return 1;
}

/* Clone the frame to the egress of every VM tap except `skip`, counting each clone (no
 * accumulator: a value that differs per path would keep the verifier from pruning the loop). */
static __always_inline void clone_to_taps(struct __sk_buff *skb, __u32 skip)
{
	/* Unrolled: the counter is a constant in each copy (a rolled loop over a stack key
	 * loses its bound in the verifier). MAX_VMS * ~15 instructions. */
#pragma clang loop unroll(full)
	for (__u32 i = 0; i < MAX_VMS; i++) {
		__u32 key = i;
		struct br_port *p = bpf_map_lookup_elem(&br_taps, &key);

		if (!p || p->ifindex == 0 || p->ifindex == skip)
			continue;
		if (bpf_clone_redirect(skb, p->ifindex, 0) == 0)
			count(BR_COPIES, 1);
		else
			count(BR_DROP_REDIRECT, 1);
	}
}

static __always_inline int redirect_or_drop(__u32 ifindex, __u64 flags)
{
	int action = bpf_redirect(ifindex, flags);

	if (action != TC_ACT_REDIRECT) {
		count(BR_DROP_REDIRECT, 1);
		return TC_ACT_SHOT;
	}
	return action;
}

SEC("tc")
int lancet_br_tap(struct __sk_buff *skb)
{
	__u8 dst[ETH_ALEN], src[ETH_ALEN];
	__u32 zero = 0;
	struct br_config *cfg = bpf_map_lookup_elem(&br_cfg, &zero);
	struct br_port *peer;
	__u64 key;

	if (!cfg || !read_macs(skb, dst, src)) {
		count(BR_DROP_NO_DEST, 1);
		return TC_ACT_SHOT;
	}
	if (lancet_is_group(dst)) {
		__u32 nic = cfg->nic_ifindex, self = skb->ifindex;

		count(BR_VM_GROUP, 1);
		if (nic && bpf_clone_redirect(skb, nic, BPF_F_INGRESS) == 0)
			count(BR_COPIES, 1);
		else
			count(BR_DROP_REDIRECT, 1);
		clone_to_taps(skb, self);
		return TC_ACT_SHOT;
	}
	if (lancet_mac_key(dst) == lancet_mac_key(cfg->nic_mac)) {
		count(BR_VM_TO_HOST, 1);
		return redirect_or_drop(cfg->nic_ifindex, BPF_F_INGRESS);
	}
	key = lancet_mac_key(dst);
	peer = bpf_map_lookup_elem(&br_macs, &key);
	if (peer && peer->ifindex && peer->ifindex != skb->ifindex) {
		count(BR_VM_TO_VM, 1);
		return redirect_or_drop(peer->ifindex, 0);
	}
	count(BR_DROP_NO_DEST, 1);
	return TC_ACT_SHOT;
}

SEC("tc")
int lancet_br_egress(struct __sk_buff *skb)
{
	__u8 dst[ETH_ALEN], src[ETH_ALEN];
	struct br_port *vm;
	__u64 key;

	if (!read_macs(skb, dst, src))
		return TC_ACT_OK;
	if (lancet_is_group(dst)) {
		count(BR_HOST_GROUP, 1);
		clone_to_taps(skb, 0);
		return TC_ACT_OK;
	}
	key = lancet_mac_key(dst);
	vm = bpf_map_lookup_elem(&br_macs, &key);
	if (vm && vm->ifindex) {
		count(BR_HOST_TO_VM, 1);
		return redirect_or_drop(vm->ifindex, 0);
	}
	return TC_ACT_OK;
}

SEC("tc")
int lancet_br_ingress(struct __sk_buff *skb)
{
	__u8 dst[ETH_ALEN], src[ETH_ALEN];
	__u64 key;

	if (!read_macs(skb, dst, src) || !lancet_is_group(dst))
		return TC_ACT_OK;
	key = lancet_mac_key(src);
	if (bpf_map_lookup_elem(&br_macs, &key))
		return TC_ACT_OK; /* a VM's frame lancet_br_tap injected: the VMs have their copies */
	count(BR_WIRE_GROUP, 1);
	clone_to_taps(skb, 0);
	return TC_ACT_OK;
}

LANCET_ABI_ENUMS;

char LICENSE[] SEC("license") = "Dual BSD/GPL";
