// SPDX-License-Identifier: GPL-2.0-or-later
//
// tpgate's stream verdict: bytes arriving on a joined socket leave through its peer.
//
// `peers` maps a socket's cookie to its peer socket; `joined` holds the sockets whose
// arriving bytes this program takes, and is the map the program is attached to. tpgate adds
// both sockets of a decided DIRECT flow to `peers` first (each under the other's cookie)
// and only then to `joined`: a socket's bytes are never looked at before its peer can be
// found, so none end up in a queue tpgate no longer reads. `bytes` counts, per receiving
// socket's cookie, what was handed to the peer, so the relay can tell when everything
// received has been queued on the other side (before it passes a FIN on) and the registry
// can show the flow's bytes. A socket without a peer (removed while a packet was in
// flight) keeps its data: SK_PASS. tpgate passes FINs on itself, once what came before
// them has been sent.
//
// Built by build.rs with `clang -target bpf`; no libbpf headers are needed.

#include <linux/bpf.h>

#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define SEC(name) __attribute__((section(name), used))

static long (*bpf_sk_redirect_hash)(struct __sk_buff *skb, void *map, void *key,
				    __u64 flags) = (void *)BPF_FUNC_sk_redirect_hash;
static __u64 (*bpf_get_socket_cookie)(void *ctx) = (void *)BPF_FUNC_get_socket_cookie;
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 1 << 20);
	__type(key, __u64);
	__type(value, __u32);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 1 << 20);
	__type(key, __u64);
	__type(value, __u32);
} joined SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, __u64);
	__type(value, __u64);
} bytes SEC(".maps");

SEC("sk_skb/stream_verdict")
int verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 *n;

	// A bare FIN arrives as an empty skb; TCP has taken note of it already (tpgate sees
	// the end of file and passes the FIN on itself). Redirected, or passed to a socket
	// whose queue holds redirected data, the kernel finds nothing to send and breaks that
	// socket's pipe (EPIPE): drop it.
	if (skb->len == 0)
		return SK_DROP;
	if (bpf_sk_redirect_hash(skb, &peers, &cookie, 0) != SK_PASS)
		return SK_PASS;
	n = bpf_map_lookup_elem(&bytes, &cookie);
	if (n)
		__sync_fetch_and_add(n, skb->len);
	return SK_PASS;
}

char _license[] SEC("license") = "GPL";
