// Package nic prepares a network interface for devmem TCP and diagnoses it.
//
// devmem TCP needs three things from the NIC that a stock configuration does
// not give: TCP header/data split on, with a header-split threshold of zero
// (bind-rx refuses the queue otherwise), ntuple flow steering so each data
// connection lands on a queue bound to a dmabuf, and an RSS indirection table
// that keeps every other flow off those queues. This package reads and
// changes exactly that state, the way the kernel's ncdevmem selftest does, but
// through the kernel interfaces instead of the ethtool binary:
//
//   - ethtool generic netlink (family "ethtool", version 1): RINGS_GET/SET
//     for tcp-data-split and hds-thresh, FEATURES_GET/SET for
//     rx-ntuple-filter (and rx-gro-hw, which mlx5 needs on before it
//     accepts tcp-data-split on), CHANNELS_GET for the queue count;
//   - the SIOCETHTOOL ioctl: ETHTOOL_SRXCLSRLINS/SRXCLSRLDEL for flow rules
//     (struct ethtool_rxnfc), ETHTOOL_GRXFHINDIR/SRXFHINDIR for the RSS
//     indirection table, ETHTOOL_GDRVINFO for the driver's name, firmware
//     version and bus address.
//
// A Client does single operations. Client.Apply returns a Setup that applies
// the whole devmem configuration, records every change it made and undoes
// them with Setup.Restore. Check (and Client.Check) is the read-only preflight
// used by "blockd doctor" and "blockcat doctor": each Finding carries the
// exact ethtool command that would fix it.
//
// # Privileges
//
// Reading is unprivileged. Every change needs CAP_NET_ADMIN in the user
// namespace owning the interface's network namespace; without it the kernel
// answers EPERM and errors satisfy errors.Is(err, os.ErrPermission).
//
// # Network namespaces
//
// A Client works in the network namespace of the thread that called Dial: its
// socket is created there and stays there.
//
// # Errors
//
// Kernel refusals are *OpError values keeping the operation, interface,
// errno and, for netlink, the kernel's extended-ack message. EOPNOTSUPP
// satisfies errors.Is(err, ErrNotSupported), EPERM os.ErrPermission, ENODEV
// (no such interface) os.ErrNotExist. On systems other than Linux every
// operation fails with an error wrapping ErrNotSupported.
package nic
