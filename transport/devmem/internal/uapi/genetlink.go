package uapi

// The generic netlink controller ("nlctrl", include/uapi/linux/genetlink.h)
// and the extended acknowledgement attributes (include/uapi/linux/netlink.h).
// x/sys defines them on Linux only; they are not architecture-specific, so
// they are spelled out here for every GOOS, for the portable decoder of a
// family's operation list and for the fake netdev family.

// Controller family id and commands.
const (
	GENL_ID_CTRL       = 0x10
	CTRL_CMD_NEWFAMILY = 1
	CTRL_CMD_GETFAMILY = 3
)

// Controller attributes (CTRL_ATTR_*) and those of each CTRL_ATTR_OPS entry
// (CTRL_ATTR_OP_*).
const (
	CTRL_ATTR_FAMILY_ID    = 1 // u16
	CTRL_ATTR_FAMILY_NAME  = 2 // string
	CTRL_ATTR_VERSION      = 3 // u32
	CTRL_ATTR_HDRSIZE      = 4 // u32
	CTRL_ATTR_MAXATTR      = 5 // u32
	CTRL_ATTR_OPS          = 6 // nest of nests, one per operation
	CTRL_ATTR_MCAST_GROUPS = 7 // nest of nests

	CTRL_ATTR_OP_ID    = 1 // u32, the command
	CTRL_ATTR_OP_FLAGS = 2 // u32, GENL_* flags
)

// Operation flags (CTRL_ATTR_OP_FLAGS).
const (
	GENL_ADMIN_PERM     = 0x1
	GENL_CMD_CAP_DO     = 0x2
	GENL_CMD_CAP_DUMP   = 0x4
	GENL_CMD_CAP_HASPOL = 0x8
	GENL_UNS_ADMIN_PERM = 0x10
)

// Extended acknowledgement: NLM_F_ACK_TLVS on an NLMSG_ERROR says that
// NLMSGERR_ATTR_* attributes follow the echoed request.
const (
	NLM_F_CAPPED       = 0x100
	NLM_F_ACK_TLVS     = 0x200
	NLMSGERR_ATTR_MSG  = 1 // string
	NLMSGERR_ATTR_OFFS = 2 // u32, offset of the offending attribute in the request
)
