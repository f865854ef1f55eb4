package uapi

// The names below are the ones of include/uapi/linux/netdev.h (generated from
// Documentation/netlink/specs/netdev.yaml) so that they can be grepped for in
// kernel sources, as x/sys and cilium/ebpf's internal/sys do.

// Generic netlink family "netdev".
const (
	NETDEV_FAMILY_NAME     = "netdev"
	NETDEV_FAMILY_VERSION  = 1
	NETDEV_MCGRP_MGMT      = "mgmt"
	NETDEV_MCGRP_PAGE_POOL = "page-pool"
)

// Commands (enum NETDEV_CMD_*). 1-13 exist since 6.12 (bind-rx), 15 since
// 6.16 (bind-tx). bind-rx carries GENL_ADMIN_PERM (CAP_NET_ADMIN in the
// initial user namespace) in 6.12-6.18; bind-tx has no permission flag.
const (
	NETDEV_CMD_DEV_GET              = 1
	NETDEV_CMD_DEV_ADD_NTF          = 2
	NETDEV_CMD_DEV_DEL_NTF          = 3
	NETDEV_CMD_DEV_CHANGE_NTF       = 4
	NETDEV_CMD_PAGE_POOL_GET        = 5
	NETDEV_CMD_PAGE_POOL_ADD_NTF    = 6
	NETDEV_CMD_PAGE_POOL_DEL_NTF    = 7
	NETDEV_CMD_PAGE_POOL_CHANGE_NTF = 8
	NETDEV_CMD_PAGE_POOL_STATS_GET  = 9
	NETDEV_CMD_QUEUE_GET            = 10
	NETDEV_CMD_NAPI_GET             = 11
	NETDEV_CMD_QSTATS_GET           = 12
	NETDEV_CMD_BIND_RX              = 13
	NETDEV_CMD_NAPI_SET             = 14
	NETDEV_CMD_BIND_TX              = 15
)

// Attribute set "dev" (NETDEV_A_DEV_*).
const (
	NETDEV_A_DEV_IFINDEX                  = 1 // u32
	NETDEV_A_DEV_PAD                      = 2
	NETDEV_A_DEV_XDP_FEATURES             = 3 // u64, enum netdev_xdp_act
	NETDEV_A_DEV_XDP_ZC_MAX_SEGS          = 4 // u32
	NETDEV_A_DEV_XDP_RX_METADATA_FEATURES = 5 // u64, enum netdev_xdp_rx_metadata
	NETDEV_A_DEV_XSK_FEATURES             = 6 // u64, enum netdev_xsk_flags
)

// enum netdev_xdp_act.
const (
	NETDEV_XDP_ACT_BASIC        = 1
	NETDEV_XDP_ACT_REDIRECT     = 2
	NETDEV_XDP_ACT_NDO_XMIT     = 4
	NETDEV_XDP_ACT_XSK_ZEROCOPY = 8
	NETDEV_XDP_ACT_HW_OFFLOAD   = 16
	NETDEV_XDP_ACT_RX_SG        = 32
	NETDEV_XDP_ACT_NDO_XMIT_SG  = 64
)

// Attribute set "page-pool" (NETDEV_A_PAGE_POOL_*). Attributes of spec type
// "uint" are NLA_UINT: 4 or 8 bytes on the wire.
const (
	NETDEV_A_PAGE_POOL_ID           = 1 // uint
	NETDEV_A_PAGE_POOL_IFINDEX      = 2 // u32
	NETDEV_A_PAGE_POOL_NAPI_ID      = 3 // uint
	NETDEV_A_PAGE_POOL_INFLIGHT     = 4 // uint
	NETDEV_A_PAGE_POOL_INFLIGHT_MEM = 5 // uint
	NETDEV_A_PAGE_POOL_DETACH_TIME  = 6 // uint
	NETDEV_A_PAGE_POOL_DMABUF       = 7 // u32, id of the bound dmabuf
	NETDEV_A_PAGE_POOL_IO_URING     = 8 // nest
)

// Attribute set "page-pool-stats" (NETDEV_A_PAGE_POOL_STATS_*); needs
// CONFIG_PAGE_POOL_STATS.
const (
	NETDEV_A_PAGE_POOL_STATS_INFO                    = 1 // nest: page-pool {id, ifindex}
	NETDEV_A_PAGE_POOL_STATS_ALLOC_FAST              = 8
	NETDEV_A_PAGE_POOL_STATS_ALLOC_SLOW              = 9
	NETDEV_A_PAGE_POOL_STATS_ALLOC_SLOW_HIGH_ORDER   = 10
	NETDEV_A_PAGE_POOL_STATS_ALLOC_EMPTY             = 11
	NETDEV_A_PAGE_POOL_STATS_ALLOC_REFILL            = 12
	NETDEV_A_PAGE_POOL_STATS_ALLOC_WAIVE             = 13
	NETDEV_A_PAGE_POOL_STATS_RECYCLE_CACHED          = 14
	NETDEV_A_PAGE_POOL_STATS_RECYCLE_CACHE_FULL      = 15
	NETDEV_A_PAGE_POOL_STATS_RECYCLE_RING            = 16
	NETDEV_A_PAGE_POOL_STATS_RECYCLE_RING_FULL       = 17
	NETDEV_A_PAGE_POOL_STATS_RECYCLE_RELEASED_REFCNT = 18
)

// Attribute set "napi" (NETDEV_A_NAPI_*).
const (
	NETDEV_A_NAPI_IFINDEX             = 1
	NETDEV_A_NAPI_ID                  = 2
	NETDEV_A_NAPI_IRQ                 = 3
	NETDEV_A_NAPI_PID                 = 4
	NETDEV_A_NAPI_DEFER_HARD_IRQS     = 5
	NETDEV_A_NAPI_GRO_FLUSH_TIMEOUT   = 6
	NETDEV_A_NAPI_IRQ_SUSPEND_TIMEOUT = 7
	NETDEV_A_NAPI_THREADED            = 8
)

// Attribute set "queue" (NETDEV_A_QUEUE_*). The subset {ID, TYPE} is the
// "queue-id" set nested inside NETDEV_A_DMABUF_QUEUES of a bind-rx request.
const (
	NETDEV_A_QUEUE_ID       = 1 // u32
	NETDEV_A_QUEUE_IFINDEX  = 2 // u32
	NETDEV_A_QUEUE_TYPE     = 3 // u32, enum netdev_queue_type
	NETDEV_A_QUEUE_NAPI_ID  = 4 // u32
	NETDEV_A_QUEUE_DMABUF   = 5 // u32, id of the bound dmabuf
	NETDEV_A_QUEUE_IO_URING = 6 // nest
	NETDEV_A_QUEUE_XSK      = 7 // nest
)

// enum netdev_queue_type.
const (
	NETDEV_QUEUE_TYPE_RX = 0
	NETDEV_QUEUE_TYPE_TX = 1
)

// enum netdev_qstats_scope.
const NETDEV_QSTATS_SCOPE_QUEUE = 1

// Attribute set "qstats" (NETDEV_A_QSTATS_*). Counters are "uint".
const (
	NETDEV_A_QSTATS_IFINDEX                = 1
	NETDEV_A_QSTATS_QUEUE_TYPE             = 2
	NETDEV_A_QSTATS_QUEUE_ID               = 3
	NETDEV_A_QSTATS_SCOPE                  = 4
	NETDEV_A_QSTATS_RX_PACKETS             = 8
	NETDEV_A_QSTATS_RX_BYTES               = 9
	NETDEV_A_QSTATS_TX_PACKETS             = 10
	NETDEV_A_QSTATS_TX_BYTES               = 11
	NETDEV_A_QSTATS_RX_ALLOC_FAIL          = 12
	NETDEV_A_QSTATS_RX_HW_DROPS            = 13
	NETDEV_A_QSTATS_RX_HW_DROP_OVERRUNS    = 14
	NETDEV_A_QSTATS_RX_CSUM_COMPLETE       = 15
	NETDEV_A_QSTATS_RX_CSUM_UNNECESSARY    = 16
	NETDEV_A_QSTATS_RX_CSUM_NONE           = 17
	NETDEV_A_QSTATS_RX_CSUM_BAD            = 18
	NETDEV_A_QSTATS_RX_HW_GRO_PACKETS      = 19
	NETDEV_A_QSTATS_RX_HW_GRO_BYTES        = 20
	NETDEV_A_QSTATS_RX_HW_GRO_WIRE_PACKETS = 21
	NETDEV_A_QSTATS_RX_HW_GRO_WIRE_BYTES   = 22
	NETDEV_A_QSTATS_RX_HW_DROP_RATELIMITS  = 23
	NETDEV_A_QSTATS_TX_HW_DROPS            = 24
	NETDEV_A_QSTATS_TX_HW_DROP_ERRORS      = 25
	NETDEV_A_QSTATS_TX_CSUM_NONE           = 26
	NETDEV_A_QSTATS_TX_NEEDS_CSUM          = 27
	NETDEV_A_QSTATS_TX_HW_GSO_PACKETS      = 28
	NETDEV_A_QSTATS_TX_HW_GSO_BYTES        = 29
	NETDEV_A_QSTATS_TX_HW_GSO_WIRE_PACKETS = 30
	NETDEV_A_QSTATS_TX_HW_GSO_WIRE_BYTES   = 31
	NETDEV_A_QSTATS_TX_HW_DROP_RATELIMITS  = 32
	NETDEV_A_QSTATS_TX_STOP                = 33
	NETDEV_A_QSTATS_TX_WAKE                = 34
)

// Attribute set "dmabuf" (NETDEV_A_DMABUF_*), used by bind-rx and bind-tx.
// In 6.12-6.18 the bind-rx op's maxattr is NETDEV_A_DMABUF_FD: strict
// validation rejects anything above it, so attributes newer trees add (id 5
// in 2026 linux-next) must not be sent to these kernels.
const (
	NETDEV_A_DMABUF_IFINDEX = 1 // u32
	NETDEV_A_DMABUF_QUEUES  = 2 // nest, multi-attr: one per queue, each a queue-id set
	NETDEV_A_DMABUF_FD      = 3 // u32
	NETDEV_A_DMABUF_ID      = 4 // u32, reply only
)
