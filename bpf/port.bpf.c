// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * lancet port programs: the two ends of the veth pair of a VM that shares its NIC queue with
 * another VM (src/net/port.rs). One object instance per port.
 *
 *   NIC --(steering program, DEVMAP `ports`)--> peer end ==veth==> port end --lancet_port_rx--> XSK
 *   XSK --(sendto on the port end)--> port end ==veth==> peer end --lancet_port_tx--> NIC (wire)
 *
 * lancet_port_rx runs on the port end: everything arriving there is the VM's, it goes to the
 * VM's socket (slot 0 of `port_xsk`). lancet_port_tx runs on the peer end (generic mode, so the
 * redirect transmits through the NIC's normal xmit path): everything the VM sent goes out of the
 * NIC (`port_out` slot 0). Failures are counted in `port_drops`.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lancet_common.h"

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} port_xsk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} port_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PORT_DROP_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} port_drops SEC(".maps");

static __always_inline int redirect_or_count(void *map, __u32 drop)
{
	int action = bpf_redirect_map(map, 0, XDP_DROP);

	if (action != XDP_REDIRECT) {
		__u64 *counter = bpf_map_lookup_elem(&port_drops, &drop);

		if (counter)
			*counter += 1;
	}
	return action;
}

SEC("xdp")
int lancet_port_rx(struct xdp_md *ctx)
{
	/* The steering program put a 4-byte tag in front of the frame (0 or the mirror magic);
	 * a frame that reached the port through the skb path lost it: write 0 so the VMM never
	 * reads a stale tag. */
	if (ctx->data_meta == ctx->data && bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)) == 0) {
		__u32 *meta = (void *)(long)ctx->data_meta;

		if ((void *)(meta + 1) <= (void *)(long)ctx->data)
			*meta = 0;
	}
	return redirect_or_count(&port_xsk, PORT_DROP_RX_NO_SOCKET);
}

SEC("xdp")
int lancet_port_tx(struct xdp_md *ctx)
{
	return redirect_or_count(&port_out, PORT_DROP_TX_NO_NIC);
}

LANCET_ABI_ENUMS;

char LICENSE[] SEC("license") = "Dual BSD/GPL";
