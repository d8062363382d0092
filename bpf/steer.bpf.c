// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * lancet steering program: sends the frames that belong to a VM to that VM's AF_XDP socket and
 * passes everything else to the host stack untouched.
 *
 * Verdicts, in order:
 *   0. the filter rules (tuple-space search, below): the best-ranked matching rule decides
 *      (to a VM, pass to the host, drop, mirror); no match falls through to the MAC steering
 *   1. unicast destination MAC registered in `vm_macs`           -> XSKMAP slot of that VM
 *   2. broadcast ARP whose target IPv4 is registered in `vm_ipv4`  -> that VM
 *   3. IPv6 neighbour solicitation (to 33:33:ff:xx:xx:xx) whose
 *      target address is registered in `vm_ipv6`                   -> that VM
 *   4. everything else (host unicast, other broadcast/multicast)   -> XDP_PASS (host)
 * A VM served through a veth port (queue PORT_QUEUE, see `ports`) is redirected to its port.
 * A VM that owns every NIC queue (queue ALL_QUEUES: one socket per queue) is redirected to the
 * XSKMAP slot of the queue the frame arrived on.
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

/* The ABI shared with user space: limits, map key/value structs, counter indexes. */
#include "lancet_common.h"

#define ARP_HDR_LEN 8
#define ARP_OP_REQUEST 1
#define ARP_ETH_IPV4_BODY_LEN 20   /* sha(6) spa(4) tha(6) tpa(4) */
#define ARP_TPA_OFFSET 16          /* offset of tpa inside the body */
#define IPV6_HDR_LEN 40
#define IPV6_NEXTHDR_OFFSET 6
#define IPV6_NEXTHDR_ICMPV6 58
#define ICMPV6_NS_TYPE 135
#define ICMPV6_NS_TARGET_OFFSET 8  /* type(1) code(1) csum(2) reserved(4) then the target */

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

/* Key: IPv6 address (16 bytes, network order). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * MAX_VMS);
	__type(key, struct ipv6_key);
	__type(value, struct vm_slot);
} vm_ipv6 SEC(".maps");

/*
 * Port VMs (several VMs on one NIC queue): a VM whose socket cannot sit on the NIC's queue (the
 * first VM holds it) has its own veth pair `port`/`peer` (src/net/port.rs). Its registrations carry
 * queue PORT_QUEUE and slot = its index here; frames for it are redirected to the `peer` end,
 * which delivers them into `port`, whose own XDP program hands them to the VM's socket.
 * Value: ifindex of the pair's `peer` end.
 */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, MAX_VMS);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VERDICT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} verdicts SEC(".maps");


/*
 * Filter rules: tuple-space search.
 *
 * Every rule is compiled by user space (src/net/rules.rs) into one or more entries of `rules`,
 * keyed by the frame's header fields ANDed with one of at most RULE_MAX_MASKS masks (a mask =
 * which fields a rule looks at, its prefix lengths, and a port-range block's prefix). Per frame
 * the program builds one flow key, then walks the active masks of the live table (bounded by
 * RULE_MAX_MASKS whatever the number of rules): AND, one hash lookup, keep the best rank.
 * Masks are sorted by the best rank they hold, so the walk stops at the first mask that cannot
 * beat the match found so far.
 *
 * Rank = prio << RULE_ID_BITS | rule id: lower wins (lower prio number first, then lower id).
 *
 * Two tables (double buffering): user space writes the standby table completely (masks, mask
 * count, entries), then flips `rule_cfg.table` with one 4-byte write. A frame sees either the old
 * or the new rule set, never a half-installed rule. The hash key carries the table number.
 */

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define VLAN_VID_MASK 0x0fff
#define VLAN_TAG_LEN 4
#define IPV4_MIN_HDR_LEN 20
#define IPV4_FRAG_OFFSET_MASK 0x1fff /* ports only in the fragment at offset 0 */

/*
 * IPv6 extension headers walked to find the transport (at most IPV6_MAX_EXT_HDRS). Hop-by-Hop,
 * Routing and Destination Options: length in 8-byte units not counting the first 8; AH: in 4-byte
 * units not counting the first 8 (len + 2); Fragment: 8 bytes, and a fragment at a non-zero
 * offset carries no ports. A chain that is longer, truncated, or holds a header not parsed here
 * (ESP, Mobility, HIP, Shim6, experimental) sets IPFLAG_NO_L4 and leaves proto and ports 0.
 */
#define IPV6_MAX_EXT_HDRS 6
#define IPV6_EXT_MIN_LEN 8
#define IPV6_EXT_LEN_SHIFT 3     /* (len + 1) << 3 */
#define IPV6_AH_LEN_SHIFT 2      /* (len + 2) << 2 */
#define IPV6_FRAG_OFFSET_MASK 0xfff8 /* bytes 2..3 of the Fragment header: offset << 3 | flags */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_ESP 50
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define NEXTHDR_MOBILITY 135
#define NEXTHDR_HIP 139
#define NEXTHDR_SHIM6 140
#define NEXTHDR_EXP1 253
#define NEXTHDR_EXP2 254

#define FLOW_KEY_WORDS (sizeof(struct flow_key) / 4)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rule_cfg);
} rule_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RULE_TABLES * RULE_MAX_MASKS);
	__type(key, __u32);
	__type(value, struct rule_mask);
} rule_masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RULE_MAX_ENTRIES);
	__type(key, struct flow_key);
	__type(value, struct rule_entry);
} rules SEC(".maps");

/* Per-rule hit counters, indexed by rule id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RULE_MAX_IDS);
	__type(key, __u32);
	__type(value, __u64);
} rule_hits SEC(".maps");

/* The rules as text (control plane only, never read here): rule id -> canonical rule text, so
 * `lancet filter list` in another process rebuilds the rule set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RULE_MAX_IDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct rule_text);
} rule_texts SEC(".maps");

/* VM names (control plane only): NUL-padded name -> where its socket sits. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VMS);
	__type(key, struct vm_name);
	__type(value, struct vm_name_entry);
} vm_names SEC(".maps");

static __always_inline void count(__u32 verdict)
{
	__u64 *counter = bpf_map_lookup_elem(&verdicts, &verdict);

	if (counter)
		*counter += 1;
}

/* Every frame handed to a VM carries a 4-byte XDP metadata word in front of it (copy mode copies
 * it into the UMEM headroom): MIRROR_META_MAGIC for a mirrored frame, 0 otherwise, so the VMM
 * never reads a stale tag from a reused UMEM frame. */
static __always_inline void set_vm_meta(struct xdp_md *ctx, __u32 tag)
{
	__u32 *meta;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)) != 0)
		return;
	meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) <= (void *)(long)ctx->data)
		*meta = tag;
}

static __always_inline int to_vm_tagged(struct xdp_md *ctx, const struct vm_slot *vm,
					__u32 verdict, __u32 tag)
{
	int action;

	if (vm->queue == PORT_QUEUE) {
		set_vm_meta(ctx, tag);
		action = bpf_redirect_map(&ports, vm->slot, XDP_DROP);
		count(action == XDP_REDIRECT ? verdict : VERDICT_DROP_NO_SOCKET);
		return action;
	}
	if (vm->queue == ALL_QUEUES) {
		/* the VM has a socket on every queue, at the slot of that queue's number */
		set_vm_meta(ctx, tag);
		action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
		count(action == XDP_REDIRECT ? verdict : VERDICT_DROP_NO_SOCKET);
		return action;
	}
	if (ctx->rx_queue_index != vm->queue) {
		count(VERDICT_DROP_WRONG_QUEUE);
		return XDP_DROP;
	}
	set_vm_meta(ctx, tag);
	action = bpf_redirect_map(&xsks, vm->slot, XDP_DROP);
	count(action == XDP_REDIRECT ? verdict : VERDICT_DROP_NO_SOCKET);
	return action;
}

static __always_inline int to_vm(struct xdp_md *ctx, const struct vm_slot *vm, __u32 verdict)
{
	return to_vm_tagged(ctx, vm, verdict, 0);
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


static __always_inline int ipv6_is_ext(__u8 next)
{
	return next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_FRAGMENT ||
	       next == NEXTHDR_AUTH || next == NEXTHDR_DEST;
}

static __always_inline int ipv6_is_unparsed(__u8 next)
{
	return next == NEXTHDR_ESP || next == NEXTHDR_MOBILITY || next == NEXTHDR_HIP ||
	       next == NEXTHDR_SHIM6 || next == NEXTHDR_EXP1 || next == NEXTHDR_EXP2;
}

/* Walk the IPv6 extension headers of the packet at `ip6` (its fixed header checked): set
 * key->proto to the transport, or IPFLAG_NO_L4; return where the ports are, or NULL. */
static __always_inline __u8 *ipv6_transport(struct flow_key *key, __u8 *ip6, void *data_end)
{
	__u8 next = ip6[IPV6_NEXTHDR_OFFSET];
	__u32 off = IPV6_HDR_LEN;
	int first_fragment = 1;
	int i;

	for (i = 0; i < IPV6_MAX_EXT_HDRS; i++) {
		__u8 *h;

		if (!ipv6_is_ext(next))
			break;
		h = ip6 + off;
		if ((void *)(h + IPV6_EXT_MIN_LEN) > data_end)
			goto unparsed;
		if (next == NEXTHDR_FRAGMENT) {
			if (((h[2] << 8) | h[3]) & IPV6_FRAG_OFFSET_MASK)
				first_fragment = 0;
			off += IPV6_EXT_MIN_LEN;
		} else if (next == NEXTHDR_AUTH) {
			off += ((__u32)h[1] + 2) << IPV6_AH_LEN_SHIFT;
		} else {
			off += ((__u32)h[1] + 1) << IPV6_EXT_LEN_SHIFT;
		}
		next = h[0];
	}
	if (ipv6_is_ext(next) || ipv6_is_unparsed(next))
		goto unparsed;
	key->proto = next;
	return first_fragment ? ip6 + off : 0;
unparsed:
	key->proto = 0;
	key->ipflags |= IPFLAG_NO_L4;
	return 0;
}

/* Fill `key` from the frame. Returns 0, or -1 when the Ethernet header is incomplete. */
static __always_inline int flow_key_from_frame(struct flow_key *key, void *data, void *data_end)
{
	struct ethhdr *eth = data;
	__u8 *l3;
	__u8 *l4 = 0;
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(key->dst_mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(key->src_mac, eth->h_source, ETH_ALEN);
	proto = bpf_ntohs(eth->h_proto);
	l3 = (__u8 *)(eth + 1);
	if (proto == ETH_P_8021Q_ || proto == ETH_P_8021AD_) {
		/* `vlan` rules match the outer VID (the tag on this link) */
		if ((void *)(l3 + VLAN_TAG_LEN) > data_end)
			return 0;
		key->vlan = VLAN_PRESENT | (((l3[0] << 8) | l3[1]) & VLAN_VID_MASK);
		proto = (l3[2] << 8) | l3[3];
		l3 += VLAN_TAG_LEN;
		if (proto == ETH_P_8021Q_) {
			/* QinQ: the inner (customer) tag; a third tag is not parsed (ethertype 0x8100) */
			if ((void *)(l3 + VLAN_TAG_LEN) > data_end)
				return 0;
			proto = (l3[2] << 8) | l3[3];
			l3 += VLAN_TAG_LEN;
		}
	}
	key->ethertype = bpf_htons(proto);
	if (proto == ETH_P_IP) {
		__u32 ihl;

		if ((void *)(l3 + IPV4_MIN_HDR_LEN) > data_end)
			return 0;
		ihl = (l3[0] & 0x0f) * 4;
		key->ipflags = IPFLAG_IP;
		key->proto = l3[9];
		__builtin_memcpy(key->src_ip, l3 + 12, 4);
		__builtin_memcpy(key->dst_ip, l3 + 16, 4);
		/* ports only in the first fragment */
		if (ihl >= IPV4_MIN_HDR_LEN && !(((l3[6] << 8) | l3[7]) & IPV4_FRAG_OFFSET_MASK))
			l4 = l3 + ihl;
	} else if (proto == ETH_P_IPV6) {
		if ((void *)(l3 + IPV6_HDR_LEN) > data_end)
			return 0;
		key->ipflags = IPFLAG_IP | IPFLAG_V6;
		__builtin_memcpy(key->src_ip, l3 + 8, IPV6_ADDR_LEN);
		__builtin_memcpy(key->dst_ip, l3 + 24, IPV6_ADDR_LEN);
		l4 = ipv6_transport(key, l3, data_end);
	}
	if (l4 && (key->proto == IPPROTO_TCP || key->proto == IPPROTO_UDP) &&
	    (void *)(l4 + 4) <= data_end) {
		__builtin_memcpy(&key->sport, l4, 2);
		__builtin_memcpy(&key->dport, l4 + 2, 2);
	}
	return 0;
}

/* The best-ranked rule matching `frame`, or NULL. Work: at most RULE_MAX_MASKS hash lookups. */
static __always_inline struct rule_entry *match_rules(const struct flow_key *frame)
{
	const __u32 *fw = (const __u32 *)frame;
	struct rule_entry *best = 0;
	__u32 best_rank = 0xffffffff;
	struct flow_key masked;
	struct rule_cfg *cfg;
	__u32 zero = 0, table, count, i;

	cfg = bpf_map_lookup_elem(&rule_cfg, &zero);
	if (!cfg)
		return 0;
	table = cfg->table & 1;
	count = cfg->mask_count[table];
	for (i = 0; i < RULE_MAX_MASKS; i++) {
		__u32 idx = table * RULE_MAX_MASKS + i;
		struct rule_mask *m;
		struct rule_entry *e;
		__u32 *kw = (__u32 *)&masked;
		const __u32 *mw;
		__u32 w;

		if (i >= count)
			break;
		m = bpf_map_lookup_elem(&rule_masks, &idx);
		if (!m || m->best_rank >= best_rank)
			break;
		mw = (const __u32 *)&m->mask;
		kw[0] = mw[0];
		for (w = 1; w < FLOW_KEY_WORDS; w++)
			kw[w] = fw[w] & mw[w];
		e = bpf_map_lookup_elem(&rules, &masked);
		if (e && e->rank < best_rank) {
			best = e;
			best_rank = e->rank;
		}
	}
	return best;
}

static __always_inline void count_hit(__u32 rank)
{
	__u32 id = rank & (RULE_MAX_IDS - 1);
	__u64 *hits = bpf_map_lookup_elem(&rule_hits, &id);

	if (hits)
		*hits += 1;
}

/* Apply a rule's action. A VM target whose socket is missing or on another queue is dropped
 * and counted like the MAC steering does. */
static __always_inline int apply_rule(struct xdp_md *ctx, const struct rule_entry *rule)
{
	struct vm_slot vm = { .slot = rule->slot, .queue = rule->queue };

	count_hit(rule->rank);
	if ((rule->action == RULE_ACT_VM || rule->action == RULE_ACT_MIRROR) && rule->slot >= MAX_VMS) {
		/* the rule names a VM that is not running */
		count(VERDICT_DROP_NO_SOCKET);
		return XDP_DROP;
	}
	switch (rule->action) {
	case RULE_ACT_VM:
		return to_vm(ctx, &vm, VERDICT_RULE_TO_VM);
	case RULE_ACT_MIRROR:
		/* Tagged so the VMM also hands a copy to the host (XDP cannot clone a frame). */
		return to_vm_tagged(ctx, &vm, VERDICT_RULE_MIRROR, MIRROR_META_MAGIC);
	case RULE_ACT_DROP:
		count(VERDICT_RULE_DROP);
		return XDP_DROP;
	default:
		count(VERDICT_RULE_PASS);
		return XDP_PASS;
	}
}

SEC("xdp")
int lancet_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vm_slot *vm;
	__u64 mac_key = 0;
	struct flow_key frame = {};
	struct rule_entry *rule;
	__u16 proto;

	if (flow_key_from_frame(&frame, data, data_end) < 0)
		return to_host();
	rule = match_rules(&frame);
	if (rule)
		return apply_rule(ctx, rule);
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

LANCET_ABI_ENUMS;

char LICENSE[] SEC("license") = "Dual BSD/GPL";
