/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Definitions shared by lancet's BPF programs (steer.bpf.c, bridge.bpf.c).
 */
#ifndef LANCET_COMMON_H
#define LANCET_COMMON_H

#include <linux/types.h>
#include <linux/if_ether.h>

/* How many VMs one NIC can serve. Keep in sync with MAX_VMS in src/net/steer.rs. */
#define MAX_VMS 64

/* The `queue` of a VM that owns every queue of the NIC (one AF_XDP socket per RX queue, sharing
 * one UMEM): its frames go to XSKMAP slot rx_queue_index, whatever queue they arrived on.
 * Keep in sync with ALL_QUEUES in src/net/steer.rs (a unit test there checks). */
#define ALL_QUEUES 0xfffffffd

/* A MAC address as a map key: the 6 bytes in the low bytes of a zeroed __u64
 * (src/net/steer.rs mac_key). */
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
