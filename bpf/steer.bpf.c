// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * lancet steering program: sends the frames that belong to a VM to that VM's AF_XDP socket and
 * passes everything else to the host stack untouched.
 *
 * Verdicts, in order:
 *   1. unicast destination MAC registered in `vm_macs`           -> XSKMAP slot of that VM
 *   2. broadcast ARP whose target IPv4 is registered in `vm_ipv4`  -> that VM
 *   3. IPv6 neighbour solicitation (to 33:33:ff:xx:xx:xx) whose
 *      target address is registered in `vm_ipv6`                   -> that VM
 *   4. everything else (host unicast, other broadcast/multicast)   -> XDP_PASS (host)
 * A VM frame whose socket is missing, or that arrived on a queue the VM's socket is not bound
 * to, is dropped (the VM's MAC is not the host's, so the host would drop it anyway) and counted.
 *
 * Every verdict is counted in the per-CPU array `verdicts` (index = enum verdict below); user space
 * sums the CPUs. Parsing checks every header against data_end before reading it.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* How many VMs (XSKMAP slots) one NIC can serve. Keep in sync with MAX_VMS in src/net/steer.rs. */
#define MAX_VMS 64

#define ARP_HDR_LEN 8
#define ARP_OP_REQUEST 1
#define ARP_ETH_IPV4_BODY_LEN 20   /* sha(6) spa(4) tha(6) tpa(4) */
#define ARP_TPA_OFFSET 16          /* offset of tpa inside the body */
#define IPV6_HDR_LEN 40
#define IPV6_NEXTHDR_OFFSET 6
#define IPV6_NEXTHDR_ICMPV6 58
#define ICMPV6_NS_TYPE 135
#define ICMPV6_NS_TARGET_OFFSET 8  /* type(1) code(1) csum(2) reserved(4) then the target */
#define IPV6_ADDR_LEN 16

/* Index into `verdicts`. Keep in sync with the Verdict enum in src/net/steer.rs. */
enum verdict {
	VERDICT_TO_VM = 0,          /* unicast to a registered VM MAC, redirected */
	VERDICT_TO_VM_ARP = 1,      /* ARP request for a VM IPv4, redirected */
	VERDICT_TO_VM_NS = 2,       /* IPv6 neighbour solicitation for a VM address, redirected */
	VERDICT_TO_HOST = 3,        /* passed to the host stack */
	VERDICT_DROP_NO_SOCKET = 4, /* for a VM whose XSKMAP slot is empty */
	VERDICT_DROP_WRONG_QUEUE = 5, /* for a VM, but arrived on a queue its socket is not bound to */
	VERDICT_COUNT = 6,
};

/* What a registered VM maps to. Keep in sync with VmSlot in src/net/steer.rs. */
struct vm_slot {
	__u32 slot;  /* XSKMAP index */
	__u32 queue; /* rx queue the VM's socket is bound to */
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_VMS);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* Key: the 6-byte MAC in the low bytes of a zeroed 8-byte key. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VMS);
	__type(key, __u64);
	__type(value, struct vm_slot);
} vm_macs SEC(".maps");

/* Key: IPv4 address in network byte order. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * MAX_VMS);
	__type(key, __u32);
	__type(value, struct vm_slot);
} vm_ipv4 SEC(".maps");

/* An IPv6 address, network order. */
struct ipv6_key {
	__u8 addr[IPV6_ADDR_LEN];
};

/* Key: IPv6 address (16 bytes, network order). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * MAX_VMS);
	__type(key, struct ipv6_key);
	__type(value, struct vm_slot);
} vm_ipv6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VERDICT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} verdicts SEC(".maps");

static __always_inline void count(__u32 verdict)
{
	__u64 *counter = bpf_map_lookup_elem(&verdicts, &verdict);

	if (counter)
		*counter += 1;
}

static __always_inline int to_vm(struct xdp_md *ctx, const struct vm_slot *vm, __u32 verdict)
{
	int action;

	if (ctx->rx_queue_index != vm->queue) {
		count(VERDICT_DROP_WRONG_QUEUE);
		return XDP_DROP;
	}
	action = bpf_redirect_map(&xsks, vm->slot, XDP_DROP);
	count(action == XDP_REDIRECT ? verdict : VERDICT_DROP_NO_SOCKET);
	return action;
}

static __always_inline int to_host(void)
{
	count(VERDICT_TO_HOST);
	return XDP_PASS;
}

static __always_inline int steer_arp(struct xdp_md *ctx, void *l3, void *data_end)
{
	__u8 *arp = l3;
	__u32 target_ip;
	struct vm_slot *vm;

	if ((void *)(arp + ARP_HDR_LEN + ARP_ETH_IPV4_BODY_LEN) > data_end)
		return to_host();
	/* htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4, op request */
	if (arp[0] != 0 || arp[1] != 1 || arp[2] != 0x08 || arp[3] != 0x00 || arp[4] != ETH_ALEN ||
	    arp[5] != 4 || arp[6] != 0 || arp[7] != ARP_OP_REQUEST)
		return to_host();
	__builtin_memcpy(&target_ip, arp + ARP_HDR_LEN + ARP_TPA_OFFSET, sizeof(target_ip));
	vm = bpf_map_lookup_elem(&vm_ipv4, &target_ip);
	if (!vm)
		return to_host();
	return to_vm(ctx, vm, VERDICT_TO_VM_ARP);
}

static __always_inline int steer_ipv6_multicast(struct xdp_md *ctx, void *l3, void *data_end)
{
	__u8 *ip6 = l3;
	__u8 *icmp6 = ip6 + IPV6_HDR_LEN;
	struct ipv6_key target;
	struct vm_slot *vm;

	if ((void *)(icmp6 + ICMPV6_NS_TARGET_OFFSET + IPV6_ADDR_LEN) > data_end)
		return to_host();
	if (ip6[IPV6_NEXTHDR_OFFSET] != IPV6_NEXTHDR_ICMPV6 || icmp6[0] != ICMPV6_NS_TYPE)
		return to_host();
	__builtin_memcpy(&target, icmp6 + ICMPV6_NS_TARGET_OFFSET, sizeof(target));
	vm = bpf_map_lookup_elem(&vm_ipv6, &target);
	if (!vm)
		return to_host();
	return to_vm(ctx, vm, VERDICT_TO_VM_NS);
}

SEC("xdp")
int lancet_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vm_slot *vm;
	__u64 mac_key = 0;
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return to_host();

	if (!(eth->h_dest[0] & 1)) {
		/* unicast */
		__builtin_memcpy(&mac_key, eth->h_dest, ETH_ALEN);
		vm = bpf_map_lookup_elem(&vm_macs, &mac_key);
		if (vm)
			return to_vm(ctx, vm, VERDICT_TO_VM);
		return to_host();
	}

	/* broadcast or multicast */
	proto = bpf_ntohs(eth->h_proto);
	if (proto == ETH_P_ARP)
		return steer_arp(ctx, eth + 1, data_end);
	if (proto == ETH_P_IPV6 && eth->h_dest[0] == 0x33 && eth->h_dest[1] == 0x33 &&
	    eth->h_dest[2] == 0xff)
		return steer_ipv6_multicast(ctx, eth + 1, data_end);
	return to_host();
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
